"""Audio edits for joining and placing speech: where speech starts and ends, trimming the
silence around it, fades, and speeding a line up without changing its pitch (torchaudio's phase
vocoder). Mono float32 tensors [samples] at the model rate throughout.
"""
from __future__ import annotations

import math

import torch

from ..audio import MODEL_RATE

SAMPLE_RATE = MODEL_RATE
FRAME_MS = 10                   # energy frames for speech detection
SPEECH_DB = -35.0               # a frame is speech if its RMS is within this of the loudest frame's
FLOOR_RMS = 1e-3                # ... and above this absolute level (-60 dBFS): silence stays silence
MIN_SPEECH_MS = 30              # shorter blips (clicks) do not count as a speech onset


def _frame_rms(audio: torch.Tensor, hop: int) -> torch.Tensor:
    n = audio.numel() // hop
    if n == 0:
        return audio.new_zeros(0)
    return audio[: n * hop].view(n, hop).float().pow(2).mean(dim=1).sqrt()


def speech_bounds(audio: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> tuple[int, int] | None:
    """(first, last) sample of speech, or None if the audio is silent. Speech is where the
    10 ms energy rises within 35 dB of the loudest frame, lasting at least 30 ms; the onset is
    refined to the first sample inside that frame above the same level."""
    hop = max(1, sample_rate * FRAME_MS // 1000)
    rms = _frame_rms(audio, hop)
    if rms.numel() == 0:
        return None
    level = max(float(rms.max()) * 10 ** (SPEECH_DB / 20), FLOOR_RMS)
    loud = rms >= level
    need = max(1, MIN_SPEECH_MS // FRAME_MS)
    # frames that start a run of `need` loud frames (a click is shorter)
    runs = loud.float().unfold(0, need, 1).sum(dim=1) >= need if loud.numel() >= need else loud[:0]
    starts = torch.nonzero(runs).flatten()
    if starts.numel() == 0:
        return None
    first_frame = int(starts[0])
    last_frame = int(starts[-1]) + need - 1
    window = audio[max(0, (first_frame - 1) * hop): (first_frame + 1) * hop].abs()
    above = torch.nonzero(window >= level).flatten()
    first = max(0, (first_frame - 1) * hop) + (int(above[0]) if above.numel() else hop)
    return first, min(audio.numel() - 1, (last_frame + 1) * hop - 1)


def trim(audio: torch.Tensor, before_ms: float = 20, after_ms: float = 80,
         sample_rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, int]:
    """Cuts the silence around the speech, keeping a little before the onset (consonants rise
    from below the threshold) and after the end (decays). Returns (audio, onset) with `onset`
    the speech onset's sample in the returned audio. Silent audio -> (empty, 0)."""
    bounds = speech_bounds(audio, sample_rate)
    if bounds is None:
        return audio[:0], 0
    first, last = bounds
    start = max(0, first - round(before_ms * sample_rate / 1000))
    end = min(audio.numel(), last + 1 + round(after_ms * sample_rate / 1000))
    return audio[start:end], first - start


def fade(audio: torch.Tensor, in_ms: float = 5, out_ms: float = 20, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Raised-cosine fades at both ends (no clicks where a piece meets silence)."""
    out = audio.clone()
    for n, at_start in ((round(in_ms * sample_rate / 1000), True), (round(out_ms * sample_rate / 1000), False)):
        n = min(n, out.numel() // 2)
        if n <= 0:
            continue
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, n, dtype=out.dtype))
        if at_start:
            out[:n] *= ramp
        else:
            out[-n:] *= ramp.flip(0)
    return out


def crossfade(a_tail: torch.Tensor, b_head: torch.Tensor) -> torch.Tensor:
    """Equal-length overlap: `a_tail` fades out while `b_head` fades in (equal power)."""
    n = a_tail.numel()
    t = torch.linspace(0, 1, n, dtype=a_tail.dtype)
    return a_tail * torch.cos(t * math.pi / 2) + b_head * torch.sin(t * math.pi / 2)


def speed_up(audio: torch.Tensor, ratio: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Plays `audio` `ratio` times faster with the same pitch (phase vocoder over a 40 ms STFT).
    Length becomes round(len / ratio)."""
    if abs(ratio - 1.0) < 1e-3 or audio.numel() == 0:
        return audio
    import torchaudio.functional as AF
    import torchaudio.transforms as AT

    n_fft = 2 ** math.ceil(math.log2(0.04 * sample_rate))
    hop = n_fft // 4
    spec = AT.Spectrogram(n_fft=n_fft, hop_length=hop, power=None)(audio.float())     # [F, frames]
    advance = torch.linspace(0, math.pi * hop, spec.shape[0])[:, None]
    stretched = AF.phase_vocoder(spec, ratio, advance)
    length = round(audio.numel() / ratio)
    return AT.InverseSpectrogram(n_fft=n_fft, hop_length=hop)(stretched, length=length)
