"""`vidmill distill`: shortcut distillation of a teacher run into RUN2 with the trainer's loop.

RUN2 starts from the teacher's EMA weights (student and EMA), keeps the teacher frozen for the guidance terms
(when folded in), and trains with ShortcutObjective in the trainer's loop; its config.yaml is the teacher's
plus a `distill:` section (what `vidmill generate` reads to turn on step-size conditioning and one-pass
sampling). Checkpoints, resume and metrics are the trainer's.

PARTIAL: the trainer (training/trainer.py) is being written on another branch; `_run_trainer` is the one
call to wire at merge (objective hook: the loop calls `objective.loss(model, batch, step)` and saves
`objective.state_dict()` with its checkpoint).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import yaml

from vidmill.training.generate import load_run
from vidmill.training.objectives.shortcut import ShortcutConfig, ShortcutObjective


def distill_config(teacher_config: dict, shortcut: ShortcutConfig, teacher_run: str | Path) -> dict:
    config = copy.deepcopy(teacher_config)
    config["distill"] = {"teacher": str(teacher_run), **{k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in asdict(shortcut).items() if k != "extra"}}
    return config


def distill(teacher_run: str | Path, data: str | Path, out: str | Path, steps: int = 1000,
            bootstrap_fraction: float = 1 / 8, guidance: bool = False, w_prev: float = 1.5,
            w_text: float = 7.5) -> None:
    teacher = load_run(teacher_run, ema=True)
    shortcut = ShortcutConfig(bootstrap_fraction=bootstrap_fraction, guidance=guidance, w_prev=w_prev,
                              w_text=w_text)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(distill_config(teacher.config, shortcut, teacher_run),
                                                    sort_keys=False))
    student = copy.deepcopy(teacher.dit).train()
    ema = copy.deepcopy(teacher.dit).eval().requires_grad_(False)
    objective = ShortcutObjective(shortcut, ema=ema, teacher=teacher.dit.requires_grad_(False) if guidance else None)
    _run_trainer(out, data, student, ema, teacher.vae, objective, steps)


def _run_trainer(out: Path, data, student, ema, vae, objective: ShortcutObjective, steps: int) -> None:
    try:
        from vidmill.training import trainer  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("vidmill distill needs the trainer loop (vidmill.training.trainer), which this "
                           "build does not have yet") from exc
    raise RuntimeError("vidmill distill: the trainer exists but is not wired to the shortcut objective yet")
