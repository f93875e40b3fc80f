"""Aggregates over the output contract (DuckDB, no UI): funnel, reasons, errors, stages, histograms, pages.

Every function returns plain dicts/lists (JSON-ready); the browser gets these aggregates and pages,
never the manifest.
"""

from __future__ import annotations

import math
from typing import Any

from vidmill.dashboards import rules
from vidmill.dashboards.outputs import Store

# Histogram columns: (label, SQL expression over clips_<i>); present ones only.
NUMERIC_COLUMNS = [
    ("sharpness", "sharpness"), ("brightness", "brightness"), ("colourfulness", "colourfulness"),
    ("motion_score", "motion_score"), ("text_area_max", "text_area_max"), ("text_area_mean", "text_area_mean"),
    ("text_persistent_area", "text_persistent_area"), ("aesthetic_mean", "aesthetic_mean"),
    ("aesthetic_min", "aesthetic_min"), ("duration_s", "duration_s"),
    ("short_side", "least(width, height)"), ("fps", "fps"),
]
CATEGORY_COLUMNS = ["camera_motion"]
# Reasons given before or after the per-clip filters, in the order of the data's way (DESIGN.md);
# the filters' own reasons sit between them, in the order filter_reasons declares them.
BEFORE_FILTERS = ["too_short", "too_small"]
AFTER_FILTERS = ["duplicate", "transcode_error", "caption_error"]
# Reasons whose setting is not a `thresholds.*` field, drawn on a non-score histogram.
SPAN_LINES = {"duration_s": "too_short", "short_side": "too_small"}


def _list(items: list[str]) -> str:
    return "[" + ", ".join("'" + i.replace("'", "''") + "'" for i in items) + "]::VARCHAR[]"


def reason_groups(store: Store, i: int) -> list[dict[str, Any]]:
    """Clips grouped by their stored reasons (a few hundred groups even for millions of clips): count,
    seconds, kept, in a shard, captioned. Funnel and reason tables are computed from these."""
    return store.memo(("reason_groups", i), lambda: store.rows(
        f"SELECT coalesce(list_sort(reject_reasons), []) AS reasons, kept, shard IS NOT NULL AS sharded, captioned, "
        f"count(*) AS n, coalesce(sum(duration_s), 0) AS seconds FROM clips_{i} GROUP BY ALL"))


def funnel(store: Store, i: int, filter_order: list[str]) -> dict[str, Any]:
    """Counts and hours at each step: inputs, ok inputs, shots, candidates, after each filter (cumulative),
    dedup, transcode, captions, kept, in shards."""
    return store.memo(("funnel", i, tuple(filter_order)), lambda: _funnel(store, i, filter_order))


def _funnel(store: Store, i: int, filter_order: list[str]) -> dict[str, Any]:
    cur = store.cursor()
    inputs = cur.execute(f"SELECT count(*), count(*) FILTER (WHERE status = 'ok'), coalesce(sum(duration_s), 0), "
                         f"coalesce(sum(duration_s) FILTER (WHERE status = 'ok'), 0) FROM inputs_{i}").fetchone()
    has_shots = store.output(i).file("shots.parquet") is not None
    shots = cur.execute(f"SELECT count(*), coalesce(sum(end_s - start_s), 0) FROM shots_{i}").fetchone() \
        if has_shots else None
    groups = reason_groups(store, i)
    present = sorted({r for g in groups for r in g["reasons"]})
    errors = [r for r in present if r.endswith("_error") and r not in AFTER_FILTERS]
    known = set(BEFORE_FILTERS + filter_order + errors + AFTER_FILTERS)
    others = [r for r in present if r not in known]
    stages = [("spans long and large enough", BEFORE_FILTERS)] + [(f"passed {r}", [r]) for r in filter_order] + \
        [("scored without errors", errors), ("no other reason", others), ("after dedup", ["duplicate"]),
         ("transcoded", ["transcode_error"]), ("captioned", ["caption_error"])]
    rows = [{"step": "inputs", "count": inputs[0], "hours": inputs[2] / 3600},
            {"step": "inputs ok", "count": inputs[1], "hours": inputs[3] / 3600}]
    if shots:
        rows.append({"step": "shots", "count": shots[0], "hours": shots[1] / 3600})

    def total(keep: Any) -> tuple[int, float]:
        chosen = [g for g in groups if keep(g)]
        return sum(g["n"] for g in chosen), sum(g["seconds"] for g in chosen)

    n, sec = total(lambda g: True)
    rows.append({"step": "candidate clips", "count": n, "hours": sec / 3600, "drops": []})
    dropped: list[str] = []
    for label, group in stages:
        if not group:
            continue
        dropped = dropped + group
        gone = set(dropped)
        n, sec = total(lambda g, gone=gone: not gone.intersection(g["reasons"]))
        rows.append({"step": label, "count": n, "hours": sec / 3600, "drops": list(dropped)})
    for label, key in (("kept", "kept"), ("in shards", "sharded")):
        n, sec = total(lambda g, key=key: g[key])
        rows.append({"step": label, "count": n, "hours": sec / 3600})
    return {"steps": rows, "captioned": total(lambda g: g["captioned"])[0]}


