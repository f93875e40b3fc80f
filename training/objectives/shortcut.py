"""Shortcut distillation: one model that samples in 8-16 steps, guidance folded in (MAGI-1 / shortcut models).

A second objective for the trainer's loop (the loop is the trainer's; this file only builds a loss). It follows
the interface in training/objectives/__init__.py: `loss(model, batch, step, rng) -> (loss, metrics)`, every
random choice from `rng`; `attach(trainer)` takes the trainer's EMA (copied into a frozen module once per
step for the self-consistency targets) and device; `state_dict()` is JSON (the step-size cycle position).

- Noise levels follow the inference pipeline: per sample, the newest chunk k gets u0 on the d-grid in
  [0, 1/W) (or anywhere in [0, 1) with probability `tail_prob`), chunk j gets u_j = min(1, u0 + (k - j)/W);
  t_j = shift(u_j^2) as in the sampler's grid; chunks with u_j = 1 are clean context (t = clean_t, no loss).
- The model is conditioned on the step size d in u (`DiT(..., step_size=d)`, MAGI: 1 / (2 d) through a
  timestep embedder added to the time embedding).
- A fraction `bootstrap_fraction` of the samples (stochastic rounding, 1/8 by default) are bootstrap samples
  with d cycling through `step_sizes` (1/64, 1/32, 1/16, 1/8 like MAGI's 64, 32, 16, 8 steps); the rest use
  the smallest step. Target at the smallest step: the flow-matching velocity x1 - x0, with classifier-free
  guidance folded in when a teacher and weights are given:
      (x1 - x0) + (1 - w_prev) (u_T - ct_T) + (w_prev - w_text) (cp_T - ct_T)
  (the guided velocity of MAGI's formula with the data's x1 - x0 in place of the teacher's text term ct_T;
  (w_prev, w_text) per chunk by the dynamic schedule). With w_prev = w_text = 1 it is plain flow matching.
- Target at d > smallest: the EMA model under no_grad, two half steps of d/2 (each conditioned on d/2, one
  pass: guidance is already in it), every noisy chunk moving together as in the pipelined sampler:
      v1 = ema(x_t, t(u), d/2); x' = x_t + (t(u + d/2) - t(u)) v1; v2 = ema(x', t(u + d/2), d/2)
      target = clip((dt1 v1 + dt2 v2) / (dt1 + dt2), -clip, clip)
  The weights dt1, dt2 are the two half steps' lengths in t, so the target is exactly the velocity of the
  two Euler steps on the shifted grid; on a uniform grid it is (v1 + v2) / 2 (the shortcut-models formula).
- Loss: mean squared error over the tokens of noisy chunks. As d -> the smallest step (and without
  guidance) it is exactly the flow-matching loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidmill.model.dit import Packed, pack, unpack
from vidmill.training.data.sample import LatentSample, PackedBatch
from vidmill.training.schedule import guidance_weights, shift_time


@dataclass
class ShortcutConfig:
    step_sizes: tuple[float, ...] = (1 / 64, 1 / 32, 1 / 16, 1 / 8)  # d in u; the first is the smallest step
    bootstrap_fraction: float = 1 / 8  # of each batch's samples get self-consistency targets
    target_clip: float = 4.0  # bootstrap targets clipped to [-clip, clip] (shortcut models)
    window_chunks: int = 4  # W: chunks denoised together at inference (SamplerConfig.in_flight)
    tail_prob: float = 0.2  # newest chunk anywhere in [0, 1) (the end of a video)
    clean_t: float = 0.9999  # t of clean context chunks (the sampler's cache_t)
    attention_window: int | None = 4  # previous chunks a chunk may see (the sampler's window)
    step_conditioning: bool = True  # False (with no bootstrap): plain flow matching on a base model
    guidance: bool = False  # fold classifier-free guidance into the targets (needs the teacher)
    w_prev: float = 1.5
    w_text: float = 7.5
    guidance_until: float = 0.3
    seed: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class _Noised:
    """A batch's samples at their noise levels, with the step size per chunk."""

    x0: list[torch.Tensor]  # noise per sample [C, T, H, W]
    x1: list[torch.Tensor]  # data
    u: list[torch.Tensor]  # [n_chunks] per sample, 1 = clean context
    d: list[float]  # step size per sample
    offsets: list[int]  # first latent frame of each sample in its clip (absolute chunk positions)


