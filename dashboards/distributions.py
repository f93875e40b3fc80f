"""Distributions view: one histogram per score column with the run's thresholds drawn on it."""

from __future__ import annotations

from typing import Any

from vidmill.dashboards import queries, rules
from vidmill.dashboards.outputs import Store
from vidmill.dashboards.whatif import WhatIf


def _setting_value(config: dict[str, Any], setting: str | None) -> Any:
    node: Any = config
    for part in (setting or "").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def charts(store: Store, i: int, engine: WhatIf) -> list[dict[str, Any]]:
    """The histogram list: column label and threshold lines (setting, value, reason)."""
    return store.memo(("charts", i), lambda: _charts(store, i, engine))


def _charts(store: Store, i: int, engine: WhatIf) -> list[dict[str, Any]]:
    config = store.output(i).run.get("config") or {}
    base = rules.flat(engine.base)
    out = []
    for label, _expr in queries.present_numeric(store, i):
        lines = []
        if label in engine.numeric:
            for name in rules.reasons_of_column(label, engine.base):
                setting = rules.describe(name)["setting"] or ""
                field = setting.removeprefix("thresholds.")
                if setting.startswith("thresholds.") and field in base:
                    lines.append({"setting": field, "value": base[field], "reason": name})
        elif label in queries.SPAN_LINES:
            name = queries.SPAN_LINES[label]
            setting = rules.describe(name)["setting"]
            value = _setting_value(config, setting)
            if isinstance(value, (int, float)):
                lines.append({"setting": setting, "value": value, "reason": name})
        out.append({"column": label, "kind": "numeric", "lines": lines})
    cols = store.columns(i)
    for label in queries.CATEGORY_COLUMNS:
        if label in cols:
            rejecting = [v for v in (r["value"] for r in queries.categories(store, i, label))
                         if rules.filter_reasons({label: v}, engine.base)]
            out.append({"column": label, "kind": "category", "lines": [], "rejecting": rejecting})
    return out


def data(store: Store, i: int, column: str, bins: int = 40) -> dict[str, Any] | None:
    """A histogram's bins (numeric) or counts (category); None for an unknown column."""
    if column in queries.CATEGORY_COLUMNS and column in store.columns(i):
        return {"column": column, "kind": "category", "values": queries.categories(store, i, column)}
    expr = dict(queries.present_numeric(store, i)).get(column)
    if expr is None:
        return None
    return {"column": column, "kind": "numeric", **queries.histogram(store, i, expr, bins)}
