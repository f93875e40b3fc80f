"""`vidmill distill`: shortcut distillation of a teacher run into RUN2, run by the trainer's loop.

RUN2 starts from the teacher's EMA weights (student, and the trainer's EMA that feeds the self-consistency
targets), keeps a frozen teacher copy for the guidance terms when guidance is folded in, and trains with
ShortcutObjective in the same `Trainer` as `vidmill train` (checkpoints, resume, metrics are the trainer's).
RUN2/config.yaml is the teacher's plus a `distill:` section, which `vidmill generate` reads to turn on
step-size conditioning and one-pass sampling. --data: the latents the teacher trained on (a `vidmill latents`
output, a latents file, or TEACHER_RUN/latents.pt); a curated output is refused (it would train a new VAE).

Needs training/{run,trainer,config,checkpoint}.py of the trainer branch.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from vidmill.training.objectives.shortcut import ShortcutConfig, ShortcutObjective


def distill_config(teacher_config: dict, shortcut: ShortcutConfig, teacher_run: str | Path) -> dict:
    config = copy.deepcopy(teacher_config)
    config["distill"] = {"teacher": str(teacher_run), **{k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in asdict(shortcut).items() if k != "extra"}}
    return config


def shortcut_from_config(config: dict) -> ShortcutConfig:
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config["distill"].items() if k != "teacher"}
    return ShortcutConfig(**values)


def distill(teacher_run: str | Path, data: str | Path, out: str | Path, steps: int | None = None,
            shortcut: ShortcutConfig | None = None, only_step_embed: bool = False, resume: bool = False,
            progress: bool = True) -> dict[str, Any]:
    from vidmill.training.checkpoint import load_models
    from vidmill.training.config import from_dict
    from vidmill.training.parallelize import barrier, init_distributed
    from vidmill.training.run import is_latents_output, make_loader, prepare_latents, setup_determinism
    from vidmill.training.trainer import Trainer

    teacher_run, out, data = Path(teacher_run), Path(out), Path(data)
    if (data / "shards").is_dir() and not is_latents_output(data):
        raise ValueError(f"--data {data}: give the teacher's latents (a `vidmill latents` output or "
                         f"{teacher_run / 'latents.pt'}), not a curated output")
    info = init_distributed()
    saved = out / "config.yaml"
    if resume and saved.is_file():
        config = yaml.safe_load(saved.read_text())
    else:
        teacher_config = yaml.safe_load((teacher_run / "config.yaml").read_text())
        config = distill_config(teacher_config, shortcut or ShortcutConfig(), teacher_run)
    if steps is not None:
        config.setdefault("train", {})["steps"] = steps
    shortcut = shortcut_from_config(config)
    run_config = from_dict({k: v for k, v in config.items() if k != "distill"})
    setup_determinism(run_config)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(config, sort_keys=False))
    barrier(info)
    _, dit, vae = load_models(teacher_run, ema=True)
    samples, _ = prepare_latents(data, run_config, out, info, progress)
    loader = make_loader(data, samples, run_config, info)
    ema = copy.deepcopy(dit).eval().requires_grad_(False)
    teacher = copy.deepcopy(dit).eval().requires_grad_(False) if shortcut.guidance else None
    student = dit.train()
    student.backend = run_config.train.attention
    if only_step_embed:  # distil without moving the rest of the teacher (see docs/gen.md)
        student.requires_grad_(False)
        student.step_embed.requires_grad_(True)
    objective = ShortcutObjective(shortcut, ema=ema, teacher=teacher)
    extra = {"vae": {k: v.contiguous() for k, v in vae.state_dict().items()}} if vae is not None else None
    trainer = Trainer(run_config, out, student, objective, loader, info, resume=resume, progress=progress,
                      extra_weights=extra, flops_config=run_config.size.dit)
    return trainer.fit(run_config.train.steps)
