"""Codes -> audio: the 12 Hz speech decoder (split-RVQ dequantiser, causal conv, sliding-window
transformer, ConvNeXt upsampling, SnakeBeta conv decoder), written from the official architecture.
Module names equal the checkpoint names under `decoder.`, so weights load without a mapping.

Every layer is causal with zero lookahead, so one implementation serves whole-sequence and
streaming decoding: a stateful layer takes its left context from a `state` dict (nothing there
means the start of the sequence: the zero padding of a whole-sequence pass) and leaves what the
next call needs there (conv inputs, transposed-conv partial sums, attention keys/values).
Shapes: B batch, Q codebooks, T frames, C channels, N samples at the layer's own rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DecoderLayer, RMSNorm, RotaryFp32, SlidingKV, causal_mask

State = dict  # stateful module -> what it keeps between calls

# Peak working memory of a decoder call, in copies of its widest activation (the last
# DecoderBlock's channels x samples): measured 17-24 on CPU (fp32, real-size decoder; oneDNN's
# im2col of the k=7 convolutions dominates) with 1-60 frames per call.
ACTIVATION_COPIES = 24


@dataclass
class DecoderConfig:
    """`decoder_config` of the tokenizer's config.json (official key names)."""
    codebook_size: int = 2048
    codebook_dim: int = 512
    latent_dim: int = 1024
    hidden_size: int = 512
    intermediate_size: int = 1024
    num_hidden_layers: int = 8
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int | None = None
    sliding_window: int = 72
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    num_quantizers: int = 16
    upsample_rates: tuple = (8, 5, 4, 3)
    upsampling_ratios: tuple = (2, 2)
    decoder_dim: int = 1536
    hidden_act: str = "silu"
    attention_bias: bool = False

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        self.upsample_rates, self.upsampling_ratios = tuple(self.upsample_rates), tuple(self.upsampling_ratios)

    @property
    def samples_per_frame(self) -> int:
        n = 1
        for r in self.upsampling_ratios + self.upsample_rates:
            n *= r
        return n


def _with_context(module: nn.Module, x: torch.Tensor, n: int, state: State) -> torch.Tensor:
    """x [B, C, N] -> [B, C, n + N]: the last n inputs of the previous call (zeros at the start)
    joined in front; keeps the last n of the joined sequence for the next call."""
    if n == 0:
        return x
    past = state.get(module)
    if past is None:
        past = x.new_zeros(x.shape[0], x.shape[1], n)
    x = torch.cat([past, x], dim=-1)
    state[module] = x[..., x.shape[-1] - n:].clone()  # a copy, so the big tensor can be freed
    return x


