"""The OUTPUT Store (local and S3 on moto) and the shard writer that finalize's workers run."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import pytest

from vidmill.pipeline.finalize.layout import Layout
from vidmill.pipeline.finalize.shards import write_shard
from vidmill.pipeline.output.store import Store
from vidmill.pipeline.output.workdir import WorkDir


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "out"))
    options = request.getfixturevalue("moto_s3")
    return Store(f"s3://vidmill/store-{os.path.basename(tmp_path)}", options)


def test_put_get_create_find_remove(store):
    store.put("a/b.json", b"1")
    store.put("a/b.json", b"22")  # replaced
    assert store.get("a/b.json") == b"22" and store.size("a/b.json") == 2 and store.exists("a/b.json")
    assert store.create("lock", b"x") and not store.create("lock", b"y") and store.get("lock") == b"x"
    with store.writer("shards/big.tar") as handle:
        handle.write(b"t" * 1000)
    assert store.find("") == {"a/b.json": 2, "lock": 1, "shards/big.tar": 1000}
    assert store.glob("a/*.json") == ["a/b.json"]
    store.remove("lock")
    store.remove("lock")  # missing: fine
    store.remove_tree("a")
    assert store.find("") == {"shards/big.tar": 1000} and store.find("nothing") == {}
    with pytest.raises(FileNotFoundError):
        store.get("a/b.json")


def test_a_failed_writer_publishes_nothing(store):
    with pytest.raises(RuntimeError), store.writer("shards/x.tar") as handle:
        handle.write(b"half")
        raise RuntimeError("worker died")
    assert store.find("") == {}


def test_a_store_pickles_small_and_a_local_root_travels_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store("out")
    store.put("x", b"1")
    blob = pickle.dumps(store)
    assert len(blob) < 300
    monkeypatch.chdir("/")  # a worker in another working directory
    assert pickle.loads(blob).get("x") == b"1"
    assert store.uri == "out"  # as given, for run.json and messages


def _rows(work: WorkDir, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        work.save_clip("in", f"in_{i}", f"clip {i}".encode())
        rows.append({"clip_id": f"in_{i}", "input_id": "in", "source_uri": "s://in.mp4", "start_s": float(i),
                     "clip_bytes": 6, "caption": f"caption {i}" if i % 2 else None, "shard": "shard-000001.tar",
                     "key": f"in_{i}"})
    return rows


def test_a_shard_worker_reads_clips_from_the_store_and_skips_an_unchanged_shard(store):
    work = WorkDir(store, "fp")
    layout = pickle.loads(pickle.dumps(Layout(store)))  # as a finalize worker gets it
    rows = _rows(work, 4)
    clips_dir = store.path(work.clips_dir)
    digest = write_shard(layout, "shard-000001.tar", rows, clips_dir, None)
    with store.open("shards/shard-000001.tar") as handle, tarfile.open(fileobj=io.BytesIO(handle.read())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members["in_2.mp4"] == b"clip 2" and members["in_3.txt"] == b"caption 3"
    assert "in_2.txt" not in members and json.loads(members["in_3.json"])["shard"] == "shard-000001.tar"
    store.put("shards/shard-000001.tar", b"marker")  # unchanged rows and digest: not written again
    assert write_shard(layout, "shard-000001.tar", rows, clips_dir, digest) == digest
    assert store.get("shards/shard-000001.tar") == b"marker"
    rows[3]["caption"] = "changed"
    assert write_shard(layout, "shard-000001.tar", rows, clips_dir, digest) != digest
    assert store.get("shards/shard-000001.tar") != b"marker"


def test_a_shard_whose_clip_is_missing_publishes_nothing(store):
    work = WorkDir(store, "fp")
    rows = _rows(work, 2)
    work.store.remove(work.clip_path("in", "in_1"))
    with pytest.raises(FileNotFoundError):
        write_shard(Layout(store), "shard-000000.tar", rows, store.path(work.clips_dir), None)
    assert not store.exists("shards/shard-000000.tar") and store.find("shards") == {}


def test_a_file_uri_is_a_local_store(tmp_path):
    store = Store(f"file://{tmp_path}/out/")
    assert store.local and store.uri == str(tmp_path / "out")
    store.put("x.json", b"{}")
    assert (tmp_path / "out" / "x.json").read_bytes() == b"{}"
    assert not Store("s3://bucket/out/").local and Store("s3://bucket/out/").uri == "s3://bucket/out"
