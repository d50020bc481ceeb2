"""Audio input handling: any layout, channel count and sample rate in; mono float32 at the
model rate out, with clear errors for audio that cannot be used. Resampling is torchaudio's."""
from __future__ import annotations

import logging
import wave
from pathlib import Path

import torch

from .errors import InputError

log = logging.getLogger("qwen_tts_core")

MODEL_RATE = 24000
SILENCE_PEAK = 1e-4          # peak amplitude (DC offset removed) under which a clip counts as silent
FULL_SCALE = 0.99            # a sample at least this loud (of 1.0, or of a float clip's higher peak) is clipped
MAX_CLIPPED_SHARE = 0.01     # more clipped samples than this share: too distorted to clone from
REFERENCE_MIN_SECONDS = 1.0
REFERENCE_MAX_SECONDS = 60.0


def to_mono(waveform: torch.Tensor, what: str = "audio") -> torch.Tensor:
    """[T], [C, T] or [1, C, T] (ComfyUI AUDIO) -> [T] float32, channels averaged."""
    if not isinstance(waveform, torch.Tensor):
        raise InputError(f"The {what} must be a tensor, got {type(waveform).__name__}.")
    x = waveform.detach()
    if x.dim() == 3:
        if x.shape[0] != 1:
            raise InputError(f"The {what} holds a batch of {x.shape[0]} clips; give one clip.")
        x = x[0]
    if x.dim() == 2:
        x = x.float().mean(dim=0)
    if x.dim() != 1:
        raise InputError(f"The {what} has shape {tuple(waveform.shape)}; expected [samples], "
                         "[channels, samples] or [1, channels, samples].")
    return x.float()


def resample(x: torch.Tensor, sample_rate: int, target_rate: int = MODEL_RATE) -> torch.Tensor:
    """[..., T] at `sample_rate` -> [..., T'] at `target_rate` (torchaudio sinc interpolation)."""
    if sample_rate == target_rate:
        return x
    import torchaudio.functional as AF

    return AF.resample(x, int(sample_rate), int(target_rate))


def prepare(waveform: torch.Tensor, sample_rate: int, what: str = "audio",
            target_rate: int = MODEL_RATE) -> torch.Tensor:
    """Any audio -> mono float32 [T] at `target_rate`. Raises InputError for empty or
    non-finite audio and impossible sample rates."""
    try:
        sample_rate = int(sample_rate)
    except (TypeError, ValueError):
        raise InputError(f"The {what} has no valid sample rate ({sample_rate!r}).") from None
    if not 1000 <= sample_rate <= 768000:
        raise InputError(f"The {what} sample rate {sample_rate} Hz is not plausible.")
    x = to_mono(waveform, what)
    if x.numel() == 0:
        raise InputError(f"The {what} is empty (0 samples).")
    # checked in blocks: isfinite over a whole hour of audio would need ~2x its size at once
    bad = sum(int((~torch.isfinite(x[i:i + (1 << 20)])).sum()) for i in range(0, x.numel(), 1 << 20))
    if bad:
        raise InputError(f"The {what} contains {bad} NaN/inf samples; it is damaged. "
                         "Re-export or re-record it.")
    return resample(x, sample_rate, target_rate)


def prepare_reference(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Reference audio for voice cloning: mono 24 kHz, 1..60 s, not silent, not badly clipped.
    Longer clips are trimmed to 60 s with a warning; peaks above 1 are scaled down."""
    x = prepare(waveform, sample_rate, "reference audio")
    seconds = x.numel() / MODEL_RATE
    if seconds < REFERENCE_MIN_SECONDS:
        raise InputError(f"The reference audio is {seconds:.2f} s long; voice cloning needs at "
                         f"least {REFERENCE_MIN_SECONDS:.0f} s (3-10 s of clean speech works best).")
    peak = float(x.abs().max())
    if seconds > REFERENCE_MAX_SECONDS:
        log.warning("Reference audio is %.1f s long; using its first %.0f s.", seconds, REFERENCE_MAX_SECONDS)
        x = x[: int(REFERENCE_MAX_SECONDS * MODEL_RATE)]
    # a constant offset (DC) is not sound: a clip that is only an offset is as silent as zeros
    if float((x - x.mean()).abs().max()) < SILENCE_PEAK:
        raise InputError("The reference audio is silent (or only a constant DC offset); give a clip "
                         "of someone speaking.")
    clipped = clipped_share(waveform, int(sample_rate), REFERENCE_MAX_SECONDS)
    if clipped > MAX_CLIPPED_SHARE:
        raise InputError(f"The reference audio is badly clipped: {clipped:.1%} of its samples are at full "
                         f"scale (more than {MAX_CLIPPED_SHARE:.0%} distorts the cloned voice). Record or "
                         "export it again at a lower level, or choose a cleaner clip.")
    if peak > 1.0:
        x = x / peak
    return x


def clipped_share(waveform: torch.Tensor, sample_rate: int, seconds: float) -> float:
    """Share of the samples (every channel, the first `seconds`, before any resampling, which
    would smear flat tops) at full scale: at least FULL_SCALE of 1.0, or of the peak of float
    audio that goes beyond 1 (clipped by a limiter, then scaled)."""
    x = waveform.detach()[..., : int(seconds * sample_rate)].float().abs()
    top = FULL_SCALE * max(1.0, float(x.max()))
    return float((x >= top).sum()) / max(1, x.numel())


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """PCM WAV file -> ([C, T] float32 in [-1, 1], sample rate). Standard library only."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
        raw = w.readframes(n)
    if width == 2:
        pcm = torch.frombuffer(bytearray(raw), dtype=torch.int16).float() / 32768.0
    elif width == 4:
        pcm = torch.frombuffer(bytearray(raw), dtype=torch.int32).float() / 2147483648.0
    elif width == 1:
        pcm = (torch.frombuffer(bytearray(raw), dtype=torch.uint8).float() - 128.0) / 128.0
    else:
        raise InputError(f"{path}: {8 * width}-bit WAV is not supported; use 16-bit PCM.")
    return pcm.view(-1, channels).t().contiguous(), rate


def pcm16(x: torch.Tensor) -> torch.Tensor:
    """Float audio in [-1, 1] (clipped outside) -> int16 samples, same shape, on the CPU."""
    return (x.detach().float().cpu().clamp(-1, 1) * 32767.0).round().to(torch.int16)


def write_wav(path: str | Path, audio: torch.Tensor, sample_rate: int = MODEL_RATE) -> None:
    """[T] or [C, T] float audio -> 16-bit PCM WAV."""
    x = audio.detach().float().cpu()
    if x.dim() == 1:
        x = x[None]
    pcm = pcm16(x).t().contiguous()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.numpy().tobytes())
