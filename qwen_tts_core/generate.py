"""The generation loop: prefill the talker with left-padded prompts, then per frame choose
codebook 0, let the code predictor fill codebooks 1..15, and feed the frame back.

Static preallocated KV caches; everything a frame needs happens on the device, and the host reads
the results back once every few frames (end of speech, the overflow check, the codes).
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
    ran: str = ""              # which step ran the frames (`FrameLoop.ran`)
    replayed: int = 0          # frames that replayed a CUDA graph


# ----------------------------------------------------------------------------- sampling noise
# The noise of the exponential race (`sampling.choose`) is a counter-based hash, computed on
# the device inside the step: draw d of item i is a function of (the item's seed, d, the
# vocabulary slot) alone. No generator state, nothing from the host per frame, so a CUDA graph
# replays it as it is; and the same seed gives the same noise on every device and batch size.
MASK32 = 0xFFFFFFFF
GOLDEN32 = 0x9E3779B9


def mul32(x, c: int):
    """(x * c) mod 2**32 for 32-bit values held in int64 (tensors or Python ints), in two 16-bit
    halves of c so that no product overflows int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(x):
    """A 32-bit integer hash (lowbias32: a bijection with full avalanche) of 32-bit values held
    in int64 tensors or Python ints (the same numbers either way)."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def item_keys(seed: int, batch: int) -> list[int]:
    """The noise key of each batch item: item i draws from seed + i (mod 2**64), so an item gets
    the same codes alone as at that place in a batch."""
    keys = []
    for i in range(batch):
        s = (int(seed) + i) % 2 ** 64
        keys.append(mix32(mix32((s >> 32) ^ GOLDEN32) ^ (s & MASK32)))
    return keys


def random_seed() -> int:
    """A seed for an unseeded generation, from torch's global generator (torch.manual_seed
    repeats it)."""
    return int(torch.randint(0, 2 ** 62, (1,)).item())


def slot_keys(n: int, device) -> torch.Tensor:
    """[n] int64: a distinct 32-bit key per vocabulary slot of a frame's noise row."""
    return mix32(mul32(torch.arange(n, device=device), GOLDEN32))


def exponential_noise(keys: torch.Tensor, draw: torch.Tensor, slots: torch.Tensor, out: torch.Tensor) -> None:
    """Writes Exp(1) noise [B, N] into `out`: row i from item key keys[i], draw number `draw`
    (0-d int64 tensor) and slots [N]. Uniforms of 24 bits, as torch's own float32 draws."""
    frame = mix32(keys ^ mix32(draw & MASK32))                               # [B]
    bits = mix32(frame[:, None] ^ slots[None])                               # [B, N]
    uniform = ((bits >> 8).float() + 0.5) * 2.0 ** -24                       # (0, 1)
    torch.neg(torch.log(uniform), out=out)


