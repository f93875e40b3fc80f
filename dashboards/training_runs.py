"""A training run's page data: its loss curve and its evaluations, read from RUN/metrics.jsonl.

Train rows have no `kind`; eval rows (`"kind": "eval"`, evaluation/tail.py) carry the Physics-IQ variants,
the VBench totals and dimensions, and statuses. A value that was not computed stays None here and is shown
with its reason, never as a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidmill.evaluation.tail import PHYSICS_IQ_VARIANTS
from vidmill.training.metrics import read_metrics

MAX_POINTS = 2000  # loss points sent to the page (evenly strided; the last step always kept)
VBENCH_TOTALS = ("quality", "i2v", "total")


def _stride(rows: list[dict]) -> list[dict]:
    if len(rows) <= MAX_POINTS:
        return rows
    step = -(-len(rows) // MAX_POINTS)
    kept = rows[::step]
    return kept if kept[-1] is rows[-1] else kept + [rows[-1]]


def eval_view(row: dict[str, Any]) -> dict[str, Any]:
    """One evaluation row as the page shows it."""
    piq = {v: row.get(f"eval/physics_iq/{v}") for v in PHYSICS_IQ_VARIANTS}
    scenarios = (row.get("eval/physics_iq/scenarios_ok"), row.get("eval/physics_iq/scenarios"))
    totals = {t: row.get(f"eval/vbench/{t}") for t in VBENCH_TOTALS}
    return {"step": row["step"], "checkpoint": row.get("checkpoint"), "status": row.get("eval/status"),
            "failed": row.get("eval/failed", []),
            "physics_iq": {"scores": piq, "status": row.get("eval/physics_iq/status"),
                           "scenarios": scenarios},
            "vbench": {"totals": totals, "status": row.get("eval/vbench/status"),
                       "includes": row.get("eval/vbench/total/includes"),
                       "not_computed": row.get("eval/vbench/not_computed") or {}}}


def run_view(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"not a training run (no metrics.jsonl): {run_dir}")
    rows = read_metrics(run_dir)
    train = [r for r in rows if r.get("kind", "train") == "train" and "loss" in r]
    evals = [eval_view(r) for r in rows if r.get("kind") == "eval"]
    losses = [r["loss"] for r in train if r["loss"] is not None]
    series = [{"step": e["step"], "variant": v, "score": s} for e in evals
              for v, s in e["physics_iq"]["scores"].items() if s is not None]
    return {"name": run_dir.name, "path": str(run_dir), "steps": train[-1]["step"] if train else 0,
            "last_loss": losses[-1] if losses else None, "min_loss": min(losses) if losses else None,
            "skipped": sum(bool(r.get("skipped")) for r in train),
            "eval_failed": sum(1 for e in evals if e["failed"] or (e["status"] or "").startswith("failed")),
            "loss": [{"step": r["step"], "loss": r["loss"]} for r in _stride(train) if r["loss"] is not None],
            "evals": evals, "physics_iq_series": series}
