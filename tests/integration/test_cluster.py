"""Beyond one local Ray: a two-node cluster on this machine, and `ray job submit` to a local head."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray.cluster_utils import Cluster
from transcoded_columns import without_transcode_dependent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes():
    dashboard_port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        "dashboard_agent_listen_port": _free_port()})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    try:
        yield cluster, f"http://127.0.0.1:{dashboard_port}"
    finally:
        cluster.shutdown()


def test_two_node_cluster_gives_the_same_manifest(samples, curated, tmp_path, two_nodes):
    """Default pools (2 analyze + 2 transcode actors at 0.5 CPU) need both 1-CPU nodes."""
    cluster, _ = two_nodes
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "vidmill", "curate", str(samples), str(out),
                             "--address", cluster.address, "--no-progress"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert without_transcode_dependent(pq.read_table(out / "manifest.parquet").to_pylist()) == \
        without_transcode_dependent(pq.read_table(curated / "manifest.parquet").to_pylist())


def test_ray_job_submit_to_local_head(samples, tmp_path, two_nodes):
    _, dashboard = two_nodes
    out = tmp_path / "job-out"
    ray_cli = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]  # a venv may lack bin/ray
    vidmill = str(Path(sys.executable).parent / "vidmill")
    for _ in range(20):  # the head's job agent takes a few seconds to come up after the cluster
        result = subprocess.run([*ray_cli, "job", "submit", "--address", dashboard, "--",
                                 vidmill, "curate", str(samples / "cuts.mp4"), str(out), "--no-progress"],
                                capture_output=True, text=True, timeout=600,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        if "No available agent" not in result.stderr + result.stdout:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout + result.stderr
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["start_s"] for r in manifest] == [0.25, 4.25, 8.75]
