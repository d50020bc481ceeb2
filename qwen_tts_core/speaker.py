"""Speaker encoder of the Base models: ECAPA-TDNN over a 128-bin log-mel of 24 kHz audio, giving
the x-vector that conditions voice cloning. Names follow the official checkpoint
(`speaker_encoder.blocks.1.res2net_block.blocks.0.conv.weight`, ...)."""
from __future__ import annotations

import torch
from torch import nn

from .config import SpeakerEncoderConfig


def _conv(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, k, dilation=dilation, padding="same", padding_mode="reflect")


class TDNN(nn.Module):
    """conv + ReLU"""

    def __init__(self, cin: int, cout: int, k: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = _conv(cin, cout, k, dilation)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Res2Net(nn.Module):
    """Channels split in `scale` groups; group i>0 is convolved after adding group i-1's output."""

    def __init__(self, channels: int, scale: int, k: int, dilation: int):
        super().__init__()
        self.blocks = nn.ModuleList(TDNN(channels // scale, channels // scale, k, dilation)
                                    for _ in range(scale - 1))
        self.scale = scale

    def forward(self, x):
        parts = list(torch.chunk(x, self.scale, dim=1))
        out, y = [parts[0]], None
        for i, block in enumerate(self.blocks):
            y = block(parts[i + 1] if y is None else parts[i + 1] + y)
            out.append(y)
        return torch.cat(out, dim=1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.conv1 = _conv(channels, bottleneck)
        self.conv2 = _conv(bottleneck, channels)

    def forward(self, x):
        s = torch.relu(self.conv1(x.mean(dim=2, keepdim=True)))
        return x * torch.sigmoid(self.conv2(s))


class SERes2NetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, scale: int, se: int, k: int, dilation: int):
        super().__init__()
        self.tdnn1 = TDNN(cin, cout)
        self.res2net_block = Res2Net(cout, scale, k, dilation)
        self.tdnn2 = TDNN(cout, cout)
        self.se_block = SqueezeExcite(cout, se)

    def forward(self, x):
        return x + self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))))


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and std over time -> [B, 2C, 1]."""

    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.tdnn = TDNN(3 * channels, attention_channels)
        self.conv = _conv(attention_channels, channels)

    @staticmethod
    def _stats(x, w):
        mean = (w * x).sum(2)
        std = ((w * (x - mean[..., None]).pow(2)).sum(2).clamp(min=1e-12)).sqrt()
        return mean, std

    def forward(self, x):  # x [B, C, T]
        t = x.shape[-1]
        mean, std = self._stats(x, torch.full_like(x[:, :1], 1.0 / t))
        context = torch.cat([x, mean[..., None].expand(-1, -1, t), std[..., None].expand(-1, -1, t)], 1)
        weights = torch.softmax(self.conv(torch.tanh(self.tdnn(context))), dim=2)
        mean, std = self._stats(x, weights)
        return torch.cat([mean, std], dim=1)[..., None]


class SpeakerEncoder(nn.Module):
    def __init__(self, c: SpeakerEncoderConfig):
        super().__init__()
        ch, ks, dil = c.enc_channels, c.enc_kernel_sizes, c.enc_dilations
        blocks: list[nn.Module] = [TDNN(c.mel_dim, ch[0], ks[0], dil[0])]
        for i in range(1, len(ch) - 1):
            blocks.append(SERes2NetBlock(ch[i - 1], ch[i], c.enc_res2net_scale, c.enc_se_channels, ks[i], dil[i]))
        self.blocks = nn.ModuleList(blocks)
        self.mfa = TDNN(ch[-1], ch[-1], ks[-1], dil[-1])
        self.asp = AttentiveStatsPool(ch[-1], c.enc_attention_channels)
        self.fc = _conv(2 * ch[-1], c.enc_dim)
        self.cfg = c

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, T, mel_dim] -> speaker embedding [B, enc_dim]"""
        x = mel.transpose(1, 2)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))  # multi-layer feature aggregation
        return self.fc(self.asp(x))[..., 0]


class LogMel(nn.Module):
    """Log-mel features of the speaker encoder, as the official front end computes them:
    n_fft 1024, hop 256, periodic Hann window, reflect padding of (n_fft - hop) / 2 on both sides
    (no centering), magnitude sqrt(|X|^2 + 1e-9), Slaney mel filterbank 0..12 kHz,
    log(clamp(x, 1e-5)). torchaudio provides the power spectrogram and the filterbank."""

    def __init__(self, sample_rate: int = 24000, n_mels: int = 128, n_fft: int = 1024, hop: int = 256):
        super().__init__()
        import torchaudio

        self.pad = (n_fft - hop) // 2
        self.power = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, win_length=n_fft, hop_length=hop, power=2.0, center=False)
        self.register_buffer("filters", torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney",
            mel_scale="slaney"), persistent=False)  # [freqs, mels]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, T] float32 -> log-mel [B, frames, n_mels]"""
        x = torch.nn.functional.pad(wav[:, None], (self.pad, self.pad), mode="reflect")[:, 0]
        magnitude = (self.power.to(x.device)(x) + 1e-9).sqrt()  # [B, freqs, frames]
        mel = magnitude.transpose(1, 2) @ self.filters.to(x.device)
        return mel.clamp(min=1e-5).log()
