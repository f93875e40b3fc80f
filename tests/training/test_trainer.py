"""The trainer on the CPU with the tiny size: learning, skipped NaN steps, checkpoints and bit-exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidmill.training.checkpoint import complete_checkpoints, latest_checkpoint, load_models
from vidmill.training.metrics import read_metrics
from vidmill.training.run import run_training


def assert_same_run(a: Path, b: Path, step: int) -> None:
    """Weights, EMA and optimizer state at `step` bitwise equal, and the whole loss/grad-norm history."""
    for name in ("dit.safetensors", "dit_ema.safetensors"):
        wa = load_file(str(a / f"checkpoints/step-{step}/{name}"))
        wb = load_file(str(b / f"checkpoints/step-{step}/{name}"))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{name}:{key} differs"
    oa = torch.load(a / f"checkpoints/step-{step}/optimizer.pt", weights_only=False)
    ob = torch.load(b / f"checkpoints/step-{step}/optimizer.pt", weights_only=False)
    for key in oa["state"]:
        assert torch.equal(oa["state"][key]["exp_avg_sq"], ob["state"][key]["exp_avg_sq"]), key
    ma, mb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ma] == list(range(1, step + 1)) == [r["step"] for r in mb]
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]
    assert [r["grad_norm"] for r in ma] == [r["grad_norm"] for r in mb]


def cli(args: list[str], env: dict | None = None, nproc: int = 1) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "vidmill.cli"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                    "--master_port", str(_free_port()), "-m", "vidmill.cli"]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen(launcher + ["train", "--no-progress"] + args, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.fixture(scope="module")
def straight_run(latents_file, tiny_config, tmp_path_factory) -> Path:
    """6 steps in one uninterrupted single-process run (checkpoints at 3 and 6)."""
    out = tmp_path_factory.mktemp("straight")
    run_training(latents_file, tiny_config, out, progress=False)
    return out


def test_loss_falls(latents_file, write_config, tmp_path):
    config = write_config(tmp_path / "c.yaml", steps=40, grad_accum=1, warmup_steps=4, checkpoint_every=40)
    run_training(latents_file, config, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 40 and all(v is not None for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    row = read_metrics(tmp_path / "run")[-1]
    for key in ("step", "loss", "lr", "grad_norm", "tokens", "padding", "samples_per_s", "mfu"):
        assert key in row
    assert row["tokens"] > 0 and 0 <= row["padding"] < 1
    assert (row["mfu"] is None) == (not torch.cuda.is_available())  # no MFU on the CPU
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_after_sigkill_is_bit_exact(straight_run, latents_file, tiny_config, tmp_path):
    out = tmp_path / "killed"
    proc = cli(["--data", str(latents_file), "--config", str(tiny_config), "--out", str(out)],
               env={"VIDMILL_FAULTS": "sleep@4=60"})
    deadline = time.time() + 240
    while time.time() < deadline and not any(r["step"] == 4 for r in read_metrics(out)):
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # after the step-3 checkpoint, while step 4 is logged but not saved
    code, _ = finish(proc)
    assert code == -signal.SIGKILL
    assert [s for s, _ in complete_checkpoints(out)] == [3]
    code, log = finish(cli(["--data", str(latents_file), "--config", str(tiny_config), "--out", str(out),
                            "--resume"]))
    assert code == 0, log
    assert "resuming from" in log and "step-3" in log
    assert_same_run(straight_run, out, 6)


def test_half_written_checkpoint_is_never_picked(straight_run, latents_file, tiny_config, tmp_path):
    import shutil

    out = tmp_path / "half"
    shutil.copytree(straight_run, out)
    ckpts = out / "checkpoints"
    (ckpts / "step-6" / "COMPLETE").unlink()  # cut off before its marker...
    (ckpts / "step-6" / "dit.safetensors").write_bytes(b"\0" * 10)  # ...with a truncated weights file
    (ckpts / ".tmp-step-9").mkdir()
    (ckpts / ".tmp-step-9" / "dit.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(out) == ckpts / "step-3"
    summary = run_training(latents_file, tiny_config, out, resume=True, progress=False)
    assert summary["resumed_from"].endswith("step-3") and summary["step"] == 6
    assert_same_run(straight_run, out, 6)


def test_nan_step_is_skipped_and_counted(latents_file, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDMILL_FAULTS", "nan@2")
    summary = run_training(latents_file, tiny_config, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run")
    assert summary["skipped"] == 1 and len(rows) == 6
    assert rows[1]["skipped"] and rows[1]["loss"] is None and rows[1]["skipped_total"] == 1
    assert not any(r["skipped"] for r in rows[2:]) and all(r["loss"] is not None for r in rows[2:])
    state = json.loads((tmp_path / "run/checkpoints/step-6/trainer_state.json").read_text())
    assert state["skipped"] == 1
    weights = load_file(str(tmp_path / "run/checkpoints/step-6/dit.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_load_models_rebuilds_the_trained_dit(straight_run):
    config, dit, vae = load_models(straight_run)
    assert config.size.name == "tiny" and vae is None and not dit.training
    ema = load_file(str(straight_run / "checkpoints/step-6/dit_ema.safetensors"))
    assert all(torch.equal(p, ema[n]) for n, p in dit.named_parameters())
    _, raw, _ = load_models(straight_run, step=3, ema=False)
    raw3 = load_file(str(straight_run / "checkpoints/step-3/dit.safetensors"))
    assert all(torch.equal(p, raw3[n]) for n, p in raw.named_parameters())
    with pytest.raises(FileNotFoundError):
        load_models(straight_run, step=5)


_STRAIGHT: dict[str, Path] = {}


def straight_two_rank_run(mode: str, latents_file: Path, config: Path, root: Path) -> Path:
    """6 steps on 2 gloo ranks through torchrun, uninterrupted (made once per parallel mode)."""
    if mode not in _STRAIGHT:
        out = root / f"{mode}-straight"
        code, log = finish(cli(["--data", str(latents_file), "--config", str(config), "--out", str(out)], nproc=2))
        assert code == 0, log
        _STRAIGHT[mode] = out
    return _STRAIGHT[mode]


@pytest.fixture(scope="module")
def mode_configs(write_config, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("modes")
    return {mode: write_config(root / f"{mode}.yaml", parallel=mode) for mode in ("ddp", "fsdp")}


@pytest.fixture(scope="module")
def straight_two_ranks(latents_file, mode_configs, tmp_path_factory) -> Path:
    return straight_two_rank_run("ddp", latents_file, mode_configs["ddp"], tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_torchrun_two_ranks_resume_is_bit_exact(mode, latents_file, mode_configs, tmp_path, tmp_path_factory):
    straight = straight_two_rank_run(mode, latents_file, mode_configs[mode], tmp_path_factory.mktemp("runs"))
    out = tmp_path / f"{mode}-killed"
    args = ["--data", str(latents_file), "--config", str(mode_configs[mode]), "--out", str(out)]
    code, log = finish(cli(args, env={"VIDMILL_FAULTS": "kill@4"}, nproc=2))
    assert code != 0
    assert [s for s, _ in complete_checkpoints(out)] == [3]
    assert len(list((out / "checkpoints/step-3/rng").glob("rank-*.pt"))) == 2
    assert len(list((out / "checkpoints/step-3/loader").glob("rank-*.pt"))) == 2
    code, log = finish(cli(args + ["--resume"], nproc=2))
    assert code == 0, log
    assert_same_run(straight, out, 6)


def test_activation_checkpointing_changes_no_number(latents_file, write_config, tmp_path):
    runs = []
    for ac in (False, True):
        config = write_config(tmp_path / f"ac{ac}.yaml", steps=3, activation_checkpointing=ac)
        run_training(latents_file, config, tmp_path / f"ac{ac}", progress=False)
        runs.append(tmp_path / f"ac{ac}")
    assert_same_run(runs[0], runs[1], 3)


@pytest.mark.slow
def test_ray_train_resumes_the_same_way(straight_two_ranks, latents_file, mode_configs, tmp_path, local_ray):
    """Two Ray Train workers write the torchrun format; killed after step 4 and resumed, they equal torchrun's run."""
    from vidmill.training.ray_train import run_on_ray

    out = tmp_path / "ray"
    with pytest.raises(Exception):  # noqa: B017 (Ray wraps the dead worker in its own error type)
        run_on_ray(latents_file, mode_configs["ddp"], out, num_workers=2, cpus_per_worker=0.5,
                   env={"VIDMILL_FAULTS": "kill@4"})
    assert [s for s, _ in complete_checkpoints(out)] == [3]
    run_on_ray(latents_file, mode_configs["ddp"], out, resume=True, num_workers=2, cpus_per_worker=0.5)
    assert_same_run(straight_two_ranks, out, 6)


