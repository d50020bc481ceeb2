"""Putting speech on a timeline: long texts (chunks joined with pauses), subtitle-timed
voice-over tracks, and multi-speaker scripts.

Audio goes out through a sink as it is made, so the chunk loop holds one chunk at a time
(`WavSink` writes to a file as it goes, memory stays flat for any length; `MemorySink` keeps the
pieces and joins them once at the end). Each renderer calls `on_progress` once before the
first chunk (narration) or line (tracks, scripts), with done=0, and once after each; every call
carries the expected length of the chunk or line that starts next (so a progress bar can move
inside it, e.g. by the frames generated). The callback may raise to stop (interrupt).
"""
from __future__ import annotations

import math
import wave
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from ..audio import pcm16
from ..duration import expected_seconds
from ..errors import InputError
from . import edit
from . import languages as langs
from .normalize import Normalization, clean, normalize_text
from .script import ScriptLine, parse_script, speaker_prefix
from .subtitles import Cue, format_time, spoken_text
from .synthesis import ChunkReport
from ..text import check_text, has_words
from .text import DEFAULT_MAX_SECONDS, Chunk, chunk_text

SAMPLE_RATE = edit.SAMPLE_RATE
# In memory, a narration is limited to this much audio (3 h is ~1 GB of float32 at 24 kHz, ~2 GB
# for the moment the pieces are joined); longer ones go to a file (WavSink) or are split.
MAX_IN_MEMORY_HOURS = 3.0
CROSSFADE_MS = 20
RUN_ON_TOLERANCE = 0.05      # seconds a line may run into the gap before the next one unflagged


@dataclass(frozen=True)
class Pauses:
    """Seconds of silence inserted between pieces of speech, by how the text breaks there."""
    none: float = 0.0          # a cut inside a clause (no punctuation): crossfaded, no pause
    clause: float = 0.25
    sentence: float = 0.5
    paragraph: float = 1.0
    turn: float = 0.45         # script: another speaker takes over
    same: float = 0.35         # script: the same speaker's next line

    def __post_init__(self):       # checked once, before anything is generated
        for brk in fields(self):
            value = getattr(self, brk.name)
            if not 0 <= value <= 10:
                raise InputError(f"The {brk.name} pause must be between 0 and 10 seconds (got {value}).")

    def after(self, brk: str) -> float:
        return 0.0 if brk in ("end", "start") else getattr(self, brk)


# ------------------------------------------------------------------ sinks
class MemorySink:
    """Keeps the pieces; `result()` joins them once (for that moment, twice the result's size:
    hence the in-memory limit of MAX_IN_MEMORY_HOURS)."""

    def __init__(self):
        self.pieces: list[torch.Tensor] = []

    def write(self, audio: torch.Tensor) -> None:
        if audio.numel():
            self.pieces.append(audio.detach().float().cpu())

    def result(self) -> torch.Tensor:
        out = torch.cat(self.pieces) if self.pieces else torch.zeros(0)
        self.pieces = []
        return out


class WavSink:
    """Writes 16-bit PCM mono WAV as the audio comes (memory stays flat for any length)."""

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE):
        self.path = Path(path)
        self._wav = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    def write(self, audio: torch.Tensor) -> None:
        if audio.numel():
            self._wav.writeframes(pcm16(audio).numpy().tobytes())

    def result(self) -> Path:
        self._wav.close()
        return self.path


