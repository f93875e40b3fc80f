"""`vidmill distill` end to end with the trainer: teacher run -> distilled run (resumed) -> `vidmill generate`.

Needs the trainer branch's modules (training/run.py, trainer.py, checkpoint.py); skipped without them.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

pytest.importorskip("vidmill.training.trainer")
pytest.importorskip("vidmill.training.run")

from vidmill.cli import main as cli_main  # noqa: E402
from vidmill.model.sizes import get_size  # noqa: E402
from vidmill.model.vae import VideoVAE  # noqa: E402
from vidmill.training.data.memory import save_latents, synthetic_samples  # noqa: E402
from vidmill.training.generate import load_run  # noqa: E402
from vidmill.training.run import run_training  # noqa: E402


def test_distill_resume_and_generate(tmp_path, capsys):
    size = get_size("tiny")
    samples = synthetic_samples(8, size.dit.latent_channels, size.dit.chunk_frames, [(8, 8)], [2, 3],
                                size.dit.text_dim)
    save_latents(tmp_path / "latents.pt", samples)
    run_training(tmp_path / "latents.pt", "tiny", tmp_path / "teacher", steps=2, progress=False)
    last = sorted((tmp_path / "teacher" / "checkpoints").glob("step-*"))[-1]
    torch.manual_seed(0)  # a run trained from latents has no VAE of its own: give it one
    save_file({k: v.contiguous() for k, v in VideoVAE(size.vae).state_dict().items()}, str(last / "vae.safetensors"))

    args = ["distill", "--teacher", str(tmp_path / "teacher"), "--data", str(tmp_path / "latents.pt"),
            "--out", str(tmp_path / "student"), "--bootstrap-fraction", "0.5", "--no-progress"]
    assert cli_main([*args, "--steps", "2"]) == 0
    assert cli_main([*args, "--steps", "3", "--resume"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and "loss_flow" in rows[-1]
    config = yaml.safe_load((tmp_path / "student" / "config.yaml").read_text())
    assert config["distill"]["bootstrap_fraction"] == 0.5 and config["size"] == "tiny"
    models = load_run(tmp_path / "student")
    assert models.distilled and models.step == 3
    capsys.readouterr()
    assert cli_main(["generate", "--checkpoint", str(tmp_path / "student"), "--seconds", "0.5",
                     "--out", str(tmp_path / "out.mp4"), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["distilled"] and summary["frames"] == 12 and not summary["guidance"]
