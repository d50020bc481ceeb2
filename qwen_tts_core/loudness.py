"""Output loudness: integrated loudness per ITU-R BS.1770-4 (EBU R128 uses the same meter) brought
to a target, with a true-peak ceiling.

The meter is pyloudnorm's (K-weighting, 400 ms blocks with 75 % overlap, BS.1770-4). pyloudnorm works
on float64 copies of the whole signal (about 24 bytes per sample and channel at its peak), so long
audio is measured in one-minute pieces: each piece is run through pyloudnorm with a second of the
audio before it (the filters settle), its blocks are kept, and the two gates of BS.1770-4 (absolute
-70 LUFS, relative -10 LU) are applied over all the blocks at the end: the same arithmetic as
pyloudnorm's `integrated_loudness`, which tests/test_loudness.py checks it against.

True peak (BS.1770-4 Annex 2) is the peak of the signal oversampled to at least 192 kHz (4x at
48 kHz, 8x at 24 kHz; torchaudio's resampler). Where the gain that reaches the target would put a
peak above the ceiling, a look-ahead limiter lowers the gain around that peak only: the gain
ramps down over the 20 ms before the peak and back up over the 20 ms after it (slow enough not to
distort), and the gain is then raised again until the loudness is on target. Everything is done
piecewise, so a two-hour track needs about twice its own size in memory.

`spans` (sample ranges, e.g. the lines of a script) set each span to the target on its own ("per
line": speakers even out); without them the track is one span and keeps its inner dynamics.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .errors import InputError

# Names as the nodes show them; saved workflows store these strings, so they stay as they are.
PRESETS: dict[str, float | None] = {
    "off": None,
    "-16 LUFS (web, podcasts)": -16.0,
    "-23 LUFS (broadcast, EBU R128)": -23.0,
    "-14 LUFS (streaming)": -14.0,
}
TRUE_PEAK_CEILING = -1.0          # dBTP, the EBU R128 and streaming services' ceiling

BLOCK_SECONDS = 0.4               # BS.1770 gating block
HOP_SECONDS = 0.1                 # 75 % overlap
ABSOLUTE_GATE = -70.0             # LUFS
RELATIVE_GATE = -10.0             # LU below the absolute-gated loudness
MIN_TARGET, MAX_TARGET = -40.0, -5.0

PIECE_BLOCKS = 600                # blocks measured per pyloudnorm call (one minute)
SETTLE_BLOCKS = 10                # audio before a piece (1 s) for the filters to settle
PEAK_PIECE = 1 << 18              # samples oversampled at a time
PEAK_MARGIN = 64                  # samples of context on each side of an oversampled piece

LIMITER_BLOCK_SECONDS = 0.001     # the limiter's gain moves in 1 ms steps
LIMITER_RAMP_SECONDS = 0.02       # down over 20 ms before a peak, up over 20 ms after it
LIMITER_HEADROOM_DB = 0.1         # the limiter aims this far below the ceiling
SPAN_RAMP_SECONDS = 0.05          # per-line gains change over 50 ms (in the pauses where possible)
TOLERANCE_LU = 0.05
MAX_PASSES = 6
QUIET_GAIN_DB = 30.0              # a larger raise is noted: it raises the noise as much

Check = Callable[[], None]


def target_of(preset: str) -> float | None:
    """The target in LUFS of a preset name (None: off)."""
    if preset not in PRESETS:
        raise InputError(f"Unknown loudness {preset!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[preset]


def oversampling(sample_rate: int) -> int:
    return min(16, max(4, math.ceil(192000 / sample_rate)))


# --------------------------------------------------------------------------- input
def _prepare(audio, sample_rate, what: str) -> tuple[torch.Tensor, int]:
    """[T] or [C, T] float audio -> ([C, T] float32 on the CPU, rate), or a clear InputError."""
    if not isinstance(audio, torch.Tensor):
        raise InputError(f"The {what} must be a tensor, got {type(audio).__name__}.")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate != int(sample_rate) \
            or not 1000 <= int(sample_rate) <= 768000:
        raise InputError(f"The {what} has no plausible sample rate ({sample_rate!r}).")
    x = audio.detach()
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise InputError(f"The {what} has shape {tuple(audio.shape)}; expected [samples] or [channels, samples].")
    if not x.is_floating_point():
        raise InputError(f"The {what} holds {x.dtype} samples; expected float audio in [-1, 1].")
    if x.shape[0] > 5:
        raise InputError(f"The {what} has {x.shape[0]} channels; loudness per BS.1770 is defined for up to 5.")
    x = x.to("cpu", torch.float32)
    bad = sum(int((~torch.isfinite(x[:, i:i + (1 << 20)])).sum()) for i in range(0, x.shape[1], 1 << 20))
    if bad:
        raise InputError(f"The {what} contains {bad} NaN/inf samples; it is damaged. Re-export or regenerate it.")
    if x.shape[1] < round(BLOCK_SECONDS * sample_rate):
        raise InputError(
            f"The {what} is {x.shape[1] / sample_rate * 1000:.0f} ms long: too short to measure. Loudness "
            f"per ITU-R BS.1770 is measured over {BLOCK_SECONDS * 1000:.0f} ms blocks; join short clips "
            "into one before normalising, or leave loudness off.")
    return x, int(sample_rate)


# --------------------------------------------------------------------------- meter
def _block_loudness(x: torch.Tensor, rate: int, check: Check) -> np.ndarray:
    """Loudness (LUFS) of every 400 ms block of [C, T] audio, as pyloudnorm's meter gives them,
    measured a minute at a time."""
    import pyloudnorm

    meter = pyloudnorm.Meter(rate)          # K-weighting, 400 ms blocks, 75 % overlap (BS.1770-4)
    hop, block = round(HOP_SECONDS * rate), round(BLOCK_SECONDS * rate)
    n = x.shape[1]
    blocks, start = [], 0
    while True:
        check()
        settle = min(start, SETTLE_BLOCKS * hop)
        end = start + (PIECE_BLOCKS - 1) * hop + block
        last = end >= n
        piece = x[:, start - settle: n if last else end].double().t().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)        # log10(0) of silent blocks
            meter.integrated_loudness(piece)
        blocks.append(np.asarray(meter.blockwise_loudness, dtype=np.float64)[settle // hop:])
        if last:
            return np.concatenate(blocks)
        start += PIECE_BLOCKS * hop


def _gated(block_lufs: np.ndarray) -> float:
    """Integrated loudness from block loudnesses: BS.1770-4's absolute and relative gates."""
    above = block_lufs[block_lufs >= ABSOLUTE_GATE]
    if above.size == 0:
        return -math.inf
    power = 10.0 ** ((above + 0.691) / 10.0)
    relative = -0.691 + 10.0 * math.log10(power.mean()) + RELATIVE_GATE
    kept = power[(above > relative) & (above > ABSOLUTE_GATE)]
    return -0.691 + 10.0 * math.log10(kept.mean()) if kept.size else -math.inf


