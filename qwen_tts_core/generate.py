"""The generation loop: prefill the talker with left-padded prompts, then per frame choose
codebook 0, let the code predictor fill codebooks 1..15, and feed the frame back.

Static preallocated KV caches; the only host sync per frame is the end-of-speech check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .config import TalkerConfig
from .prompt import TalkerPrompt
from .sampling import Sampling, choose, penalize_repeats
from .talker import Talker

MIN_FRAMES = 2  # end-of-speech is not allowed before this many frames (as the official model)


@dataclass
class Batch:
    embeds: torch.Tensor      # [B, L, D] left-padded prompts
    pads: torch.Tensor        # [B] number of left pads per row
    trailing: torch.Tensor    # [B, N, D] per-frame text track, padded with tts_pad
    pad: torch.Tensor         # [D] tts_pad: the text track once `trailing` is used up


def collate(prompts: list[TalkerPrompt], tts_pad: torch.Tensor) -> Batch:
    lengths = [p.embeds.shape[0] for p in prompts]
    longest, b, d = max(lengths), len(prompts), prompts[0].embeds.shape[1]
    embeds = prompts[0].embeds.new_zeros(b, longest, d)
    n = max(p.trailing.shape[0] for p in prompts)
    trailing = tts_pad.reshape(1, 1, d).repeat(b, n, 1)
    for i, p in enumerate(prompts):
        embeds[i, longest - lengths[i]:] = p.embeds
        trailing[i, :p.trailing.shape[0]] = p.trailing
    pads = torch.tensor([longest - n_ for n_ in lengths], device=embeds.device)
    return Batch(embeds, pads, trailing, tts_pad.reshape(d))


def suppressed_ids(c: TalkerConfig) -> torch.Tensor:
    """Control ids never sampled as audio: the top 1024 of the codec vocabulary but EOS."""
    mask = torch.zeros(c.vocab_size, dtype=torch.bool)
    mask[c.vocab_size - 1024:] = True
    mask[c.codec_eos_token_id] = False
    return mask


def prefill(talker: Talker, batch: Batch, caches) -> torch.Tensor:
    """Runs the prompts through the talker; returns the last hidden state [B, D]. Valid tokens
    are numbered from 0 in every row; a pad position attends only to itself."""
    b, length, _ = batch.embeds.shape
    key = torch.arange(length, device=batch.embeds.device)
    valid = key[None] >= batch.pads[:, None]                                   # [B, L]
    positions = (key[None] - batch.pads[:, None]).clamp(min=0)
    mask = (key[None, :, None] >= key[None, None, :]) & valid[:, None, :]      # [B, Lq, Lk]
    mask |= torch.eye(length, dtype=torch.bool, device=key.device)[None]
    return talker.model(batch.embeds, positions, mask[:, None], caches, 0)[:, -1]


@dataclass
class Frames:
    codes: list[torch.Tensor]  # per item [T_i, 16] int64
    stopped: list[bool]        # whether each item ended with end-of-speech (vs the frame limit)


class FrameStep:
    """Generation state and the work of one frame: the code predictor fills codebooks 1..15 of
    the current frame, the frame is fed back through the talker, and codebook 0 of the next
    frame is chosen.

    `static=False` attends over the filled part of the cache (least work; shapes change every
    frame). `static=True` keeps every shape fixed and every index a tensor, attending over the
    whole preallocated cache under a mask: no host sync and nothing shape-dependent inside the
    step, so it can be captured once as a CUDA graph and replayed per frame. Both give the same
    codes. Sampling noise is drawn per frame into buffers, before the step, in one fixed order.
    """

    def __init__(self, talker: Talker, batch: Batch, max_frames: int, sampling: Sampling,
                 sub_sampling: Sampling, static: bool = False):
        cfg = talker.cfg
        self.talker, self.batch, self.static = talker, batch, static
        self.sampling, self.sub_sampling = sampling, sub_sampling
        b, self.prompt_len, _ = batch.embeds.shape
        device, dtype = batch.embeds.device, batch.embeds.dtype
        self.cache_len = self.prompt_len + max_frames
        self.caches = talker.model.new_caches(b, self.cache_len, dtype, device)
        self.sub_caches = talker.code_predictor.model.new_caches(b, cfg.num_code_groups, dtype, device)
        self.suppress = suppressed_ids(cfg).to(device)
        self.eos = cfg.codec_eos_token_id
        self.rows = torch.arange(b, device=device)
        self.keys = torch.arange(self.cache_len, device=device)
        self.valid_keys = self.keys[None] >= batch.pads[:, None]                    # [B, S]
        self.seen = torch.zeros(b, cfg.vocab_size, dtype=torch.bool, device=device)
        groups = cfg.num_code_groups - 1
        self.noise = torch.ones(b, cfg.vocab_size, device=device)                  # talker draw
        self.sub_noise = torch.ones(groups, b, cfg.code_predictor.vocab_size, device=device)
        # state that advances every frame (tensors, so that a captured graph sees it)
        self.frame_index = torch.zeros((), dtype=torch.long, device=device)
        self.write_at = torch.full((), self.prompt_len, dtype=torch.long, device=device)
        self.positions = (self.prompt_len - batch.pads)[:, None]                   # [B, 1]
        self.frame = torch.zeros(b, cfg.num_code_groups, dtype=torch.long, device=device)
        self.hidden = self.code0 = None
        self.t = 0  # host copy of frame_index (dynamic mode slices the cache with it)

    def draw_noise(self, generator: torch.Generator | None) -> None:
        """Exponential noise for the 15 code-predictor draws, then the talker draw."""
        if self.sub_sampling.do_sample:
            for g in range(self.sub_noise.shape[0]):
                self.sub_noise[g].exponential_(1.0, generator=generator)
        if self.sampling.do_sample:
            self.noise.exponential_(1.0, generator=generator)

    def choose_code0(self, hidden: torch.Tensor, early) -> torch.Tensor:
        """codebook 0 from the talker hidden state [B, D]; `early` bans end-of-speech."""
        logits = self.talker.codec_head(hidden).float()
        logits = penalize_repeats(logits, self.seen, self.sampling.repetition_penalty)
        logits[:, self.eos] = torch.where(early, float("-inf"), logits[:, self.eos])
        code = choose(logits.masked_fill(self.suppress, float("-inf")), self.sampling, noise=self.noise)
        self.seen[self.rows, code] = True
        return code

    def prefill(self, generator: torch.Generator | None) -> None:
        self.hidden = prefill(self.talker, self.batch, self.caches)
        if self.sampling.do_sample:
            self.noise.exponential_(1.0, generator=generator)
        self.code0 = self.choose_code0(self.hidden, torch.tensor(True, device=self.hidden.device))

    def step(self) -> None:
        """One frame. Reads hidden/code0, writes frame; then hidden/code0 of the next frame."""
        talker, batch = self.talker, self.batch
        rest = talker.code_predictor.predict(
            self.hidden, talker.embed_codes(self.code0),
            lambda logits, g: choose(logits, self.sub_sampling, noise=self.sub_noise[g]), self.sub_caches)
        frame = torch.cat([self.code0[:, None], rest], dim=1)                      # [B, 16]
        self.frame.copy_(frame)
        n_text = batch.trailing.shape[1]
        if self.static:
            index = self.frame_index.clamp(max=n_text - 1)
            text = torch.where(self.frame_index < n_text, batch.trailing.index_select(1, index[None])[:, 0], batch.pad)
            start, end = self.write_at, self.cache_len
            mask = self.valid_keys & (self.keys[None] <= self.write_at)
        else:
            text = batch.trailing[:, self.t] if self.t < n_text else batch.pad
            start, end = self.prompt_len + self.t, self.prompt_len + self.t + 1
            mask = self.valid_keys[:, :end]
        x = (talker.embed_frame(frame) + text)[:, None]                           # [B, 1, D]
        hidden = talker.model(x, self.positions, mask[:, None, None], self.caches, start, end)[:, -1]
        # in place: a captured graph reads and writes the same buffers on every replay
        self.code0.copy_(self.choose_code0(hidden, self.frame_index + 1 < MIN_FRAMES))
        self.hidden.copy_(hidden)
        self.positions += 1
        self.write_at += 1
        self.frame_index += 1
        self.t += 1


class GraphedStep:
    """Replays FrameStep.step (static shapes) as one CUDA graph: the first `warmup` frames run
    eagerly on a side stream (allocator and kernel warm-up, as CUDA graph capture requires),
    the next one is captured and then every frame is a single graph launch."""

    def __init__(self, state: FrameStep, warmup: int = 2):
        self.state, self.warmup, self.graph = state, warmup, None
        self.stream = torch.cuda.Stream()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            if self.warmup > 0:
                self.state.step()
                self.warmup -= 1
            else:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self.state.step()
                self.graph = graph
        torch.cuda.current_stream().wait_stream(self.stream)
        if self.graph is not None:
            self.graph.replay()  # capture records the step without running it


class FrameLoop:
    """Iterates (index, frame [B, 16]) as generation goes. `length[i]` becomes the number of
    frames before item i's end-of-speech once it is chosen (-1 until then), and `ended` is its
    host copy taken before each frame (the per-frame sync); iteration ends when every item has
    ended or after `max_frames`. `static` uses the fixed-shape step;
    `cuda_graphs` (CUDA only, implies static) replays it as a CUDA graph."""

    def __init__(self, talker: Talker, batch: Batch, max_frames: int, sampling: Sampling,
                 sub_sampling: Sampling, generator: torch.Generator | None = None,
                 static: bool = False, cuda_graphs: bool = False):
        cuda_graphs = cuda_graphs and batch.embeds.device.type == "cuda"
        self.state = FrameStep(talker, batch, max_frames, sampling, sub_sampling, static or cuda_graphs)
        self.run_step = GraphedStep(self.state) if cuda_graphs else self.state.step
        self.generator, self.max_frames = generator, max_frames
        self.length = torch.full((batch.embeds.shape[0],), -1, dtype=torch.long, device=batch.embeds.device)
        self.ended: list[int] = [-1] * batch.embeds.shape[0]

    def __iter__(self):
        state = self.state
        with torch.inference_mode():
            state.prefill(self.generator)
            for step in range(self.max_frames):
                self.length = torch.where((state.code0 == state.eos) & (self.length < 0), step, self.length)
                self.ended = self.length.tolist()
                if all(n >= 0 for n in self.ended):
                    return
                state.draw_noise(self.generator)
                self.run_step()
                yield step, state.frame.clone()


def collect(loop: FrameLoop, on_frame: Callable[[int, torch.Tensor], bool | None] | None = None) -> Frames:
    """Runs a FrameLoop to the end and cuts each item at its end-of-speech.

    `on_frame(index, frame [B, 16])` is called after each frame (progress, run-away checks). It
    may raise to abort (interrupt), or return True to end generation early, keeping the frames
    so far (those items count as not stopped by end-of-speech)."""
    frames: list[torch.Tensor] = []
    for step, frame in loop:
        frames.append(frame)
        if on_frame is not None and on_frame(step, frame):
            break
    b = loop.length.shape[0]
    stopped = (loop.length >= 0).tolist()
    length = torch.where(loop.length < 0, len(frames), loop.length).tolist()
    groups = loop.state.frame.shape[1]
    all_codes = torch.stack(frames, dim=1).cpu() if frames else torch.zeros(b, 0, groups, dtype=torch.long)
    return Frames([all_codes[i, :n] for i, n in enumerate(length)], stopped)
