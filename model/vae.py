"""Transformer VAE: 3D conv patch stem (4x time, 8x space), transformer blocks, 16-channel Gaussian latent,
and a pixel-shuffle head.

Attention in the decoder (and encoder) is confined to windows of `window` latent frames, so decoding a
video chunk by chunk gives exactly the frames of a whole-video decode: frames can be streamed as each
DiT chunk finishes. Positions are fixed 3D sin-cos, so any resolution divisible by the patch works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidmill.model.sizes import VAEConfig


def sincos_3d(t: int, h: int, w: int, dim: int, device: torch.device, window: int) -> torch.Tensor:
    """[t*h*w, dim] fixed positions; each axis gets dim/3 channels (rounded down to even).

    Time positions count within each attention window, so a window decodes the same alone or in a video.
    """
    per = (dim // 3) // 2 * 2
    parts = []
    for size, axis in ((t, 0), (h, 1), (w, 2)):
        pos = torch.arange(size, dtype=torch.float32, device=device)
        if axis == 0:
            pos = pos % window
        freqs = torch.exp(-math.log(10000.0) * torch.arange(per // 2, device=device) / max(1, per // 2))
        emb = torch.cat([(pos[:, None] * freqs).sin(), (pos[:, None] * freqs).cos()], dim=1)
        shape = [1, 1, 1, per]
        shape[axis] = size
        parts.append(emb.view(shape).expand(t, h, w, per))
    out = torch.cat(parts, dim=-1).reshape(t * h * w, 3 * per)
    return F.pad(out, (0, dim - 3 * per))


class VAEBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, dim]; attention over the N tokens of each batch row (one window)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


def _windows(tokens: torch.Tensor, t: int, window: int) -> tuple[torch.Tensor, int]:
    """[B, t*hw, d] -> [B * n_windows, window*hw, d] (t padded up to a multiple of window)."""
    b, n, d = tokens.shape
    hw = n // t
    pad = (-t) % window
    x = tokens.view(b, t, hw, d)
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
    return x.reshape(b * (t + pad) // window, window * hw, d), pad


def _unwindows(x: torch.Tensor, b: int, t: int, pad: int) -> torch.Tensor:
    d = x.shape[-1]
    return x.reshape(b, t + pad, -1, d)[:, :t].reshape(b, -1, d)


class VideoVAE(nn.Module):
    def __init__(self, cfg: VAEConfig, window: int = 6):
        super().__init__()
        self.cfg, self.window = cfg, window
        pt, ph, pw = cfg.patch
        self.stem = nn.Conv3d(cfg.in_channels, cfg.dim, kernel_size=cfg.patch, stride=cfg.patch)
        self.encoder = nn.ModuleList(VAEBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.enc_norm = nn.LayerNorm(cfg.dim)
        self.to_moments = nn.Linear(cfg.dim, 2 * cfg.latent_channels)
        self.from_latent = nn.Linear(cfg.latent_channels, cfg.dim)
        self.decoder = nn.ModuleList(VAEBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.dec_norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.in_channels * pt * ph * pw)  # pixel-shuffle head

    def _run(self, blocks: nn.ModuleList, tokens: torch.Tensor, t: int) -> torch.Tensor:
        b = tokens.shape[0]
        x, pad = _windows(tokens, t, self.window)
        for block in blocks:
            x = block(x)
        return _unwindows(x, b, t, pad)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, 3, T, H, W] in [-1, 1] -> (mean, logvar), each [B, 16, T/4, H/8, W/8] (unscaled)."""
        x = self.stem(video)
        b, d, t, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + sincos_3d(t, h, w, d, x.device, self.window)
        tokens = self.enc_norm(self._run(self.encoder, tokens, t))
        mean, logvar = self.to_moments(tokens).chunk(2, dim=-1)
        shape = (b, t, h, w, self.cfg.latent_channels)
        return (mean.reshape(shape).permute(0, 4, 1, 2, 3), logvar.reshape(shape).permute(0, 4, 1, 2, 3).clamp(-30, 20))

    def sample(self, mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None):
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * noise

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [B, 16, t, h, w] (unscaled) -> video [B, 3, 4t, 8h, 8w]."""
        b, c, t, h, w = latent.shape
        tokens = self.from_latent(latent.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c))
        tokens = tokens + sincos_3d(t, h, w, self.cfg.dim, latent.device, self.window)
        x = self.head(self.dec_norm(self._run(self.decoder, tokens, t)))
        pt, ph, pw = self.cfg.patch
        x = x.view(b, t, h, w, self.cfg.in_channels, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, self.cfg.in_channels, t * pt, h * ph, w * pw)

    def decode_chunks(self, latent: torch.Tensor):
        """Yield decoded frames window by window (streaming); concatenated they equal `decode`."""
        for start in range(0, latent.shape[2], self.window):
            yield self.decode(latent[:, :, start:start + self.window])
