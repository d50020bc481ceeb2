"""Builds the archive the Comfy Registry gets, the way `comfy node pack` / `comfy node publish`
(comfy-cli, `file_utils.zip_files`) builds it: the files git tracks, minus those a `.comfyignore`
pattern matches (gitignore syntax, read with pathspec as comfy-cli does), plus the folders named
in `[tool.comfy] includes` (force-included even when ignored).

comfy-cli itself is not used: it pulls some twenty packages (uv, ruff, posthog, imageio-ffmpeg,
...) into the test venv for this one function. tests/test_archive.py builds the archive with
this module on every test run.

    python tools/pack_archive.py [OUT.zip]     (default: node.zip, comfy-cli's name)
prints every file with its size, and the archive's size.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pathspec

try:
    import tomllib                       # Python 3.11+
except ModuleNotFoundError:              # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def tracked_files(root: Path) -> list[str]:
    """`git ls-files` (what comfy-cli packs). Outside a git checkout comfy-cli zips every file,
    build-outputs and venvs included; refused here instead."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"pack_archive: {root} is not a git checkout (git ls-files: "
                         f"{out.stderr.decode(errors='replace').strip()}); the registry archive holds "
                         "the files git tracks.")
    return [p for p in out.stdout.decode().split("\0") if p]


def ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    path = root / ".comfyignore"
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    # comfy-cli: PathSpec "gitwildmatch"; GitIgnoreSpec is the same syntax under the name that
    # pathspec 1.x keeps (and follows git where the two differ, e.g. a re-included file)
    return pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None


def includes(root: Path) -> list[str]:
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config.get("tool", {}).get("comfy", {}).get("includes", []))


def archive_files(root: Path = ROOT) -> list[str]:
    """Paths (relative, '/'-separated) the registry archive holds, in comfy-cli's order."""
    spec = ignore_spec(root)
    forced = [os.path.normpath(i.lstrip("/")).replace("\\", "/") for i in includes(root)]

    def ignored(rel: str) -> bool:
        if any(rel == f or rel.startswith(f + "/") for f in forced if f and f != "."):
            return False
        return bool(spec and spec.match_file(rel))

    files = [p for p in tracked_files(root) if not ignored(p) and (root / p).is_file()]
    seen = set(files)
    for inc in forced:
        base = root / inc
        extra = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for p in extra:
            rel = p.relative_to(root).as_posix()
            if rel not in seen and not ignored(rel):
                files.append(rel)
                seen.add(rel)
    return files


def build(out: Path, root: Path = ROOT) -> list[zipfile.ZipInfo]:
    """Writes the archive (deflated, as comfy-cli) to `out`; -> its entries."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in archive_files(root):
            z.write(root / rel, rel)
    with zipfile.ZipFile(out) as z:
        return z.infolist()


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "node.zip").resolve()
    entries = build(out)
    for e in entries:
        print(f"{e.compress_size:>9,} {e.file_size:>9,}  {e.filename}")
    print(f"{out}: {len(entries)} files, {out.stat().st_size:,} bytes "
          f"({sum(e.file_size for e in entries):,} unpacked)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
