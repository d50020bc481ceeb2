"""Audio -> codes with transformers' Mimi encoder (as the official package does), driven block by
block so that any length encodes in bounded memory.

Mimi's encoder: causal SEANet convs (24 kHz -> 25 Hz), a causal transformer with a 250-frame
sliding window, a stride-2 causal conv (-> 12.5 Hz) and a split residual VQ. Only the encoder
half is built: `MimiModel` is constructed on the meta device (the decoder half therefore costs
nothing), the buffers Mimi computes at construction are computed again on the CPU, and the encoder
parameters are loaded from the checkpoint names `encoder.*`. Works with transformers 4.57 (flat
MimiModel) and 5.x (encoder half as its own model).

The transformer gets an explicit attention mask: transformers 4.57 ignores Mimi's
`sliding_window` in a plain forward pass (full causal attention: what the official package, which
pins 4.57, computes), 5.x applies it. With an explicit mask both versions compute the same codes.
By default the mask is Mimi's 250-frame window (the model's design; `full_context=True` gives the
official 4.57 result, identical for clips up to 10 s), so audio of any length can be encoded in
blocks: every stage has a finite left context (conv receptive field, layers x (window - 1)
transformer frames, 2 frames of the stride-2 conv), so a block computed with that much left
context, and with absolute rotary positions, is the same computation as one whole pass.
"""
from __future__ import annotations

import torch
from torch import nn


def _computed_buffers_on_cpu(model: nn.Module) -> None:
    """A Mimi model built on the meta device (its parameters come from the checkpoint) also has
    its non-persistent buffers there: the values Mimi computes at construction and no checkpoint
    holds. They are computed again here on the CPU as Mimi computes them (transformers 5 does the
    same in `_init_weights`): each conv's effective kernel, stride and causal padding, and the
    rotary frequencies (from a fresh MimiRotaryEmbedding of the config: a few floats). A buffer
    of any other kind left on meta is an error that names it (a transformers version with a new
    one shows up in the tests, not in a silent wrong result)."""
    from transformers.models.mimi.modeling_mimi import MimiConv1d, MimiRotaryEmbedding

    for module in model.modules():
        if isinstance(module, MimiConv1d):
            conv = module.conv
            kernel = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
            stride = conv.stride[0]
            module.stride = torch.tensor(stride, dtype=torch.int64)
            module.kernel_size = torch.tensor(kernel, dtype=torch.int64)
            module.padding_total = torch.tensor(kernel - stride, dtype=torch.int64)
        elif isinstance(module, MimiRotaryEmbedding):
            with torch.device("cpu"):
                fresh = MimiRotaryEmbedding(module.config)
            for name in ("inv_freq", "original_inv_freq"):   # buffers in 5.x; the second a plain attribute in 4.57
                if isinstance(getattr(fresh, name, None), torch.Tensor):
                    setattr(module, name, getattr(fresh, name))
    persistent = set(model.state_dict())
    left = [name for name, b in model.named_buffers() if b.is_meta and name not in persistent]
    if left:
        raise RuntimeError(f"Mimi buffers this transformers version computes at construction are not "
                           f"rebuilt after a meta-device build: {left[:5]}")


def mimi_config(encoder_config: dict):
    from transformers import MimiConfig

    raw = {k: v for k, v in encoder_config.items() if k not in ("model_type", "architectures", "transformers_version")}
    cfg = MimiConfig(**raw)
    cfg._attn_implementation = "sdpa"  # our boolean window mask needs SDPA (eager would add it)
    return cfg


