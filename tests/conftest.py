"""Shared fixtures: the synthetic sample bucket, local Ray, and one curated run of the bucket."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep every Ray process on 127.0.0.1
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # `ray job submit` to the test head


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidmill.pipeline.samples import write_samples

    root = tmp_path_factory.mktemp("samples")
    write_samples(root)
    return root


@pytest.fixture(scope="session")
def truth(samples: Path) -> dict:
    return json.loads((samples / "ground_truth.json").read_text())["files"]


@pytest.fixture()
def local_ray():
    from vidmill.pipeline.executor.runner import init_ray

    init_ray(None)
    yield


@pytest.fixture(scope="session")
def curated(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample bucket curated once with default settings on local Ray."""
    from vidmill.pipeline.config import CurateConfig
    from vidmill.pipeline.curate import Curation
    from vidmill.pipeline.executor.runner import init_ray

    init_ray(None)
    out = tmp_path_factory.mktemp("curated")
    Curation(str(samples), out, CurateConfig(), progress=False).run()
    return out


@pytest.fixture(scope="session")
def moto_s3():
    """A local S3-compatible endpoint (moto's server on 127.0.0.1, a free port) with one bucket, `vidmill`.
    Yields the fsspec storage options that point s3fs at it."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    try:
        import s3fs

        s3fs.S3FileSystem(**options).mkdir("vidmill")
        yield options
    finally:
        server.stop()
