"""Resume: a run killed half way (Ctrl-C, SIGKILL of the driver, a killed worker), then re-run, gives
the same manifest as an uninterrupted run, and the manifest never references a partial shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from transcoded_columns import without_transcode_dependent

VIDMILL = [sys.executable, "-m", "vidmill"]


def start(samples: Path, out: Path) -> subprocess.Popen:
    """The driver, with SIGINT at its default even if the suite inherited it ignored (a shell without job
    control starts background commands so, and Python keeps an inherited SIG_IGN: Ctrl-C would do nothing)."""
    return subprocess.Popen([*VIDMILL, "curate", str(samples), str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_markers(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = len(list((out / "_work" / "inputs").glob("*.json"))) if (out / "_work" / "inputs").exists() else 0
        if done >= n:
            return done
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError("no progress")


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def finish(samples: Path, out: Path) -> str:
    result = subprocess.run([*VIDMILL, "curate", str(samples), str(out), "--no-progress"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_same_outputs(out: Path, reference: Path) -> None:
    assert without_transcode_dependent(manifest(out)) == without_transcode_dependent(manifest(reference))
    assert pq.read_table(out / "inputs.parquet").to_pylist() == pq.read_table(reference / "inputs.parquet").to_pylist()
    shards = {r["shard"] for r in manifest(out) if r["shard"]}
    assert shards == {p.name for p in (out / "shards").glob("*.tar")}
    assert not list((out / "shards").glob(".*.tmp"))


def kill_tree(proc: subprocess.Popen, sig: int) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_killed_driver_then_rerun_gives_identical_manifest(samples, curated, tmp_path, sig):
    out = tmp_path / "out"
    proc = start(samples, out)
    wait_for_markers(out, 3, proc)
    if sig == signal.SIGINT:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert proc.returncode == 130, proc.stdout.read()
    else:
        kill_tree(proc, signal.SIGKILL)
    assert not (out / "manifest.parquet").exists()
    partial = len(list((out / "_work" / "inputs").glob("*.json")))
    assert 3 <= partial < 21
    text = finish(samples, out)
    assert f"{partial} resumed" in text or f"{partial + 0} resumed" in text
    assert_same_outputs(out, curated)


def _busy_stage_actor_pids(driver_pid: int) -> list[int]:
    """Stage actors of this driver's local Ray (found through its watchdog) that are running an item."""
    from vidmill.pipeline.executor.ray_watchdog import _environ

    raylets = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="ignore").split("\0")
        except OSError:
            continue
        if "vidmill.pipeline.executor.ray_watchdog" in argv:
            at = argv.index("vidmill.pipeline.executor.ray_watchdog")
            if argv[at + 1] == str(driver_pid):
                raylets.add(argv[at + 2])
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="ignore")
            except OSError:
                continue
            if cmdline.startswith("ray::StageActor.run") and _environ(int(proc.name)).get("RAY_RAYLET_PID") in raylets:
                pids.append(int(proc.name))
    return pids


def test_killed_worker_is_replaced_counted_and_the_manifest_is_unchanged(samples, curated, tmp_path):
    out = tmp_path / "out"
    proc = start(samples, out)
    wait_for_markers(out, 2, proc)
    deadline = time.time() + 60
    while not (pids := _busy_stage_actor_pids(proc.pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert pids, "no busy stage actor worker found"
    os.kill(pids[0], signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout
    assert_same_outputs(out, curated)
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert sum(s["worker_deaths"] for s in stages.values()) >= 1
    assert sum(s["retries"] for s in stages.values()) >= 1


def test_rerun_of_a_complete_output_redoes_nothing(samples, curated, tmp_path):
    out = tmp_path / "out"
    finish(samples, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    text = finish(samples, out)
    assert "21 resumed" in text
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")} == before
    assert_same_outputs(out, curated)
