"""Curation trusted with a real bucket: replaced inputs are redone, outputs inside inputs are left out, one
writer per output, readable files, config checked up front, clear messages, no Ray left after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from vidmill.pipeline.checks import ConfigError
from vidmill.pipeline.config import load_config
from vidmill.pipeline.lock import LOCK_NAME, OutputLock, OutputLocked

VIDMILL = [sys.executable, "-m", "vidmill"]


def curate(inp: Path | str, out: Path | str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VIDMILL, "curate", str(inp), str(out), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture()
def bucket(samples: Path, tmp_path: Path) -> Path:
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(samples / "moving_subject.mp4", b / "ok.mp4")
    shutil.copy(samples / "static.mp4", b / "still.mp4")
    return b


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_replaced_input_is_redone_and_its_old_clips_replaced(bucket: Path, samples: Path, tmp_path: Path):
    out = tmp_path / "o"
    assert curate(bucket, out).returncode == 0
    before = {r["source_uri"]: r for r in rows(out / "inputs.parquet")}
    shutil.copy(samples / "cuts.mp4", bucket / "ok.mp4")  # same name, other video
    os.utime(bucket / "ok.mp4", (time.time() + 5, time.time() + 5))
    result = curate(bucket, out)
    assert result.returncode == 0, result.stderr
    assert "1 resumed" in result.stdout  # still.mp4 only
    after = {r["source_uri"]: r for r in rows(out / "inputs.parquet")}
    ok = str(bucket / "ok.mp4")
    assert after[ok]["size_bytes"] == (samples / "cuts.mp4").stat().st_size != before[ok]["size_bytes"]
    assert after[ok]["n_shots"] == 3 and before[ok]["n_shots"] == 1
    manifest = [r for r in rows(out / "manifest.parquet") if r["source_uri"] == ok]
    assert [r["start_s"] for r in manifest] == [0.25, 4.25, 8.75]  # the cuts of the new video
    members = {}
    for shard in sorted((out / "shards").glob("shard-*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            members[sample["__key__"]] = sample
    for row in manifest:
        if row["kept"]:
            assert len(members[row["key"]]["mp4"]) == row["clip_bytes"]
            assert json.loads(members[row["key"]]["json"])["start_s"] == row["start_s"]


def test_transient_open_errors_are_retried_content_errors_are_not(samples: Path):
    """A permission error is the environment's fault (retried next run); bad data is the input's own.
    (Root reads files whatever their mode, so the OS error is injected where PyAV opens the file.)"""
    import av

    from vidmill.pipeline.analysis.analyze import AnalyzeInput, InputRange
    from vidmill.pipeline.config import CurateConfig
    from vidmill.pipeline.sources import list_inputs

    ref = [r for r in list_inputs(str(samples), CurateConfig().source) if r.source_uri.endswith("static.mp4")][0]
    stage = AnalyzeInput(CurateConfig())
    with mock.patch("av.open", side_effect=PermissionError(13, "Permission denied")):
        denied = stage.analyze_range(InputRange(ref))
    assert denied.error and "Permission denied" in denied.error and denied.transient
    with mock.patch("av.open", side_effect=av.InvalidDataError(1094995529, "Invalid data")):
        corrupt = stage.analyze_range(InputRange(ref))
    assert corrupt.error and not corrupt.transient


def test_output_inside_input_is_left_out_and_input_as_output_refused(bucket: Path):
    out = bucket / "out"
    assert curate(bucket, out).returncode == 0
    result = curate(bucket, out)
    assert result.returncode == 0, result.stderr
    assert [r["source_uri"] for r in rows(out / "inputs.parquet")] == \
        [str(bucket / "ok.mp4"), str(bucket / "still.mp4")]
    assert "files under OUTPUT" in result.stdout
    same = curate(bucket, bucket)
    assert same.returncode == 2 and "is INPUT itself" in same.stderr


def test_a_second_run_on_one_output_is_refused_and_a_stale_lock_taken_over(bucket: Path, tmp_path: Path):
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "started": "earlier"}
        (out / LOCK_NAME).write_text(json.dumps(lock))
        refused = curate(bucket, out)
        assert refused.returncode == 3
        assert f"PID {holder.pid}" in refused.stderr and not (out / "manifest.parquet").exists()
        forced = curate(bucket, out, "--force")  # --force cannot break a live lock on this host
        assert forced.returncode == 3
    finally:
        holder.kill()
        holder.wait()
    taken = curate(bucket, out)  # its holder is dead now: a stale lock
    assert taken.returncode == 0, taken.stderr
    assert "died without releasing" in taken.stderr and not (out / LOCK_NAME).exists()


def test_lock_from_another_host_needs_force(tmp_path: Path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "x"}))
    with pytest.raises(OutputLocked, match="--force"):
        OutputLock(tmp_path).acquire()
    notes = []
    with OutputLock(tmp_path, force=True, note=notes.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert notes and "breaking the lock" in notes[0]


def test_outputs_are_readable_as_the_umask_allows(curated: Path):
    for path in [curated / "manifest.parquet", curated / "inputs.parquet", curated / "run.json",
                 *list((curated / "_work" / "inputs").glob("*.json"))[:3],
                 *list((curated / "shards").glob("*"))[:2]]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path} is {oct(mode)}"


@pytest.mark.parametrize(("setting", "message"), [
    ("shots.detector=foo", "shots.detector must be one of adaptive, content"),
    ("captions.backend=nope", "captions.backend must be one of signals, openai, vllm"),
    ("spans.max_s=0", "spans.max_s must be > 0"),
    ("transcode.fps=0", "transcode.fps must be > 0"),
    ("decode.tap_fps=0", "decode.tap_fps must be > 0"),
    ("ray.analyze.concurrency=0", "ray.analyze.concurrency must be >= 1"),
    ("source.extensions=.mp4", "source.extensions must be a list"),
    ("thresholds.sharpness_min=abc", "thresholds.sharpness_min must be a number"),
    ("spans.nope=1", "unknown config key spans.'nope'"),
    ("spans.min_s=[1", "--set spans.min_s:1:3: invalid YAML"),
])
def test_each_invalid_config_value_is_one_line(setting: str, message: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, [setting])
    assert any(message in line for line in err.value.problems), err.value.problems


def test_config_problems_all_at_once_exit_2_before_any_work(bucket: Path, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spans:\n  min_s: 2\n   max_s: 3\n")
    result = curate(bucket, tmp_path / "o", "--config", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"vidmill: error: {bad}:3:")
    result = curate(bucket, tmp_path / "o", "--set", "transcode.fps=0", "--set", "shots.detector=x")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 2
    assert not (tmp_path / "o").exists()


def test_output_that_is_a_file_is_one_line(bucket: Path, tmp_path: Path):
    (tmp_path / "f").write_text("x")
    result = curate(bucket, tmp_path / "f")
    assert result.returncode == 2 and "is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_symlinks_empty_bucket_and_skipped_extensions_are_named(bucket: Path, tmp_path: Path):
    (bucket / "gone.mp4").symlink_to(tmp_path / "missing.mp4")
    (bucket / "loop.mp4").symlink_to(bucket / "loop.mp4")
    (bucket / "clip.wmv").write_bytes(b"x")
    result = curate(bucket, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    errors = {Path(r["source_uri"]).name: r["error"] for r in rows(tmp_path / "o" / "inputs.parquet")
              if r["status"] == "error"}
    assert errors["gone.mp4"].startswith("dangling symlink") and errors["loop.mp4"] == "symlink loop"
    assert "gone.mp4: dangling symlink" in result.stdout and "1 .wmv" in result.stdout
    summary = json.loads((tmp_path / "o" / "run.json").read_text())
    assert summary["counts"]["skipped_extensions"] == {".wmv": 1}
    assert "too_static" not in result.stdout or "thresholds.motion_min=" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    result = curate(empty, tmp_path / "o2")
    assert result.returncode == 2 and "no inputs found" in result.stderr and "1 .txt" in result.stderr


def test_no_ray_processes_outlive_a_killed_driver(samples: Path, tmp_path: Path):
    from vidmill.pipeline.executor.ray_watchdog import leftovers

    proc = subprocess.Popen([*VIDMILL, "curate", str(samples), str(tmp_path / "o"), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    watchdog = None
    deadline = time.time() + 120
    while watchdog is None and time.time() < deadline:
        assert proc.poll() is None
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            module = "vidmill.pipeline.executor.ray_watchdog"
            if module in argv and argv[argv.index(module) + 1] == str(proc.pid):
                watchdog = [int(a) for a in argv[argv.index(module) + 2:] if a]
        time.sleep(0.2)
    assert watchdog, "the local Ray's watchdog never started"
    raylet, heads = watchdog[0], watchdog[1:]
    time.sleep(3)  # let Ray start its agents and workers
    assert leftovers(raylet, heads), "nothing of the Ray instance was found while it ran"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while leftovers(raylet, heads) and time.time() < deadline:
        time.sleep(0.5)
    assert leftovers(raylet, heads) == []


def test_unreachable_bucket_and_object_store_output_are_one_line(bucket: Path, tmp_path: Path):
    """s3:// with no server behind it (an endpoint on a closed loopback port, no retries), as INPUT and as OUTPUT."""
    import socket as sock

    with sock.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = f"source.storage_options={{endpoint_url: 'http://127.0.0.1:{port}', key: k, secret: s, " \
              "config_kwargs: {retries: {max_attempts: 1}, connect_timeout: 2}}"
    result = curate("s3://nobucket/raw", tmp_path / "o", "--set", options)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot list s3://nobucket/raw" in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    result = curate(bucket, "s3://bucket/out", "--set", options.replace("source.", "output.", 1))
    assert result.returncode == 2 and "Traceback" not in result.stderr  # OUTPUT is probed before any work
    assert "OUTPUT s3://bucket/out is not writable" in result.stderr and len(result.stderr.strip().splitlines()) <= 2
