"""Sources: local paths, file:// URIs, single files, and an s3:// bucket on a local moto server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from vidmill.pipeline.config import CurateConfig, SourceConfig
from vidmill.pipeline.curate import Curation
from vidmill.pipeline.sources import input_id_for, list_inputs


def test_local_dir_file_uri_and_single_file_agree(samples):
    by_path = list_inputs(str(samples), SourceConfig())
    by_uri = list_inputs(f"file://{samples}", SourceConfig())
    assert by_path == by_uri
    names = [Path(r.source_uri).name for r in by_path]
    assert "README.txt" not in names and "ground_truth.json" not in names and len(names) == 21
    assert names == sorted(names)
    (single,) = list_inputs(str(samples / "cuts.mp4"), SourceConfig())
    assert single.input_id == input_id_for(str(samples / "cuts.mp4")) and single.size_bytes > 0


def test_extension_filter_and_missing_input(samples, tmp_path):
    only_mkv = list_inputs(str(samples), SourceConfig(extensions=[".MKV"]))
    assert only_mkv == []
    with pytest.raises(FileNotFoundError):
        list_inputs(str(tmp_path / "nope"), SourceConfig())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_endpoint():
    port = _free_port()
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_s3_bucket_on_local_endpoint(samples, s3_endpoint, tmp_path, local_ray):
    creds = {"key": "testing", "secret": "testing", "endpoint_url": s3_endpoint}
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="raw")
    for name in ["cuts.mp4", "rotated.mp4", "corrupt.mp4", "README.txt"]:
        client.upload_file(str(samples / name), "raw", f"videos/{name}")
    config = CurateConfig(source=SourceConfig(storage_options=creds))
    refs = list_inputs("s3://raw/videos", config.source)
    assert [r.source_uri for r in refs] == ["s3://raw/videos/corrupt.mp4", "s3://raw/videos/cuts.mp4",
                                            "s3://raw/videos/rotated.mp4"]
    out = tmp_path / "out"
    Curation("s3://raw/videos", out, config, progress=False).run()
    inputs = {r["source_uri"]: r for r in pq.read_table(out / "inputs.parquet").to_pylist()}
    assert inputs["s3://raw/videos/corrupt.mp4"]["status"] == "error"
    assert inputs["s3://raw/videos/cuts.mp4"]["n_shots"] == 3
    assert (inputs["s3://raw/videos/rotated.mp4"]["width"], inputs["s3://raw/videos/rotated.mp4"]["height"]) == (
        256, 448)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sum(r["kept"] for r in manifest) == 5
