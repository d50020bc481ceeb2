"""A talker and its speech tokenizer on a device, generating: the frame steps kept between
generations (with their CUDA graphs), the memory a generation needs, running a frame loop to
codes, streaming, decoding. It takes prompts that are already built and checked (`QwenTTS`
does that: texts, voices, languages) and knows nothing of what they say.

    engine = Engine(model.talker, codec, max_positions=32768, tts_pad_id=151671)
    loop = engine.frame_loop(prompts, max_frames=200, sampling=..., sub_sampling=..., seed=1)
    with engine.failures(batch=len(prompts)):
        frames = engine.run(loop)       # Frames: codes per item, cut at their end of speech
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from . import speech_codes
from .errors import InputError, ModelFolderError, OutOfMemory, device_lost
from .generate import (FrameLoop, Frames, FrameStep, GraphedStep, StepBuckets, cache_bucket, collate, collect,
                       item_keys, random_seed, step_bytes, weights_key)
from .prompt import TalkerPrompt, VoicePrompt
from .sampling import Sampling
from .talker import Talker

log = logging.getLogger("qwen_tts_core")


@dataclass
class AudioChunk:
    item: int                                 # index of the item in the batch
    audio: torch.Tensor                       # [samples] float32 at 24 kHz
    final: bool                               # the item's last chunk


@dataclass
class GenerationResult:
    codes: list[torch.Tensor]                 # per item [frames, 16] int64 (cpu)
    stopped: list[bool]                       # ended with end-of-speech (not the frame limit)
    warnings: list[str] = field(default_factory=list)
    audio: list[torch.Tensor] | None = None   # per item [samples] float32 at 24 kHz
    sample_rate: int = 24000
    ran: str = ""                             # which step ran the frames (CUDA graph or eager, and why)
    replayed: int = 0                         # frames that replayed a CUDA graph

    @property
    def cuda_graph(self) -> bool:
        """Whether the frames replayed a CUDA graph (not only whether graphs were asked for)."""
        return self.replayed > 0


class Engine:
    def __init__(self, talker: Talker, codec, max_positions: int, tts_pad_id: int, cuda_graphs: bool = True):
        self.talker, self.codec = talker, codec
        self.max_positions, self.tts_pad_id = max_positions, tts_pad_id
        self.cuda_graphs = cuda_graphs     # default of frame_loop(): the fast path on CUDA devices
        self.steps = StepBuckets()         # static steps / CUDA graphs kept between generations

    @property
    def device(self) -> torch.device:
        return self.talker.codec_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.talker.codec_head.weight.dtype

    # ------------------------------------------------------------------ frame loops
    def uses_cuda_graphs(self, cuda_graphs: bool | None = None) -> bool:
        """Whether generation replays CUDA graphs: asked for (default: `self.cuda_graphs`) and on CUDA."""
        wanted = self.cuda_graphs if cuda_graphs is None else cuda_graphs
        return bool(wanted) and self.device.type == "cuda"

    def frame_loop(self, prompts: Sequence[TalkerPrompt], max_frames: int, sampling: Sampling,
                   sub_sampling: Sampling, seed: int | None = None, static: bool = False,
                   cuda_graphs: bool | None = None, check_every: int = 4, ahead: bool = True) -> FrameLoop:
        """The generation of a batch of prompts as an iterator of frames. Item i samples from
        seed + i (the same codes alone as in the batch); no seed: one drawn from torch's global
        generator. `static`/`cuda_graphs`: the kept step of this shape (replayed as a CUDA graph
        on CUDA); else a dynamic step sized for these prompts. `check_every`, `ahead`: FrameLoop."""
        longest = max(p.embeds.shape[0] for p in prompts)
        if longest + max_frames > self.max_positions:
            raise InputError(
                f"Prompt ({longest} positions) plus {max_frames} frames exceeds the model context of "
                f"{self.max_positions}; shorten the text or the reference.")
        with torch.inference_mode():
            tts_pad = self.talker.embed_text(torch.tensor([self.tts_pad_id], device=self.device))[0]
            batch = collate(list(prompts), tts_pad)
        step = self._frame_step(len(prompts), longest + max_frames, sampling, sub_sampling,
                                static, self.uses_cuda_graphs(cuda_graphs))
        keys = item_keys(random_seed() if seed is None else seed, len(prompts))
        return FrameLoop(step, batch, max_frames, keys, check_every, ahead)

    def _frame_step(self, batch: int, length: int, sampling: Sampling, sub_sampling: Sampling,
                    static: bool, graphs: bool):
        """A fresh dynamic step sized for this prompt, or the kept static step (with its CUDA
        graph) of this shape bucket."""
        if not (static or graphs):
            return FrameStep(self.talker, batch, length, sampling, sub_sampling, self.dtype, self.device)
        cache_len = cache_bucket(length, self.max_positions)
        key = (batch, cache_len, self.dtype, str(self.device), astuple(sampling), astuple(sub_sampling), graphs)

        def make():
            state = FrameStep(self.talker, batch, cache_len, sampling, sub_sampling, self.dtype, self.device,
                              static=True)
            return GraphedStep(state) if graphs else state

        return self.steps.get(key, weights_key(self.talker), make)

    @contextmanager
    def failures(self, batch: int):
        """Around a generation: out of memory and a GPU that stops answering become messages that
        say what to do, with the kept steps freed."""
        try:
            with self.lost_device():
                yield
        except torch.OutOfMemoryError:
            self.release_steps()
            raise OutOfMemory(
                f"Out of memory on {self.device} while generating a batch of {batch}. The "
                "generation's memory was freed. Generate fewer lines at once, lower max_seconds, "
                "or free memory (unload other models).") from None

    @contextmanager
    def lost_device(self):
        """A GPU that stops answering (generating, streaming, decoding) becomes a message that says
        what to do; the kept steps, which live on it, are dropped."""
        try:
            yield
        except RuntimeError as e:
            lost = device_lost(e, self.device)
            if lost is None:
                raise
            self.steps.clear()
            raise lost from None

    def run(self, loop: FrameLoop, on_frame: Callable[[int, torch.Tensor], bool | None] | None = None) -> Frames:
        """Runs a loop to its end (`collect`: codes cut at each item's end of speech)."""
        frames = collect(loop, on_frame)
        log.info("Generated %d clip(s), %d frames: %s", len(frames.codes), max(len(c) for c in frames.codes),
                 frames.ran)
        return frames

    def stream(self, loop: FrameLoop, voices: Sequence[VoicePrompt | None], chunk_frames: int) -> Iterator[AudioChunk]:
        """Decodes a loop's frames as they come: each item's audio in chunks of `chunk_frames`
        frames; the last chunk of an item has final=True (see QwenTTS.stream)."""
        done = [False] * len(voices)
        running = iter(loop)
        try:
            with self.lost_device():
                decoders = [self.codec.streaming_decoder(1, chunk_frames) for _ in voices]
                for d, v in zip(decoders, voices):
                    if v is not None and v.in_context:
                        d.push(v.ref_codes.t()[None].to(self.device))
                        d.flush()
                for step, frame in running:
                    for i, d in enumerate(decoders):
                        if done[i]:
                            continue
                        if 0 <= loop.ended[i] <= step:              # ended before this frame
                            done[i] = True
                            yield AudioChunk(i, d.flush()[0], True)
                            continue
                        audio = d.push(loop.on_device(step)[i, :, None][None].clone())
                        if audio.shape[-1]:
                            yield AudioChunk(i, audio[0], False)
                for i, d in enumerate(decoders):
                    if not done[i]:
                        yield AudioChunk(i, d.flush()[0], True)
        finally:
            running.close()   # a stream closed or dropped before its end frees its step at once

    # ------------------------------------------------------------------ memory
    def graph_fallbacks(self) -> list[str]:
        """Kept shapes whose CUDA graph capture failed, and why ("batch 2, cache 512: ...")."""
        return [f"batch {key[0]}, cache {key[1]}: {step.failed}" for key, step in self.steps.steps.items()
                if isinstance(step, GraphedStep) and step.failed is not None]

    def release_steps(self) -> None:
        """Frees the kept static steps and CUDA graphs (their KV caches); the next generation of
        each shape builds (captures) them again. ComfyUI calls this when it offloads the model."""
        self.steps.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def memory_estimate(self, batch: int, frames: int, prompt_positions: int = 512,
                        device: torch.device | None = None, decode: bool = True) -> int:
        """Bytes a generation of `batch` items of up to `frames` frames after prompts of up to
        `prompt_positions` positions needs on `device` (default: where the model is) besides
        the weights: the talker's and code predictor's KV caches (at the bucketed cache length
        when CUDA graphs keep them) and frame state, the larger of the prefill's and a frame's
        transient memory (`step_bytes`), plus the speech decoder's working memory for the
        batch. With graphs the caches stay allocated while decoding, so both count; otherwise
        the caches are freed first and the larger of the two counts."""
        device = torch.device(device) if device is not None else self.device
        graphs = bool(self.cuda_graphs) and device.type == "cuda"
        length = prompt_positions + frames
        if graphs:
            length = cache_bucket(length, self.max_positions)
        caches = step_bytes(self.talker, batch, prompt_positions, length, self.dtype)
        if not decode or self.codec is None or self.codec.decoder is None:
            return caches
        decoding = self.codec.decode_bytes(batch, frames, device)
        return caches + decoding if graphs else max(caches, decoding)

    # ------------------------------------------------------------------ audio
    def decode(self, codes: Sequence[torch.Tensor], voices: Sequence[VoicePrompt | None] | None = None,
               on_chunk: Callable[[int, int], None] | None = None):
        """Codes -> 24 kHz waveforms. For in-context clones the reference codes are decoded in
        front (as context for the causal decoder) and their share of the audio is cut off.
        Decoded in chunks whose size bounds the memory of the batch; `on_chunk(done, total)`
        runs before each chunk, the first time with done=0, not after the last (raise to stop:
        the decode's memory is freed)."""
        if self.codec is None:
            raise ModelFolderError("This model was loaded without its speech tokenizer.")
        voices = list(voices or [None] * len(codes))
        context = [v.ref_codes if v is not None and v.in_context else None for v in voices]
        try:
            with self.lost_device():
                return speech_codes.decode(self.codec, speech_codes.SpeechCodes(list(codes), context), on_chunk)
        except torch.OutOfMemoryError:
            if self.codec.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"Out of memory on {self.codec.device} while decoding {len(codes)} clip(s) to audio; "
                "the decode's memory was freed (the codes are kept). Decode fewer clips at once "
                "(Decode Codes to Audio on a part), or free memory (unload other models).") from None
