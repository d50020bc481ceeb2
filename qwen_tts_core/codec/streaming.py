"""Streaming decode: frames in as the talker makes them, finished audio out.

The decoder is causal with no lookahead, so every sample of a frame is final once the frame is
decoded: the first audio comes after 1 frame (80 ms at 12.5 Hz). The state between calls is
explicit (conv left contexts, the transformer's position and sliding-window keys/values), so the
joined outputs equal `SpeechTokenizer.decode` of the whole sequence for any chunking.
"""
from __future__ import annotations

from typing import Callable

import torch


def decode_chunks(decoder, codes: torch.Tensor, state: dict, chunk_frames: int,
                  samples_per_frame: int, on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """codes [B, 16, n] through the decoder's causal `state` (updated), `chunk_frames` frames per
    call -> float32 CPU audio [B, n * samples_per_frame]. Used by SpeechTokenizer.decode (mode
    "exact") and by StreamingDecoder. `on_chunk(frames_done, frames_total)` runs before each
    call (the first with 0 done); it may raise to stop (interrupt), and everything the decode holds is then freed."""
    spf, n = samples_per_frame, codes.shape[-1]
    out = torch.empty(codes.shape[0], n * spf, dtype=torch.float32)
    with torch.inference_mode():
        for i in range(0, n, chunk_frames):
            if on_chunk is not None:
                on_chunk(i, n)
            out[:, i * spf:(i + chunk_frames) * spf] = decoder(codes[..., i:i + chunk_frames], state).float().cpu()
    return out


class StreamingDecoder:
    """push(codes) -> audio of the frames decoded now; flush() -> audio of the frames still held.

    chunk_frames: frames decoded per decoder call. 1 gives the lowest latency; larger chunks are
    faster per frame, and push() holds frames back until a whole chunk is there.
    To continue from reference audio (voice cloning), push its codes first and drop that audio.
    """

    def __init__(self, tokenizer, batch_size: int = 1, chunk_frames: int = 1):
        if batch_size < 1 or chunk_frames < 1:
            raise ValueError("batch_size and chunk_frames must be >= 1")
        self.tokenizer, self.decoder = tokenizer, tokenizer.require_decoder()
        self.batch_size, self.chunk_frames = batch_size, chunk_frames
        self.reset()

    def reset(self) -> None:
        self.state: dict = {}
        self.pending = torch.zeros(self.batch_size, self.tokenizer.num_codebooks, 0,
                                   dtype=torch.long, device=self.tokenizer.device)
        self.frames_decoded = 0

    def push(self, codes) -> torch.Tensor:
        """codes [B, 16, n] (or [16, n] / [n, 16] for one stream) -> float32 CPU audio
        [B, m * 1920], m = the frames decoded by this call (whole chunks only)."""
        self.pending = torch.cat([self.pending, self.tokenizer.stream_codes(codes, self.batch_size)], dim=-1)
        return self._decode(self.pending.shape[-1] // self.chunk_frames * self.chunk_frames)

    def flush(self) -> torch.Tensor:
        """Decodes the frames held back by push(); the stream can go on afterwards."""
        return self._decode(self.pending.shape[-1])

    def _decode(self, n: int) -> torch.Tensor:
        out = decode_chunks(self.decoder, self.pending[..., :n], self.state, self.chunk_frames,
                            self.tokenizer.samples_per_frame)
        self.pending = self.pending[..., n:]
        self.frames_decoded += n
        return out