class ShortcutObjective:
    """`loss(model, batch, step, rng) -> (loss, metrics)`; `ema`: a module holding the EMA weights."""

    name = "shortcut"

    def __init__(self, config: ShortcutConfig, ema: nn.Module, teacher: nn.Module | None = None):
        if config.guidance and teacher is None:
            raise ValueError("folding guidance into the targets needs the teacher model")
        if not config.step_conditioning and config.bootstrap_fraction > 0:
            raise ValueError("bootstrap targets need step-size conditioning")
        if any(d <= 0 or d > 1 / config.window_chunks for d in config.step_sizes):
            raise ValueError(f"step sizes must lie in (0, 1/{config.window_chunks}]: {config.step_sizes}")
        self.config, self.ema, self.teacher = config, ema, teacher
        self.generator = torch.Generator().manual_seed(config.seed)  # used when the caller passes no rng
        self.bootstrap_count = 0  # bootstrap samples so far: which step size comes next
        self.trainer = None
        self._ema_step: int | None = None
        self._rng: torch.Generator | None = None  # the trainer's per-micro-batch generator

    def attach(self, trainer) -> None:
        """Called by the trainer once: its EMA feeds the targets (copied into `self.ema` each new step)."""
        self.trainer = trainer
        device = getattr(trainer, "device", None)
        if device is not None:
            self.ema.to(device)
            if self.teacher is not None:
                self.teacher.to(device)

    def _sync_ema(self, step: int) -> None:
        if self.trainer is not None and step != self._ema_step:
            self.trainer.ema.copy_to(self.ema)
            self._ema_step = step

    def state_dict(self) -> dict:
        return {"bootstrap_count": self.bootstrap_count}

    def load_state_dict(self, state: dict) -> None:
        self.bootstrap_count = int(state["bootstrap_count"])

    # -- noise levels -------------------------------------------------------------------------------
    def _rand(self) -> float:
        return float(torch.rand((), generator=self.rng))

    def _levels(self, n_chunks: int, d: float) -> torch.Tensor:
        """u per chunk (oldest first) on the d-grid; the newest chunk is the noisiest."""
        cfg = self.config
        span = 1.0 if self._rand() < cfg.tail_prob else 1.0 / cfg.window_chunks
        u0 = math.floor(self._rand() * span / d) * d
        ages = torch.arange(n_chunks - 1, -1, -1, dtype=torch.float64)
        return (u0 + ages / cfg.window_chunks).clamp(max=1.0)

    def noise(self, samples: list[LatentSample], bootstrap: list[bool]) -> _Noised:
        steps = self.config.step_sizes
        x0, x1, us, ds = [], [], [], []
        offsets = [s.first_chunk * (s.latent.shape[1] // s.n_chunks) for s in samples]
        for sample, boot in zip(samples, bootstrap, strict=True):
            d = steps[self.bootstrap_count % len(steps)] if boot else steps[0]
            self.bootstrap_count += int(boot)
            x1.append(sample.latent.float())
            x0.append(torch.randn(sample.latent.shape, generator=self.rng).to(sample.latent.device))
            us.append(self._levels(sample.n_chunks, d))
            ds.append(d)
        return _Noised(x0, x1, us, ds, offsets)

    # -- model passes -------------------------------------------------------------------------------
    def _t(self, u: torch.Tensor) -> torch.Tensor:
        """Noise level per chunk; clean context at clean_t."""
        return torch.where(u >= 1, torch.full_like(u, self.config.clean_t), shift_time(u)).float()

    def _pack(self, model: nn.Module, xs: list[torch.Tensor], us: list[torch.Tensor],
              captions: list[list[torch.Tensor | None]], offsets: list[int]) -> Packed:
        """Clean context chunks get the null caption, as the sampler writes a finished chunk's keys/values."""
        captions = [[None if float(u[j]) >= 1 else c for j, c in enumerate(caps)] for u, caps in zip(us, captions,
                                                                                                    strict=True)]
        return pack(xs, [self._t(u) for u in us], captions, _cfg(model), offsets)

    def _forward(self, model: nn.Module, p: Packed, d: list[float] | None, counts: list[int],
                 null_text: bool = False, isolate: bool = False) -> list[torch.Tensor]:
        if not self.config.step_conditioning:
            d = None
        step = None if d is None else torch.tensor([v for v, n in zip(d, counts, strict=True) for _ in range(n)],
                                                   device=p.x.device)
        out = model(p, window=self.config.attention_window, null_text=null_text, isolate=isolate, step_size=step)
        return unpack(out, p, _cfg(model))

    def _interp(self, x0: torch.Tensor, x1: torch.Tensor, u: torch.Tensor, frames: int) -> torch.Tensor:
        t = _per_frame(self._t(u), frames, x0.device)
        return (1 - t) * x0 + t * x1

    @torch.no_grad()
    def _base_targets(self, noised: _Noised, xt: list[torch.Tensor], captions, frames: int) -> list[torch.Tensor]:
        """x1 - x0, plus the teacher's guidance terms when guidance is folded in."""
        fm = [b - a for a, b in zip(noised.x0, noised.x1, strict=True)]
        cfg = self.config
        if not cfg.guidance:
            return fm
        p = self._pack(self.teacher, xt, noised.u, captions, noised.offsets)
        counts = [len(u) for u in noised.u]
        ct = self._forward(self.teacher, p, None, counts)
        cp = self._forward(self.teacher, p, None, counts, null_text=True)
        un = self._forward(self.teacher, p, None, counts, null_text=True, isolate=True)
        out = []
        for i, u in enumerate(noised.u):
            weights = [guidance_weights(float(t), cfg.w_prev, cfg.w_text, cfg.guidance_until) for t in self._t(u)]
            w_prev, w_text = (_per_frame(torch.tensor([w[j] for w in weights]), frames, fm[i].device) for j in (0, 1))
            out.append(fm[i] + (1 - w_prev) * (un[i] - ct[i]) + (w_prev - w_text) * (cp[i] - ct[i]))
        return out

    @torch.no_grad()
    def _bootstrap_targets(self, noised: _Noised, xt: list[torch.Tensor], captions, idx: list[int],
                           frames: int) -> list[torch.Tensor]:
        """Two half steps of the EMA model per bootstrap sample (all its noisy chunks move together)."""
        us = [noised.u[i] for i in idx]
        halves = [noised.d[i] / 2 for i in idx]
        counts = [len(u) for u in us]
        u_mid = [torch.where(u >= 1, u, u + h) for u, h in zip(us, halves, strict=True)]
        u_end = [torch.where(u >= 1, u, u + 2 * h) for u, h in zip(us, halves, strict=True)]
        caps = [captions[i] for i in idx]
        offsets = [noised.offsets[i] for i in idx]
        x = [xt[i] for i in idx]
        v1 = self._forward(self.ema, self._pack(self.ema, x, us, caps, offsets), halves, counts)
        dt1 = [_per_frame(self._t(m) - self._t(u), frames, a.device) for u, m, a in zip(us, u_mid, x, strict=True)]
        x_mid = [a + dt * v for a, dt, v in zip(x, dt1, v1, strict=True)]
        v2 = self._forward(self.ema, self._pack(self.ema, x_mid, u_mid, caps, offsets), halves, counts)
        dt2 = [_per_frame(self._t(e) - self._t(m), frames, a.device) for m, e, a in zip(u_mid, u_end, x, strict=True)]
        clip = self.config.target_clip
        return [((a * va + b * vb) / (a + b).clamp(min=1e-12)).clamp(-clip, clip)
                for a, va, b, vb in zip(dt1, v1, dt2, v2, strict=True)]

    # -- the loss -----------------------------------------------------------------------------------
    def choose_bootstrap(self, n: int) -> list[bool]:
        """k of n samples (k = floor(f n + r), r ~ U[0, 1): f on average), chosen at random."""
        k = min(n, math.floor(self.config.bootstrap_fraction * n + self._rand()))
        chosen = set(torch.randperm(n, generator=self.rng)[:k].tolist())
        return [i in chosen for i in range(n)]

    @property
    def rng(self) -> torch.Generator:
        return self._rng if self._rng is not None else self.generator

    def loss(self, model: nn.Module, batch: PackedBatch | list[LatentSample], step: int = 0,
             rng: torch.Generator | None = None, bootstrap: list[bool] | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        self._rng = rng
        self._sync_ema(step)
        samples = batch.samples if isinstance(batch, PackedBatch) else batch
        device = next(model.parameters()).device
        samples = [LatentSample(s.key, s.latent.to(device), [None if c is None else c.to(device) for c in s.captions],
                                s.first_chunk) for s in samples]
        frames = _cfg(model).chunk_frames
        bootstrap = self.choose_bootstrap(len(samples)) if bootstrap is None else bootstrap
        noised = self.noise(samples, bootstrap)
        captions = [s.captions for s in samples]
        xt = [self._interp(a, b, u, frames) for a, b, u in zip(noised.x0, noised.x1, noised.u, strict=True)]
        targets = self._base_targets(noised, xt, captions, frames)
        idx = [i for i, (b, d) in enumerate(zip(bootstrap, noised.d, strict=True))
               if b and d > self.config.step_sizes[0]]
        if idx:
            for i, target in zip(idx, self._bootstrap_targets(noised, xt, captions, idx, frames), strict=True):
                targets[i] = target
        pred = self._forward(model, self._pack(model, xt, noised.u, captions, noised.offsets), noised.d,
                             [len(u) for u in noised.u])
        errors, kinds = [], []
        for i, (p, y, u) in enumerate(zip(pred, targets, noised.u, strict=True)):
            noisy = (u < 1).repeat_interleave(frames).to(p.device)
            if noisy.any():
                errors.append(F.mse_loss(p[:, noisy], y[:, noisy], reduction="none").mean(dim=0).flatten())
                kinds.append(i in idx)
        if not errors:
            raise ValueError("batch has no noisy chunk to learn from")
        loss = torch.cat(errors).mean()
        tokens = sum(s.latent[0].numel() // math.prod(_cfg(model).patch) for s in samples)
        metrics = {"loss": float(loss.detach()), "bootstrap_samples": float(len(idx)), "samples": float(len(samples)),
                   "tokens": float(tokens)}
        for name, flag in (("loss_flow", False), ("loss_bootstrap", True)):
            part = [e for e, k in zip(errors, kinds, strict=True) if k == flag]
            if part:
                metrics[name] = float(torch.cat(part).detach().mean())
        return loss, metrics


def _per_frame(per_chunk: torch.Tensor, frames: int, device: torch.device) -> torch.Tensor:
    """Per-chunk values repeated for each latent frame, on `device`, shaped to scale a [C, T, H, W] latent."""
    return per_chunk.to(device).repeat_interleave(frames).view(1, -1, 1, 1)


def _cfg(model: nn.Module):
    return getattr(model, "cfg", None) or model.module.cfg