class Joiner:
    """Sequential writer: pieces with silence between them, or crossfaded when the gap is 0.
    The last few milliseconds of the latest piece are held back for a possible crossfade."""

    def __init__(self, sink=None, sample_rate: int = SAMPLE_RATE, crossfade_ms: float = CROSSFADE_MS):
        self.sink = sink if sink is not None else MemorySink()
        self.sample_rate = sample_rate
        self.xfade = round(crossfade_ms * sample_rate / 1000)
        self.tail = torch.zeros(0)
        self.position = 0                  # samples in the output so far (tail included)

    def _flush(self) -> None:
        self.sink.write(self.tail)
        self.tail = torch.zeros(0)

    def silence_until(self, sample: int) -> None:
        if sample > self.position:
            self._flush()
            self.sink.write(torch.zeros(sample - self.position))
            self.position = sample

    def add(self, audio: torch.Tensor, gap_seconds: float = 0.0) -> int:
        """Appends `audio` after `gap_seconds` of silence; returns the sample where it starts."""
        audio = audio.detach().float().cpu().flatten()
        if gap_seconds > 0 or self.tail.numel() == 0:
            self.silence_until(self.position + round(gap_seconds * self.sample_rate))
            start = self.position
        else:
            n = min(self.tail.numel(), audio.numel())
            self.sink.write(self.tail[: self.tail.numel() - n])
            audio = torch.cat([edit.crossfade(self.tail[self.tail.numel() - n:], audio[:n]), audio[n:]])
            start = self.position - n
            self.position -= n
            self.tail = torch.zeros(0)
        keep = min(self.xfade, audio.numel())
        self.sink.write(audio[: audio.numel() - keep])
        self.tail = audio[audio.numel() - keep:].clone()
        self.position += audio.numel()
        return start

    def place(self, audio: torch.Tensor, at: int) -> None:
        """Writes `audio` from sample `at` on (not before the end so far), silence before it."""
        if at < self.position:
            raise ValueError(f"cannot place audio at {at}, before the end so far ({self.position})")
        self.silence_until(at)
        self._flush()
        self.sink.write(audio)
        self.position += audio.numel()

    def finish(self, total_samples: int | None = None):
        """Flushes, padding with silence to `total_samples` if given (never cuts)."""
        if total_samples is not None:
            self.silence_until(total_samples)
        self._flush()
        return self.sink.result()


# ------------------------------------------------------------------ saying one text
@dataclass
class RenderProgress:
    done: int                    # chunks (narration) or lines (track, script) finished
    total: int
    text: str
    reports: list[ChunkReport]   # of the chunk or line just finished
    seconds: float               # audio made so far
    next_seconds: float = 0.0    # expected speech of the chunk or line starting now (0: all done)


Progress = RenderProgress               # its earlier name


def _language(text, speaker, language: str | None) -> str:
    check_text(text)
    return langs.resolve(language or getattr(speaker, "language", "auto"), text)


def _prepare(text: str, speaker, language: str | None, normalization: Normalization | None,
             max_seconds: float) -> tuple[str, list[Chunk], list[str]]:
    lang = _language(text, speaker, language)
    options = normalization or Normalization()
    chunks = chunk_text(normalize_text(text, lang, options), lang, max_seconds)
    script = langs.unsupported_script_note(text)
    return lang, chunks, options.notes(lang) + ([script] if script else [])


def _say_chunks(chunks: list[Chunk], speaker, joiner: Joiner, pauses: Pauses, first_gap: float = 0.0,
                style: str | None = None, on_chunk: Callable[[Chunk, ChunkReport], None] | None = None):
    """Speaks chunks one by one into the joiner. Returns (start sample, reports)."""
    start, reports = None, []
    gap = first_gap
    for chunk in chunks:
        take = speaker.speak(chunk.text, style)
        piece, _ = edit.trim(take.audio)
        if piece.numel() == 0:
            take.report.problems.append("no audible speech in this chunk")
        at = joiner.add(edit.fade(piece), gap)
        start = at if start is None else start
        reports.append(take.report)
        gap = pauses.after(chunk.pause_after)
        if on_chunk is not None:
            on_chunk(chunk, take.report)
    return start, reports


# ------------------------------------------------------------------ long text
@dataclass
class Narration:
    audio: torch.Tensor | Path      # [samples] at 24 kHz, or the WAV file written
    sample_rate: int
    chunks: list[Chunk]
    reports: list[ChunkReport]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        troubled = [r.summary() for r in self.reports if r.attempts > 1 or not r.clean or r.problems]
        return "\n".join(self.notes + [f"{len(self.reports)} chunks"] + troubled)


def narrate(text: str, speaker, *, language: str | None = None, normalization: Normalization | None = None,
            max_seconds: float = DEFAULT_MAX_SECONDS, pauses: Pauses | None = None,
            on_progress: Callable[[RenderProgress], None] | None = None, sink=None) -> Narration:
    """Text of any length in one voice: normalised, chunked, generated chunk by chunk and joined
    with pauses that follow the text (clause < sentence < paragraph)."""
    pauses = pauses or Pauses()
    if sink is None:           # refuse before any work: estimating takes ~0.3 s per megabyte
        hours = expected_seconds(text, _language(text, speaker, language)) / 3600
        if hours > MAX_IN_MEMORY_HOURS:
            raise InputError(
                f"This text would make about {hours:.1f} hours of speech; kept in memory, a "
                f"narration is limited to {MAX_IN_MEMORY_HOURS:.0f} hours (~1 GB of audio). Write it "
                "to a file instead (sink=WavSink(path)), or split the text into parts.")
    lang, chunks, notes = _prepare(text, speaker, language, normalization, max_seconds)
    joiner = Joiner(sink)

    def progress(chunk: Chunk, report: ChunkReport) -> None:
        if on_progress is not None:
            following = chunks[chunk.index + 1].seconds if chunk.index + 1 < len(chunks) else 0.0
            on_progress(RenderProgress(chunk.index + 1, len(chunks), chunk.text, [report],
                                 joiner.position / SAMPLE_RATE, following))

    if on_progress is not None:
        on_progress(RenderProgress(0, len(chunks), "", [], 0.0, chunks[0].seconds))
    _, reports = _say_chunks(chunks, speaker, joiner, pauses, on_chunk=progress)
    return Narration(joiner.finish(), SAMPLE_RATE, chunks, reports, notes)


