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


@torch.inference_mode()
def generate(talker: Talker, batch: Batch, max_frames: int, sampling: Sampling, sub_sampling: Sampling,
             generator: torch.Generator | None = None,
             on_frame: Callable[[int, torch.Tensor], bool | None] | None = None) -> Frames:
    """Greedy or sampled generation of up to `max_frames` frames per item.

    `on_frame(index, frame [B, 16])` is called after each frame (progress, streaming, run-away
    checks). It may raise to abort (interrupt), or return True to end generation early, keeping
    the frames so far (those items count as not stopped by end-of-speech)."""
    cfg = talker.cfg
    model = talker.model
    b, prompt_len, _ = batch.embeds.shape
    device, dtype = batch.embeds.device, batch.embeds.dtype
    eos = cfg.codec_eos_token_id
    suppress = suppressed_ids(cfg).to(device)
    seen = torch.zeros(b, cfg.vocab_size, dtype=torch.bool, device=device)
    caches = model.new_caches(b, prompt_len + max_frames, dtype, device)
    sub_caches = talker.code_predictor.model.new_caches(b, cfg.num_code_groups, dtype, device)
    rows = torch.arange(b, device=device)

    def next_code0(hidden, step):
        logits = talker.codec_head(hidden).float()
        logits = penalize_repeats(logits, seen, sampling.repetition_penalty)
        if step < MIN_FRAMES:
            logits[:, eos] = float("-inf")
        code = choose(logits.masked_fill(suppress, float("-inf")), sampling, generator)
        seen[rows, code] = True
        return code

    hidden = prefill(talker, batch, caches)
    code0 = next_code0(hidden, 0)

    frames: list[torch.Tensor] = []
    length = torch.full((b,), -1, dtype=torch.long, device=device)   # frames before end-of-speech
    for step in range(max_frames):
        length = torch.where((code0 == eos) & (length < 0), step, length)
        if bool((length >= 0).all()):
            break
        rest = talker.code_predictor.predict(
            hidden, talker.embed_codes(code0), lambda logits, g: choose(logits, sub_sampling, generator),
            sub_caches)
        frame = torch.cat([code0[:, None], rest], dim=1)                       # [B, 16]
        frames.append(frame)
        if (on_frame is not None and on_frame(step, frame)) or step + 1 == max_frames:
            break
        text = batch.trailing[:, step] if step < batch.trailing.shape[1] else batch.pad
        x = (talker.embed_frame(frame) + text)[:, None]                       # [B, 1, D]
        pos = (prompt_len + step - batch.pads)[:, None]
        kv_len = prompt_len + step + 1
        step_mask = (torch.arange(kv_len, device=device)[None] >= batch.pads[:, None])[:, None, None]
        hidden = model(x, pos, step_mask, caches, prompt_len + step)[:, -1]
        code0 = next_code0(hidden, step + 1)

    stopped = (length >= 0).tolist()
    length = torch.where(length < 0, len(frames), length).tolist()
    all_codes = torch.stack(frames, dim=1).cpu() if frames else torch.zeros(b, 0, cfg.num_code_groups, dtype=torch.long)
    return Frames([all_codes[i, :n] for i, n in enumerate(length)], stopped)
