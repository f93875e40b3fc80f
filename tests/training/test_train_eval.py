"""Evaluation as a tail task of a real (tiny) training run, and Physics-IQ generate-first on its checkpoint.

One module fixture trains the tiny DiT 4 steps with `eval: {every: 2, at_end: true}` in the background
(subprocess) mode on a miniature Physics-IQ tree at the model's 24 fps; its checkpoints are then evaluated
again through `vidmill eval physics-iq --checkpoint ...` (nothing stubbed: vidmill generate on real weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from vidmill.evaluation.physics_iq_layout import VIEWS
from vidmill.evaluation.video_io import read_video, write_video
from vidmill.training.metrics import read_metrics
from vidmill.training.run import run_training

FPS = 24  # the tiny size's fps: the benchmark folder is 24FPS, as upstream ships one


def moving_square(n: int, start: int, speed: int, seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.full((n, h, w, 3), 30, np.uint8)
    for t in range(n):
        x = (start + speed * t) % (w - 10)
        frames[t, 10:20, x:x + 10] = (200, 180, 40)
    return np.clip(frames.astype(int) + rng.integers(0, 3, frames.shape), 0, 255).astype(np.uint8)


def write_piq_tree(root: Path, scenario: str = "trimmed-square.mp4") -> Path:
    """One scenario x 3 views x 2 takes in the upstream layout: testing (5 s), conditioning (3 s), switch frames."""
    n = 0
    for v, view in enumerate(VIEWS):
        for take in ("take-1", "take-2"):
            n += 1
            full = moving_square(8 * FPS, 2 + v, 1, seed=n if take == "take-2" else 0)
            tag = f"{n:04d}"
            write_video(root / "split-videos" / "testing" / f"{FPS}FPS" /
                        f"{tag}_testing-videos_{FPS}FPS_{view}_{take}_{scenario}", full[3 * FPS:], FPS)
            write_video(root / "split-videos" / "conditioning" / f"{FPS}FPS" /
                        f"{tag}_conditioning-videos_{FPS}FPS_{view}_{take}_{scenario}", full[:3 * FPS], FPS)
            if take == "take-1":
                switch = root / "switch-frames" / f"{tag}_switch-frames_anyFPS_{view}_{take}_trimmed-square.jpg"
                switch.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(switch), full[3 * FPS - 1])
    return root


def random_vae(path: Path) -> Path:
    from vidmill.model.sizes import get_size
    from vidmill.model.vae import VideoVAE

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in VideoVAE(get_size("tiny").vae).state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def piq_tree(tmp_path_factory) -> Path:
    return write_piq_tree(tmp_path_factory.mktemp("piq") / "physics-IQ-benchmark")


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, latents_file, piq_tree, write_config) -> tuple[Path, dict]:
    """A 4-step tiny run evaluating its checkpoints at steps 2 and 4 in the background (Physics-IQ + VBench)."""
    root = tmp_path_factory.mktemp("evalrun")
    config = write_config(root / "config.yaml", steps=4, checkpoint_every=4)
    data = yaml.safe_load(config.read_text())
    data["vae"] = {"path": str(random_vae(root / "vae.safetensors"))}
    data["eval"] = {"every": 2, "at_end": True, "physics_iq": {"real": str(piq_tree), "mode": "v2v"},
                    "vbench": {"images": str(piq_tree / "switch-frames"), "seconds": 1.0}}
    config.write_text(yaml.safe_dump(data))
    summary = run_training(latents_file, config, root / "run", progress=False)
    return root / "run", summary


def test_run_evaluates_due_checkpoints_and_logs_rows(eval_run):
    run, summary = eval_run
    assert summary["evals"] | {"failures": []} == {"launched": 2, "ok": 2, "failed": 0, "skipped": 0, "failures": []}
    # step 2 is not a checkpoint_every step: the trainer saved one because the evaluation was due
    assert (run / "checkpoints" / "step-2" / "COMPLETE").is_file()
    train = read_metrics(run, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4] and all(r["eval_failed_total"] == 0 for r in train)
    rows = read_metrics(run, "eval")
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        assert row["checkpoint"].endswith(f"checkpoints/step-{row['step']}")
        assert row["eval/physics_iq/status"] == "ok" and row["eval/physics_iq/scenarios_ok"] == 1
        for variant in ("original", "stable", "verified"):
            assert isinstance(row[f"eval/physics_iq/{variant}"], float)
            assert 0.0 <= row[f"eval/physics_iq/{variant}"] <= 100.0
        # no VBench weights: every dimension and total is null with its reason, never a number
        assert row["eval/vbench/total"] is None and row["eval/vbench/total/includes"] == []
        assert row["eval/vbench/not_computed"]["dynamic_degree"].startswith("not computed: no weights")
        assert row["eval/vbench/status"].startswith("not computed")
        assert "eval/failed" not in row


def test_generated_videos_and_results_json(eval_run):
    run, _ = eval_run
    base = run / "eval" / "step-4"
    doc = json.loads((base / "physics-iq" / "results.json").read_text())
    assert doc["fps"] == FPS and [r["status"] for r in doc["rows"]] == ["ok"]
    assert set(doc["rows"][0]["views"]) == set(VIEWS)
    assert doc["generation"]["mode"] == "v2v" and len(doc["generation"]["rows"]) == 3
    for path in sorted((base / "physics-iq" / "generated").glob("*.mp4")):
        video = read_video(path)
        assert video.fps == FPS and len(video.frames) == 5 * FPS  # 5 s at the benchmark fps
    vb = json.loads((base / "vbench" / "results.json").read_text())
    assert len(vb["rows"]) == 3 and all(d["score"] is None for d in vb["dimensions"].values())
    assert "log.txt" in {p.name for p in base.iterdir()}


def test_tensorboard_has_scores_but_no_point_for_not_computed(eval_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = eval_run
    rows = {r["step"]: r for r in read_metrics(run, "eval")}
    acc = EventAccumulator(str(run / "tensorboard" / "eval"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"eval/physics_iq/original", "eval/physics_iq/stable", "eval/physics_iq/verified"} <= tags
    assert not any(t.startswith("eval/vbench/") for t in tags)
    got = {e.step: e.value for e in acc.Scalars("eval/physics_iq/verified")}
    assert got == pytest.approx({s: r["eval/physics_iq/verified"] for s, r in rows.items()})


def test_generate_first_cli_on_the_real_checkpoint(eval_run, piq_tree, tmp_path, capsys):
    from vidmill.cli import main

    run, _ = eval_run
    row = {r["step"]: r for r in read_metrics(run, "eval")}[4]
    out = tmp_path / "results.json"
    assert main(["eval", "physics-iq", "--real", str(piq_tree), "--generated", str(tmp_path / "v2v"), "--out",
                 str(out), "--checkpoint", str(run / "checkpoints" / "step-4"), "--mode", "v2v", "--threads", "1"]) == 0
    doc = json.loads(out.read_text())
    assert doc["fps"] == FPS and doc["rows"][0]["scenario"] == "trimmed-square.mp4" and doc["summary"]["complete"]
    # the same checkpoint, conditioning and seed as the run's tail task: the same scores
    for variant in ("original", "stable", "verified"):
        assert doc["summary"]["scores"][variant]["score"] == row[f"eval/physics_iq/{variant}"]
    assert "generated 3/3 videos at 24 fps" in capsys.readouterr().out
    # I2V from the switch frames: three 5 s videos, every view scored
    assert main(["eval", "physics-iq", "--real", str(piq_tree), "--generated", str(tmp_path / "i2v"), "--out",
                 str(out), "--checkpoint", str(run), "--mode", "i2v", "--threads", "1"]) == 0
    videos = sorted((tmp_path / "i2v").glob("*.mp4"))
    assert [p.name.split("_", 1)[0] for p in videos] == ["0001", "0003", "0005"]
    assert all(len(read_video(p).frames) == 5 * FPS for p in videos)
    assert json.loads(out.read_text())["rows"][0]["status"] == "ok"
    # a checkpoint that does not exist is a clear error, not a folder of error rows
    assert main(["eval", "physics-iq", "--real", str(piq_tree), "--generated", str(tmp_path / "x"), "--out",
                 str(out), "--checkpoint", str(run / "checkpoints" / "step-3")]) == 2
    assert "no complete checkpoint step-3" in capsys.readouterr().err


def test_a_failing_background_evaluation_is_counted_and_training_finishes(tmp_path, latents_file, write_config):
    config = write_config(tmp_path / "config.yaml", steps=2, checkpoint_every=2)
    data = yaml.safe_load(config.read_text())
    data["eval"] = {"at_end": True, "physics_iq": {"real": str(tmp_path / "no-such-benchmark")}}
    config.write_text(yaml.safe_dump(data))
    summary = run_training(latents_file, config, tmp_path / "run", progress=False)  # the VAE is missing as well
    assert summary["step"] == 2 and summary["evals"]["failed"] == 1 and summary["evals"]["ok"] == 0
    (row,) = read_metrics(tmp_path / "run", "eval")
    assert row["eval/failed"] == ["physics_iq"] and row["eval/physics_iq/status"].startswith("failed: ")
    assert "eval/physics_iq/original" not in row
    assert (tmp_path / "run" / "eval" / "step-2" / "physics-iq" / "error.txt").is_file()


def test_in_process_evaluation_leaves_training_bit_exact(tmp_path, latents_file, write_config, piq_tree):
    """background: false runs the evaluation between steps; the run is unchanged: losses and saved RNG state."""
    losses = {}
    for name, eval_section in (("plain", None), ("evaluated", {"every": 1, "background": False,
                                                               "physics_iq": {"real": str(piq_tree), "limit": 1}})):
        config = write_config(tmp_path / f"{name}.yaml", steps=2, checkpoint_every=2)
        data = yaml.safe_load(config.read_text())
        data["vae"] = {"path": str(random_vae(tmp_path / "vae.safetensors"))}
        if eval_section:
            data["eval"] = eval_section
        config.write_text(yaml.safe_dump(data))
        summary = run_training(latents_file, config, tmp_path / name, progress=False)
        losses[name] = [r["loss"] for r in read_metrics(tmp_path / name, "train")]
    assert summary["evals"]["ok"] == 2 and losses["plain"] == losses["evaluated"]
    rng = [torch.load(tmp_path / name / "checkpoints" / "step-2" / "rng" / "rank-0.pt", weights_only=False)
           for name in ("plain", "evaluated")]
    assert torch.equal(rng[0]["torch"], rng[1]["torch"]) and rng[0]["python"] == rng[1]["python"]
    assert all(np.array_equal(a, b) for a, b in zip(rng[0]["numpy"], rng[1]["numpy"], strict=True))
    rows = read_metrics(tmp_path / "evaluated", "eval")
    # one view of three (limit 1): no scenario is complete, so the score is not computed, never a number
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["eval/physics_iq/original"] is None
    assert rows[0]["eval/physics_iq/status"] == "not computed: no scenario has all three views scored"


def test_dashboard_run_view_reads_the_real_run(eval_run):
    from vidmill.dashboards.training_runs import run_view

    run, _ = eval_run
    view = run_view(run)
    assert view["steps"] == 4 and [e["step"] for e in view["evals"]] == [2, 4] and view["eval_failed"] == 0
    assert len(view["physics_iq_series"]) == 6 and view["evals"][1]["vbench"]["totals"]["total"] is None


def test_two_ranks_save_every_due_checkpoint_and_only_rank_0_evaluates(tmp_path, latents_file, write_config):
    """torchrun, 2 ranks: an eval step that is no checkpoint step still saves collectively (no hang), one row each."""
    import os
    import socket
    import subprocess
    import sys

    config = write_config(tmp_path / "config.yaml", steps=2, checkpoint_every=2, parallel="ddp")
    data = yaml.safe_load(config.read_text())
    data["eval"] = {"every": 1, "background": False, "physics_iq": {"real": str(tmp_path / "no-such-benchmark")}}
    config.write_text(yaml.safe_dump(data))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "vidmill.cli", "train", "--no-progress", "--data", str(latents_file),
                           "--config", str(config), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "step-1" / "COMPLETE").is_file()
    rows = read_metrics(tmp_path / "run", "eval")
    assert [r["step"] for r in rows] == [1, 2] and all(r["eval/failed"] == ["physics_iq"] for r in rows)
    assert (proc.stdout + proc.stderr).count("evaluation of step 1 failed") == 1
