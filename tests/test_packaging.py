"""The pack is ready for the Comfy Registry (not yet published): [tool.comfy] complete, its icon
and the Apache-2.0 LICENSE committed, the supported ComfyUI range stated the same way in
pyproject.toml and the README."""
import re
import subprocess

import pytest
from packaging.specifiers import SpecifierSet

from conftest import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")

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
