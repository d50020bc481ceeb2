"""Choosing codes from logits: greedy or sampled (temperature, top-k, top-p), with the talker's
repetition penalty, minimum length and suppressed control ids. Order and arithmetic follow the
logits processors of transformers' `generate`, so greedy decoding matches the official model."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import GenerationDefaults
from .errors import InputError


@dataclass
class Sampling:
    do_sample: bool = True
    temperature: float = GenerationDefaults.temperature
    top_k: int = GenerationDefaults.top_k
    top_p: float = GenerationDefaults.top_p
    # no penalty unless asked: the code predictor never has one (generation_config.json gives
    # only the talker's, which `QwenTTS.default_sampling` passes on)
    repetition_penalty: float = 1.0

    def check(self, what: str) -> "Sampling":
        if self.do_sample and not self.temperature > 0:
            raise InputError(f"{what} temperature must be > 0 (got {self.temperature}); "
                             "turn sampling off for greedy decoding.")
        if not 0 < self.top_p <= 1:
            raise InputError(f"{what} top_p must be in (0, 1] (got {self.top_p}).")
        if self.top_k < 0:
            raise InputError(f"{what} top_k must be >= 0 (got {self.top_k}; 0 disables it).")
        if not self.repetition_penalty > 0:
            raise InputError(f"{what} repetition penalty must be > 0 (got {self.repetition_penalty}).")
        return self


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, V]; seen bool [B, V] marks ids generated before (CTRL-style penalty)."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def filter_logits(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on logits [B, V]; dropped ids get -inf."""
    if s.temperature != 1.0:
        logits = logits / s.temperature
    if s.top_k:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - s.top_p)
        drop[:, -1].fill_(False)  # always keep the most likely id (fill_: no tensor from a Python value)
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def choose(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None = None,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] float32 (already penalized/masked) -> ids [B]

    Sampling draws from softmax(filtered logits) as argmax(p / E) with E ~ Exp(1) (the
    exponential race, equivalent to a categorical draw): unlike torch.multinomial it needs no
    host sync, and the noise can be drawn ahead of time (`noise`, e.g. outside a CUDA graph)."""
    if not s.do_sample:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, s).softmax(dim=-1)
    if noise is None:
        noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(dim=-1)
