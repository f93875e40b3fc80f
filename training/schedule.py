"""Flow-matching time grids (MAGI-1's inference grids) and MAGI-1's per-chunk guidance.

t = 0 is pure noise, t = 1 is clean: x_t = (1 - t) x0 + t x1, velocity v = x1 - x0, step x += v dt.

MAGI-1 (inference/pipeline/video_generate.py: init_t, init_intervel) builds the grid in two stages:
a grid u on [0, 1], then t = sd3_shift(u^2, shift=3) = (u^2 / 3) / (1 - (2/3) u^2) = u^2 / (3 - 2 u^2).
- N steps (64, 32, 16, 8, ...): u = linspace(0, 1, N + 1).
- 12 steps, shortcut_mode "8,16,16" (the distilled grid): each of the 4 stages (a quarter of u) takes
  steps of 1/8, 1/16, 1/16; "16,16,8" takes 1/16, 1/16, 1/8.
The step size a distilled model is conditioned on is the step in u (`u_steps`): MAGI's distill_interval
(2, 1, 1 for "8,16,16", in units of 1/16) and its t-embedder input 1 / (2 du).
"""

from __future__ import annotations

import torch

SHIFT = 3.0
SHORTCUT_MODES = ("8,16,16", "16,16,8")


def u_grid(steps: int, shortcut_mode: str = "8,16,16") -> torch.Tensor:
    """[steps + 1] grid on [0, 1] (float64) before the time transform."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 12:
        if shortcut_mode not in SHORTCUT_MODES:
            raise ValueError(f"unknown shortcut_mode {shortcut_mode!r}; choose one of {SHORTCUT_MODES}")
        base = torch.linspace(0, 1, 5, dtype=torch.float64) / 4  # 0, 1/16, 2/16, 3/16, 4/16
        base = base[:3] if shortcut_mode == "16,16,8" else torch.cat([base[:1], base[2:4]])
        stages = torch.linspace(0, 1, 5, dtype=torch.float64)
        return torch.cat([base + s for s in stages])[: steps + 1]
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64)


def shift_time(u: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """t = sd3 shift of u^2 (our orientation, 0 = noise): x / shift / (1 + (1 / shift - 1) x), x = u^2."""
    x = u.double() ** 2
    return (x / shift) / (1 + (1 / shift - 1) * x)


def time_grid(steps: int, shortcut_mode: str = "8,16,16") -> torch.Tensor:
    """[steps + 1] noise levels from 0 to 1: u = 1/4, 1/2, 3/4 -> t = 0.0217, 0.1, 0.3."""
    return shift_time(u_grid(steps, shortcut_mode)).float()


def u_steps(steps: int, shortcut_mode: str = "8,16,16") -> torch.Tensor:
    """[steps] step sizes in u (what a shortcut-distilled model is conditioned on)."""
    return u_grid(steps, shortcut_mode).diff().float()


def guidance_weights(t: float, w_prev: float = 1.5, w_text: float = 7.5, until: float = 0.3) -> tuple[float, float]:
    """Dynamic guidance: strong (w_prev, w_text) while t < until (high noise), else (1, 0)."""
    return (w_prev, w_text) if t < until else (1.0, 0.0)


def guide(uncond: torch.Tensor, prev: torch.Tensor, text: torch.Tensor, w_prev: float, w_text: float) -> torch.Tensor:
    """v = (1 - w_prev) u + (w_prev - w_text) cp + w_text ct.

    u: own chunk only, null text; cp: previous chunks, null text; ct: previous chunks and text.
    """
    return (1 - w_prev) * uncond + (w_prev - w_text) * prev + w_text * text
