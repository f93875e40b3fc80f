"""The Training page: a run's loss and its evaluation rows from RUN/metrics.jsonl, not-computed values as text."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.testclient import TestClient

from vidmill.dashboards.app import create_app
from vidmill.dashboards.training_runs import run_view


def write_run(run: Path) -> Path:
    run.mkdir(parents=True)
    rows = [{"step": s, "loss": 1.0 / s, "skipped": False} for s in range(1, 5)]
    rows.insert(2, {"step": 2, "kind": "eval", "checkpoint": "RUN/checkpoints/step-2",
                    "eval/physics_iq/original": 12.5, "eval/physics_iq/stable": 11.0,
                    "eval/physics_iq/verified": 40.25, "eval/physics_iq/scenarios_ok": 2,
                    "eval/physics_iq/scenarios": 2, "eval/physics_iq/status": "ok", "eval/vbench/total": None,
                    "eval/vbench/quality": None, "eval/vbench/i2v": None, "eval/vbench/total/includes": [],
                    "eval/vbench/not_computed": {"dynamic_degree": "not computed: no weights (vbench.weights.raft "
                                                                   "is not set)"},
                    "eval/vbench/status": "not computed: no dimension has its models"})
    rows.append({"step": 4, "kind": "eval", "checkpoint": "RUN/checkpoints/step-4",
                 "eval/status": "failed: exit code -9 (see RUN/eval/step-4/log.txt)"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_run_view_splits_train_and_eval_rows(tmp_path):
    view = run_view(write_run(tmp_path / "run"))
    assert view["steps"] == 4 and view["last_loss"] == 0.25 and [p["step"] for p in view["loss"]] == [1, 2, 3, 4]
    assert [e["step"] for e in view["evals"]] == [2, 4] and view["eval_failed"] == 1
    assert view["evals"][0]["vbench"]["totals"]["total"] is None
    assert {(p["variant"], p["score"]) for p in view["physics_iq_series"]} == {
        ("original", 12.5), ("stable", 11.0), ("verified", 40.25)}


def test_training_page_shows_scores_and_reasons(synthetic: Path, tmp_path):
    run = write_run(tmp_path / "run")
    with TestClient(create_app([synthetic], [run])) as client:
        html = client.get("/training").text
        assert 'href="/training"' in client.get("/").text  # the nav links the page
        assert client.get("/training?t=1").status_code == 404
    step2 = re.search(r'<tr data-step="2">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", step2, re.S)
    assert [c.strip() for c in cells[1:4]] == ["12.50", "11.00", "40.25"]
    assert [c.strip() for c in cells[6:9]] == ["not computed"] * 3  # VBench totals: never a number
    assert "dynamic_degree: not computed: no weights (vbench.weights.raft is not set)" in step2
    step4 = re.search(r'<tr data-step="4">(.*?)</tr>', html, re.S).group(1)
    assert "failed: exit code -9" in step4
    data = json.loads(re.search(r'id="page-data">(.*?)</script>', html, re.S).group(1))
    assert [p["loss"] for p in data["training"]["loss"]] == [1.0, 0.5, 1 / 3, 0.25]