def step_bytes(talker: Talker, batch: int, prompt_len: int, cache_len: int, dtype: torch.dtype) -> int:
    """Device memory of a FrameStep for `batch` prompts of up to `prompt_len` positions in a
    cache of `cache_len` positions: the talker's and code predictor's KV caches and the frame
    state (noise in fp32 and its slot keys, masks, hidden states, the text track and the codes
    of every frame), held throughout, plus the larger of two transients that are never live at
    once: the prefill's activations (over the prompt, not the cache) and one frame's (one
    position attending over the whole cache, and the noise hash's int64 temporaries)."""
    c = talker.cfg
    groups = c.num_code_groups
    caches = talker.model.cache_bytes(batch, cache_len, dtype) \
        + talker.code_predictor.model.cache_bytes(batch, groups, dtype)
    slots = (groups - 1) * c.code_predictor.vocab_size + c.vocab_size
    per_item = (slots * 4 + c.vocab_size + cache_len + 3 * c.hidden_size * dtype.itemsize
                + (cache_len + 1) * c.hidden_size * dtype.itemsize + cache_len * groups * 8)
    state = slots * 8 + batch * per_item
    prefill = talker.model.forward_bytes(batch, prompt_len, dtype)
    frame = talker.model.forward_bytes(batch, 1, dtype, keys=cache_len) \
        + talker.code_predictor.model.forward_bytes(batch, 2, dtype, keys=groups) + 2 * batch * slots * 8
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
    the current frame, the frame is stored and fed back through the talker with its text-track
    entry, codebook 0 of the next frame is chosen and each item's end of speech noted.

    Everything a frame needs is on the device: the noise is hashed from the items' keys and the
    frame counter (`exponential_noise`), the text-track entry and the codes' place are indexed by
    that counter. The host only launches the step; it reads `codes`, `length` (frames before
    each item's end-of-speech, -1 until chosen) and `finite` back every few frames (FrameLoop).

    `static=False` attends over the filled part of the cache (least work; shapes change every
    frame). `static=True` keeps every shape fixed and every index a tensor, attending over the
    whole preallocated cache under a mask: no host sync, no host data and nothing
    shape-dependent inside the step, so it can be captured once as a CUDA graph and replayed per
    frame, and the same step (buffers, caches, graph) serves every later prompt of its batch size
    and cache bucket: `start` copies a prompt's prefill into the buffers, never replacing one. In
    float32 both give the same codes; in bf16/fp16 their attention sums over differently sized
    key ranges and rounds differently, so greedy codes agree for a while and may then part
    (README, Exactness).
    """

    def __init__(self, talker: Talker, batch: int, cache_len: int, sampling: Sampling,
                 sub_sampling: Sampling, dtype: torch.dtype, device, static: bool = False):
        cfg = talker.cfg
        self.talker, self.static, self.cache_len = talker, static, cache_len
        self.sampling, self.sub_sampling = sampling, sub_sampling
        self.sampled = sampling.do_sample or sub_sampling.do_sample
        self.caches = talker.model.new_caches(batch, cache_len, dtype, device)
        self.sub_caches = talker.code_predictor.model.new_caches(batch, cfg.num_code_groups, dtype, device)
        self.suppress = suppressed_ids(cfg).to(device)
        self.eos = cfg.codec_eos_token_id
        self.key_positions = torch.arange(cache_len, device=device)
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
        self.slots = slot_keys(self.noise_row.shape[1], device)                    # [N]
        self.item_keys = torch.zeros(batch, dtype=torch.long, device=device)       # [B]
        self.frame_index = torch.zeros((), dtype=torch.long, device=device)
        self.write_at = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)    # [B, 1]
        self.hidden = torch.zeros(batch, cfg.hidden_size, dtype=dtype, device=device)
        self.code0 = torch.zeros(batch, dtype=torch.long, device=device)
        # the text track, an entry per frame (tts_pad after its end); the codes of every frame
        self.trailing = torch.zeros(batch, cache_len + 1, cfg.hidden_size, dtype=dtype, device=device)
        self.codes = torch.zeros(batch, cache_len, cfg.num_code_groups, dtype=torch.long, device=device)
        self.length = torch.full((batch,), -1, dtype=torch.long, device=device)   # [B]
        self.prompt_len = 0
        self.user: weakref.ref | None = None   # the FrameLoop this step serves (set by it)

    @property
    def busy(self) -> bool:
        """Whether a frame loop holds this step: from `frame_loop()` until its iteration ends
        (or the loop is dropped unstarted)."""
        return self.user is not None and self.user() is not None

    def start(self, batch: Batch, item_keys: torch.Tensor) -> None:
        """Prefills a prompt batch into the caches and the state buffers (`item_keys` [B]: the
        items' noise keys); chooses codebook 0 of the first frame."""
        self.prompt_len = batch.embeds.shape[1]
        self.valid_keys.copy_(self.key_positions[None] >= batch.pads[:, None])
        self.seen.zero_()
        self.finite.fill_(True)
        self.length.fill_(-1)
        self.frame_index.zero_()
        self.write_at.fill_(self.prompt_len)
        self.positions.copy_((self.prompt_len - batch.pads)[:, None])
        self.item_keys.copy_(item_keys)
        n = min(batch.trailing.shape[1], self.trailing.shape[1])   # entries past the frame limit are never read
        self.trailing[:, :n].copy_(batch.trailing[:, :n])
        self.trailing[:, n:].copy_(batch.pad)
        self.hidden.copy_(prefill(self.talker, batch, self.caches))
        if self.sampling.do_sample:     # draw 0: the talker's, for codebook 0 of frame 0
            exponential_noise(self.item_keys, self.frame_index, self.slots[-self.noise.shape[1]:], self.noise)
        self.code0.copy_(self.choose_code0(self.hidden, self.frame_index))

    def choose_code0(self, hidden: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """codebook 0 of frame number `frame` (0-d tensor) from the talker hidden state [B, D];
        end-of-speech is banned before MIN_FRAMES."""
        logits = self.check_finite(self.talker.codec_head(hidden).float())
        logits = penalize_repeats(logits, self.seen, self.sampling.repetition_penalty)
        logits[:, self.eos].masked_fill_(frame < MIN_FRAMES, float("-inf"))
        code = choose(logits.masked_fill(self.suppress, float("-inf")), self.sampling, noise=self.noise)
        self.seen.scatter_(1, code[:, None], True)
        return code

    def check_finite(self, logits: torch.Tensor) -> torch.Tensor:
        """In fp16, notes rows whose logits [B, V] overflowed (inf/NaN: fp16's range, 65504, is
        too narrow for these weights); the loop reports it when it reads the step's state back
        instead of emitting garbage. bf16 and fp32 share fp32's range: no check, no cost."""
        if self.guard:
            self.finite &= torch.isfinite(logits).all(dim=-1)
        return logits

    def choose_sub(self, logits: torch.Tensor, group: int) -> torch.Tensor:
        return choose(self.check_finite(logits), self.sub_sampling, noise=self.sub_noise[group])

    def step(self, t: int | None = None) -> None:
        """Frame number `frame_index`: reads hidden/code0, writes its codes; then hidden/code0 of
        the next frame. `t` (the host's frame index) is read by the dynamic step only."""
        talker, frame_no = self.talker, self.frame_index
        if self.sampled:   # draw frame_no + 1: the code predictor's for this frame, the talker's for the next
            exponential_noise(self.item_keys, frame_no + 1, self.slots, self.noise_row)
        rest = talker.code_predictor.predict(self.hidden, talker.embed_codes(self.code0),
                                             self.choose_sub, self.sub_caches)
        frame = torch.cat([self.code0[:, None], rest], dim=1)                      # [B, 16]
        self.codes.index_copy_(1, frame_no[None], frame[:, None])
        if self.static:
            start, end = self.write_at, self.cache_len
            mask = self.valid_keys & (self.key_positions[None] <= self.write_at)
        else:
            start, end = self.prompt_len + t, self.prompt_len + t + 1
            mask = self.valid_keys[:, :end]
        text = self.trailing.index_select(1, frame_no[None])                       # [B, 1, D]
        x = talker.embed_frame(frame)[:, None] + text                             # [B, 1, D]
        hidden = talker.model(x, self.positions, mask[:, None, None], self.caches, start, end)[:, -1]
        code0 = self.choose_code0(hidden, frame_no + 1)
        ended = (code0 == self.eos) & (self.length < 0)
        # in place: a captured graph reads and writes the same buffers on every replay
        self.length.copy_(torch.where(ended, frame_no + 1, self.length))
        self.code0.copy_(code0)
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
        self.replays = 0                   # frames run by replaying the graph, in all
        self.stream = self._side_stream()

    def __call__(self, t: int | None = None) -> None:
        if t == 0 and self.retry:          # a new generation: try the capture again
            self.failed, self.retry = None, False
        if self.graph is not None:
            self.graph.replay()
            self.replays += 1
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
            self.replays += 1

    def describe(self) -> str:
        """What runs this shape's frames now."""
        if self.failed is not None:
            return f"eager step (CUDA graph capture failed: {self.failed})"
        return "CUDA graph" if self.graph is not None else "eager step (CUDA graph not captured yet)"

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
        return torch.cuda.Stream(device=self.state.codes.device)

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


def describe_step(step: FrameStep | GraphedStep) -> str:
    if isinstance(step, GraphedStep):
        return step.describe()
    return "eager step (static shapes)" if step.static else "eager step (dynamic shapes)"


@dataclass
class Block:
    """Frames t0..t1-1 of a loop, on their way to the host: their codes [B, t1 - t0, 16] and the
    step's flags (each item's `length`, then `finite`), copied without waiting into pinned memory
    on CUDA (`done` is recorded after the copies), plainly elsewhere."""
    t0: int
    t1: int
    codes: torch.Tensor
    flags: torch.Tensor
    done: object = None

    @classmethod
    def read(cls, state: FrameStep, t0: int, t1: int) -> "Block":
        codes, flags = state.codes[:, t0:t1], torch.cat([state.length, state.finite.long()])
        if codes.device.type != "cuda":
            return cls(t0, t1, codes.cpu().clone(), flags.cpu())
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in (codes, flags)]
        for dst, src in zip(host, (codes, flags)):
            dst.copy_(src, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(codes.device))   # the copies' stream, on the model's GPU
        return cls(t0, t1, *host, done)

    def wait(self) -> tuple[list[int], list[bool]]:
        """(length per item, finite per item), once the copies are done."""
        if self.done is not None:
            self.done.synchronize()
        flags = self.flags.tolist()
        b = len(flags) // 2
        return flags[:b], [bool(f) for f in flags[b:]]


class FrameLoop:
    """Iterates (index, frame [B, 16] on the host) as generation goes. The step runs
    `check_every` frames at a time on the device without waiting; the host then reads that
    block's codes and flags back (one wait per block) while, with `ahead`, the device already
    runs the next block. `ended[i]` is, for the frame last yielded (at index t), item i's number
    of frames if its end-of-speech came at or before t, else -1; iteration ends when every item
    has ended or after `max_frames`. So the frames and `ended` are exactly those of a loop that
    waits after every frame; the device computes at most 2 * check_every - 1 frames past the end
    (or past a consumer that stops: an interrupt takes effect within that many frames).

    `step` runs one frame: a FrameStep (dynamic or static) or a GraphedStep around a static one;
    `item_keys` are the items' noise keys (`item_keys()`).

    A loop runs once. It holds its step from here until its iteration ends, fails or is closed
    (or the loop is dropped unstarted): a kept step is never re-started under a running loop."""

    def __init__(self, step: FrameStep | GraphedStep, batch: Batch, max_frames: int,
                 item_keys: list[int], check_every: int = 4, ahead: bool = True):
        self.step = step
        self.run_step = step if isinstance(step, GraphedStep) else step.step
        self.state = state_of(step)
        if self.state.busy:
            raise RuntimeError("This frame step is in use by another generation that has not ended.")
        self.state.user = weakref.ref(self)
        self.batch, self.item_keys, self.max_frames = batch, item_keys, max_frames
        self.check_every, self.ahead = max(1, int(check_every)), ahead
        self.ended: list[int] = [-1] * len(item_keys)
        self.frames_run = 0      # frames the device computed (those past the end included)
        self.replayed = 0        # of them, replays of a CUDA graph

    def release(self) -> None:
        """Hands the step back (a kept step can then serve the next generation)."""
        if self.state.user is not None and self.state.user() is self:
            self.state.user = None

    @property
    def ran(self) -> str:
        """Which step ran the frames, as a log or the bench says it."""
        if self.replayed:
            return f"CUDA graph ({self.replayed} of {self.frames_run} frames replayed)"
        return describe_step(self.step)

    def on_device(self, index: int) -> torch.Tensor:
        """Frame `index` [B, 16] where the step keeps it (valid until this loop's step is
        started again)."""
        return self.state.codes[:, index]

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

    def _launch(self, state: FrameStep) -> Block:
        t0 = self.frames_run
        t1 = min(t0 + self.check_every, self.max_frames)
        replays = getattr(self.step, "replays", 0)
        for t in range(t0, t1):
            self.run_step(t)
        self.replayed += getattr(self.step, "replays", 0) - replays
        self.frames_run = t1
        return Block.read(state, t0, t1)

    def _frames(self, state: FrameStep):
        state.start(self.batch, torch.tensor(self.item_keys, device=state.item_keys.device))
        pending = [self._launch(state)]
        while pending:
            if self.ahead and self.frames_run < self.max_frames:
                pending.append(self._launch(state))     # the device runs on while the host reads
            block = pending.pop(0)
            length, finite = block.wait()
            if not all(finite):
                raise NonFinite([i for i, ok in enumerate(finite) if not ok], state.hidden.dtype)
            for t in range(block.t0, block.t1):
                self.ended = [n if 0 <= n <= t else -1 for n in length]
                if all(n >= 0 for n in self.ended):
                    return
                yield t, block.codes[:, t - block.t0]
            if block.t1 < self.max_frames and all(n >= 0 for n in length):
                self.ended = list(length)     # every item ended by frame t1: the next block adds nothing
                return
            if not pending and self.frames_run < self.max_frames:
                pending.append(self._launch(state))


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
    # [B, T, 16]; T >= 1: max_frames >= 1 and end-of-speech is banned on frame 0
    all_codes = torch.stack(frames, dim=1)
    length = [n if n >= 0 else len(frames) for n in loop.ended]
    return Frames([all_codes[i, :n] for i, n in enumerate(length)], [n >= 0 for n in loop.ended],
                  loop.ran, loop.replayed)
