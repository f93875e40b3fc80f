"""OUTPUT on an S3-compatible endpoint (moto on 127.0.0.1): a two-node local cluster writes the same tables
as a local OUTPUT, a killed driver and a re-run give the same manifest, and no clip bytes pass through
the driver (workers publish clip files and shards to the bucket themselves)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from test_cluster import two_nodes  # noqa: F401 - the two-node cluster fixture, shared
from transcoded_columns import without_transcode_dependent

pytestmark = pytest.mark.slow
VIDMILL = [sys.executable, "-m", "vidmill"]
TABLES = ("inputs.parquet", "shots.parquet", "manifest.parquet")


def s3(options: dict):
    import s3fs

    return s3fs.S3FileSystem(**options, use_listings_cache=False)


def config_file(tmp_path: Path, options: dict) -> Path:
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump({"output": {"storage_options": options}}))
    return path


def curate_args(samples: Path, out: str, config: Path, *extra: str) -> list[str]:
    return [*VIDMILL, "curate", str(samples), out, "--config", str(config), "--no-progress", *extra]


def table(fs, prefix: str, name: str) -> list[dict]:
    """A table file, or the manifest.parquet/ dataset of parts (pyarrow skips its _SUCCESS marker)."""
    return pq.read_table(f"{prefix}/{name}", filesystem=fs).to_pylist()


def assert_same_tables(fs, prefix: str, curated: Path) -> None:
    """The bucket's tables equal the local OUTPUT's (without the encoder-dependent columns), and every
    shard the manifest names is in the bucket, and no other."""
    for name in TABLES:
        rows = without_transcode_dependent(table(fs, prefix, name))
        assert rows == without_transcode_dependent(pq.read_table(curated / name).to_pylist()), name
    named = {r["shard"] for r in table(fs, prefix, "manifest.parquet") if r["shard"]}
    stored = {p.rsplit("/", 1)[-1] for p in fs.find(f"{prefix}/shards")} - {"index.json"}
    assert named and named == stored
    assert not fs.exists(f"{prefix}/.vidmill.lock")


@pytest.fixture(scope="module")
def s3_run(samples, moto_s3, two_nodes, tmp_path_factory):  # noqa: F811 - two_nodes is the imported fixture
    """The sample bucket curated to s3://vidmill/cluster on the two-node cluster."""
    cluster, _ = two_nodes
    config = config_file(tmp_path_factory.mktemp("s3-config"), moto_s3)
    result = subprocess.run(curate_args(samples, "s3://vidmill/cluster", config, "--address", cluster.address),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return "vidmill/cluster"


def test_two_node_cluster_to_s3_gives_the_tables_of_a_local_output(s3_run, moto_s3, curated):
    fs = s3(moto_s3)
    assert_same_tables(fs, s3_run, curated)
    run = json.loads(fs.cat_file(f"{s3_run}/run.json"))
    assert run["output"] == "s3://vidmill/cluster"
    with fs.open(f"{s3_run}/shards/shard-000000.tar", "rb") as handle, \
            tarfile.open(fileobj=handle) as tar:  # a real tar with the clips in it
        names = tar.getnames()
    assert any(n.endswith(".mp4") for n in names) and any(n.endswith(".json") for n in names)


def test_no_clip_bytes_pass_through_the_driver(s3_run, moto_s3):
    """Transcode workers publish clips and return sizes; caption and shard workers read clips from the
    bucket. What the driver received from, and sent to, those stages is a few percent of the clip bytes."""
    fs = s3(moto_s3)
    run = json.loads(fs.cat_file(f"{s3_run}/run.json"))
    clip_bytes = run["clip_bytes_written"]
    stored = sum(fs.du(f"{s3_run}/_work/clips", total=False).values())
    assert clip_bytes == stored > 100_000
    received, sent = run["driver_bytes_received"], run["driver_bytes_sent"]
    assert received["transcode"] < 0.02 * clip_bytes  # before: every clip's bytes came back (ratio >= 1)
    assert sent["caption"] < 0.02 * clip_bytes  # before: every kept clip's bytes were sent
    # shards are written by finalize's workers, which read the clips from the bucket themselves
    clip_stages = sum(received.get(s, 0) + sent.get(s, 0) for s in ("transcode", "caption", "finalize"))
    assert clip_stages < 0.15 * clip_bytes, (clip_stages, clip_bytes)


def _markers(fs, prefix: str) -> int:
    try:
        return len(fs.find(f"{prefix}/_work/inputs"))
    except FileNotFoundError:
        return 0


def test_killed_driver_then_rerun_gives_the_same_manifest_on_s3(samples, moto_s3, curated, tmp_path):
    fs = s3(moto_s3)
    prefix, config = "vidmill/killed", config_file(tmp_path, moto_s3)
    proc = subprocess.Popen(curate_args(samples, f"s3://{prefix}", config), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 180
    while _markers(fs, prefix) < 3:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no progress"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not fs.exists(f"{prefix}/manifest.parquet")
    assert fs.exists(f"{prefix}/.vidmill.lock")  # left behind by the killed run: stale, taken over
    partial = _markers(fs, prefix)
    assert 3 <= partial < 21
    result = subprocess.run(curate_args(samples, f"s3://{prefix}", config), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{partial} resumed" in result.stdout
    assert "taking it over" in result.stderr
    assert_same_tables(fs, prefix, curated)


def test_the_lock_on_s3_is_a_conditional_put(moto_s3):
    from vidmill.pipeline.lock import OutputLock, OutputLocked
    from vidmill.pipeline.output.store import Store

    store = Store("s3://vidmill/locked", moto_s3)
    with OutputLock(store):
        assert json.loads(store.get(".vidmill.lock"))["pid"] == os.getpid()
        assert not store.create(".vidmill.lock", b"{}")  # If-None-Match: * refuses an existing name
        with pytest.raises(OutputLocked, match="another vidmill run"):
            OutputLock(store).acquire()  # held by this live process
    assert not store.exists(".vidmill.lock")


def test_an_unreachable_or_missing_bucket_is_one_line_before_any_work(samples, moto_s3, tmp_path):
    config = config_file(tmp_path, moto_s3)
    result = subprocess.run(curate_args(samples, "s3://no-such-bucket/out", config), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "OUTPUT s3://no-such-bucket/out is not writable" in result.stderr
    assert "Traceback" not in result.stderr