class MimiEncoder(nn.Module):
    """The encoder modules of a `MimiModel`, named as in the checkpoint under `encoder.`."""

    def __init__(self, encoder_config: dict, num_quantizers: int):
        super().__init__()
        from transformers import MimiModel

        cfg = mimi_config(encoder_config)
        with torch.device("meta"):            # the decoder half is built too, and costs nothing
            mimi = MimiModel(cfg)
        _computed_buffers_on_cpu(mimi)
        half = mimi.encoder
        if hasattr(half, "encoder_seanet"):   # transformers >= 5: MimiEncoderModel
            self.encoder, self.encoder_transformer, self.downsample = \
                half.encoder_seanet, half.encoder_transformer, half.downsample
        else:                                 # transformers 4.57: flat MimiModel
            self.encoder, self.encoder_transformer, self.downsample = \
                half, mimi.encoder_transformer, mimi.downsample
        self.quantizer = mimi.quantizer
        acoustic = self.quantizer.acoustic_residual_vector_quantizer.layers
        del acoustic[num_quantizers - 1:]     # codebooks past the valid ones are never used
        for layer in self.encoder_transformer.layers:
            impl = getattr(layer.self_attn, "config", cfg)._attn_implementation
            if "Sdpa" not in type(layer.self_attn).__name__ and impl != "sdpa":
                raise RuntimeError(f"Mimi attention is {impl!r}, expected SDPA")
        self.num_quantizers = num_quantizers
        self.window = cfg.sliding_window
        self.hop = 1                          # samples per SEANet frame (25 Hz)
        for r in cfg.upsampling_ratios:
            self.hop *= int(r)
        self.stride = int(self.downsample.stride)  # SEANet frames per code frame
        self.down_context = int(self.downsample.padding_total)  # its causal left context
        self.frame_samples = self.hop * self.stride
        self.transformer_context = cfg.num_hidden_layers * (cfg.sliding_window - 1)
        self.conv_context = self._conv_context()

    def _conv_context(self) -> int:
        """Left receptive field of the SEANet stack in samples, rounded up to whole frames."""
        from transformers.models.mimi.modeling_mimi import MimiConv1d

        field, jump = 0, 1
        for m in self.encoder.modules():      # construction order is the forward order
            if isinstance(m, MimiConv1d):
                field += (int(m.kernel_size) - 1) * jump
                jump *= int(m.stride)
        return -(-field // self.hop) * self.hop

    def _seanet(self, audio: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """[B, N] -> [B, C, ceil(N / hop)] in chunks with enough left context. Chunks start on the
        frame grid and only the last one ends off it, so every conv pads exactly as in one pass."""
        n = audio.shape[-1]
        frames = -(-n // self.hop)
        out = []
        for f0 in range(0, frames, chunk_frames):
            s0 = f0 * self.hop
            ctx = min(s0, self.conv_context)
            seg = audio[:, None, s0 - ctx:min(n, (f0 + chunk_frames) * self.hop)]
            out.append(self.encoder(seg)[..., ctx // self.hop:])
        return torch.cat(out, dim=-1)

    def _transformer(self, h: torch.Tensor, start: int, window: int | None) -> torch.Tensor:
        """h [B, T, C] holding SEANet frames start.. -> transformer outputs (causal, windowed
        unless window is None)."""
        t = h.shape[1]
        pos = torch.arange(start, start + t, device=h.device)
        mask = pos[None, :] <= pos[:, None]
        if window is not None:
            mask &= pos[None, :] > pos[:, None] - window
        return self.encoder_transformer(h, attention_mask=mask[None, None], position_ids=pos[None]).last_hidden_state

    @torch.inference_mode()
    def forward(self, audio: torch.Tensor, block_frames: int = 750, conv_chunk_frames: int = 250,
                full_context: bool = False) -> torch.Tensor:
        """audio [B, N] float32 at 24 kHz -> codes [B, Q, ceil(N / 1920)].

        block_frames: code frames per transformer block (750 = 60 s); conv_chunk_frames: SEANet
        frames per conv chunk (250 = 10 s). Both only bound memory; the codes do not depend on them.
        full_context: attend to the whole past instead of the 250-frame window, as the official
        package does under transformers 4.57 (one transformer pass: memory grows with T^2).
        """
        feats = self._seanet(audio, conv_chunk_frames).transpose(1, 2)  # [B, T25, C]
        t25 = feats.shape[1]
        window = None if full_context else self.window
        if full_context:
            block_frames = -(-t25 // self.stride)
        codes = []
        for f0 in range(0, -(-t25 // self.stride), block_frames):
            need = max(self.stride * f0 - self.down_context, 0)
            first = max(need - self.transformer_context, 0)
            last = min(self.stride * (f0 + block_frames), t25)
            h = self._transformer(feats[:, first:last], first, window)[:, need - first:]
            latents = self.downsample(h.transpose(1, 2))  # [B, C, frames (+1 if f0 > 0)]
            # outputs for the context frames come from the conv's replicate padding: dropped
            latents = latents[..., (self.stride * f0 - need) // self.stride:]
            codes.append(self.quantizer.encode(latents, self.num_quantizers).transpose(0, 1))
        return torch.cat(codes, dim=-1)
