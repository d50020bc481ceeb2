"""Transformer building blocks shared by the talker, the code predictor and the speech decoder.

Module and parameter names equal the official checkpoint names (`self_attn.q_proj`,
`input_layernorm`, `mlp.gate_proj`, ...), so weights load with a plain `load_state_dict`.
Shapes: B batch, T new positions, S cached positions, H query heads, K kv heads, Dh head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2] if x.isdigit()) >= (2, 5)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """[Dh/2] float32 on the CPU, exactly as transformers' default rope init computes them (a real
    CPU tensor even while modules are built under torch.device("meta"))."""
    steps = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float()
    return 1.0 / (theta ** (steps / head_dim))


class Rotary(nn.Module):
    """cos/sin of rotary embeddings ("rotate half" layout, default rope type) as a table of
    every position, looked up by index in the forward pass: no trigonometry and no float64 per
    step (MPS, XPU and DirectML have no float64), and a lookup a CUDA graph can capture.

    The talker's multimodal RoPE feeds the same position to all three streams for speech, which
    makes it exactly the plain 1-D rotary embedding, so one implementation serves all models.
    The table is formed once, in float64 on the CPU (accurate at long positions), and kept in
    float32 as non-persistent buffers that `load_model` casts to the model's dtype and device;
    they move with the module (ComfyUI offloading) and are not part of the checkpoint.
    """

    def __init__(self, head_dim: int, theta: float, positions: int):
        super().__init__()
        angles = torch.arange(positions, dtype=torch.float64, device="cpu")[:, None] \
            * inverse_frequencies(head_dim, theta).double()                       # [P, Dh/2]
        angles = torch.cat([angles, angles], dim=-1)                               # [P, Dh]
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [..., T] (int, < the table length) -> cos, sin [..., T, Dh]"""
        return self.cos[positions], self.sin[positions]


class RotaryFp32:
    """cos/sin computed per call with float32 angles, as transformers does: the speech decoder's
    rotary embedding (bit-identical to the official model on short sequences; its streaming
    positions have no upper bound, so no table)."""

    def __init__(self, head_dim: int, theta: float):
        self.inv_freq = inverse_frequencies(head_dim, theta)
        self._on_device: dict = {}  # no host-to-device copy per call

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype):
        """positions [..., T] (int) -> cos, sin [..., T, Dh] in `dtype`"""
        inv_freq = self._on_device.get(positions.device)
        if inv_freq is None:
            inv_freq = self._on_device[positions.device] = self.inv_freq.to(positions.device)
        angles = positions.float()[..., None] * inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, Dh]; cos/sin [B or 1, T, Dh]"""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Preallocated keys/values of one attention layer: [B, K, S_max, Dh]."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)

    def write(self, start, k: torch.Tensor, v: torch.Tensor, end: int | None = None):
        """Stores k/v [B, K, T, Dh] at positions start.. (an int, or a 0-d tensor for static
        shapes); returns the cache up to `end` (default: the last written position)."""
        t = k.shape[2]
        if isinstance(start, torch.Tensor):
            index = start + torch.arange(t, device=k.device)
            self.k.index_copy_(2, index, k)
            self.v.index_copy_(2, index, v)
            end = self.k.shape[2] if end is None else end
        else:
            self.k[:, :, start:start + t] = k
            self.v[:, :, start:start + t] = v
            end = start + t if end is None else end
        return self.k[:, :, :end], self.v[:, :, :end]


class SlidingKV:
    """Keys/values of the last `keep` positions of one attention layer: the state of a
    sliding-window layer between streaming calls. Same `write` interface as `KVCache`; new
    positions are always appended after the kept ones."""

    def __init__(self, keep: int):
        self.keep = keep
        self.k = self.v = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def write(self, start: int, k: torch.Tensor, v: torch.Tensor, end: int | None = None):
        """Appends k/v [B, K, T, Dh]; returns kept + new keys/values ([B, K, S + T, Dh])."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        cut = max(k.shape[2] - self.keep, 0)
        self.k, self.v = k[:, :, cut:], v[:, :, cut:]
        return k, v


def attention(q, k, v, mask):
    """q [B, H, T, Dh], k/v [B, K, S, Dh], mask bool [B or 1, 1, T, S] (True = attend)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and not _SDPA_HAS_GQA:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    kwargs = {"enable_gqa": True} if groups > 1 and _SDPA_HAS_GQA else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, eps: float, qk_norm: bool):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, eps)
            self.k_norm = RMSNorm(head_dim, eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, start: int = 0,
                cache_end: int | None = None):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rotary(q.transpose(1, 2), cos, sin)
        k = apply_rotary(k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.write(start, k, v, cache_end)
        out = attention(q, k, v, mask)  # [B, H, T, Dh]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm transformer layer; optional q/k RMSNorm (talker) and layer scale (speech decoder)."""

    def __init__(self, dim, heads, kv_heads, head_dim, ffn, eps, qk_norm=True, layer_scale=False):
        super().__init__()
        self.self_attn = Attention(dim, heads, kv_heads, head_dim, eps, qk_norm)
        self.mlp = MLP(dim, ffn)
        self.input_layernorm = RMSNorm(dim, eps)
        self.post_attention_layernorm = RMSNorm(dim, eps)
        if layer_scale:
            self.self_attn_layer_scale = LayerScale(dim)
            self.mlp_layer_scale = LayerScale(dim)
        else:
            self.self_attn_layer_scale = self.mlp_layer_scale = None

    def forward(self, x, cos, sin, mask, cache=None, start=0, cache_end=None):
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start, cache_end)
        x = x + (h if self.self_attn_layer_scale is None else self.self_attn_layer_scale(h))
        h = self.mlp(self.post_attention_layernorm(x))
        return x + (h if self.mlp_layer_scale is None else self.mlp_layer_scale(h))


def causal_mask(q_len: int, kv_len: int, device, window: int | None = None) -> torch.Tensor:
    """bool [1, 1, T, S]: query i (at absolute position kv_len - q_len + i) sees keys j <= it,
    and only the last `window` of them when a sliding window is set."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    mask = k_pos <= q_pos
    if window is not None:
        mask &= k_pos > q_pos - window
    return mask[None, None]

