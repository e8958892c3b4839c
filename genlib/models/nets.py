"""Network building blocks: MLPs, sinusoidal timestep embeddings, conv encoders/decoders, a small U-Net.

Networks map tensors to tensors and know nothing of losses, likelihoods or noise schedules: a
denoiser is `forward(x_t, t) -> (B, *sample_shape)`, an encoder body `x -> features`, a decoder
`z -> (B, *sample_shape)` raw output. Everything here exports to ONNX (no data-dependent control flow).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear -> SiLU -> ... -> Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.SiLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of integer timesteps t (B,) -> (B, dim) (Ho et al. 2020, App. B)."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.to(torch.float32).unsqueeze(-1) * self.freqs  # (B, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return F.pad(emb, (0, self.dim % 2))


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer MLP: t (B,) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t)


class TimeMLP(nn.Module):
    """Timestep-conditioned MLP on flattened samples: (x_t (B, *shape), t (B,)) -> (B, *shape).

    Each hidden layer adds a projection of the time embedding before its activation, with residual
    connections between equal-width layers.
    """

    def __init__(self, sample_shape: tuple[int, ...], hidden: tuple[int, ...], time_dim: int = 64) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        d = math.prod(self.sample_shape)
        self.time = TimeEmbedding(time_dim)
        widths = (d, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.time_proj = nn.ModuleList(nn.Linear(time_dim, b) for b in hidden)
        self.out = nn.Linear(widths[-1], d)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(t)
        h = x_t.flatten(1)
        for layer, proj in zip(self.layers, self.time_proj):
            nxt = F.silu(layer(h) + proj(temb))
            h = h + nxt if nxt.shape == h.shape else nxt
        return self.out(h).reshape(-1, *self.sample_shape)


def _groups(ch: int) -> int:
    return math.gcd(8, ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with the time embedding added in between (improved-diffusion style)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """A small conv U-Net denoiser for images: (x_t (B, C, H, W), t (B,)) -> (B, C, H, W).

    One ResBlock per level, stride-2 conv downsampling, nearest upsampling to the skip's size (so odd
    sizes such as 7x7 work), two ResBlocks in the middle.
    """

    def __init__(self, sample_shape: tuple[int, ...], channels: int = 32, channel_mult: tuple[int, ...] = (1, 2),
                 time_dim: int = 64) -> None:
        super().__init__()
        c, _, _ = sample_shape
        self.time = TimeEmbedding(time_dim)
        self.conv_in = nn.Conv2d(c, channels, 3, padding=1)
        widths = [channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels
        for i, w in enumerate(widths):
            self.down.append(ResBlock(prev, w, time_dim))
            self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
            prev = w
        self.mid1 = ResBlock(prev, prev, time_dim)
        self.mid2 = ResBlock(prev, prev, time_dim)
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for i, w in enumerate(reversed(widths)):
            self.up.append(ResBlock(prev + w, w, time_dim))
            # the deepest level was never downsampled, so only the levels above it upsample
            self.upconv.append(nn.Conv2d(prev, prev, 3, padding=1) if i > 0 else nn.Identity())
            prev = w
        self.norm_out = nn.GroupNorm(_groups(prev), prev)
        self.conv_out = nn.Conv2d(prev, c, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(t)
        h = self.conv_in(x_t)
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, temb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid1(h, temb), temb)
        for i, (block, conv) in enumerate(zip(self.up, self.upconv)):
            skip = skips.pop()
            if i > 0:
                h = conv(F.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = block(torch.cat([h, skip], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _down_size(n: int) -> int:
    return (n + 1) // 2  # a stride-2, kernel-3, padding-1 conv


class ConvEncoder(nn.Module):
    """Two stride-2 convs then a linear layer: images (B, C, H, W) -> features (B, out_dim)."""

    def __init__(self, sample_shape: tuple[int, ...], channels: int, out_dim: int) -> None:
        super().__init__()
        c, h, w = sample_shape
        self.convs = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1), nn.SiLU(),
        )
        flat = channels * 2 * _down_size(_down_size(h)) * _down_size(_down_size(w))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, out_dim), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: z (B, k) -> raw output (B, C, H, W) via two upsample+conv stages."""

    def __init__(self, sample_shape: tuple[int, ...], channels: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = sample_shape
        self.sizes = [(_down_size(h), _down_size(w)), (h, w)]
        self.h0, self.w0 = _down_size(_down_size(h)), _down_size(_down_size(w))
        self.c0 = channels * 2
        self.fc = nn.Sequential(nn.Linear(latent_dim, self.c0 * self.h0 * self.w0), nn.SiLU())
        self.conv1 = nn.Conv2d(self.c0, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, c, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).reshape(-1, self.c0, self.h0, self.w0)
        h = F.silu(self.conv1(F.interpolate(h, size=self.sizes[0], mode="nearest")))
        h = F.silu(self.conv2(F.interpolate(h, size=self.sizes[1], mode="nearest")))
        return self.out(h)


class MLPEncoder(nn.Module):
    """Flatten then an MLP: (B, *shape) -> features (B, hidden[-1])."""

    def __init__(self, sample_shape: tuple[int, ...], hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp(math.prod(sample_shape), hidden[:-1], hidden[-1]), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """An MLP from z (B, k) to a raw output reshaped to (B, *shape)."""

    def __init__(self, sample_shape: tuple[int, ...], hidden: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        self.net = mlp(latent_dim, tuple(reversed(hidden)), math.prod(sample_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(-1, *self.sample_shape)
