"""The talker (a Qwen3-style decoder over text + codec tracks) and its code predictor.

Each generated frame: the talker predicts codebook 0 from its last hidden state; the code
predictor, a small transformer fed [talker hidden, codebook-0 embedding], then predicts codebooks
1..15 one after another. The sum of the 16 codebook embeddings (+ the next text-track entry) is
the talker's next input.

Module paths equal the official checkpoint names (`talker.model.layers.0.self_attn.q_proj`, ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TalkerConfig, TransformerConfig
from .layers import DecoderLayer, KVCache, RMSNorm, Rotary, causal_mask


def _layers(c: TransformerConfig) -> nn.ModuleList:
    return nn.ModuleList(
        DecoderLayer(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                     c.intermediate_size, c.rms_norm_eps, qk_norm=True)
        for _ in range(c.num_hidden_layers))


class TransformerStack(nn.Module):
    """layers + final norm; subclasses add their embeddings under the official names."""

    def __init__(self, c: TransformerConfig, positions: int | None = None):
        super().__init__()
        self.layers = _layers(c)
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.rotary = Rotary(c.head_dim, c.rope_theta, positions or c.max_position_embeddings)
        self.cfg = c

    def new_caches(self, batch: int, max_len: int, dtype, device) -> list[KVCache]:
        c = self.cfg
        return [KVCache(batch, c.num_key_value_heads, max_len, c.head_dim, dtype, device)
                for _ in self.layers]

    def cache_bytes(self, batch: int, max_len: int, dtype: torch.dtype) -> int:
        """Size of `new_caches(batch, max_len, dtype, ...)`: keys and values of every layer."""
        c = self.cfg
        return 2 * len(self.layers) * batch * c.num_key_value_heads * max_len * c.head_dim * dtype.itemsize

    def prefill_bytes(self, batch: int, length: int, dtype: torch.dtype) -> int:
        """Transient memory of one forward pass over `length` positions: a layer's activations
        (hidden, q/k/v, MLP) and its attention scores in fp32, as the math attention path
        materializes them (fused attention kernels need less)."""
        c = self.cfg
        width = 4 * c.hidden_size + 2 * c.num_attention_heads * c.head_dim + 3 * c.intermediate_size
        return batch * length * width * dtype.itemsize + batch * c.num_attention_heads * length * length * 4

    def forward(self, x, positions, mask, caches, start: int, cache_end: int | None = None):
        """x [B, T, D]; positions [B or 1, T]; mask bool [B or 1, 1, T, S] -> normed hidden [B, T, D]"""
        cos, sin = self.rotary(positions)
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cos, sin, mask, cache, start, cache_end)
        return self.norm(x)


class TalkerModel(TransformerStack):
    def __init__(self, c: TalkerConfig):
        super().__init__(c)
        self.codec_embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.text_embedding = nn.Embedding(c.text_vocab_size, c.text_hidden_size)


class TextProjection(nn.Module):
    """text embedding width -> talker width (two-layer MLP with bias)."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(text_dim, text_dim, bias=True)
        self.linear_fc2 = nn.Linear(text_dim, dim, bias=True)

    def forward(self, x):
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class CodePredictorModel(TransformerStack):
    def __init__(self, c: TransformerConfig, talker_dim: int):
        super().__init__(c, positions=c.num_code_groups)   # positions 0..15 of one frame, no more
        # embeddings of codebooks 1..15, in the talker's width
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(c.vocab_size, talker_dim) for _ in range(c.num_code_groups - 1))


class CodePredictor(nn.Module):
    """Predicts codebooks 1..15 of a frame from the talker hidden state and codebook 0."""

    def __init__(self, c: TransformerConfig, talker_dim: int):
        super().__init__()
        self.model = CodePredictorModel(c, talker_dim)
        self.lm_head = nn.ModuleList(
            nn.Linear(c.hidden_size, c.vocab_size, bias=False) for _ in range(c.num_code_groups - 1))
        self.small_to_mtp_projection = (nn.Linear(talker_dim, c.hidden_size, bias=True)
                                        if c.hidden_size != talker_dim else nn.Identity())
        self.groups = c.num_code_groups

    def predict(self, talker_hidden, code0_embed, choose, caches: list[KVCache]) -> torch.Tensor:
        """talker_hidden, code0_embed [B, D_talker] -> codebooks 1..15 [B, 15].

        `choose(logits [B, V], group) -> ids [B]` picks each code (greedy or sampled)."""
        x = self.small_to_mtp_projection(torch.stack([talker_hidden, code0_embed], dim=1))
        pos = torch.arange(self.groups, device=x.device)[None]
        codes = []
        start = 0
        for g in range(self.groups - 1):
            t = x.shape[1]
            # one new token sees every cached key: no mask (SDPA may then pick a fused kernel)
            mask = causal_mask(t, start + t, x.device) if t > 1 else None
            h = self.model(x, pos[:, start:start + t], mask, caches, start)
            code = choose(self.lm_head[g](h[:, -1]).float(), g)
            codes.append(code)
            start += t
            if g + 1 < self.groups - 1:
                x = self.small_to_mtp_projection(self.model.codec_embedding[g](code))[:, None]
        return torch.stack(codes, dim=1)


class Talker(nn.Module):
    def __init__(self, c: TalkerConfig):
        super().__init__()
        self.model = TalkerModel(c)
        self.text_projection = TextProjection(c.text_hidden_size, c.hidden_size)
        self.codec_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.code_predictor = CodePredictor(c.code_predictor, c.hidden_size)
        self.cfg = c

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """text token ids [..., N] -> text-track embeddings [..., N, D]"""
        return self.text_projection(self.model.text_embedding(ids))

    def embed_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """codec-vocabulary ids (codebook 0 and control ids) [..., N] -> [..., N, D]"""
        return self.model.codec_embedding(ids)

    def embed_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """one frame of 16 codes [..., 16] -> the sum of its codebook embeddings [..., D]"""
        parts = [self.model.codec_embedding(frame[..., 0])]
        parts += [emb(frame[..., g + 1]) for g, emb in enumerate(self.code_predictor.model.codec_embedding)]
        return torch.stack(parts, dim=-2).sum(-2)


class Qwen3TTS(nn.Module):
    """Top-level module: the talker plus, for Base checkpoints, the speaker encoder."""

    def __init__(self, talker_cfg: TalkerConfig, speaker_encoder: nn.Module | None):
        super().__init__()
        self.talker = Talker(talker_cfg)
        self.speaker_encoder = speaker_encoder