def _measure(x: torch.Tensor, rate: int, check: Check) -> float:
    return _gated(_block_loudness(x, rate, check))


def integrated_loudness(audio, sample_rate, check_interrupt: Check | None = None) -> float:
    """Integrated loudness in LUFS (-inf when every block is below -70 LUFS)."""
    x, rate = _prepare(audio, sample_rate, "audio")
    return _measure(x, rate, check_interrupt or (lambda: None))


# --------------------------------------------------------------------------- true peak
def _peak_blocks(x: torch.Tensor, rate: int, block: int, check: Check) -> torch.Tensor:
    """The true peak (linear) within each `block` samples of [C, T] audio: the oversampled
    signal's largest magnitude over the channels."""
    import torchaudio.functional as AF

    factor = oversampling(rate)
    n = x.shape[1]
    blocks = math.ceil(n / block)
    peaks = torch.zeros(blocks)
    step = max(block, PEAK_PIECE // block * block)
    for a in range(0, n, step):
        check()
        b = min(n, a + step)
        lo, hi = max(0, a - PEAK_MARGIN), min(n, b + PEAK_MARGIN)
        up = AF.resample(x[:, lo:hi], 1, factor)[:, (a - lo) * factor:(b - lo) * factor].abs().amax(0)
        k = (b - a) // block
        if k:
            peaks[a // block: a // block + k] = up[: k * block * factor].view(k, block * factor).amax(1)
        if k * block < b - a:                     # the last, shorter block
            peaks[a // block + k] = up[k * block * factor:].max()
    return peaks


def true_peak(audio, sample_rate, check_interrupt: Check | None = None) -> float:
    """True peak in dBTP (-inf for digital silence)."""
    x, rate = _prepare(audio, sample_rate, "audio")
    return _db(float(_peak_blocks(x, rate, PEAK_PIECE, check_interrupt or (lambda: None)).max()))


def _db(linear: float) -> float:
    return 20.0 * math.log10(linear) if linear > 0 else -math.inf


# --------------------------------------------------------------------------- gain
def _span_curve(spans: list[tuple[int, int]], gains_db: list[float], blocks: int, block: int) -> torch.Tensor:
    """Linear gain per limiter block: each span's gain inside it, moving linearly between spans
    (over the pause between them, or over SPAN_RAMP_SECONDS where they touch)."""
    ramp = SPAN_RAMP_SECONDS / LIMITER_BLOCK_SECONDS
    xs, ys = [], []
    for (a, b), g in zip(spans, gains_db):
        ka, kb = a / block, b / block
        r = min(ramp / 2, (kb - ka) / 4)
        xs += [ka + r, kb - r]
        ys += [g, g]
    centres = np.arange(blocks) + 0.5
    return torch.from_numpy(10.0 ** (np.interp(centres, xs, ys) / 20.0)).float()


def limiter_gains(peaks: torch.Tensor, ceiling: float, ramp_blocks: int) -> torch.Tensor:
    """Gain per block (<= 1) that keeps every block's peak at most `ceiling`: the needed gain's
    minimum over +-ramp, averaged over +-ramp. Each value of the average is a minimum over a
    window that contains the block itself, so the result never exceeds what the block needs."""
    need = (ceiling / peaks.clamp(min=1e-12)).clamp(max=1.0)[None, None]
    width = 2 * ramp_blocks + 1
    lowest = -torch.nn.functional.max_pool1d(-need, width, 1, ramp_blocks)
    return torch.nn.functional.avg_pool1d(lowest, width, 1, ramp_blocks, count_include_pad=False)[0, 0]


def _apply(x: torch.Tensor, gain: torch.Tensor, block: int, out: torch.Tensor, check: Check) -> None:
    """out = x times the per-block gain, interpolated linearly between block centres."""
    n = x.shape[1]
    step = max(1, PEAK_PIECE // block)
    for k0 in range(0, gain.numel(), step):
        check()
        k1 = min(gain.numel(), k0 + step)
        lo, hi = max(0, k0 - 1), min(gain.numel(), k1 + 1)
        g = torch.nn.functional.interpolate(gain[lo:hi][None, None], scale_factor=block, mode="linear",
                                            align_corners=False)[0, 0]
        a, b = k0 * block, min(n, k1 * block)
        out[:, a:b] = x[:, a:b] * g[(k0 - lo) * block:(k0 - lo) * block + (b - a)]


# --------------------------------------------------------------------------- normalise
@dataclass
class Normalized:
    audio: torch.Tensor              # [C, T] float32
    sample_rate: int
    target: float                    # LUFS
    before: float                    # integrated loudness in, LUFS
    after: float                     # integrated loudness out, LUFS
    true_peak: float                 # dBTP out
    ceiling: float                   # dBTP
    limited_db: float = 0.0          # the most the limiter took off a peak
    span_levels: list[float] = field(default_factory=list)     # per span, LUFS out (nan: too short)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = (f"loudness {self.before:.1f} -> {self.after:.1f} LUFS (target {self.target:.0f}), true peak "
                f"{self.true_peak:.1f} dBTP (ceiling {self.ceiling:.1f})")
        if self.limited_db > 0.05:
            line += f"; peaks limited by up to {self.limited_db:.1f} dB"
        if len(self.span_levels) > 1:
            measured = [v for v in self.span_levels if not math.isnan(v)]
            line += (f"; {len(self.span_levels)} lines, each at {min(measured):.1f} to {max(measured):.1f} LUFS"
                     if measured else "")
        return "\n".join([line] + self.notes)


def normalize(audio, sample_rate, target: float, *, ceiling: float = TRUE_PEAK_CEILING,
              spans: list[tuple[int, int]] | None = None, check_interrupt: Check | None = None,
              what: str = "audio") -> Normalized:
    """`audio` ([T] or [C, T]) brought to `target` LUFS integrated loudness with its true peak at
    most `ceiling` dBTP. `spans`: sample ranges each brought to the target on its own (a span
    shorter than a 400 ms block gets the whole track's gain). `check_interrupt` is called
    between pieces and may raise to stop."""
    x, rate = _prepare(audio, sample_rate, what)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not MIN_TARGET <= target <= MAX_TARGET:
        raise InputError(f"The loudness target must be between {MIN_TARGET:.0f} and {MAX_TARGET:.0f} LUFS (got {target!r}).")
    if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) or not -20.0 <= ceiling <= 0.0:
        raise InputError(f"The true-peak ceiling must be between -20 and 0 dBTP (got {ceiling!r}).")
    check = check_interrupt or (lambda: None)
    n = x.shape[1]
    before = _measure(x, rate, check)
    if before == -math.inf:
        raise InputError(f"The {what} is silent (every 400 ms block is below {ABSOLUTE_GATE:.0f} LUFS, "
                         "the gate of ITU-R BS.1770): there is no loudness to normalise.")
    spans = _check_spans(spans, n) if spans is not None else [(0, n)]
    notes = []
    levels = []
    for i, (a, b) in enumerate(spans):
        level = _measure(x[:, a:b], rate, check) if b - a >= round(BLOCK_SECONDS * rate) else -math.inf
        levels.append(level)
    fallback = target - before
    gains = [target - level if level > -math.inf else fallback for level in levels]
    unmeasured = [i + 1 for i, level in enumerate(levels) if level == -math.inf]
    if unmeasured and len(spans) > 1:
        notes.append(f"line(s) {', '.join(map(str, unmeasured))}: too short or too quiet to measure on "
                     "their own; given the whole track's gain")
    if max(gains) > QUIET_GAIN_DB:
        notes.append(f"the audio was very quiet ({min(levels):.1f} LUFS): raised by {max(gains):.0f} dB, "
                     "which raises its noise as much")

    block = max(1, round(LIMITER_BLOCK_SECONDS * rate))
    ramp = max(2, round(LIMITER_RAMP_SECONDS / LIMITER_BLOCK_SECONDS))
    peaks = _peak_blocks(x, rate, block, check)
    limit_at = 10.0 ** ((ceiling - LIMITER_HEADROOM_DB) / 20.0)
    out = torch.empty_like(x)
    measured = set(i for i, level in enumerate(levels) if level > -math.inf)
    last: dict[int, tuple[float, float]] = {}       # span -> (gain, loudness) of the pass before
    for _ in range(MAX_PASSES):
        curve = _span_curve(spans, gains, peaks.numel(), block)
        # the largest gain of the block and its neighbours: the gain between two block centres
        # is interpolated, and must not carry a louder neighbour's peak over the ceiling
        near = torch.nn.functional.max_pool1d(curve[None, None], 3, 1, 1)[0, 0]
        limiter = limiter_gains(peaks * near, limit_at, ramp)
        _apply(x, curve * limiter, block, out, check)
        results = {i: _measure(out[:, a:b], rate, check) for i, (a, b) in enumerate(spans) if i in measured}
        if all(abs(target - v) <= TOLERANCE_LU for v in results.values()):
            break
        for i, v in results.items():
            # where the limiter works, a dB more gain gives less than a dB more loudness: the
            # step follows the slope seen between the last two passes (secant)
            slope = 1.0
            if i in last and abs(gains[i] - last[i][0]) > 1e-6:
                slope = min(1.0, max(0.2, (v - last[i][1]) / (gains[i] - last[i][0])))
            last[i] = (gains[i], v)
            gains[i] += (target - v) / slope
    limited = -_db(float(limiter.min()))
    peak = _db(float(_peak_blocks(out, rate, PEAK_PIECE, check).max()))
    if peak > ceiling:          # what the limiter's 1 ms steps could not catch: a last, tiny trim
        out *= 10.0 ** ((ceiling - peak - 0.01) / 20.0)
        peak = ceiling - 0.01
    after = _measure(out, rate, check)
    span_levels = [_measure(out[:, a:b], rate, check) if i in measured else math.nan
                   for i, (a, b) in enumerate(spans)]
    if abs(after - target) > 0.5 and len(spans) == 1:
        notes.append(f"the target was not reached ({after:.1f} LUFS): the peaks allow no more without "
                     "limiting harder than this limiter does")
    return Normalized(out, rate, float(target), before, after, peak, float(ceiling), max(0.0, limited),
                      span_levels, notes)


def _check_spans(spans, n: int) -> list[tuple[int, int]]:
    out = []
    for s in spans:
        try:
            a, b = int(s[0]), int(s[1])
        except (TypeError, ValueError, IndexError):
            raise InputError(f"A line span must be (start, end) in samples, got {s!r}.") from None
        a, b = max(0, a), min(n, b)
        if b > a:
            out.append((a, b))
    out.sort()
    for (a0, b0), (a1, b1) in zip(out, out[1:]):
        if a1 < b0:
            raise InputError(f"Line spans overlap ({a0}-{b0} and {a1}-{b1} samples).")
    if not out:
        raise InputError("No line span lies within the audio.")
    return out