# ------------------------------------------------------------------ subtitle-timed track
@dataclass
class LineReport:
    cue: Cue
    placed_at: float                 # seconds where the speech onset landed
    speech_seconds: float            # after any speed-up
    slot_seconds: float              # time available before the next line (or the end)
    speedup: float = 1.0
    late_by: float = 0.0             # onset after the cue time (an earlier line ran long)
    cut_seconds: float = 0.0         # speech cut off at the slot's end
    chunks: list[ChunkReport] = field(default_factory=list)

    def flagged(self) -> str | None:
        if self.cut_seconds:
            return (f"{self.cue.where()} at {format_time(self.cue.start)}: {self.cut_seconds:.2f} s cut "
                    f"off even at {self.speedup:.2f}x; shorten the line or give it more time")
        if self.late_by > 0.02:
            return (f"{self.cue.where()} at {format_time(self.cue.start)} starts {self.late_by:.2f} s "
                    "late: the line before it runs long")
        if self.speech_seconds > self.slot_seconds + RUN_ON_TOLERANCE:
            return (f"{self.cue.where()} at {format_time(self.cue.start)} runs "
                    f"{self.speech_seconds - self.slot_seconds:.2f} s past its time even at "
                    f"{self.speedup:.2f}x")
        return None


@dataclass
class Track:
    audio: torch.Tensor
    sample_rate: int
    lines: list[LineReport]
    notes: list[str] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        return [f for f in (line.flagged() for line in self.lines) if f]


def _speaker_for(cue: Cue, text: str, speakers, default=None) -> tuple[object, str]:
    """(speaker, text) of a cue: one voice for all, or by the cue's WebVTT voice, or by a
    "Name: " the text starts with (a name that has a voice), else `default` if given."""
    if not isinstance(speakers, dict):
        return speakers, text
    by_name = {name.strip().lower(): speaker for name, speaker in speakers.items()}
    if cue.speaker is not None:
        if cue.speaker.strip().lower() in by_name:
            return by_name[cue.speaker.strip().lower()], text
        raise InputError(f"{cue.where()}: unknown speaker {cue.speaker!r}; voices are given for: "
                         f"{', '.join(speakers)}.")
    named = speaker_prefix(text)
    if named and named.group("name").strip().lower() in by_name:
        return by_name[named.group("name").strip().lower()], named.group("text")
    if default is not None:
        return default, text
    if len(speakers) == 1:
        return next(iter(speakers.values())), text
    raise InputError(f"{cue.where()} names no speaker and there are {len(speakers)} voices; mark "
                     "the speaker (WebVTT <v Name>, or 'Name: ' before the text) or give one voice.")


