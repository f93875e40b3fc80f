"""Flow-matching time grid and MAGI-1's per-chunk guidance.

t = 0 is pure noise, t = 1 is clean: x_t = (1 - t) x0 + t x1, velocity v = x1 - x0, step x += v dt.
"""

from __future__ import annotations

import torch


def time_grid(steps: int) -> torch.Tensor:
    """u = linspace(0, 1, N + 1); t = (u^2 / 3) / (1 - (2/3) u^2): u = 1/4, 1/2, 3/4 -> 0.0217, 0.1, 0.3."""
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    return ((u**2 / 3) / (1 - (2 / 3) * u**2)).float()


def guidance_weights(t: float, w_prev: float = 1.5, w_text: float = 7.5, until: float = 0.3) -> tuple[float, float]:
    """Dynamic guidance: strong (w_prev, w_text) while t < until (high noise), else (1, 0)."""
    return (w_prev, w_text) if t < until else (1.0, 0.0)


def guide(uncond: torch.Tensor, prev: torch.Tensor, text: torch.Tensor, w_prev: float, w_text: float) -> torch.Tensor:
    """v = (1 - w_prev) u + (w_prev - w_text) cp + w_text ct.

    u: own chunk only, null text; cp: previous chunks, null text; ct: previous chunks and text.
    """
    return (1 - w_prev) * uncond + (w_prev - w_text) * prev + w_text * text
