"""`vidmill train` assembled: config, data, model, objective, loader and the Trainer; one function per job.

`run_training` is what the CLI, torchrun (`torchrun ... -m vidmill.cli train ...`) and Ray Train
(training/ray_train.py) all call, so every launcher writes the same RUN/ folder.

--data may be:
- a `vidmill latents` output (manifest.parquet with latent columns + shards/): the packing loader reads it;
- a latents file (`*.pt`, training/data/memory.py `save_latents`) or a folder holding `latents.pt`;
- a curated output (shards/ + manifest.parquet): its kept clips are decoded, a VAE is trained on them (or
  loaded from `vae.path`), and the clips are encoded once into RUN/latents.pt with per-chunk captions
  (the stand-in for `vidmill latents` until the shard loader is wired).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from vidmill.training.config import RunConfig, from_dict, load_config
from vidmill.training.data.sample import LatentSample
from vidmill.training.parallelize import DistInfo, barrier, init_distributed


def setup_determinism(config: RunConfig) -> None:
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    if config.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def resolve_config(config: str | Path | RunConfig, out: Path, resume: bool, steps: int | None) -> RunConfig:
    """--config, or on --resume the run's own config.yaml (so a resumed run keeps its settings)."""
    saved = out / "config.yaml"
    if resume and saved.is_file():
        run_config = from_dict(yaml.safe_load(saved.read_text()))
    else:
        run_config = config if isinstance(config, RunConfig) else load_config(config)
    if steps is not None:
        run_config.train = replace(run_config.train, steps=steps)
    return run_config


def _log(message: str, info: DistInfo) -> None:
    if info.is_main:
        print(message, file=sys.stderr, flush=True)


def fit_channels(samples: list[LatentSample], config: RunConfig) -> list[LatentSample]:
    """Check latents against the DiT; the 24B's 32 channels are the 16-channel latent duplicated."""
    dit = config.size.dit
    out = []
    for s in samples:
        latent = s.latent
        if latent.shape[0] * 2 == dit.latent_channels:
            latent = torch.cat([latent, latent])
        if latent.shape[0] != dit.latent_channels:
            raise ValueError(f"sample {s.key}: {latent.shape[0]} latent channels, the DiT takes {dit.latent_channels}")
        if latent.shape[1] % dit.chunk_frames or latent.shape[1] // dit.chunk_frames != s.n_chunks:
            raise ValueError(f"sample {s.key}: {latent.shape[1]} latent frames do not make {s.n_chunks} chunks of "
                             f"{dit.chunk_frames}")
        out.append(LatentSample(s.key, latent, s.captions, s.first_chunk))
    return out


def prepare_latents(data: str | Path, config: RunConfig, out: Path, info: DistInfo, progress: bool
                    ) -> tuple[list[LatentSample] | None, dict[str, torch.Tensor] | None]:
    from vidmill.training.data.memory import load_latents

    path = Path(data)
    if is_latents_output(path):
        return None, None  # read by the packing loader, shard by shard
    if path.is_file() and path.suffix == ".pt":
        return fit_channels(load_latents(path), config), None
    if (path / "latents.pt").is_file() and not (path / "shards").is_dir():
        return fit_channels(load_latents(path / "latents.pt"), config), None
    if (path / "shards").is_dir():
        cache, vae_file = out / "latents.pt", out / "vae.safetensors"
        if info.is_main and not (cache.is_file() and vae_file.is_file()):
            from vidmill.training.latents_from_curated import encode_curated

            encode_curated(path, config, out, progress)
        barrier(info)
        from safetensors.torch import load_file

        return fit_channels(load_latents(cache), config), load_file(str(vae_file))
    raise FileNotFoundError(f"--data {path}: expected a latents file (*.pt), a folder with latents.pt, or a curated "
                            "output (shards/ and manifest.parquet)")


def is_latents_output(path: Path) -> bool:
    """A `vidmill latents` output: manifest.parquet with latent columns, and shards/."""
    manifest = path / "manifest.parquet"
    if not manifest.exists():
        return False
    import pyarrow.dataset as ds

    return "latent_t" in ds.dataset(manifest, format="parquet").schema.names  # a file or a dataset directory


def make_loader(data: str | Path, samples: list[LatentSample] | None, config: RunConfig, info: DistInfo):
    """The packing loader over latent shards for a `vidmill latents` output, else the in-memory loader."""
    tc, dit = config.train, config.size.dit
    if samples is None:  # latent shards: the data side's resumable packing loader
        from vidmill.training.data.loader import PackingLoader
        from vidmill.training.data.packing import PackingSpec

        spec = PackingSpec(budget=tc.token_budget, chunk_frames=dit.chunk_frames, patch=dit.patch,
                           packs_per_step=tc.grad_accum * info.world_size)
        return PackingLoader(data, spec, seed=tc.seed, rank=info.rank, world_size=info.world_size)
    from vidmill.training.data.memory import MemoryLoader

    return MemoryLoader(samples, tc.token_budget, dit.patch, info.rank, info.world_size, tc.seed)


def run_training(data: str | Path, config: str | Path | RunConfig, out: str | Path, steps: int | None = None,
                 resume: bool = False, progress: bool = True, info: DistInfo | None = None) -> dict[str, Any]:
    from vidmill.model.dit import DiT
    from vidmill.training.objectives import build_objective
    from vidmill.training.trainer import Trainer

    out = Path(out)
    info = info or init_distributed()
    if info.device.type == "cuda":
        torch.cuda.set_device(info.device)
    run_config = resolve_config(config, out, resume, steps)
    setup_determinism(run_config)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        run_config.save(out / "config.yaml")
    barrier(info)
    samples, vae_weights = prepare_latents(data, run_config, out, info, progress)
    tc = run_config.train
    loader = make_loader(data, samples, run_config, info)
    torch.manual_seed(tc.seed)
    dit = DiT(run_config.size.dit)
    dit.backend = tc.attention
    objective = build_objective("flow_matching", run_config)
    trainer = Trainer(run_config, out, dit, objective, loader, info, resume=resume, progress=progress,
                      extra_weights={"vae": vae_weights} if vae_weights else None, flops_config=run_config.size.dit)
    if trainer.resumed_from is not None:
        _log(f"resuming from {trainer.resumed_from} (step {trainer.step})", info)
    summary = trainer.fit(tc.steps)
    _log(f"trained to step {summary['step']} ({summary['skipped']} skipped steps); run in {out}", info)
    if summary.get("evals"):
        e = summary["evals"]
        _log(f"evaluations: {e['launched']} run, {e['ok']} ok, {e['failed']} failed, {e['skipped']} skipped; "
             f"rows in {out / 'metrics.jsonl'} (kind: eval), results in {out / 'eval'}", info)
    return summary
