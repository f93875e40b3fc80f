"""Funnel view: counts and hours at each step, reasons with their meaning, input errors, stage stats."""

from __future__ import annotations

from typing import Any

from vidmill.dashboards import queries
from vidmill.dashboards.outputs import Store
from vidmill.pipeline.outcomes import REASONS


def filter_order(owned: list[str]) -> list[str]:
    """The rule's reasons in the order the project declares them."""
    return [r for r in REASONS if r in owned] + sorted(r for r in owned if r not in REASONS)


def view(store: Store, i: int, owned: list[str]) -> dict[str, Any]:
    out = store.output(i)
    return {
        "output": {"index": i, "name": out.name, "root": str(out.root)},
        "funnel": queries.funnel(store, i, filter_order([r for r in owned if not r.endswith("_error")])),
        "reasons": queries.reasons(store, i),
        "input_errors": queries.input_errors(store, i),
        "stages": queries.stages(store, i),
    }
