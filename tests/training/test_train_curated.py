"""`vidmill train` from a curated output: a VAE trained on the kept clips, latents with captions, the DiT learns."""

from __future__ import annotations

import pytest
import yaml

from vidmill.training.checkpoint import load_models
from vidmill.training.metrics import read_metrics


@pytest.mark.slow
def test_train_from_curated_output(curated, tmp_path):
    from vidmill.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "size": "tiny",
        "train": {"steps": 30, "warmup_steps": 3, "lr": 1e-3, "token_budget": 512, "checkpoint_every": 30,
                  "num_threads": 1},
        "vae": {"steps": 40, "lr": 1e-3, "batch_size": 2}}))
    run = tmp_path / "run"
    assert main(["train", "--data", str(curated), "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    vae_rows = read_metrics(run / "vae")
    assert len(vae_rows) == 40
    assert sum(r["reconstruction"] for r in vae_rows[-5:]) < sum(r["reconstruction"] for r in vae_rows[:5])
    rows = read_metrics(run)
    assert len(rows) == 30 and all(r["loss"] is not None for r in rows)
    assert sum(r["loss"] for r in rows[-5:]) < sum(r["loss"] for r in rows[:5])
    assert (run / "checkpoints/step-30/vae.safetensors").is_file() and (run / "latents.pt").is_file()
    from vidmill.training.data.memory import load_latents

    samples = load_latents(run / "latents.pt")
    assert samples and any(c is not None for s in samples for c in s.captions)  # per-chunk captions encoded
    cfg, dit, vae = load_models(run)
    assert vae is not None and cfg.vae.steps == 40