def reasons(store: Store, i: int) -> list[dict[str, Any]]:
    """Each reject reason with its count, hours, meaning and the setting behind it."""
    counts: dict[str, list[float]] = {}
    for g in reason_groups(store, i):
        for r in g["reasons"]:
            c = counts.setdefault(r, [0, 0.0])
            c[0] += g["n"]
            c[1] += g["seconds"]
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [{"count": int(c), "hours": sec / 3600, **rules.describe(name)} for name, (c, sec) in ordered]


def input_errors(store: Store, i: int, limit: int = 200) -> dict[str, Any]:
    total = store.one(f"SELECT count(*) AS n FROM inputs_{i} WHERE status = 'error'").get("n", 0)
    rows = store.rows(f"SELECT input_id, source_uri, error FROM inputs_{i} WHERE status = 'error' "
                      f"ORDER BY source_uri LIMIT {int(limit)}")
    return {"total": total, "rows": rows}


def stages(store: Store, i: int) -> dict[str, Any]:
    """Per-stage busy seconds and items per busy second, throughput and not-scored notes from run.json."""
    run = store.output(i).run
    out = []
    for name, st in (run.get("stages") or {}).items():
        busy = st.get("busy_s") or 0.0
        out.append({"stage": name, "items": st.get("items"), "errors": st.get("errors"),
                    "timeouts": st.get("timeouts"), "worker_deaths": st.get("worker_deaths"), "busy_s": busy,
                    "items_per_busy_s": (st.get("items") or 0) / busy if busy > 0 else None,
                    "extra": st.get("extra") or {}})
    notes = []
    for stage, why in ((run.get("counts") or {}).get("not_scored") or {}).items():
        for text, count in (why or {}).items():
            notes.append({"stage": stage, "status": text, "clips": count})
    return {"stages": out, "throughput": run.get("throughput") or {}, "wall_s": run.get("wall_s"),
            "not_scored": notes, "started_at": run.get("started_at"), "command": run.get("command")}


def present_numeric(store: Store, i: int) -> list[tuple[str, str]]:
    cols = store.columns(i)
    return [(label, expr) for label, expr in NUMERIC_COLUMNS
            if (expr in cols) or (label == "short_side" and "width" in cols and "height" in cols)]


def histogram(store: Store, i: int, expr: str, bins: int = 40) -> dict[str, Any]:
    """Equal-width bins of `expr` over its [0.1 %, 99.9 %] quantiles (outliers counted in the edge bins),
    split kept / rejected."""
    return store.memo(("histogram", i, expr, bins), lambda: _histogram(store, i, expr, bins))


def _histogram(store: Store, i: int, expr: str, bins: int) -> dict[str, Any]:
    cur = store.cursor()
    lo, hi = quantile_range(store, i, expr)
    present, total = cur.execute(f"SELECT count({expr}), count(*) FROM clips_{i}").fetchone()
    if lo is None:
        return {"bins": [], "lo": None, "hi": None, "present": 0, "missing": total}
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    sql = (f"SELECT least(greatest(floor(({expr} - ?) / ?)::BIGINT, 0), {bins - 1}) AS b, "
           f"count_if(kept) AS kept, count_if(NOT kept) AS rejected FROM clips_{i} "
           f"WHERE {expr} IS NOT NULL AND NOT isnan({expr}::DOUBLE) GROUP BY b ORDER BY b")
    rows = cur.execute(sql, [lo, width]).fetchall()
    out = []
    for b, kept, rejected in rows:
        start = lo + b * width
        out.append({"start": start, "end": start + width, "kept": kept, "rejected": rejected})
    return {"bins": out, "lo": lo, "hi": hi if hi > lo else lo + width, "present": present,
            "missing": total - present}


def categories(store: Store, i: int, column: str) -> list[dict[str, Any]]:
    sql = (f"SELECT coalesce(\"{column}\", '(none)') AS value, count_if(kept) AS kept, count_if(NOT kept) AS rejected "
           f"FROM clips_{i} GROUP BY 1 ORDER BY 2 + 3 DESC")
    return store.memo(("categories", i, column), lambda: store.rows(sql))


def quantile_range(store: Store, i: int, expr: str) -> tuple[float | None, float | None]:
    """The 0.1 % and 99.9 % quantiles of `expr` (None, None without values)."""
    def compute() -> tuple[float | None, float | None]:
        row = store.cursor().execute(f"SELECT quantile_cont({expr}, [0.001, 0.999]) FROM clips_{i} "
                                     f"WHERE NOT isnan({expr}::DOUBLE)").fetchone()
        return (row[0][0], row[0][1]) if row and row[0] else (None, None)
    return store.memo(("quantiles", i, expr), compute)


def safe_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
