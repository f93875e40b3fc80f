"""The tail-task machinery without a model: config checks, the scheduler's queue, failures, crashes, pruned
checkpoints, and the rows evaluate_checkpoint logs when a benchmark fails or is not computed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vidmill.evaluation import tail_schedule
from vidmill.evaluation.tail import PhysicsIQTail, VBenchTail, evaluate_checkpoint
from vidmill.evaluation.tail_schedule import EvalScheduler, command
from vidmill.evaluation.video_io import write_video
from vidmill.training.config import EvalConfig, from_dict
from vidmill.training.metrics import read_metrics


def checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    folder = run / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "COMPLETE").write_text("")
    return folder


def test_eval_config_due_enabled_and_round_trip():
    cfg = EvalConfig(every=3, at_end=True, physics_iq={"real": "/b"})
    assert [s for s in range(1, 8) if cfg.due(s, final=s == 7)] == [3, 6, 7]
    assert not EvalConfig(every=3).enabled  # no benchmark named: nothing is scheduled
    assert not EvalConfig(physics_iq={"real": "/b"}).enabled  # no step named
    assert not EvalConfig(every=0, at_end=False, physics_iq={"real": "/b"}).due(3, final=True)
    again = from_dict({"size": "tiny", "eval": {"every": 5, "vbench": {"images": "/i"}}})
    assert again.eval.every == 5 and from_dict(again.to_dict()).eval == again.eval
    with pytest.raises(ValueError, match="unknown eval keys: evrey"):
        from_dict({"size": "tiny", "eval": {"evrey": 5}})


def test_a_bad_suite_section_fails_at_start(tmp_path):
    with pytest.raises(ValueError, match=r"unknown eval.physics_iq keys: reel"):
        EvalScheduler(EvalConfig(every=1, physics_iq={"reel": "/b"}), tmp_path)
    with pytest.raises(ValueError, match="mode must be i2v or v2v"):
        EvalScheduler(EvalConfig(every=1, physics_iq={"real": "/b", "mode": "t2v"}), tmp_path)
    with pytest.raises(ValueError, match=r"eval.vbench: .*images"):
        EvalScheduler(EvalConfig(every=1, vbench={"seconds": 2}), tmp_path)


def test_command_line_carries_every_setting(tmp_path):
    cfg = EvalConfig(every=1, steps=8, keep_videos=False, num_threads=2,
                     physics_iq={"real": "/b", "mode": "i2v", "fps": 16, "limit": 3, "mask_round_trip": True},
                     vbench={"images": "/i", "config": "/e.yaml", "seconds": 1.5})
    cmd = command(tmp_path / "checkpoints" / "step-4", tmp_path, 4, cfg)
    assert cmd[:5] == [sys.executable, "-m", "vidmill.cli", "eval", "checkpoint"]
    text = " ".join(cmd[5:])
    for part in ("--step 4", "--device cpu", "--threads 2", "--steps 8", "--no-keep-videos", "--physics-iq-real /b",
                 "--physics-iq-mode i2v", "--physics-iq-fps 16", "--physics-iq-limit 3", "--mask-round-trip",
                 "--vbench-images /i", "--vbench-config /e.yaml", "--vbench-seconds 1.5"):
        assert part in text
    from vidmill.cli import build_parser

    args = build_parser().parse_args(cmd[3:])  # the line parses as `vidmill eval checkpoint`
    assert args.physics_iq_limit == 3 and args.keep_videos is False and args.vbench_seconds == 1.5
    with pytest.raises(ValueError, match="path of an evaluation YAML"):
        command(tmp_path, tmp_path, 1, EvalConfig(every=1, vbench={"images": "/i", "config": {"vbench": {}}}))


def fake_command(script: str):
    return lambda *a: [sys.executable, "-c", script]


def test_background_jobs_run_one_at_a_time_and_failures_are_counted(tmp_path, monkeypatch):
    logged = []
    sched = EvalScheduler(EvalConfig(every=1, physics_iq={"real": "/b"}), tmp_path, log=logged.append)
    # first job: sleeps then succeeds; second: a benchmark failed (exit 1, its row written by the job);
    # third: crashes without a row (exit 3); fourth: its checkpoint was pruned before it could start
    scripts = iter(["import time; time.sleep(0.5)", "import sys; sys.exit(1)", "import os; os._exit(3)"])
    monkeypatch.setattr(tail_schedule, "command", lambda *a: [sys.executable, "-c", next(scripts)])
    for step in (1, 2, 3):
        sched.submit(step, checkpoint(tmp_path, step))
    pruned = checkpoint(tmp_path, 4, complete=False)
    sched.submit(4, pruned)
    assert sched.running.step == 1 and [j.step for j in sched.queue] == [2, 3, 4]
    counts = sched.close()
    assert (counts.launched, counts.ok, counts.failed, counts.skipped) == (3, 1, 2, 1)
    rows = read_metrics(tmp_path, "eval")
    assert [r["step"] for r in rows] == [3, 4]  # exit 1 wrote its own row (here: none); exit 3 and pruning get one
    assert rows[0]["eval/status"].startswith("failed: exit code 3 (see ")
    assert rows[1]["eval/status"].startswith("skipped: checkpoint pruned")
    assert any("step 2 failed: a benchmark failed" in m for m in logged)
    assert (tmp_path / "eval" / "step-1" / "log.txt").is_file()


def test_close_without_waiting_leaves_the_queue_unstarted(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_schedule, "command", fake_command("import time; time.sleep(2)"))
    sched = EvalScheduler(EvalConfig(every=1, physics_iq={"real": "/b"}), tmp_path, log=lambda m: None)
    sched.submit(1, checkpoint(tmp_path, 1))
    sched.submit(2, checkpoint(tmp_path, 2))
    counts = sched.close(wait=False)
    assert counts.launched == 1 and counts.skipped == 1 and sched.running.process.poll() is None
    sched.running.process.kill()
    sched.running.process.wait()


def test_in_process_failure_is_logged_and_counted_never_raised(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tail_schedule, "evaluate_checkpoint", boom)
    logged = []
    sched = EvalScheduler(EvalConfig(every=1, background=False, physics_iq={"real": "/b"}), tmp_path,
                          log=logged.append)
    sched.submit(5, checkpoint(tmp_path, 5))
    assert sched.counts.failed == 1 and logged == ["evaluation of step 5 failed: RuntimeError: out of memory"]
    (row,) = read_metrics(tmp_path, "eval")
    assert row["step"] == 5 and row["eval/status"] == "failed: RuntimeError: out of memory"


def hold_last_frame(checkpoint, condition, mode, seconds, fps, out):
    """A GenerateFn: the conditioning image held for `seconds`."""
    import cv2

    frame = cv2.imread(str(condition))
    write_video(out, np.repeat(frame[None], round(seconds * fps), axis=0), fps)


def test_one_failing_benchmark_does_not_stop_the_other(tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a cat camera pans left.png"), np.full((32, 48, 3), 90, np.uint8))
    run = tmp_path / "run"
    row = evaluate_checkpoint("ckpt", run, 7, physics_iq=PhysicsIQTail(str(tmp_path / "missing"), fps=8),
                              vbench=VBenchTail(str(images), fps=8.0, seconds=1.0), generate=hold_last_frame)
    assert row["eval/failed"] == ["physics_iq"]
    assert row["eval/physics_iq/status"].startswith("failed: FileNotFoundError")
    assert (run / "eval" / "step-7" / "physics-iq" / "error.txt").read_text().startswith("Traceback")
    assert row["eval/vbench/status"].startswith("not computed") and row["eval/vbench/i2v"] is None
    assert set(row["eval/vbench/not_computed"]) == {"i2v_subject", "i2v_background", "subject_consistency",
                                                    "background_consistency", "motion_smoothness", "dynamic_degree",
                                                    "aesthetic_quality", "imaging_quality", "camera_motion"}
    doc = json.loads((run / "eval" / "step-7" / "vbench" / "results.json").read_text())
    assert [r["video"] for r in doc["rows"]] == ["a cat camera pans left.mp4"]
    assert read_metrics(run) == [json.loads(json.dumps(row))]


def test_tensorboard_gets_numbers_and_status_text_only(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidmill.evaluation.tail import log_eval_row

    log_eval_row(tmp_path, {"step": 3, "kind": "eval", "eval/physics_iq/original": 41.5,
                            "eval/physics_iq/stable": None, "eval/physics_iq/status": "partial: 1/2 scenarios",
                            "eval/vbench/not_computed": {"dynamic_degree": "not computed: no weights (...)"}})
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "eval"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["eval/physics_iq/original"]
    assert [(e.step, e.value) for e in acc.Scalars("eval/physics_iq/original")] == [(3, 41.5)]
    text = acc.Tensors("eval/status/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "partial: 1/2 scenarios" in text and "no weights" in text
