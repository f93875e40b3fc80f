"""Streaming listing: every input in URI order, page by page (the first input comes before the walk ends),
locally and on an fsspec object store; and the runner pulls its feed lazily (bounded work in flight)."""

from __future__ import annotations

import os

import fsspec
import pytest

from vidmill.pipeline import sources
from vidmill.pipeline.config import SourceConfig, StageResources
from vidmill.pipeline.executor.runner import StageRunner
from vidmill.pipeline.sources import Listing, iter_inputs, stream_bucket
from vidmill.pipeline.stage import Stage

NAMES = ["b.mp4", "a-b.mp4", "a/x.mp4", "a/b/y.mp4", "a.mp4", "A.MOV", "c/d.mp4", "c/notes.txt", "a/z.mkv", "e/f/g.mp4"]


@pytest.fixture()
def tree(tmp_path):
    for name in NAMES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    return tmp_path


def test_local_walk_is_in_uri_order_and_complete(tree):
    listing = Listing()
    refs = list(iter_inputs(str(tree), SourceConfig(), listing=listing))
    uris = [r.source_uri for r in refs]
    found = [p for p in fsspec.filesystem("file").find(str(tree)) if not p.endswith(".txt")]
    assert uris == sorted(uris) == sorted(found)
    assert listing.listed == len(NAMES) - 1 and listing.skipped_extensions == {".txt": 1}
    assert [r.size_bytes for r in refs] == [os.path.getsize(u) for u in uris]
    top = [r.source_uri for r in iter_inputs(str(tree), SourceConfig(recursive=False))]
    assert [os.path.basename(u) for u in top] == ["A.MOV", "a-b.mp4", "a.mp4", "b.mp4"]


def test_local_walk_pages_lazily(tree, monkeypatch):
    pages = []
    scandir = os.scandir
    monkeypatch.setattr(sources.os, "scandir", lambda path: pages.append(path) or scandir(path))
    refs = iter_inputs(str(tree), SourceConfig())
    first = next(refs)
    assert first.source_uri == str(tree / "A.MOV")
    assert len(pages) == 1  # only the top directory has been read
    rest = list(refs)
    assert len(pages) == 6 and len(rest) == len(NAMES) - 2  # root, a, a/b, c, e, e/f: every directory once


def test_object_store_walk_is_in_key_order_and_lazy(monkeypatch):
    fs = fsspec.filesystem("memory")
    root = "/bucket-stream"
    for name in NAMES:
        fs.pipe_file(f"{root}/{name}", b"x" * len(name))
    calls = []
    ls = type(fs).ls
    monkeypatch.setattr(type(fs), "ls",
                        lambda self, path, detail=True, **kw: calls.append(path) or ls(self, path, detail, **kw))
    refs = iter_inputs(f"memory://{root}", SourceConfig())
    first = next(refs)
    assert first.source_uri == f"memory://{root}/A.MOV" and len(calls) == 1
    uris = [first.source_uri] + [r.source_uri for r in refs]
    assert uris == sorted(uris) and len(uris) == len(NAMES) - 1
    fs.rm(root, recursive=True)


def test_an_empty_bucket_fails_after_the_walk(tmp_path):
    (tmp_path / "readme.txt").write_text("no videos")
    with pytest.raises(ValueError, match="no inputs found under .* skipped 1 .txt"):
        next(stream_bucket(str(tmp_path), SourceConfig()))


class Echo(Stage):
    name = "echo"

    def process(self, item):
        return item


def test_the_runner_pulls_its_feed_lazily(local_ray):
    """Back-pressure: items are taken from the feed only while fewer than `in_flight` are queued or running."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Echo travels by value to the workers
    pulled, in_flight_seen, values = [], [], []
    runner = StageRunner()
    pool = runner.pool(Echo, resources=StageResources(num_cpus=0.125, concurrency=2))

    def feed():
        for i in range(60):
            pulled.append(i)
            yield pool, i, i

    def handle(done):
        assert done.error is None
        values.append(done.value)
        in_flight_seen.append(len(pulled) - len(in_flight_seen) - 1)

    runner.run({pool: handle}, feed(), in_flight=5)
    assert len(pulled) == 60 and sorted(values) == list(range(60))
    assert max(in_flight_seen) < 5  # never more than 5 pulled and not yet finished