def voice_over(cues: list[Cue], speakers, *, default=None, video_seconds: float | None = None,
               max_speedup: float = 1.3, overflow: str = "shift", fit_to: str = "next_cue",
               min_gap: float = 0.1, normalization: Normalization | None = None,
               max_seconds: float = DEFAULT_MAX_SECONDS,
               on_progress: Callable[[RenderProgress], None] | None = None) -> Track:
    """A track with each cue's speech onset on its start time.

    A line longer than its slot (until the next cue's start minus `min_gap`, or the cue's own
    end with fit_to="cue_end", or the video's end) is sped up, pitch kept, by at most
    `max_speedup`. If it still does not fit: overflow="shift" lets it run on and starts the
    next line late, overflow="cut" fades it out at the slot's end; either way it is flagged.
    The track is exactly `video_seconds` long when given (else it ends with the last line).
    `speakers`: one speaker, or {name: speaker} for cues that name theirs; `default` speaks the
    cues that name no known speaker.
    """
    _check_voice_over(cues, video_seconds, max_speedup, overflow, fit_to)
    spoken, notes = _spoken_cues(cues, speakers, default)
    cues = [cue for cue, _, _ in spoken]
    expected = [expected_seconds(text, _language(text, speaker, None)) for _, speaker, text in spoken] + [0.0]
    if on_progress is not None:
        on_progress(RenderProgress(0, len(cues), "", [], 0.0, expected[0]))
    joiner = Joiner()
    lines: list[LineReport] = []
    for i, (cue, speaker, text) in enumerate(spoken):
        _, chunks, chunk_notes = _prepare(text, speaker, None, normalization, max_seconds)
        notes += [n for n in chunk_notes if n not in notes]
        line_joiner = Joiner()
        _, reports = _say_chunks(chunks, speaker, line_joiner, Pauses())
        piece, onset = edit.trim(line_joiner.finish())
        limit = _slot_end(cues, i, min_gap, fit_to, video_seconds)
        slot = (limit - cue.start) if limit is not None else math.inf
        piece, onset, speech, ratio = _fit_into(piece, onset, slot, max_speedup)
        report = LineReport(cue, cue.start, speech, slot, ratio, chunks=reports)
        _place(joiner, piece, onset, report, _hard_end(limit, video_seconds, overflow))
        lines.append(report)
        if on_progress is not None:
            on_progress(RenderProgress(i + 1, len(cues), cue.text, reports, joiner.position / SAMPLE_RATE,
                                       expected[i + 1]))
    total = round(video_seconds * SAMPLE_RATE) if video_seconds is not None else None
    return Track(joiner.finish(total), SAMPLE_RATE, lines, notes)


def _check_voice_over(cues: list[Cue], video_seconds: float | None, max_speedup: float, overflow: str,
                      fit_to: str) -> None:
    if overflow not in ("shift", "cut"):
        raise InputError(f"overflow must be 'shift' or 'cut' (got {overflow!r}).")
    if fit_to not in ("next_cue", "cue_end"):
        raise InputError(f"fit_to must be 'next_cue' or 'cue_end' (got {fit_to!r}).")
    if not 1.0 <= float(max_speedup) <= 2.0:
        raise InputError(f"max_speedup must be between 1.0 (never speed up) and 2.0 (got {max_speedup}).")
    if not cues:
        raise InputError("No subtitle lines to speak.")
    if video_seconds is not None:
        if not video_seconds > 0 or not math.isfinite(video_seconds):
            raise InputError(f"The video duration must be a positive number of seconds (got {video_seconds}).")
        late = [c for c in cues if c.start >= video_seconds]
        if late:
            raise InputError(f"{late[0].where()} starts at {format_time(late[0].start)}, after the "
                             f"video ends ({format_time(video_seconds)}): {len(late)} cue(s) beyond the end.")


def _spoken_cues(cues: list[Cue], speakers, default) -> tuple[list[tuple[Cue, object, str]], list[str]]:
    """(cue, speaker, text) of the cues with words to say, and a note for each one skipped."""
    spoken, notes = [], []
    for cue in cues:
        text = spoken_text(cue.text)
        if not has_words(clean(text)):
            notes.append(f"{cue.where()} at {format_time(cue.start)} has nothing to say "
                         f"({cue.text!r}); skipped")
            continue
        spoken.append((cue, *_speaker_for(cue, text, speakers, default)))
    if not spoken:
        raise InputError("None of the subtitle lines has words to speak.")
    return spoken, notes


def _slot_end(cues: list[Cue], i: int, min_gap: float, fit_to: str, video_seconds: float | None) -> float | None:
    """Seconds by which cue i's line should be over: the next cue's start less `min_gap` (the
    video's end for the last), or sooner the cue's own end with fit_to="cue_end"; None: no limit."""
    limit = cues[i + 1].start - min_gap if i + 1 < len(cues) else video_seconds
    if fit_to == "cue_end" and cues[i].end is not None:
        limit = min(limit, cues[i].end) if limit is not None else cues[i].end
    return limit


def _fit_into(piece: torch.Tensor, onset: int, slot: float, max_speedup: float):
    """A line's audio sped up (pitch kept, by at most `max_speedup`) so that its speech fits
    `slot` seconds -> (audio, onset sample, seconds of speech, speed-up)."""
    speech = (piece.numel() - onset) / SAMPLE_RATE
    if not speech > slot > 0:
        return piece, onset, speech, 1.0
    # 1% to spare: the onset found again after stretching moves by a few milliseconds
    ratio = min(speech / slot * 1.01, max_speedup)
    piece = edit.speed_up(piece, ratio)
    bounds = edit.speech_bounds(piece)
    onset = bounds[0] if bounds else 0
    return piece, onset, (piece.numel() - onset) / SAMPLE_RATE, ratio


