"""Training objectives: what a step computes, kept apart from the loop that runs it.

An objective is any object with

    loss(model, batch, step, rng) -> (loss, metrics)

- `model`: the (possibly wrapped: DDP / FSDP2 / compiled) network; call it, never unwrap it.
- `batch`: one micro-batch from the loader (a `PackedBatch` for the DiT objectives, a `VideoBatch` for the VAE).
- `step`: the optimiser step being computed (1-based), for schedules inside the objective.
- `rng`: a CPU `torch.Generator` seeded from (seed, rank, step, micro-batch): every random choice (noise,
  noise levels, dropout) must come from it, which is what makes a resumed run bit-identical.
- returns a scalar loss tensor (the micro-batch mean; the trainer divides by grad_accum and backpropagates)
  and a dict of floats. Keys the trainer aggregates: `tokens` (tokens the model saw), `padding` (fraction of
  the budget not used), `attention_pairs` (visible query-key pairs, for MFU); every other key is averaged
  over micro-batches and logged as is.

Optional hooks the trainer calls when present:
- `attach(trainer)`: once before the first step; gives access to `trainer.ema` (a teacher for shortcut
  distillation), `trainer.device`, `trainer.autocast()`.
- `state_dict()` / `load_state_dict(state)`: saved in each checkpoint (trainer_state.json, so keep it JSON).

`build_objective(name, run_config)` returns a registered objective; a new objective (e.g. shortcut
distillation) registers itself in `OBJECTIVES` and the same `Trainer` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Objective(Protocol):
    def loss(self, model: torch.nn.Module, batch: Any, step: int,
             rng: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...


def _flow_matching(run_config) -> Objective:
    from vidmill.training.objectives.flow_matching import FlowMatching

    return FlowMatching(run_config.size.dit, run_config.objective)


OBJECTIVES: dict[str, Callable[[Any], Objective]] = {"flow_matching": _flow_matching}


def build_objective(name: str, run_config) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](run_config)
