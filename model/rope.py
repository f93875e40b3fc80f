"""Learnable 3D rotary position embedding over (t, h, w).

The head dimension is split into three equal even parts, one per axis (any remainder is not rotated).
Frequency bands start at the usual 1 / theta^(2i/d) values and are trained. Spatial positions are
centred and rescaled to a reference grid (see `positions`), so different resolutions share positions;
time positions are absolute latent-frame indices, never rescaled.
"""

from __future__ import annotations

import torch
from torch import nn


def positions(frames: torch.Tensor, height: int, width: int, ref_grid: tuple[int, int]) -> torch.Tensor:
    """[T*H*W, 3] (t, h, w) positions for a token grid, tokens ordered t-major then h then w."""
    h = (torch.arange(height, dtype=torch.float32) - (height - 1) / 2) * (ref_grid[0] / height)
    w = (torch.arange(width, dtype=torch.float32) - (width - 1) / 2) * (ref_grid[1] / width)
    t, hh, ww = torch.meshgrid(frames.float(), h, w, indexing="ij")
    return torch.stack([t.flatten(), hh.flatten(), ww.flatten()], dim=1)


class RoPE3D(nn.Module):
    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.axis_dim = (head_dim // 6) * 2  # even, per axis
        half = self.axis_dim // 2
        base = 1.0 / theta ** (torch.arange(half, dtype=torch.float32) * 2 / self.axis_dim)
        self.bands = nn.Parameter(base.repeat(3))  # [3 * half]: t bands, h bands, w bands

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [H, N, D], pos [N, 3] -> x with the first 3 * axis_dim channels rotated (in float32)."""
        half = self.axis_dim // 2
        angles = torch.cat([pos[:, i:i + 1] * self.bands[i * half:(i + 1) * half] for i in range(3)], dim=1)
        cos, sin = angles.cos(), angles.sin()  # [N, 3 * half]
        n_rot = 3 * self.axis_dim
        rot, rest = x[..., :n_rot].float(), x[..., n_rot:]
        even, odd = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
        return torch.cat([rotated.to(x.dtype), rest], dim=-1)
