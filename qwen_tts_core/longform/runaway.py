"""Run-away generations, caught while they happen: the model repeats a pattern, holds one
sound (silence or hum), wanders among a handful of codes (noise), or never says end-of-speech.

The checks read codebook 0 (the semantic codebook): in speech it changes almost every frame, so
exact repetition or a tiny vocabulary over seconds is a loop, not speech. Each frame costs
O(max_period) integer comparisons. `RunawayDetector` is an `on_frame` callback for
`QwenTTS.generate` (one item at a time): it returns True to end the generation, keeping the
frames so far, and records what it found and how many frames are worth keeping.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from ..duration import FRAME_RATE


@dataclass(frozen=True)
class RunawayLimits:
    max_period: int = 16            # longest repeating pattern looked for (frames, ~1.3 s)
    repeat_seconds: float = 2.4     # a pattern repeated over this long is a loop
    hold_seconds: float = 3.0       # one or two codes alternating this long: stuck (silence/hum)
    window_seconds: float = 4.0     # ... and over this window,
    min_distinct: int = 5           # fewer distinct codes than this is noise or silence, not speech
    keep_pause_seconds: float = 0.5 # of a held sound, this much is kept (it may be a real pause)

    def frames(self, seconds: float) -> int:
        return max(1, round(seconds * FRAME_RATE))


@dataclass(frozen=True)
class Runaway:
    reason: str          # "repeating pattern", "stuck on one sound", "few distinct codes", ...
    frame: int           # frame at which it was found
    keep: int            # frames before it began: the part worth keeping
    detail: str = ""

    def describe(self) -> str:
        where = f" from {self.keep / FRAME_RATE:.1f} s" if self.keep < self.frame else ""
        return f"{self.reason}{where}" + (f" ({self.detail})" if self.detail else "")


class RunawayDetector:
    """Feed it codebook-0 values one frame at a time (or use it as `on_frame`)."""

    def __init__(self, limits: RunawayLimits | None = None):
        self.limits = limits or RunawayLimits()
        lim = self.limits
        self._history: deque[int] = deque(maxlen=lim.max_period + 1)
        self._runs = [0] * (lim.max_period + 1)      # runs[p]: frames in a row with c[t] == c[t-p]
        self._window: deque[int] = deque()
        self._counts: Counter = Counter()
        self._repeat = lim.frames(lim.repeat_seconds)
        self._hold = lim.frames(lim.hold_seconds)
        self._window_len = lim.frames(lim.window_seconds)
        self.frames = 0
        self.found: Runaway | None = None

    def __call__(self, index: int, frame) -> bool:
        """`on_frame` for a batch of one: frame [1, 16]. True ends generation."""
        if frame.shape[0] != 1:
            raise ValueError("RunawayDetector watches one generation at a time (batch of 1).")
        return self.feed(int(frame[0, 0])) is not None

    def feed(self, code: int) -> Runaway | None:
        if self.found is not None:
            return self.found
        t, lim = self.frames, self.limits
        self.frames += 1
        hist = self._history
        for p in range(1, lim.max_period + 1):
            same = len(hist) >= p and hist[-p] == code
            self._runs[p] = self._runs[p] + 1 if same else 0
        hist.append(code)
        self._window.append(code)
        self._counts[code] += 1
        if len(self._window) > self._window_len:
            old = self._window.popleft()
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]

        # frames a hold (one code, or two alternating) explains: such a span is judged as a hold
        # below, not as a repeating pattern (without periods 1 and 2 there is nothing to judge)
        hold_span = max(self._runs[1] + 1, self._runs[2] + 2) if lim.max_period >= 2 else 0
        for p in range(1, lim.max_period + 1):          # the shortest period explains a loop best
            span = self._runs[p] + p                     # frames covered by the repetition
            start = t + 1 - span
            if p <= 2 and span >= self._hold:
                keep = start + lim.frames(lim.keep_pause_seconds)
                what = "one code" if p == 1 else "two codes alternating"
                self.found = Runaway("stuck on one sound", t, keep, f"{what} for {span / FRAME_RATE:.1f} s")
                break
            held = hold_span >= span                     # a hold, judged above
            if p > 2 and span >= max(self._repeat, 3 * p) and not held:
                self.found = Runaway("repeating pattern", t, start + p,
                                     f"{p} frames repeated for {span / FRAME_RATE:.1f} s")
                break
        if self.found is None and len(self._window) == self._window_len and len(self._counts) < lim.min_distinct:
            self.found = Runaway("few distinct codes", t, t + 1 - self._window_len,
                                 f"{len(self._counts)} codes in {lim.window_seconds:.0f} s")
        return self.found


def find_runaway(codes, limits: RunawayLimits | None = None) -> Runaway | None:
    """Checks finished codes [T, 16] (or codebook 0 [T]) the same way."""
    detector = RunawayDetector(limits)
    column = codes[:, 0] if codes.dim() == 2 else codes
    for code in column.tolist():
        if detector.feed(code) is not None:
            break
    return detector.found
