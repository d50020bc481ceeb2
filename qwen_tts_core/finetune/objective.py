"""The training objective: teacher forcing over exactly the inputs that generation sees.

The prompt of an item is built by the same `PromptBuilder` that builds generation prompts
(non-streaming text, the new speaker's x-vector in the speaker slot, which is what the saved
checkpoint's speaker id looks up), so training and generation cannot drift apart. For an item
with prompt length P and N frames:

    position   0 .. P-1    P + f  (f = 0 .. N-1)
    input      prompt      frame f (sum of its 16 codebook embeddings) + text track entry f
    talker     hidden h[P-1+f] -> codebook 0 of frame f;   h[P-1+N] -> end-of-speech
    predictor  [h[P-1+f], e0(c0), e1(c1), .., e14(c14)]: head k at position k+1 -> c(k+1)

This is the generation loop of `generate.FrameStep` with the true codes fed back: the hidden
state that chooses codebook 0 of a frame is the one the code predictor starts from, and each
label is predicted exactly once, from the positions before it. The official recipe gets all of
this wrong (README, "Fine-tuning").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..layers import causal_mask
from ..prompt import Request, VoicePrompt

CODE_PREDICTOR_WEIGHT = 0.3   # as the official recipe weighs the code predictor's loss


@dataclass
class Item:
    """One training utterance: its transcript, language and speech codes."""
    text: str
    codes: torch.Tensor          # [N, 16] int64
    language: str = "auto"


@dataclass
class Loss:
    total: torch.Tensor          # talker + weight * code predictor
    talker: torch.Tensor         # mean cross-entropy of codebook 0 and end-of-speech
    code_predictor: torch.Tensor  # mean cross-entropy of codebooks 1..15


def item_inputs(tts, item: Item, xvector: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The talker input of one item: [P + N, D] and the prompt length P."""
    talker, cfg = tts.model.talker, tts.config
    request = tts.check(Request(item.text, item.language, voice=VoicePrompt(xvector), non_streaming_text=True))
    prompt = tts.prompts.build(request)
    codes = item.codes.to(tts.device)
    n = codes.shape[0]
    text = prompt.trailing[:n]                                   # per-frame text track, then tts_pad
    if text.shape[0] < n:
        pad = talker.embed_text(torch.tensor([cfg.tts_pad_token_id], device=tts.device))
        text = torch.cat([text, pad.expand(n - text.shape[0], -1)])
    return torch.cat([prompt.embeds, talker.embed_frame(codes) + text]), prompt.embeds.shape[0]


def code_predictor_logits(talker, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """hidden [F, D] (the talker state that chose each frame's codebook 0), codes [F, 16]
    -> logits of codebooks 1..15 [F, 15, V], as `CodePredictor.predict` computes them."""
    cp = talker.code_predictor
    groups = codes.shape[1]
    inputs = [hidden, talker.embed_codes(codes[:, 0])]
    inputs += [cp.model.codec_embedding[g](codes[:, g + 1]) for g in range(groups - 2)]
    x = cp.small_to_mtp_projection(torch.stack(inputs, dim=1))            # [F, 16, Dc]
    h = cp.model(x, torch.arange(groups, device=x.device)[None], causal_mask(groups, groups, x.device))
    return torch.stack([cp.lm_head[k](h[:, k + 1]) for k in range(groups - 1)], dim=1)


def batch_loss(tts, items: list[Item], xvector: torch.Tensor,
               code_predictor_weight: float = CODE_PREDICTOR_WEIGHT) -> Loss:
    """Mean cross-entropies of a batch (right-padded; the causal mask keeps padding out of
    every position that has a label)."""
    talker, device = tts.model.talker, tts.device
    seqs = [item_inputs(tts, it, xvector) for it in items]
    length = max(s.shape[0] for s, _ in seqs)
    x = torch.nn.utils.rnn.pad_sequence([s for s, _ in seqs], batch_first=True)   # [B, T, D]
    hidden = talker.model(x, torch.arange(length, device=device)[None], causal_mask(length, length, device))
    rows, cols, labels, frame_rows = [], [], [], []
    eos = torch.tensor([talker.cfg.codec_eos_token_id], device=device)
    for b, ((_, p), it) in enumerate(zip(seqs, items)):
        n = it.codes.shape[0]
        frame_rows.append(len(cols) + torch.arange(n))
        rows += [b] * (n + 1)
        cols += range(p - 1, p + n)
        labels.append(torch.cat([it.codes[:, 0].to(device), eos]))
    h = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]   # [M, D]
    talker_ce = F.cross_entropy(talker.codec_head(h).float(), torch.cat(labels))
    frames = torch.cat(frame_rows).to(device)
    codes = torch.cat([it.codes for it in items]).to(device)                            # [F, 16]
    logits = code_predictor_logits(talker, h[frames], codes)
    cp_ce = F.cross_entropy(logits.float().flatten(0, 1), codes[:, 1:].flatten())
    return Loss(talker_ce + code_predictor_weight * cp_ce, talker_ce, cp_ce)
