"""Dialogue scripts: `Name: line` (or `Name (style): line`, `名字：台词`) -> lines with their
speaker, checked against the voices given.

A line without a name continues the previous speaker's line; a blank line starts a new
paragraph (a longer pause); a line that is only a bracketed direction ("[music]", "(pause)")
is not spoken and counts as a paragraph break. A name nobody has a voice for is an error naming
the line, so a typo never silently changes who speaks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import InputError

MAX_NAME = 40

_SPEAKER_LINE = re.compile(
    rf"^(?P<name>[^\s:：()（）\[\]][^:：()（）\[\]\n]{{0,{MAX_NAME - 1}}}?)\s*"
    r"(?:[(（](?P<style>[^)）\n]{1,200})[)）])?\s*[:：]\s*(?P<text>.*)$")
_DIRECTION = re.compile(r"^\s*(?:\[[^\]]*\]|\([^)]*\)|（[^）]*）)\s*$")
_NAME_BREAKERS = re.compile(r"[:：()（）\[\]\x00-\x1f\x7f]")
_NOT_A_NAME = re.compile(r"[.!?。！？,;，；\"“”«»]|\d$")


@dataclass(frozen=True)
class ScriptLine:
    index: int
    speaker: str               # the key of the voice, as given
    text: str
    style: str | None          # "(whispering)": an instruction for this line
    line: int                  # line number in the script where it starts
    brk_before: str            # "start", "turn" (another speaker), "same" (same speaker), "paragraph"


def check_speaker_name(name: str) -> str:
    """A voice's name as given (stripped; "" is fine for narration, where no name is needed).
    Refuses names that no script line ('Name: line') or subtitle could ever pick: too long, or
    holding a colon, a bracket or a line break."""
    if not isinstance(name, str):
        raise InputError(f"The speaker name must be text, got {type(name).__name__}.")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise InputError(f"The speaker name {name[:20]!r}... is {len(name)} characters long; scripts "
                         f"take names of at most {MAX_NAME}.")
    bad = sorted(set(_NAME_BREAKERS.findall(name)))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InputError(f"The speaker name {name!r} contains {shown}: a name cannot hold a colon, a "
                         "bracket or a line break, because scripts are written 'Name (style): line'. "
                         "Choose a name without them.")
    return name


def speaker_prefix(raw: str) -> re.Match | None:
    """The "Name (style): text" a line starts with (groups name, style, text), or None."""
    m = _SPEAKER_LINE.match(raw.strip())
    if not m or _NOT_A_NAME.search(m.group("name")) or m.group("text").startswith("//"):
        return None           # "Note, this: ...", "At 10:30 ...", "http://..."
    return m


def parse_script(script: str, speakers: Iterable[str]) -> list[ScriptLine]:
    """`speakers`: the names that have voices (matched ignoring case and surrounding spaces)."""
    if not isinstance(script, str) or not script.strip():
        raise InputError("The script is empty; write lines like 'Anna: Hello!'.")
    known = {name.strip().lower(): name for name in speakers}
    if not known:
        raise InputError("No voices given for the script; give each speaker a voice.")
    lines: list[dict] = []
    pending_break = "start"
    for n, raw in enumerate(script.replace("\r\n", "\n").split("\n"), 1):
        if not raw.strip():
            if lines:
                pending_break = "paragraph"
            continue
        if _DIRECTION.match(raw):
            if lines:
                pending_break = "paragraph"
            continue
        m = speaker_prefix(raw)
        if m is None:
            if not lines:
                raise InputError(f"Line {n} has no speaker: start it with a name and a colon, "
                                 f"e.g. '{next(iter(known.values()))}: {raw.strip()[:30]}'.")
            if pending_break == "paragraph":
                lines.append(dict(lines[-1], text=raw.strip(), line=n, brk="paragraph", style=lines[-1]["style"]))
                pending_break = "same"
            else:
                lines[-1]["text"] += " " + raw.strip()
            continue
        name = m.group("name").strip()
        key = known.get(name.lower())
        if key is None:
            raise InputError(f"Line {n}: unknown speaker {name!r}. Voices are given for: "
                             f"{', '.join(known.values())}. Give {name!r} a voice or correct the name.")
        text = m.group("text").strip()
        if not text:
            raise InputError(f"Line {n}: {name} has nothing to say (the text after the colon is empty).")
        brk = pending_break
        if brk != "start" and brk != "paragraph":
            brk = "same" if lines and lines[-1]["speaker"] == key else "turn"
        lines.append(dict(speaker=key, text=text, style=(m.group("style") or "").strip() or None,
                          line=n, brk=brk))
        pending_break = "same"
    if not lines:
        raise InputError("The script has no spoken lines, only directions.")
    return [ScriptLine(i, d["speaker"], d["text"], d["style"], d["line"], d["brk"])
            for i, d in enumerate(lines)]
