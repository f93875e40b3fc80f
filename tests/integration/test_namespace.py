"""vidmill's import names cannot collide with a user's own modules, and every package is listed for wheels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AREAS = {"vidmill": "vidmill", "pipeline": "vidmill.pipeline", "model": "vidmill.model",
         "training": "vidmill.training", "evaluation": "vidmill.evaluation", "dashboards": "vidmill.dashboards"}


def test_vidmill_works_from_a_directory_with_its_own_model_pipeline_and_training(tmp_path):
    (tmp_path / "model.py").write_text("raise ImportError('the user model.py was imported')\n")
    for name in ("pipeline", "training"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user {name}/ was imported')\n")
    cli = subprocess.run([sys.executable, "-m", "vidmill", "config", "--set", "spans.min_s=3"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "min_s: 3.0" in cli.stdout
    code = ("import vidmill.pipeline.decide, vidmill.pipeline.curate, vidmill.model, vidmill.training; "
            "from vidmill.pipeline.outcomes import REASONS; print(len(REASONS))")
    lib = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert lib.returncode == 0, lib.stderr
    assert int(lib.stdout.strip()) >= 14


def test_every_package_folder_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in AREAS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
