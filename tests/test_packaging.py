"""The pack is ready for the Comfy Registry (not yet published): [tool.comfy] complete, its icon
and the Apache-2.0 LICENSE committed, the supported ComfyUI range stated the same way in
pyproject.toml and the README."""
import re
import subprocess
import sys

import pytest
from packaging.specifiers import SpecifierSet

from conftest import ROOT

try:
    import tomllib                       # Python 3.11+ (CI and the test venv)
except ModuleNotFoundError:              # Python 3.10: the same parser as the tomli package
    tomllib = pytest.importorskip(
        "tomli", reason="reading pyproject.toml needs Python 3.11+ (tomllib) or the tomli package "
                        "(pip install tomli)")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
COMFY = PYPROJECT["tool"]["comfy"]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# the ComfyUI versions tests/test_comfyui_e2e.py was last run against (README: How it is tested)
TESTED_COMFYUI = ["0.3.64", "0.33.0"]


def tracked(path: str) -> bool:
    out = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=ROOT, capture_output=True)
    if out.returncode == 128 and b"not a git repository" in out.stderr:
        pytest.skip("not a git checkout: cannot tell which files the registry archive would hold")
    return out.returncode == 0


def test_registry_fields_are_complete():
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert COMFY.get(key), f"[tool.comfy] {key} is empty"
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", PYPROJECT["project"]["name"])
    assert PYPROJECT["project"]["urls"]["Repository"].startswith("https://")


def test_icon_is_a_committed_file_of_the_repository():
    repo = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo}/main/"
    assert COMFY["Icon"].startswith(prefix), COMFY["Icon"]
    path = COMFY["Icon"].removeprefix(prefix)
    assert (ROOT / path).is_file() and tracked(path)
    assert (ROOT / path).read_text(encoding="utf-8").lstrip().startswith("<svg")


def test_license_file_is_the_apache_2_text():
    assert PYPROJECT["project"]["license"] == {"file": "LICENSE"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and "9. Accepting Warranty or Additional Liability." in text
    assert tracked("LICENSE")


def test_supported_comfyui_range_is_stated_and_holds_the_tested_versions():
    spec = COMFY["requires-comfyui"]
    assert all(SpecifierSet(spec).contains(v) for v in TESTED_COMFYUI)
    assert not SpecifierSet(spec).contains("0.3.63")     # nothing older was tested
    assert f"`requires-comfyui = \"{spec}\"`" in README
    for v in TESTED_COMFYUI:
        assert f"ComfyUI {v}" in README


def _load_publish_check():
    import importlib.util
    spec = importlib.util.spec_from_file_location("publish_check", ROOT / "tools" / "publish_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_owner(config, owner: str):
    """pyproject with every repository URL pointing at `owner`."""
    import copy
    repo = re.fullmatch(r"https://github\.com/([^/]+)/.*", config["project"]["urls"]["Repository"])[1]
    new = copy.deepcopy(config)
    for table in (new["project"]["urls"], new["tool"]["comfy"]):
        for k, v in table.items():
            if isinstance(v, str):
                table[k] = v.replace(f"/{repo}/", f"/{owner}/")
    return new


def test_publish_check_refuses_the_placeholder_repository_and_passes_a_real_one():
    """tools/publish_check.py (the first publish step, README: Publishing) refuses pyproject.toml
    while its repository URLs are the placeholder, so no publish can go out with it."""
    check = _load_publish_check()
    placeholder = _with_owner(PYPROJECT, check.PLACEHOLDER)
    found = check.problems(placeholder)
    for field in ("project.urls.Repository", "project.urls.Documentation", "project.urls.Bug Tracker",
                  "tool.comfy.Icon"):
        assert any(p.startswith(f"{field} is still the placeholder") for p in found), (field, found)
    assert check.problems(_with_owner(PYPROJECT, "qwen-tts-maintainers")) == []
    # the committed pyproject: refused exactly while it holds the placeholder, and the command says so
    holds = check.PLACEHOLDER in PYPROJECT["project"]["urls"]["Repository"]
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "publish_check.py")], capture_output=True, text=True,
                       timeout=120)
    assert (r.returncode, "NOT ready to publish" in r.stderr) == ((1, True) if holds else (0, False)), r.stderr


def test_publish_check_names_each_broken_registry_rule():
    check = _load_publish_check()
    good = _with_owner(PYPROJECT, "qwen-tts-maintainers")

    def broken(section, key, value):
        import copy
        cfg = copy.deepcopy(good)
        table = cfg["project"] if section == "project" else cfg["tool"]["comfy"]
        table[key] = value
        return check.problems(cfg)

    for section, key, value, message in (
            ("project", "version", "0.1", "is not a semantic version"),
            ("project", "name", "1-tool", "starting with a letter"),
            ("project", "name", "qwen--tts", "single - _ ."),
            ("project", "dependencies", ["transformers"], "differ from requirements.txt"),
            ("project", "license", "Apache-2.0", "project.license"),
            ("comfy", "requires-comfyui", ">=0.3", "comfy-cli would drop it"),
            ("comfy", "PublisherId", "", "tool.comfy.PublisherId is empty"),
            ("comfy", "Icon", "https://example.com/icon.png", "is not a file of the repository")):
        found = broken(section, key, value)
        assert len(found) == 1 and message in found[0], (key, value, found)
