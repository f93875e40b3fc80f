"""The OUTPUT Store (local and S3 on moto) and the shard writer's plan / worker split."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import pytest

from vidmill.pipeline.config import ShardConfig
from vidmill.pipeline.output.store import Store
from vidmill.pipeline.output.workdir import WorkDir
from vidmill.pipeline.output.writers import WriteShard, shard_jobs, write_shards, write_shards_here


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
                     "clip_bytes": 6, "caption": f"caption {i}" if i % 2 else None})
    return rows


def test_shards_are_planned_on_the_driver_and_written_by_a_worker_stage(store):
    work = WorkDir(store, "fp")
    rows = _rows(work, 5)
    config = ShardConfig(max_samples=2)
    calls = []

    def run_jobs(jobs):
        calls.append([name for name, _ in jobs])
        stage = pickle.loads(pickle.dumps(WriteShard(work)))  # as a worker gets it
        return {name: stage.process((name, rows)) for name, rows in jobs}

    placed = write_shards(rows, store, config, run_jobs)
    assert calls == [["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]]
    assert placed["in_3"] == ("shard-000001.tar", "in_3")
    with store.open("shards/shard-000001.tar") as handle, tarfile.open(fileobj=io.BytesIO(handle.read())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members["in_2.mp4"] == b"clip 2" and members["in_3.txt"] == b"caption 3"
    assert "in_2.txt" not in members and json.loads(members["in_3.json"])["shard"] == "shard-000001.tar"
    index = json.loads(store.get("shards/index.json"))
    assert list(index) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]

    write_shards(rows, store, config, run_jobs)  # unchanged: nothing rewritten
    assert calls[-1] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"] and len(calls) == 1
    rows[4]["caption"] = "changed"
    write_shards(rows[:4] + rows[4:], store, config, run_jobs)
    assert calls[-1] == ["shard-000002.tar"]
    store.put("shards/.shard-000009.tar.abc.tmp", b"half")  # left by a writer killed mid-tar
    write_shards(rows[:2], store, config, run_jobs)  # fewer clips: stale shards and temp files removed
    assert sorted(store.find("shards")) == ["shards/index.json", "shards/shard-000000.tar"]


def test_a_shard_whose_worker_failed_stops_the_write_before_the_manifest(tmp_path):
    store = Store(str(tmp_path / "out"))
    work = WorkDir(store, "fp")
    rows = _rows(work, 3)
    config = ShardConfig(max_samples=2)
    assert [name for name, _ in shard_jobs(rows, config)] == ["shard-000000.tar", "shard-000001.tar"]
    with pytest.raises(RuntimeError, match="shard-000001.tar"):  # only the first job came back
        write_shards(rows, store, config, lambda jobs: {jobs[0][0]: WriteShard(work).process(jobs[0])})
    assert not store.exists("shards/index.json")
    assert write_shards(rows, store, config, write_shards_here(work))["in_2"][0] == "shard-000001.tar"


def test_a_file_uri_is_a_local_store(tmp_path):
    store = Store(f"file://{tmp_path}/out/")
    assert store.local and store.uri == str(tmp_path / "out")
    store.put("x.json", b"{}")
    assert (tmp_path / "out" / "x.json").read_bytes() == b"{}"
    assert not Store("s3://bucket/out/").local and Store("s3://bucket/out/").uri == "s3://bucket/out"
