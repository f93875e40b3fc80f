"""Dashboard test fixtures: the shared `curated` output, a synthetic manifest, screenshots as artifacts."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_dashboard", ROOT / "bench" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20,000-row synthetic output (the real manifest schema; reasons from filter_reasons)."""
    return load_bench().write_synthetic(tmp_path_factory.mktemp("synthetic") / "out", 20_000, seed=1)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory):
    """save(path_of_png): keeps a screenshot under the test tmp dir and, if set, $VIDMILL_ARTIFACTS."""
    here = tmp_path_factory.mktemp("screenshots")

    def save(name: str) -> Path:
        return here / name

    yield save
    target = os.environ.get("VIDMILL_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in here.glob("*.png"):
            shutil.copy(png, Path(target) / png.name)