def test_a_step_of_packs_equals_grad_accumulation(latents_file, tiny_config, tmp_path):
    """A packing-loader batch (one per step, this rank's packs as index lists) = grad_accum plain batches."""
    from dataclasses import dataclass, field

    from vidmill.model.dit import DiT
    from vidmill.training.data.memory import MemoryLoader, load_latents
    from vidmill.training.data.sample import PackedBatch
    from vidmill.training.objectives import build_objective
    from vidmill.training.run import resolve_config
    from vidmill.training.trainer import Trainer

    @dataclass
    class StepBatch(PackedBatch):
        packs: list[list[int]] = field(default_factory=list)

    class StepLoader:
        def __init__(self, inner):
            self.inner = inner

        def state_dict(self):
            return self.inner.state_dict()

        def load_state_dict(self, state):
            self.inner.load_state_dict(state)

        def __iter__(self):
            it = iter(self.inner)
            while True:
                a, b = next(it), next(it)
                samples = a.samples + b.samples
                yield StepBatch(samples, a.tokens + b.tokens, a.budget + b.budget, 0, {"wait_s": 0.0},
                                packs=[list(range(len(a.samples))), list(range(len(a.samples), len(samples)))])

    config = resolve_config(tiny_config, tmp_path, False, 4)
    samples = load_latents(latents_file)
    losses = []
    for name, loader in (("accum", MemoryLoader(samples, 384, config.size.dit.patch)),
                         ("packs", StepLoader(MemoryLoader(samples, 384, config.size.dit.patch)))):
        torch.manual_seed(0)
        trainer = Trainer(config, tmp_path / name, DiT(config.size.dit), build_objective("flow_matching", config),
                          loader, progress=False, flops_config=config.size.dit)
        trainer.fit(4)
        losses.append([r["loss"] for r in read_metrics(tmp_path / name)])
    assert losses[0] == losses[1] and len(losses[0]) == 4
    assert "loader_wait_s" in read_metrics(tmp_path / "packs")[0]
