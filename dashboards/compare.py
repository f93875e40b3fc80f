"""Runs compared: two outputs' funnels side by side, and the clips kept in one and not the other."""

from __future__ import annotations

from typing import Any

from vidmill.dashboards import queries
from vidmill.dashboards.outputs import Store


def view(store: Store, a: int, b: int, owned: list[str], limit: int = 50) -> dict[str, Any]:
    from vidmill.dashboards.funnel import filter_order

    order = filter_order([r for r in owned if not r.endswith("_error")])
    fa, fb = queries.funnel(store, a, order), queries.funnel(store, b, order)
    steps = {s["step"] for s in fa["steps"]} | {s["step"] for s in fb["steps"]}
    by_a = {s["step"]: s for s in fa["steps"]}
    by_b = {s["step"]: s for s in fb["steps"]}
    ordered = [s["step"] for s in fa["steps"]]
    previous = -1
    for step in (x["step"] for x in fb["steps"]):  # B's own steps go after the step they follow in B
        if step in ordered:
            previous = ordered.index(step)
        else:
            previous += 1
            ordered.insert(previous, step)
    funnel = [{"step": s, "a": by_a.get(s), "b": by_b.get(s)} for s in ordered if s in steps]
    ra = {r["name"]: r["count"] for r in queries.reasons(store, a)}
    rb = {r["name"]: r["count"] for r in queries.reasons(store, b)}
    reasons = [{"name": n, "a": ra.get(n, 0), "b": rb.get(n, 0)} for n in sorted(set(ra) | set(rb))]
    only = {}
    for x, y, key in ((a, b, "only_a"), (b, a, "only_b")):
        sql = (f"SELECT x.clip_id, x.duration_s, y.reject_reasons AS other_reasons, y.clip_id IS NULL AS absent "
               f"FROM clips_{x} x LEFT JOIN clips_{y} y USING (clip_id) "
               f"WHERE x.kept AND NOT coalesce(y.kept, false)")
        total = store.one(f"SELECT count(*) AS n FROM ({sql})")["n"]
        only[key] = {"total": total, "rows": store.rows(f"{sql} ORDER BY x.rid LIMIT {int(limit)}")}
    return {"a": store.output(a).name, "b": store.output(b).name, "ai": a, "bi": b,
            "funnel": funnel, "reasons": reasons, **only}