def _hard_end(limit: float | None, video_seconds: float | None, overflow: str) -> int | None:
    """The sample no line may pass: the video's end, and with overflow="cut" the line's slot end."""
    ends = [t for t in (video_seconds, limit if overflow == "cut" else None) if t is not None]
    return min(round(t * SAMPLE_RATE) for t in ends) if ends else None


def _place(joiner: Joiner, piece: torch.Tensor, onset: int, report: LineReport, hard_end: int | None) -> None:
    """Puts a line into the track with its speech onset on its cue's start: a line at 0:00 loses
    the lead-in it has no room for, one after a line that ran on starts late, and past `hard_end`
    it is faded out and cut; `report` records where it landed and what happened to it."""
    sr = SAMPLE_RATE
    at = round(report.cue.start * sr) - onset
    if at < 0:                             # a line at 0:00 has no room for its lead-in
        piece, onset, at = piece[-at:], onset + at, 0
    if at < joiner.position:               # the previous line ran on (overflow="shift")
        report.late_by = (joiner.position - at) / sr
        at = joiner.position
    report.placed_at = (at + onset) / sr
    if hard_end is not None and at + piece.numel() > hard_end:
        keep = max(0, hard_end - at)
        report.cut_seconds = (piece.numel() - keep) / sr
        piece = edit.fade(piece[:keep], in_ms=0, out_ms=30)
        report.speech_seconds = max(0.0, (keep - onset) / sr)
    joiner.place(piece, at)


# ------------------------------------------------------------------ multi-speaker script
@dataclass
class Segment:
    speaker: str
    text: str
    start: int                  # sample in the script's audio
    end: int
    line: int                   # line in the script


@dataclass
class ScriptAudio:
    audio: torch.Tensor
    sample_rate: int
    segments: list[Segment]
    reports: list[list[ChunkReport]]
    notes: list[str] = field(default_factory=list)

    def segment_audio(self, i: int) -> torch.Tensor:
        s = self.segments[i]
        return self.audio[s.start: s.end]


def perform_script(script: str | list[ScriptLine], speakers: dict, *, pauses: Pauses | None = None,
                   normalization: Normalization | None = None, max_seconds: float = DEFAULT_MAX_SECONDS,
                   on_progress: Callable[[RenderProgress], None] | None = None) -> ScriptAudio:
    """A dialogue: every line in its speaker's voice (any mix of built-in, designed and cloned
    voices, each a `Speaker`), pauses between turns, one audio out and a segment per line."""
    if not isinstance(speakers, dict) or not speakers:
        raise InputError("Give the script a voice per speaker: {'Anna': speaker, 'Ben': speaker}.")
    lines = parse_script(script, speakers) if isinstance(script, str) else list(script)
    for line in lines:                         # every line, before anything is said
        check_text(line.text, f"Line {line.line} ({line.speaker})")
    pauses = pauses or Pauses()
    joiner = Joiner()
    segments, reports, notes = [], [], []
    expected = [expected_seconds(line.text, _language(line.text, speakers[line.speaker], None))
                for line in lines] + [0.0]
    if on_progress is not None:
        on_progress(RenderProgress(0, len(lines), "", [], 0.0, expected[0]))
    for i, line in enumerate(lines):
        speaker = speakers[line.speaker]
        _, chunks, chunk_notes = _prepare(line.text, speaker, None, normalization, max_seconds)
        notes += [n for n in chunk_notes if n not in notes]
        style = line.style
        if style and getattr(getattr(speaker, "voice", None), "kind", "custom") != "custom":
            notes.append(f"line {line.line}: the style ({style}) was not applied: only built-in "
                         f"speakers take a style; {line.speaker} has a "
                         f"{speaker.voice.kind} voice.")
            style = None
        start, line_reports = _say_chunks(chunks, speaker, joiner, pauses,
                                          first_gap=pauses.after(line.brk_before), style=style)
        segments.append(Segment(line.speaker, line.text, start, joiner.position, line.line))
        reports.append(line_reports)
        if on_progress is not None:
            on_progress(RenderProgress(i + 1, len(lines), line.text, line_reports, joiner.position / SAMPLE_RATE,
                                 expected[i + 1]))
    return ScriptAudio(joiner.finish(), SAMPLE_RATE, segments, reports, notes)
