"""Run before `comfy node publish` (README: Publishing): refuses to pass while pyproject.toml
still holds the placeholder repository URL, or breaks a rule of the Comfy Registry's
pyproject.toml specification (docs.comfy.org, registry/specifications) or of comfy-cli's own
checks. Prints every problem; exit status 1 if there is one.

    python tools/publish_check.py
"""
from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pack_archive  # noqa: E402

ROOT = pack_archive.ROOT
# The public repository does not exist yet; pyproject.toml names this owner until it does. A
# GitHub account name cannot hold two hyphens in a row, so no real URL can match it.
PLACEHOLDER = "PLACEHOLDER--set-before-publishing"
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
NODE_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*")
# comfy-cli's config_parser.validate_version: anything else and the registry gets no range at all
COMFY_VERSION_PART = re.compile(r"(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?")
GITHUB_REPO = re.compile(r"https://github\.com/([A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38})/([A-Za-z0-9._-]+)")


def requirement_lines(path: Path) -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines())
    return [ln for ln in lines if ln]


def problems(config: dict, root: Path = ROOT) -> list[str]:
    project, comfy = config.get("project", {}), config.get("tool", {}).get("comfy", {})
    urls = project.get("urls", {})
    found = []
    for where, value in [*(("project.urls." + k, v) for k, v in urls.items()),
                         *(("tool.comfy." + k, v) for k, v in comfy.items())]:
        if isinstance(value, str) and PLACEHOLDER.lower() in value.lower():
            found.append(f"{where} is still the placeholder ({value}): set the public repository's URL")
    name = str(project.get("name", ""))
    if not (NODE_NAME.fullmatch(name) and len(name) < 100):
        found.append(f"project.name {name!r}: letters, digits and single - _ . between them, starting with a "
                     "letter, under 100 characters")
    if not SEMVER.fullmatch(str(project.get("version", ""))):
        found.append(f"project.version {project.get('version')!r} is not a semantic version X.Y.Z")
    if project.get("license") != {"file": "LICENSE"} or not (root / "LICENSE").is_file():
        found.append("project.license must be { file = \"LICENSE\" } and LICENSE must exist")
    if project.get("dependencies") != requirement_lines(root / "requirements.txt"):
        found.append("project.dependencies differ from requirements.txt (ComfyUI-Manager installs the one, "
                     "the registry lists the other)")
    repo = GITHUB_REPO.fullmatch(str(urls.get("Repository", "")))
    if not repo:
        found.append(f"project.urls.Repository {urls.get('Repository')!r} is not https://github.com/<owner>/<name>")
    for key in ("PublisherId", "DisplayName", "Icon"):
        if not comfy.get(key):
            found.append(f"tool.comfy.{key} is empty")
    spec = str(comfy.get("requires-comfyui", ""))
    if not spec or not all(COMFY_VERSION_PART.fullmatch(p.strip()) for p in spec.split(",")):
        found.append(f"tool.comfy.requires-comfyui {spec!r}: comfy-cli would drop it (parts like '>=0.3.64')")
    icon = str(comfy.get("Icon", ""))
    if repo:
        prefix = f"https://raw.githubusercontent.com/{repo[1]}/{repo[2]}/main/"
        if not icon.startswith(prefix):
            found.append(f"tool.comfy.Icon {icon!r} is not a file of the repository ({prefix}...)")
        else:
            found += icon_problems(root, icon.removeprefix(prefix))
    return found


def icon_problems(root: Path, rel: str) -> list[str]:
    """Registry: SVG, PNG, JPG or GIF, at most 400 x 400 px, square; served from the repository."""
    path = root / rel
    if rel not in pack_archive.tracked_files(root):
        return [f"the icon {rel} is not a committed file"]
    if path.suffix == ".svg":
        svg = ET.parse(path).getroot()
        w, h = float(svg.get("width", 0)), float(svg.get("height", 0))
    else:
        from PIL import Image
        with Image.open(path) as im:
            w, h = im.size
    return [] if 0 < w == h <= 400 else [f"the icon {rel} is {w:g} x {h:g} px: square, at most 400 px"]


def main() -> int:
    try:
        config = pack_archive.tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, pack_archive.tomllib.TOMLDecodeError) as e:
        print(f"publish_check: cannot read pyproject.toml: {e}", file=sys.stderr)
        return 1
    found = problems(config)
    name = str(config.get("project", {}).get("name", ""))
    if "comfyui" in name.lower():
        print(f"note: the registry advises against 'ComfyUI' in the node id ({name}); the id cannot be changed "
              "after the first publish.")
    for p in found:
        print(f"publish_check: {p}", file=sys.stderr)
    if found:
        print(f"publish_check: NOT ready to publish ({len(found)} problem(s)).", file=sys.stderr)
        return 1
    files = pack_archive.archive_files(ROOT)
    print(f"publish_check: ready; the archive will hold {len(files)} files (python tools/pack_archive.py to "
          "build and list it).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
