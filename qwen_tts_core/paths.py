"""Which files a prompt may name: one policy for every input that names a file or folder.

On a shared or networked ComfyUI server anyone who can queue a prompt can also upload files into
its input/ folder, so a name typed into a node, or written in an uploaded .jsonl or metadata.csv,
is untrusted. `resolve` joins it to its base folder, follows links at any depth and refuses it
unless it ends up inside one of the allowed folders (the nodes pass ComfyUI's input folder). The
refusal is one message that says nothing about what lies outside: an outside path that exists is
refused exactly like one that does not, before anything there is read or listed.

    folder = resolve("my_dataset", [input_dir], what="the dataset folder")   # input_dir/my_dataset
    clip = resolve(row["audio"], [input_dir], base=jsonl.parent, what="...") # relative to the .jsonl
    resolve("/etc", [input_dir])              # OutsideInputError
    resolve("/etc", None)                     # roots None: any path (the command line)

QWEN_TTS_ALLOW_ANY_PATH=1 (for a computer only its owner uses) turns the refusals off: names are
then read as before, relative ones still relative to the base folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from .errors import OutsideInputError

ALLOW_ANY_PATH = "QWEN_TTS_ALLOW_ANY_PATH"

# a drive ("C:\x", "C:x") or a URL scheme ("file://...", "http:...") at the start
_DRIVE_OR_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_SEPARATORS = re.compile(r"[\\/]")          # both, on every system: a shared workflow may come from Windows

Roots = Sequence["str | os.PathLike[str]"]


def any_path_allowed() -> bool:
    return os.environ.get(ALLOW_ANY_PATH) == "1"          # exactly 1: a switch this wide is never set by accident


def outside_message(what: str, roots: Roots, relative_to: str = "it (my_dataset for input/my_dataset)") -> str:
    """The one refusal: the rule and the allowed folder, never the refused name or what is there."""
    where = " or ".join(str(r) for r in roots) or "(none registered)"
    return (f"{what[:1].upper()}{what[1:]} must lie inside ComfyUI's input folder ({where}), named by a "
            f"path relative to {relative_to}. Absolute paths, '..', '~', drive letters, network paths, "
            "URLs and links that lead out of it are refused, because on a shared server a prompt may "
            f"come from anyone. On a computer only you use, start ComfyUI with {ALLOW_ANY_PATH}=1 to "
            "read from anywhere.")


def leads_out_by_name(name: str) -> bool:
    """True for a name that points away from any base folder before the disk is asked: absolute
    (POSIX or Windows), a drive ("C:\\x", also drive-relative "C:x"), a UNC or device path
    ("\\\\server\\share", "\\\\?\\C:\\"), a URL, "~", "..", a NUL byte. Windows drops trailing dots
    and spaces from a name, so "... " and ". ." count as "..". Both separators count everywhere."""
    if "\x00" in name or _DRIVE_OR_SCHEME.match(name) or name.startswith(("/", "\\")):
        return True
    parts = _SEPARATORS.split(name)
    return parts[0].startswith("~") or any(p not in ("", ".") and not p.rstrip(". ") for p in parts)


def is_inside(path: str | os.PathLike, roots: Roots) -> bool:
    """Whether `path`, with every link followed, lies in one of `roots` (links followed too)."""
    real = os.path.normcase(os.path.realpath(path))
    for root in roots:
        top = os.path.normcase(os.path.realpath(root))
        try:
            if os.path.commonpath([top, real]) == top:
                return True
        except ValueError:           # another drive (Windows)
            continue
    return False


def confine(path: str | os.PathLike, roots: Roots | None, what: str, relative_to: str | None = None) -> Path:
    """`path` itself when it lies inside `roots` once links are followed; else the refusal.
    roots None, or QWEN_TTS_ALLOW_ANY_PATH=1: any path."""
    if roots is None or any_path_allowed() or is_inside(path, roots):
        return Path(path)
    raise OutsideInputError(outside_message(what, roots, *([relative_to] if relative_to else [])))


def resolve(name: str | os.PathLike, roots: Roots | None, *, base: str | os.PathLike | None = None,
            what: str = "the path", relative_to: str | None = None) -> Path:
    """The file or folder that the user's `name` stands for: relative to `base` (default: the
    first root), refused unless it lies inside `roots` (links followed). roots None, or
    QWEN_TTS_ALLOW_ANY_PATH=1: any path, "~" expanded, relative names still relative to `base`."""
    text = os.fspath(name)
    if roots is not None and not roots and base is None:
        raise OutsideInputError(outside_message(what, roots))
    start = Path(base) if base is not None else Path(roots[0]) if roots else None
    if roots is None or any_path_allowed():
        path = Path(text).expanduser()
        return path if start is None else start / path              # an absolute path replaces start
    if leads_out_by_name(text):
        raise OutsideInputError(outside_message(what, roots, *([relative_to] if relative_to else [])))
    return confine(start / text, roots, what, relative_to)
