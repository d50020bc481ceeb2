"""The generation loop: prefill the talker with left-padded prompts, then per frame choose
codebook 0, let the code predictor fill codebooks 1..15, and feed the frame back.

Static preallocated KV caches; one host sync per frame (end of speech and the overflow check).
On CUDA the frame step is replayed as a CUDA graph, captured once per shape bucket and kept
(with its caches) for later generations of that shape (`StepBuckets`).
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from .config import TalkerConfig
from .errors import DeviceError, first_line
from .prompt import TalkerPrompt
from .sampling import Sampling, choose, penalize_repeats
from .talker import Talker

log = logging.getLogger("qwen_tts_core")

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


def item_generators(seed: int | None, batch: int, device) -> list[torch.Generator | None]:
    """One random generator per batch item: item i draws from seed + i (mod 2**64), so an item
    gets the same codes alone as at that place in a batch. None: the global generator."""
    if seed is None:
        return [None] * batch
    return [torch.Generator(device=device).manual_seed((int(seed) + i) % 2 ** 64) for i in range(batch)]


def draw_noise(noise: torch.Tensor, generators: list[torch.Generator | None]) -> None:
    """Fills `noise` [B, ...] with Exp(1) draws in place: row i from item i's generator (seeded),
    or the whole batch in one draw from the global generator (no seed)."""
    if all(g is None for g in generators):
        noise.exponential_(1.0)
    else:
        for row, g in zip(noise, generators):
            row.exponential_(1.0, generator=g)


def step_bytes(talker: Talker, batch: int, prompt_len: int, cache_len: int, dtype: torch.dtype) -> int:
    """Device memory of a FrameStep for `batch` prompts of up to `prompt_len` positions in a
    cache of `cache_len` positions: the talker's and code predictor's KV caches and the frame
    state (noise in fp32, masks, hidden states), held throughout, plus the larger of two
    transients that are never live at once: the prefill's activations (over the prompt, not
    the cache) and one frame's (one position attending over the whole cache)."""
    c = talker.cfg
    groups = c.num_code_groups
    caches = talker.model.cache_bytes(batch, cache_len, dtype) \
        + talker.code_predictor.model.cache_bytes(batch, groups, dtype)
    noise = ((groups - 1) * c.code_predictor.vocab_size + c.vocab_size) * 4
    state = batch * (noise + c.vocab_size + cache_len + 3 * c.hidden_size * dtype.itemsize)
    prefill = talker.model.forward_bytes(batch, prompt_len, dtype)
    frame = talker.model.forward_bytes(batch, 1, dtype, keys=cache_len) \
        + talker.code_predictor.model.forward_bytes(batch, 2, dtype, keys=groups)
    return caches + state + max(prefill, frame)


def cache_bucket(length: int, limit: int) -> int:
    """The cache length of a reusable (static) step: `length` rounded up to a power of two of at
    least 256, so that prompts of similar lengths share one captured CUDA graph; never rounded
    past `limit` (the model context) unless `length` itself is longer."""
    bucket = 256
    while bucket < length:
        bucket *= 2
    return max(length, min(bucket, limit))