class CausalConv(nn.Module):
    """Conv1d, stride 1: output n sees inputs n - (k-1)*d .. n."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation, groups=groups)
        self.context = (kernel - 1) * dilation

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:  # [B, C, N] -> [B, C', N]
        return self.conv(_with_context(self, x, self.context, state))


class CausalTransConv(nn.Module):
    """ConvTranspose1d (kernel k, stride s) that emits only finished samples: the s outputs of
    input t see inputs t - ceil(k/s) + 1 .. t. A whole-sequence pass drops the k - s trailing
    partial sums; a streaming call keeps them and adds them to the head of the next call's output
    (overlap-add), so a first call is exactly the whole-sequence computation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride=stride)
        self.stride = stride
        self.context = -(-kernel // stride) - 1   # past inputs an output depends on

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:  # [B, C, T] -> [B, C', T*s]
        n = x.shape[-1] * self.stride
        y = self.conv(x)                           # [B, C', (T-1)*s + k]
        carry = state.get(self)
        if carry is not None:
            y[..., :carry.shape[-1]] += carry
        if y.shape[-1] > n:
            tail = y[..., n:]
            state[self] = tail - self.conv.bias[:, None] if self.conv.bias is not None else tail.clone()
        return y[..., :n]


class SnakeBeta(nn.Module):
    """x + sin^2(x * e^alpha) / (e^beta + 1e-9), per channel."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, N]
        alpha = self.alpha.exp()[None, :, None]
        beta = self.beta.exp()[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:  # [B, C, N]
        h = self.dwconv(x, state).transpose(1, 2)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + h.transpose(1, 2)


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x), state)), state)


class DecoderBlock(nn.Module):
    """SnakeBeta, upsampling by `rate`, residual units with dilations 1, 3, 9."""

    def __init__(self, cin: int, cout: int, rate: int):
        super().__init__()
        self.block = nn.ModuleList([SnakeBeta(cin), CausalTransConv(cin, cout, 2 * rate, rate),
                                    *(ResidualUnit(cout, d) for d in (1, 3, 9))])

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        x = self.block[0](x)
        for layer in self.block[1:]:
            x = layer(x, state)
        return x


class Codebook(nn.Module):
    """Codebook vectors stored as EMA sums and counts: vector = embedding_sum / usage."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.cluster_usage = nn.Parameter(torch.ones(size))
        self.embedding_sum = nn.Parameter(torch.zeros(size, dim))
        self._table, self._key = None, None

    def table(self) -> torch.Tensor:  # [size, dim], computed once per loaded weights
        w = self.embedding_sum
        key = (w.data_ptr(), w.dtype, w.device)
        if self._key != key:
            self._table = w / self.cluster_usage.clamp(min=1e-5)[:, None]
            self._key = key
        return self._table


class VectorQuantizer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self._codebook = Codebook(size, dim)


class Dequantizer(nn.Module):
    """Decode side of a residual VQ: sum of the codebook vectors, then a 1x1 conv."""

    def __init__(self, n: int, size: int, dim: int, out_dim: int):
        super().__init__()
        self.vq = nn.Module()
        self.vq.layers = nn.ModuleList(VectorQuantizer(size, dim) for _ in range(n))
        self.output_proj = nn.Conv1d(dim, out_dim, 1, bias=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # [B, n, T] -> [B, out_dim, T]
        x = 0
        for i, layer in enumerate(self.vq.layers):
            x = x + F.embedding(codes[:, i], layer._codebook.table())
        return self.output_proj(x.transpose(1, 2))


class SplitDequantizer(nn.Module):
    """Codebook 0 (semantic) and codebooks 1.. (acoustic) have their own projections."""

    def __init__(self, c: DecoderConfig):
        super().__init__()
        dim = c.codebook_dim // 2
        self.rvq_first = Dequantizer(1, c.codebook_size, dim, c.codebook_dim)
        self.rvq_rest = Dequantizer(c.num_quantizers - 1, c.codebook_size, dim, c.codebook_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # [B, Q, T] -> [B, codebook_dim, T]
        return self.rvq_first(codes[:, :1]) + self.rvq_rest(codes[:, 1:])


class DecoderTransformer(nn.Module):
    """Causal transformer over frames with a sliding window; its streaming state is the
    absolute position and the last window-1 keys/values of every layer."""

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.input_proj = nn.Linear(c.latent_dim, c.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                         c.intermediate_size, c.rms_norm_eps, qk_norm=False, layer_scale=True)
            for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.output_proj = nn.Linear(c.hidden_size, c.latent_dim)
        self.window = c.sliding_window
        # fp32 angles as in the official model (bit-identical on <= 300 frames)
        self.rotary = RotaryFp32(c.head_dim, c.rope_theta)

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:  # [B, T, latent] -> same
        t = x.shape[1]
        start, caches = state.get(self) or (0, [SlidingKV(self.window - 1) for _ in self.layers])
        cos, sin = self.rotary(torch.arange(start, start + t, device=x.device)[None], x.dtype)
        mask = causal_mask(t, caches[0].length + t, x.device, self.window)
        h = self.input_proj(x)
        for layer, cache in zip(self.layers, caches):
            h = layer(h, cos, sin, mask, cache)
        state[self] = (start + t, caches)
        return self.output_proj(self.norm(h))


class SpeechDecoder(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.config = c
        self.quantizer = SplitDequantizer(c)
        self.pre_conv = CausalConv(c.codebook_dim, c.latent_dim, 3)
        self.pre_transformer = DecoderTransformer(c)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv(c.latent_dim, c.latent_dim, r, r), ConvNeXtBlock(c.latent_dim)])
            for r in c.upsampling_ratios)
        dims = [c.decoder_dim // 2 ** i for i in range(len(c.upsample_rates) + 1)]
        self.decoder = nn.ModuleList([
            CausalConv(c.latent_dim, c.decoder_dim, 7),
            *(DecoderBlock(dims[i], dims[i + 1], r) for i, r in enumerate(c.upsample_rates)),
            SnakeBeta(dims[-1]),
            CausalConv(dims[-1], 1, 7),
        ])

    def forward(self, codes: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """codes [B, Q, T] (valid indices) -> audio [B, T * samples_per_frame] in [-1, 1].
        With a `state` dict the call continues the previous one exactly; without, it decodes
        a whole sequence from silence."""
        state = {} if state is None else state
        x = self.pre_conv(self.quantizer(codes), state)                      # [B, latent, T]
        x = self.pre_transformer(x.transpose(1, 2), state).transpose(1, 2)   # [B, latent, T]
        for upsample, convnext in self.upsample:
            x = convnext(upsample(x, state), state)                          # [B, latent, 4T]
        x = self.decoder[0](x, state)
        for block in self.decoder[1:-2]:
            x = block(x, state)
        x = self.decoder[-1](self.decoder[-2](x), state)                     # [B, 1, T * 1920]
        return x[:, 0].clamp(-1, 1)

    def activation_bytes(self, frames: int, dtype: torch.dtype) -> int:
        """Peak working memory of decoding `frames` frames of one item in one call (memory grows
        linearly with frames x batch, so callers bound it by decoding in chunks)."""
        c = self.config
        dims = [c.decoder_dim // 2 ** i for i in range(len(c.upsample_rates) + 1)]
        rate = 1
        for r in c.upsampling_ratios:
            rate *= r
        widest = 4 * c.latent_dim * rate                     # the ConvNeXt MLP
        for dim, r in zip(dims[1:], c.upsample_rates):
            rate *= r
            widest = max(widest, dim * rate)                  # channels x samples per frame
        return ACTIVATION_COPIES * widest * frames * dtype.itemsize

    def receptive_field(self) -> dict:
        """How far back in the codes an output sample looks, from the layer geometry.
        Returns frames (worst case over the sample's position in its frame) and samples."""
        c = self.config
        spf = c.samples_per_frame

        def back(sample: int) -> int:  # earliest frame that output `sample` depends on
            i = sample
            for layer in reversed(self.decoder):
                i = _back_through(layer, i)
            for upsample, convnext in reversed(self.upsample):
                i = _back_through(upsample, _back_through(convnext, i))
            i -= c.num_hidden_layers * (c.sliding_window - 1)   # each layer sees window-1 back
            return _back_through(self.pre_conv, i)

        start = 10 * spf  # a frame well away from the start, so no clipping at 0
        frames = max(start // spf - back(s) + 1 for s in range(start, start + spf))
        samples = max(s - back(s) * spf + 1 for s in range(start, start + spf))
        return {"frames": frames, "samples": samples,
                "transformer_frames": c.num_hidden_layers * (c.sliding_window - 1),
                "lookahead_frames": 0}


def _back_through(module: nn.Module, i: int) -> int:
    """Earliest input index that output index `i` of `module` depends on."""
    if isinstance(module, CausalConv):
        return i - module.context
    if isinstance(module, CausalTransConv):
        return i // module.stride - module.context
    if isinstance(module, (ConvNeXtBlock, ResidualUnit)):
        return _back_through(module.dwconv if isinstance(module, ConvNeXtBlock) else module.conv1, i)
    if isinstance(module, DecoderBlock):
        for layer in reversed(module.block):
            i = _back_through(layer, i)
        return i
    return i  # pointwise layers
