"""The same training run on a Ray cluster through Ray Train (`ray.train.torch.TorchTrainer`).

Each Ray Train worker calls `run_training` with its rank from the Ray Train context; TorchTrainer has set up
the process group (gloo on CPU, nccl on GPU), so the Trainer, the checkpoints (RUN/checkpoints/step-N, the
format torchrun writes) and `--resume` are the same. RUN must be on storage every worker can reach
(a shared file system on a multi-node cluster). Ray's own bookkeeping goes to RUN/ray/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _worker(cfg: dict[str, Any]) -> None:
    import os

    import ray.train
    import ray.train.torch

    from vidmill.training.parallelize import DistInfo
    from vidmill.training.run import run_training

    os.environ.update(cfg.get("env") or {})
    ctx = ray.train.get_context()
    info = DistInfo(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank(), ray.train.torch.get_device())
    summary = run_training(cfg["data"], cfg["config"], cfg["out"], cfg["steps"], cfg["resume"], progress=False,
                           info=info)
    ray.train.report({"step": summary["step"], "skipped": summary["skipped"]})


def run_on_ray(data: str | Path, config: str | Path, out: str | Path, steps: int | None = None, resume: bool = False,
               num_workers: int = 2, use_gpu: bool = False, cpus_per_worker: float = 1.0,
               address: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Train with `num_workers` Ray Train workers; returns Ray's Result. Starts local Ray unless one is running.

    env: extra environment variables set in each worker before training (e.g. VIDMILL_FAULTS for drills).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from vidmill.pipeline.executor.runner import init_ray

    if not ray.is_initialized():
        init_ray(address)
    out = Path(out).resolve()
    if Path(config).is_file():  # workers run in their own directories: a relative YAML path must travel resolved
        config = Path(config).resolve()
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"data": str(Path(data).resolve()), "config": str(config), "out": str(out),
                           "steps": steps, "resume": resume, "env": env or {}},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(storage_path=str(out / "ray"), name="train"))
    return trainer.fit()
