"""The training loop and nothing else: optimiser, schedule, accumulation, clipping, EMA, skip, log, checkpoint.

The model arrives plain (built and seeded by the caller); the Trainer loads a checkpoint into it when
resuming, applies parallelism from outside (training/parallelize.py), and runs `objective.loss` on the
loader's micro-batches (training/objectives/__init__.py documents that interface). The loader is any
iterable of batches with `state_dict()` / `load_state_dict()`; it is re-iterated when an epoch ends.

Determinism: every random draw of a step comes from a generator seeded by (seed, rank, step, micro-batch),
the loader state and every rank's RNG state are checkpointed, and deterministic algorithms are on; so a run
resumed from step N retraces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vidmill.training import checkpoint as ckpt
from vidmill.training.config import RunConfig
from vidmill.training.data.sample import PackedBatch
from vidmill.training.ema import EMA
from vidmill.training.faults import Faults
from vidmill.training.metrics import MetricsWriter, peak_flops, step_flops
from vidmill.training.parallelize import (
    DistInfo,
    all_reduce_min,
    all_reduce_sum,
    full_tensor,
    init_distributed,
    no_grad_sync,
    parallelize,
    resolve_mode,
)


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warm-up to 1, then cosine to min_ratio at `total`."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _tokens(sample, cfg) -> int:
    _, t, h, w = sample.latent.shape
    return (t // cfg.patch[0]) * (h // cfg.patch[1]) * (w // cfg.patch[2])


def step_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    mixed = (seed * 1_000_003 + rank * 10_007 + step) * 131 + micro
    return torch.Generator().manual_seed(mixed % (2**63))


class Trainer:
    def __init__(self, config: RunConfig, run_dir: str | Path, model: torch.nn.Module, objective, loader,
                 info: DistInfo | None = None, *, name: str = "dit", resume: bool = False, progress: bool = True,
                 extra_weights: dict[str, dict[str, torch.Tensor]] | None = None, lr: float | None = None,
                 flops_config=None):
        self.config, self.tc = config, config.train
        self.run_dir = Path(run_dir)
        self.info = info or init_distributed()  # a single process: the GPU where there is one
        self.device = self.info.device
        self.name, self.objective, self.loader = name, objective, loader
        self.extra_weights = extra_weights
        self.progress = progress and self.info.is_main
        self.faults = Faults()
        self.flops_config = flops_config  # a DiTConfig: MFU with block-causal attention FLOPs
        self.step, self.skipped, self.tokens_seen = 0, 0, 0.0
        self.parameters = sum(p.numel() for p in model.parameters())

        resume_from = ckpt.latest_checkpoint(self.run_dir) if resume else None
        if resume_from is not None:
            ckpt.load_weights(resume_from / f"{name}.safetensors", model)
        self.mode = resolve_mode(self.tc.parallel, self.info, self.parameters)
        model.to(self.device)
        self.model = parallelize(model, self.mode, self.info, self.tc.compile, self.tc.activation_checkpointing)
        self.ema = EMA(self.model, self.tc.ema_decay)
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.dim() >= 2 else no_decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr or self.tc.lr, betas=tuple(self.tc.betas), foreach=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.tc.warmup_steps, self.tc.steps, self.tc.min_lr_ratio))
        if resume_from is not None:
            self._restore(resume_from)
        if hasattr(objective, "attach"):
            objective.attach(self)
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsWriter(self.run_dir, self.step, enabled=self.info.is_main)
        self.resumed_from = resume_from
        self.evals = None  # rank 0 schedules the evaluations of its checkpoints (config `eval:`)
        if config.eval.enabled and self.info.is_main:
            from vidmill.evaluation.tail_schedule import EvalScheduler

            self.evals = EvalScheduler(config.eval, self.run_dir)

    def _restore(self, path: Path) -> None:
        from safetensors.torch import load_file

        self.ema.load_full_state_dict(load_file(str(path / f"{self.name}_ema.safetensors")))
        ckpt.load_optimizer_state(self.model, self.optimizer, torch.load(path / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        state = ckpt.trainer_state(path)
        self.step, self.skipped, self.tokens_seen = state["step"], state["skipped"], state["tokens_seen"]
        if hasattr(self.objective, "load_state_dict") and "objective" in state:
            self.objective.load_state_dict(state["objective"])
        # a rank with no file of its own (the run grew) takes rank 0's: the packing loader's state is global
        loader_state = ckpt.load_rank_file(path, "loader", self.info.rank) or ckpt.load_rank_file(path, "loader", 0)
        if loader_state is not None:
            self.loader.load_state_dict(loader_state)
        rng = ckpt.load_rank_file(path, "rng", self.info.rank)
        if rng is not None:
            ckpt.set_rng_state(rng)

    def autocast(self):
        if self.device.type == "cuda" and self.tc.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def save(self) -> Path:
        state = {"skipped": self.skipped, "tokens_seen": self.tokens_seen, "name": self.name}
        if hasattr(self.objective, "state_dict"):
            state["objective"] = self.objective.state_dict()
        return ckpt.save_checkpoint(self.run_dir, self.step, self.info, name=self.name, model=self.model,
                                    ema=self.ema, optimizer=self.optimizer, scheduler=self.scheduler,
                                    loader=self.loader, trainer_state=state, extra_weights=self.extra_weights,
                                    keep=self.tc.keep_checkpoints)

    def _next_batch(self):
        try:
            return next(self._iter)
        except StopIteration:  # epoch end: the loader's state already points at the next epoch
            self._iter = iter(self.loader)
            return next(self._iter)

    def _micro_batches(self) -> tuple[list, float, dict[str, float]]:
        """(micro-batches of this step, seconds waited on the loader, loader stats).

        A loader whose batches carry `packs` (the packing loader: one batch per global step, this rank's packs
        as index lists) gives one micro-batch per pack; otherwise `grad_accum` batches are drawn.
        """
        t0 = time.perf_counter()
        first = self._next_batch()
        if hasattr(first, "packs") and first.packs:
            micro = [PackedBatch([first.samples[i] for i in idx], 0, getattr(first, "pack_budget", 0) or first.budget,
                                 0) for idx in first.packs]
            for m in micro:
                m.tokens = sum(_tokens(s, self.flops_config) for s in m.samples) if self.flops_config else 0
            batches, stats = micro, dict(first.stats)
        else:
            batches = [first] + [self._next_batch() for _ in range(self.tc.grad_accum - 1)]
            stats = {}
            for b in batches:
                for k, v in (getattr(b, "stats", None) or {}).items():
                    stats[k] = stats.get(k, 0.0) + v / len(batches)
        return batches, time.perf_counter() - t0, stats

    def train_step(self) -> dict[str, Any]:
        """One optimiser step over grad_accum micro-batches; returns its metrics row."""
        tc, info = self.tc, self.info
        self.step += 1
        start = time.perf_counter()
        loss_sum, sums, means = 0.0, {"tokens": 0.0, "attention_pairs": 0.0, "samples": 0.0}, {}
        self.model.train()
        batches, wait, loader_stats = self._micro_batches()
        n_micro = len(batches)
        for micro, batch in enumerate(batches):
            rng = step_generator(tc.seed, info.rank, self.step, micro)
            with no_grad_sync(self.model, self.mode, sync=micro == n_micro - 1), self.autocast():
                loss, metrics = self.objective.loss(self.model, batch, self.step, rng)
                if micro == 0 and self.faults.nan_loss(self.step, info.rank):
                    loss = loss * float("nan")
                (loss / n_micro).backward()
            loss_sum += float(loss.detach())
            metrics = dict(metrics)
            sums["samples"] += metrics.pop("samples", len(getattr(batch, "samples", ())))
            for key, value in metrics.items():
                if key in sums:
                    sums[key] += value
                else:
                    means[key] = means.get(key, 0.0) + value / n_micro
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        grad_norm = float(full_tensor(grad_norm))
        finite = all_reduce_min(float(math.isfinite(loss_sum) and math.isfinite(grad_norm)), info) > 0
        lr = self.scheduler.get_last_lr()[0]
        if finite:
            self.optimizer.step()
            self.ema.update(self.model)
        else:
            self.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        loss_total, tokens, pairs, samples, wait_total = all_reduce_sum(
            [loss_sum / n_micro, sums["tokens"], sums["attention_pairs"], sums["samples"], wait], info)
        elapsed = time.perf_counter() - start
        self.tokens_seen += tokens
        row = {"step": self.step, "loss": loss_total / info.world_size if finite else None, "lr": lr,
               "grad_norm": grad_norm if math.isfinite(grad_norm) else None, "tokens": tokens,
               "padding": means.pop("padding", 0.0), "samples_per_s": samples / elapsed,
               "tokens_per_s": tokens / elapsed, "step_s": elapsed,
               "loader_wait_frac": wait_total / info.world_size / elapsed, "skipped": not finite,
               "skipped_total": self.skipped, "mfu": self._mfu(tokens, pairs, elapsed)}
        row.update({k: v for k, v in means.items() if k not in row})
        row.update({f"loader_{k}": v for k, v in loader_stats.items() if isinstance(v, (int, float))})
        return row

    def _mfu(self, tokens: float, pairs: float, seconds: float) -> float | None:
        peak = peak_flops(self.device)
        if peak is None or self.flops_config is None:
            return None
        return step_flops(self.flops_config, self.parameters, tokens, pairs) / (seconds * peak * self.info.world_size)

    def fit(self, total_steps: int | None = None) -> dict[str, Any]:
        """Train until step `total_steps` (the run's total; a resumed run trains only what is left)."""
        total = total_steps or self.tc.steps
        self._iter = iter(self.loader)
        bar = None
        if self.progress and self.step < total:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.step, desc=f"train {self.name}", unit="it", dynamic_ncols=True)
        last: dict[str, Any] = {}
        evals = None
        try:
            while self.step < total:
                row = self.train_step()
                last = row
                if self.evals is not None:
                    self.evals.poll()
                    row["eval_failed_total"] = self.evals.counts.failed
                if self.info.is_main and (self.step % self.tc.log_every == 0 or self.step == total):
                    self.metrics.write(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}" if row["loss"] is not None else "skip",
                                    tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
                elif self.info.is_main and not self.progress and self.step % self.tc.log_every == 0:
                    loss = f"{row['loss']:.4f}" if row["loss"] is not None else "skipped"
                    print(f"step {self.step}/{total} loss {loss} lr {row['lr']:.2e} "
                          f"tokens/s {row['tokens_per_s']:.0f}", file=sys.stderr, flush=True)
                eval_due = self.config.eval.due(self.step, final=self.step == total)  # the same on every rank
                if self.step % self.tc.checkpoint_every == 0 or self.step == total or eval_due:
                    saved = self.save()
                    if eval_due and self.evals is not None:
                        self.evals.submit(self.step, saved)
                self.faults.after_step(self.step, self.info.rank)
            if self.evals is not None:
                evals = self.evals.close(wait=self.config.eval.wait_at_end)
        finally:
            if bar is not None:
                bar.close()
            self.metrics.close()
        return {"step": self.step, "skipped": self.skipped, "tokens_seen": self.tokens_seen, "last": last,
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                "evals": asdict(evals) if evals is not None else None}