class FrameStep:
    """Generation state and the work of one frame: the code predictor fills codebooks 1..15 of
    the current frame, the frame is fed back through the talker, and codebook 0 of the next
    frame is chosen.

    `static=False` attends over the filled part of the cache (least work; shapes change every
    frame). `static=True` keeps every shape fixed and every index a tensor, attending over the
    whole preallocated cache under a mask: no host sync and nothing shape-dependent inside the
    step, so it can be captured once as a CUDA graph and replayed per frame, and the same step
    (buffers, caches, graph) serves every later prompt of its batch size and cache bucket:
    `start` copies a prompt's prefill into the buffers, never replacing one. In float32 both give
    the same codes; in bf16/fp16 their attention sums over differently sized key ranges and
    rounds differently, so greedy codes agree for a while and may then part (README, Exactness).
    Sampling noise is drawn per frame into one buffer, outside the step (`draw_noise`).
    """

    def __init__(self, talker: Talker, batch: int, cache_len: int, sampling: Sampling,
                 sub_sampling: Sampling, dtype: torch.dtype, device, static: bool = False):
        cfg = talker.cfg
        self.talker, self.static, self.cache_len = talker, static, cache_len
        self.sampling, self.sub_sampling = sampling, sub_sampling
        self.caches = talker.model.new_caches(batch, cache_len, dtype, device)
        self.sub_caches = talker.code_predictor.model.new_caches(batch, cfg.num_code_groups, dtype, device)
        self.suppress = suppressed_ids(cfg).to(device)
        self.eos = cfg.codec_eos_token_id
        self.rows = torch.arange(batch, device=device)
        self.keys = torch.arange(cache_len, device=device)
        # per-prompt state, in buffers a captured graph keeps reading (filled by `start`)
        self.valid_keys = torch.zeros(batch, cache_len, dtype=torch.bool, device=device)   # [B, S]
        self.seen = torch.zeros(batch, cfg.vocab_size, dtype=torch.bool, device=device)
        self.finite = torch.ones(batch, dtype=torch.bool, device=device)  # all logits finite so far
        self.guard = dtype == torch.float16   # the one dtype whose range real activations can exceed
        groups, sub_vocab = cfg.num_code_groups - 1, cfg.code_predictor.vocab_size
        # per item and frame: the 15 code-predictor draws, then the talker draw (one row each)
        self.noise_row = torch.ones(batch, groups * sub_vocab + cfg.vocab_size, device=device)
        self.sub_noise = [self.noise_row[:, g * sub_vocab:(g + 1) * sub_vocab] for g in range(groups)]
        self.noise = self.noise_row[:, groups * sub_vocab:]                        # [B, V]
        self.frame_index = torch.zeros((), dtype=torch.long, device=device)
        self.write_at = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)    # [B, 1]
        self.frame = torch.zeros(batch, cfg.num_code_groups, dtype=torch.long, device=device)
        self.hidden = torch.zeros(batch, cfg.hidden_size, dtype=dtype, device=device)
        self.code0 = torch.zeros(batch, dtype=torch.long, device=device)
        self.text = torch.zeros(batch, 1, cfg.hidden_size, dtype=dtype, device=device)  # [B, 1, D]
        self.batch: Batch | None = None
        self.prompt_len = 0
        self.user: weakref.ref | None = None   # the FrameLoop this step serves (set by it)

    @property
    def busy(self) -> bool:
        """Whether a frame loop holds this step: from `frame_loop()` until its iteration ends
        (or the loop is dropped unstarted)."""
        return self.user is not None and self.user() is not None

    def start(self, batch: Batch, generators: list) -> None:
        """Prefills a prompt batch into the caches and the state buffers; draws the first
        talker noise and chooses codebook 0 of the first frame."""
        self.batch, self.prompt_len = batch, batch.embeds.shape[1]
        self.valid_keys.copy_(self.keys[None] >= batch.pads[:, None])
        self.seen.zero_()
        self.finite.fill_(True)
        self.frame_index.zero_()
        self.write_at.fill_(self.prompt_len)
        self.positions.copy_((self.prompt_len - batch.pads)[:, None])
        self.hidden.copy_(prefill(self.talker, batch, self.caches))
        if self.sampling.do_sample:
            draw_noise(self.noise, generators)
        self.code0.copy_(self.choose_code0(self.hidden, torch.tensor(True, device=self.hidden.device)))

    def prepare(self, t: int, generators: list) -> None:
        """Host-side inputs of frame t, before the step: the noise (per item: 15 code-predictor
        draws, then the talker draw; see `draw_noise`) and the frame's text-track entry."""
        if self.sampling.do_sample or self.sub_sampling.do_sample:
            draw_noise(self.noise_row, generators)
        trailing = self.batch.trailing
        self.text.copy_((trailing[:, t] if t < trailing.shape[1] else self.batch.pad.expand_as(self.text[:, 0]))[:, None])

    def choose_code0(self, hidden: torch.Tensor, early) -> torch.Tensor:
        """codebook 0 from the talker hidden state [B, D]; `early` bans end-of-speech."""
        logits = self.check_finite(self.talker.codec_head(hidden).float())
        logits = penalize_repeats(logits, self.seen, self.sampling.repetition_penalty)
        logits[:, self.eos] = torch.where(early, float("-inf"), logits[:, self.eos])
        code = choose(logits.masked_fill(self.suppress, float("-inf")), self.sampling, noise=self.noise)
        self.seen[self.rows, code] = True
        return code

    def check_finite(self, logits: torch.Tensor) -> torch.Tensor:
        """In fp16, notes rows whose logits [B, V] overflowed (inf/NaN: fp16's range, 65504, is
        too narrow for these weights); the loop reports it at its per-frame sync instead of
        emitting garbage. bf16 and fp32 share fp32's range: no check, no cost."""
        if self.guard:
            self.finite &= torch.isfinite(logits).all(dim=-1)
        return logits

    def choose_sub(self, logits: torch.Tensor, group: int) -> torch.Tensor:
        return choose(self.check_finite(logits), self.sub_sampling, noise=self.sub_noise[group])

    def step(self, t: int | None = None) -> None:
        """One frame. Reads hidden/code0/text, writes frame; then hidden/code0 of the next
        frame. `t` (the host's frame index) is read by the dynamic step only."""
        talker = self.talker
        rest = talker.code_predictor.predict(self.hidden, talker.embed_codes(self.code0),
                                             self.choose_sub, self.sub_caches)
        frame = torch.cat([self.code0[:, None], rest], dim=1)                      # [B, 16]
        self.frame.copy_(frame)
        if self.static:
            start, end = self.write_at, self.cache_len
            mask = self.valid_keys & (self.keys[None] <= self.write_at)
        else:
            start, end = self.prompt_len + t, self.prompt_len + t + 1
            mask = self.valid_keys[:, :end]
        x = talker.embed_frame(frame)[:, None] + self.text                        # [B, 1, D]
        hidden = talker.model(x, self.positions, mask[:, None, None], self.caches, start, end)[:, -1]
        # in place: a captured graph reads and writes the same buffers on every replay
        self.code0.copy_(self.choose_code0(hidden, self.frame_index + 1 < MIN_FRAMES))
        self.hidden.copy_(hidden)
        self.positions += 1
        self.write_at += 1
        self.frame_index += 1

    def clear_caches(self) -> None:
        """Zeroes the KV caches in place (a captured graph keeps reading the same addresses).
        After a failed generation they may hold inf/NaN, which poisons attention even at masked
        positions (their weight is 0, and 0 * inf is NaN): a kept step is cleared before its
        next prompt."""
        for cache in self.caches + self.sub_caches:
            cache.k.zero_()
            cache.v.zero_()

    def buffers(self) -> dict[str, torch.Tensor]:
        """The tensors a captured step reads or writes (for checks that none is ever replaced):
        its tensor attributes and the keys and values of the talker's KV caches (`caches`) and of
        the code predictor's (`sub_caches`)."""
        named = {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        for prefix, caches in (("cache", self.caches), ("sub_cache", self.sub_caches)):
            named.update({f"{prefix}{i}.{kv}": getattr(c, kv) for i, c in enumerate(caches) for kv in "kv"})
        return named


class GraphedStep:
    """Replays FrameStep.step (static shapes) as one CUDA graph. The first `warmup` frames of
    the first prompt run eagerly on a side stream (allocator and kernel warm-up, as capture
    requires), the next one is captured, and from then on every frame of this and every later
    prompt of the bucket is one graph launch. If capture fails, the step runs eager (the same
    codes) with one log line saying why: for good if the step cannot be captured, until the next
    generation's first frame if it ran out of memory (memory may be free by then)."""

    def __init__(self, state: FrameStep, warmup: int = 2):
        self.state, self.warmup, self.graph = state, warmup, None
        self.failed: str | None = None     # why capture failed (the step runs eager meanwhile)
        self.retry = False                 # capture again at the next generation (it ran out of memory)
        self.stream = self._side_stream()

    def __call__(self, t: int | None = None) -> None:
        if t == 0 and self.retry:          # a new generation: try the capture again
            self.failed, self.retry = None, False
        if self.graph is not None:
            self.graph.replay()
        elif self.failed is not None:
            self.state.step()
        elif self.warmup > 0:
            self._eager_on_side_stream()
            self.warmup -= 1
        else:
            try:
                self.graph = self._capture()
            except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager
                self._give_up(e)
                self.state.step()
                return
            self.graph.replay()  # capture records the step without running it

    def _give_up(self, error: Exception) -> None:
        oom = isinstance(error, torch.OutOfMemoryError)
        reason = "out of GPU memory during capture" if oom else first_line(error)
        self.failed = f"{type(error).__name__}: {reason}"
        self.retry = oom
        when = "until the next generation tries again" if self.retry else "instead"
        log.warning("CUDA graph capture failed (%s); this batch shape runs the eager step %s "
                    "(slower, same codes). Turn cuda_graphs off to skip the attempt.", self.failed, when)
        self.graph = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # the CUDA-specific parts (tests on CPU replace these three)
    def _side_stream(self):
        return torch.cuda.Stream()

    def _eager_on_side_stream(self) -> None:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            self.state.step()
        torch.cuda.current_stream().wait_stream(self.stream)

    def _capture(self):
        self.stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self.state.step()
        torch.cuda.current_stream().wait_stream(self.stream)
        return graph


def state_of(step: FrameStep | GraphedStep) -> FrameStep:
    return step.state if isinstance(step, GraphedStep) else step


class StepBuckets:
    """Static frame steps kept between generations, one per shape bucket (batch size, cache
    bucket, dtype, sampling settings), each with its CUDA graph once captured: a graph is
    captured once per bucket and replayed for every later prompt. At most `limit` buckets are
    kept (least recently used goes first); all are dropped when the talker's weights move
    (ComfyUI offloading: a graph holds the weights' addresses) or on `clear()`.

    A kept step serves one frame loop at a time. While it is busy (a `stream()` not read to
    the end yet), `get` hands out a fresh step of the same shape that is not kept: that
    generation gets the same codes, in memory (and, with graphs, a capture) of its own."""

    def __init__(self, limit: int = 2):
        self.limit = limit
        self.steps: dict[tuple, FrameStep | GraphedStep] = {}
        self.weights: tuple = ()

    def get(self, key: tuple, weights: tuple, make: Callable[[], FrameStep | GraphedStep]):
        if weights != self.weights:
            self.clear()
            self.weights = weights
        step = self.steps.pop(key, None)
        if step is not None and state_of(step).busy:
            self.steps[key] = step
            log.info("A generation of this shape is still running (a stream not read to the end); "
                     "this one runs in a step of its own")
            return make()
        if step is None:
            while len(self.steps) >= self.limit:
                self.steps.pop(next(iter(self.steps)))
            step = make()
        self.steps[key] = step   # most recently used last
        return step

    def clear(self) -> None:
        self.steps.clear()


def weights_key(module: torch.nn.Module) -> tuple:
    """Where the weights are (device and addresses): a captured graph is valid only there."""
    return tuple(p.data_ptr() for p in module.parameters())


class NonFinite(DeviceError):
    def __init__(self, items: list[int], dtype: torch.dtype):
        name = str(dtype).replace("torch.", "")
        super().__init__(
            f"The model computed non-finite values (inf/NaN) in {name} for batch item(s) "
            f"{', '.join(str(i + 1) for i in items)}: {name} overflows with these weights. Load "
            "the model with dtype fp32 (or bf16 on a GPU that has it) and run again.")


class FrameLoop:
    """Iterates (index, frame [B, 16]) as generation goes. `length[i]` becomes the number of
    frames before item i's end-of-speech once it is chosen (-1 until then), and `ended` is its
    host copy taken before each frame (the per-frame sync); iteration ends when every item has
    ended or after `max_frames`. `step` runs one frame: a FrameStep (dynamic or static) or a
    GraphedStep around a static one; `generators` are the items' random generators.

    A loop runs once. It holds its step from here until its iteration ends, fails or is closed
    (or the loop is dropped unstarted): a kept step is never re-started under a running loop."""

    def __init__(self, step: FrameStep | GraphedStep, batch: Batch, max_frames: int,
                 generators: list):
        self.run_step = step if isinstance(step, GraphedStep) else step.step
        self.state = state_of(step)
        if self.state.busy:
            raise RuntimeError("This frame step is in use by another generation that has not ended.")
        self.state.user = weakref.ref(self)
        self.batch, self.generators, self.max_frames = batch, generators, max_frames
        b = batch.embeds.shape[0]
        self.length = torch.full((b,), -1, dtype=torch.long, device=batch.embeds.device)
        self.ended: list[int] = [-1] * b

    def release(self) -> None:
        """Hands the step back (a kept step can then serve the next generation)."""
        if self.state.user is not None and self.state.user() is self:
            self.state.user = None

    def __iter__(self):
        state = self.state
        if state.user is None or state.user() is not self:
            raise RuntimeError("A FrameLoop runs once; make a new one (QwenTTS.frame_loop) to generate again.")
        with torch.inference_mode():
            try:
                yield from self._frames(state)
            except GeneratorExit:     # the consumer stopped early: the caches are sound
                raise
            except BaseException:     # overflow, out of memory, ...: the caches may not be
                state.clear_caches()
                raise
            finally:
                self.release()

    def _frames(self, state: FrameStep):
        state.start(self.batch, self.generators)
        b = self.length.shape[0]
        for step in range(self.max_frames):
            self.length = torch.where((state.code0 == state.eos) & (self.length < 0), step, self.length)
            if state.guard:   # the one sync per frame: end of speech (and overflow in fp16)
                host = torch.cat([self.length, state.finite.long()]).tolist()
                if not all(host[b:]):
                    raise NonFinite([i for i, ok in enumerate(host[b:]) if not ok], state.hidden.dtype)
                self.ended = host[:b]
            else:
                self.ended = self.length.tolist()
            if all(n >= 0 for n in self.ended):
                return
            state.prepare(step, self.generators)
            self.run_step(step)
            yield step, state.frame.clone()


def collect(loop: FrameLoop, on_frame: Callable[[int, torch.Tensor], bool | None] | None = None) -> Frames:
    """Runs a FrameLoop to the end and cuts each item at its end-of-speech.

    `on_frame(index, frame [B, 16])` is called after each frame (progress, run-away checks). It
    may raise to abort (interrupt), or return True to end generation early, keeping the frames
    so far (those items count as not stopped by end-of-speech)."""
    frames: list[torch.Tensor] = []
    running = iter(loop)
    try:
        for step, frame in running:
            frames.append(frame)
            if on_frame is not None and on_frame(step, frame):
                break
    finally:
        running.close()   # stopped early or by an exception from on_frame: the step is free again
    stopped = (loop.length >= 0).tolist()
    length = torch.where(loop.length < 0, len(frames), loop.length).tolist()
    # [B, T, 16]; T >= 1: max_frames >= 1 and end-of-speech is banned on frame 0
    all_codes = torch.stack(frames, dim=1).cpu()
    return Frames([all_codes[i, :n] for i, n in enumerate(length)], stopped)
