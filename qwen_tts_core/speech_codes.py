"""Audio <-> speech codes through the speech tokenizer, for callers that hold codes on their own
(the ComfyUI Encode/Decode nodes, saved voices). This module is the one place outside `api.py`
that calls `qwen_tts_core.codec`; everything here takes the tokenizer object that
`SpeechTokenizer.from_pretrained` returns (also `QwenTTS.codec`).

    tok = load_speech_tokenizer("models/qwen-tts/Qwen3-TTS-Tokenizer-12Hz")
    codes = encode(tok, waveform, 44100)           # [frames, 16] int64
    audio = decode(tok, [codes])[0]                # [samples] float32 at 24 kHz
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import audio as audio_io
from .codec.tokenizer import CODEBOOK_SIZE, NUM_CODEBOOKS, codes_out_of_range, tokenizer_folder
from .codec.tokenizer import MODEL_TYPE as TOKENIZER_MODEL_TYPE  # noqa: F401  (its name here, for the nodes)
from .errors import InputError
SAMPLES_PER_FRAME = 1920
SAMPLE_RATE = audio_io.MODEL_RATE


@dataclass
class SpeechCodes:
    """Generated or encoded codes of a batch: per item [frames, 16] int64, and per item the
    reference codes an in-context clone was generated after (decoded in front as context for
    the causal decoder, then cut off), or None."""
    items: list[torch.Tensor]
    context: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self):
        if not self.context:
            self.context = [None] * len(self.items)
        if len(self.context) != len(self.items):
            raise InputError("SpeechCodes: one context entry per item is needed.")

    @property
    def frames(self) -> list[int]:
        return [int(c.shape[0]) for c in self.items]

    def seconds(self) -> list[float]:
        return [n * SAMPLES_PER_FRAME / SAMPLE_RATE for n in self.frames]


def load_speech_tokenizer(path: str | Path, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu"):
    from .codec import SpeechTokenizer

    return SpeechTokenizer.from_pretrained(tokenizer_folder(path), dtype=dtype, device=device)


def modules(tokenizer) -> nn.Module:
    """The torch modules of a tokenizer (for moving it between devices as one unit)."""
    if isinstance(tokenizer, nn.Module):
        return tokenizer
    found = {k: v for k, v in vars(tokenizer).items() if isinstance(v, nn.Module)}
    if not found:
        raise TypeError(f"{type(tokenizer).__name__} holds no torch modules.")
    return nn.ModuleDict(found)


def follow_modules(tokenizer) -> None:
    """After its modules were moved (e.g. by ComfyUI's offloading), point the tokenizer's own
    `device` (where it puts inputs) at them again."""
    if isinstance(tokenizer, nn.Module) or not hasattr(tokenizer, "device"):
        return
    for p in modules(tokenizer).parameters():
        tokenizer.device = p.device
        return


def check_codes(codes: torch.Tensor, what: str = "codes") -> torch.Tensor:
    """[frames, 16] integer codes in 0..2047 -> int64 (cpu)."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] != NUM_CODEBOOKS:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise InputError(f"The {what} have shape {shape}; expected [frames, {NUM_CODEBOOKS}].")
    if codes.is_floating_point() or codes.is_complex():
        raise InputError(f"The {what} must be integers, got {codes.dtype}.")
    if codes_out_of_range(codes) is not None:
        raise InputError(f"The {what} hold values outside 0..{CODEBOOK_SIZE - 1}; they are not "
                         "Qwen3-TTS 12 Hz speech codes.")
    return codes.to(torch.int64).cpu()


def encode(tokenizer, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """One clip (any layout, rate, channel count) -> codes [frames, 16] int64 (cpu)."""
    wav = audio_io.prepare(waveform, sample_rate, "audio to encode")
    if wav.numel() < SAMPLES_PER_FRAME:
        raise InputError(f"The audio to encode is {wav.numel() / SAMPLE_RATE * 1000:.0f} ms long; "
                         f"one code frame needs {SAMPLES_PER_FRAME / SAMPLE_RATE * 1000:.0f} ms.")
    codes, lengths = tokenizer.encode([wav], [SAMPLE_RATE])
    return codes[0, :, : int(lengths[0])].t().contiguous().to(torch.int64).cpu()


def decode(tokenizer, codes: SpeechCodes | Sequence[torch.Tensor],
           on_chunk: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """Codes -> per item [samples] float32 at 24 kHz. Context codes (in-context clones) are
    decoded in front and their share of the audio cut off (`QwenTTS.decode` comes here).
    `on_chunk(frames_done, frames_total)` runs before each decoder chunk, the first time with
    0 done (raise to stop)."""
    if not isinstance(codes, SpeechCodes):
        codes = SpeechCodes(list(codes))
    items = [check_codes(c) for c in codes.items]
    full = [torch.cat([check_codes(ctx, "context codes"), c]) if ctx is not None else c
            for c, ctx in zip(items, codes.context)]
    if any(f.shape[0] == 0 for f in full):
        raise InputError("Nothing to decode: an item has 0 frames.")
    # codebook-major [16, frames]: the tokenizer reads a [16, 16] item that way, so a 16-frame
    # item passed time-major would be decoded transposed
    wavs = tokenizer.decode([f.t() for f in full], on_chunk=on_chunk)
    out = []
    for wav, c, f in zip(wavs, items, full):
        wav = wav.reshape(-1).float().cpu()
        # the official qwen-tts float cut, int(ref_len / total_len * wav_len): it keeps one
        # reference sample more than ref_len * 1920 for some lengths (kept for parity)
        cut = int((f.shape[0] - c.shape[0]) / f.shape[0] * wav.shape[-1])
        out.append(wav[cut:])
    return out
