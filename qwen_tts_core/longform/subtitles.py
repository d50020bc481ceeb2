"""Subtitles in (SRT, WebVTT, or a list of timed lines), checked cues out.

Every problem a voice-over cannot work with is reported with the cue number, its line in the
file and the times involved: times that do not parse, negative times, a cue that ends before it
starts, a cue without text, cues out of order, and overlapping cues (one voice cannot say two
lines at once). All problems are listed together so a file can be fixed in one pass.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from ..errors import InputError

MAX_PROBLEMS_SHOWN = 8


@dataclass(frozen=True)
class Cue:
    index: int                 # 1-based position among the cues
    start: float               # seconds
    end: float | None          # seconds; None: until the next cue (timed lines without an end)
    text: str
    speaker: str | None = None # WebVTT <v Name>, or the "speaker" of a timed line
    line: int = 0              # line in the file (0 for timed lines)

    def where(self) -> str:
        return f"cue {self.index}" + (f" (line {self.line})" if self.line else "")


_TIME = r"(-?)\s*(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$")
_TIMESTAMP = re.compile(rf"^\s*{_TIME}\s*$")
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_DASH = re.compile(r"^\s*[-–—]\s+")


_SOUND = re.compile(r"\[[^\]]*\]|[♪♫]+|^\s*\([^)]*\)\s*$")


def spoken_text(text: str) -> str:
    """What of a cue is said: without sound descriptions ([door slams], ♪, a cue that is only
    "(laughs)") that subtitles for the hard of hearing carry."""
    return " ".join(_SOUND.sub(" ", text).split())


def format_time(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    ms = round(abs(seconds) * 1000)
    return f"{sign}{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _seconds(groups) -> float:
    neg, h, m, s, frac = groups
    value = int(h or 0) * 3600 + int(m) * 60 + int(s) + (float("0." + frac) if frac else 0.0)
    return -value if neg else value


def parse_time(value) -> float:
    """Seconds from a number or a timestamp string ("00:01:02,500", "1:02.5", "62.5")."""
    if isinstance(value, bool):
        raise InputError(f"Not a time: {value!r}.")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _TIMESTAMP.match(value)
        if m:
            return _seconds(m.groups())
        try:
            return float(value)
        except ValueError:
            pass
    raise InputError(f"Not a time: {value!r}. Use seconds (12.5) or a timestamp (00:00:12,500).")


def _clean(lines: list[str]) -> tuple[str, str | None]:
    """Cue text lines -> (plain text, speaker from a WebVTT voice tag)."""
    joined = " ".join(lines)
    voice = _VOICE.search(joined)
    text = " ".join(_DASH.sub("", html.unescape(_TAG.sub("", line))) for line in lines)
    return " ".join(text.split()), (voice.group(1).strip() if voice else None)


def _blocks(text: str):
    """(first line number, lines) of each block separated by blank lines."""
    block, first = [], 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not block:
                first = n
            block.append(line.rstrip())
        elif block:
            yield first, block
            block = []
    if block:
        yield first, block


def parse_subtitles(text: str) -> list[Cue]:
    """SRT or WebVTT text (told apart by the WEBVTT header) -> checked cues."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("The subtitles are empty; paste an SRT or WebVTT file's text.")
    text = text.lstrip("\ufeff")
    vtt = text.lstrip().startswith("WEBVTT")
    cues, problems = [], []
    for first, lines in _blocks(text):
        if vtt and re.match(r"\s*(WEBVTT|NOTE|STYLE|REGION)\b", lines[0]):
            continue
        timing = next((i for i, line in enumerate(lines[:3]) if "-->" in line), None)
        if timing is None:
            problems.append(f"line {first}: {lines[0][:60]!r} is not a cue: expected a time line "
                            f"like '00:00:01,000 --> 00:00:03,500'" + (
                                " (or a blank line is missing between two cues)" if cues else ""))
            continue
        line_no = first + timing
        m = _TIMING.match(lines[timing])
        if not m:
            problems.append(f"line {line_no}: cannot read the times in {lines[timing].strip()!r}; "
                            "write them as 00:00:01,000 --> 00:00:03,500")
            continue
        if timing and not vtt and not lines[0].strip().isdigit():
            problems.append(f"line {first}: {lines[0][:60]!r} before the time line is not a cue number")
        again = next((i for i, line in enumerate(lines[timing + 1:], timing + 1) if _TIMING.match(line)), None)
        if again is not None:           # else the next cue's number and times would be spoken as text
            problems.append(f"line {first + again}: a second time line in the cue of line {line_no}: a "
                            "blank line is missing between two cues")
            continue
        body, speaker = _clean(lines[timing + 1:])
        cues.append(Cue(len(cues) + 1, _seconds(m.groups()[:5]), _seconds(m.groups()[5:]), body,
                        speaker, line_no))
    if not cues and not problems:
        problems.append("no cues found: expected blocks of a number, a time line "
                        "(00:00:01,000 --> 00:00:03,500) and text")
    return check_cues(cues, problems)


