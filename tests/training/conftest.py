"""Shared training fixtures: a small latents file and a tiny run config (YAML) that subprocesses can read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_TRAIN = {"steps": 6, "warmup_steps": 2, "token_budget": 384, "grad_accum": 2, "checkpoint_every": 3,
              "keep_checkpoints": 0, "lr": 1e-3, "num_threads": 1, "log_every": 1}


@pytest.fixture(scope="session")
def latents_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidmill.model.sizes import get_size
    from vidmill.training.data.memory import save_latents, synthetic_samples

    cfg = get_size("tiny").dit
    path = tmp_path_factory.mktemp("latents") / "latents.pt"
    save_latents(path, synthetic_samples(24, cfg.latent_channels, cfg.chunk_frames, [(8, 8), (8, 12)], [1, 2, 3, 4],
                                         cfg.text_dim, seed=1))
    return path


def _write_config(path: Path, **train) -> Path:
    path.write_text(yaml.safe_dump({"size": "tiny", "train": dict(TINY_TRAIN, **train)}))
    return path


@pytest.fixture(scope="session")
def write_config():
    """write_config(path, **train overrides) -> path of a tiny YAML config."""
    return _write_config


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_config(tmp_path_factory.mktemp("config") / "tiny.yaml")