def timed_lines(items) -> list[Cue]:
    """Timed lines from code or a node: a list of (start, text), (start, end, text) or dicts
    with start, text and optionally end and speaker. Times in seconds or as timestamps."""
    if isinstance(items, str) or not hasattr(items, "__iter__"):
        raise InputError("Timed lines must be a list of (start, text), (start, end, text) or "
                         "{'start', 'end', 'text', 'speaker'} items.")
    cues, problems = [], []
    for i, item in enumerate(items, 1):
        try:
            if isinstance(item, dict):
                start, end = item["start"], item.get("end")
                text, speaker = item["text"], item.get("speaker")
            elif len(item) == 2:
                (start, text), end, speaker = item, None, None
            elif len(item) == 3:
                (start, end, text), speaker = item, None
            else:
                raise KeyError
        except (KeyError, TypeError):
            problems.append(f"line {i}: {item!r} is not (start, text), (start, end, text) or a dict "
                            "with 'start' and 'text'")
            continue
        if not isinstance(text, str):
            problems.append(f"line {i}: the text must be a string, got {type(text).__name__}")
            continue
        try:
            start_s = parse_time(start)
            end_s = None if end is None else parse_time(end)
        except InputError as e:
            problems.append(f"line {i}: {e}")
            continue
        cues.append(Cue(len(cues) + 1, start_s, end_s, " ".join(text.split()), speaker))
    if not cues and not problems:
        problems.append("no lines given")
    return check_cues(cues, problems)


def check_cues(cues: list[Cue], problems: list[str] | None = None) -> list[Cue]:
    """Raises InputError listing every problem; returns the cues when there is none."""
    problems = list(problems or [])
    previous = None
    for cue in cues:
        where = cue.where()
        if cue.start < 0 or (cue.end is not None and cue.end < 0):
            bad = cue.start if cue.start < 0 else cue.end
            problems.append(f"{where}: negative time {format_time(bad)}")
        elif cue.end is not None and cue.end <= cue.start:
            problems.append(f"{where}: ends at {format_time(cue.end)}, not after its start "
                            f"{format_time(cue.start)}")
        if not cue.text:
            problems.append(f"{where} at {format_time(cue.start)} has no text")
        if previous is not None:
            if cue.start < previous.start:
                problems.append(f"{where} starts at {format_time(cue.start)}, before {previous.where()} "
                                f"({format_time(previous.start)}): cues must be in time order")
            elif previous.end is not None and cue.start < previous.end:
                problems.append(
                    f"{where} starts at {format_time(cue.start)} while {previous.where()} lasts until "
                    f"{format_time(previous.end)} (overlap {previous.end - cue.start:.3f} s): one voice "
                    f"cannot say two lines at once; end cue {previous.index} earlier or start cue "
                    f"{cue.index} later")
        previous = cue
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        raise InputError(f"The subtitles have {len(problems)} problem(s):\n- " + "\n- ".join(shown)
                         + (f"\n- ... and {more} more" if more else ""))
    return cues
