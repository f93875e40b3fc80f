"""Gallery view: a page of clips filtered by status, reason, score range, camera class or caption text;
one clip's full row and per-second captions; duplicate groups side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidmill.dashboards.outputs import Store
from vidmill.dashboards.queries import NUMERIC_COLUMNS

PAGE_SIZES = (12, 24, 48, 96)
TILE_COLUMNS = ["rid", "clip_id", "kept", "reject_reasons", "start_s", "end_s", "duration_s", "camera_motion",
                "sharpness", "motion_score", "aesthetic_mean", "dup_group", "dup_of", "shard"]


@dataclass
class Filters:
    status: str = "all"  # all | kept | rejected
    reason: str = ""
    camera: str = ""
    column: str = ""  # a NUMERIC_COLUMNS label
    low: float | None = None
    high: float | None = None
    text: str = ""  # caption contains (case-insensitive)
    dups: bool = False  # only clips in a duplicate group, grouped
    page: int = 0
    size: int = 24

    @classmethod
    def from_query(cls, q: dict[str, str]) -> Filters:
        def num(key: str) -> float | None:
            try:
                return float(q[key]) if q.get(key, "") != "" else None
            except ValueError:
                return None

        size = int(q.get("size", 24)) if str(q.get("size", "24")).isdigit() else 24
        page = int(q.get("page", 0)) if str(q.get("page", "0")).isdigit() else 0
        return cls(status=q.get("status", "all") if q.get("status") in ("all", "kept", "rejected") else "all",
                   reason=q.get("reason", ""), camera=q.get("camera", ""), column=q.get("column", ""),
                   low=num("low"), high=num("high"), text=q.get("text", "")[:200], dups=q.get("dups") in ("1", "on"),
                   page=page, size=size if size in PAGE_SIZES else 24)

    def where(self, i: int) -> tuple[str, list[Any]]:
        conds, params = ["true"], []
        if self.status == "kept":
            conds.append("kept")
        elif self.status == "rejected":
            conds.append("NOT kept")
        if self.reason:
            conds.append("list_contains(reject_reasons, ?)")
            params.append(self.reason)
        if self.camera:
            conds.append("camera_motion = ?")
            params.append(self.camera)
        expr = dict(NUMERIC_COLUMNS).get(self.column)
        if expr and self.low is not None:
            conds.append(f"{expr} >= ?")
            params.append(self.low)
        if expr and self.high is not None:
            conds.append(f"{expr} <= ?")
            params.append(self.high)
        if self.dups:
            conds.append("dup_group IS NOT NULL")
        if self.text:  # the summary or any per-second caption
            conds.append(f"rid IN (SELECT rid FROM manifest_{i} WHERE caption ILIKE ? ESCAPE '\\' "
                         f"OR array_to_string(captions_per_second, ' ') ILIKE ? ESCAPE '\\')")
            pattern = "%" + self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params += [pattern, pattern]
        return " AND ".join(conds), params


def page(store: Store, i: int, f: Filters) -> dict[str, Any]:
    """One page of tiles and the number of matching clips."""
    where, params = f.where(i)
    cols = store.columns(i)
    select = ", ".join(c if c in cols else f"NULL AS {c}" for c in TILE_COLUMNS)
    order = "dup_group, kept DESC, rid" if f.dups else "rid"
    total = store.memo(("count", i, where, tuple(params)),
                       lambda: store.one(f"SELECT count(*) AS n FROM clips_{i} WHERE {where}", params)["n"])
    rows = store.rows(f"SELECT {select} FROM clips_{i} WHERE {where} ORDER BY {order} "
                      f"LIMIT {f.size} OFFSET {f.page * f.size}", params)
    return {"total": total, "rows": rows, "page": f.page, "size": f.size,
            "pages": max(1, -(-total // f.size))}


def page_of(store: Store, i: int, f: Filters, clip_id: str) -> int | None:
    """The page (under these filters, in the gallery's order) that holds `clip_id`; None if it is filtered out."""
    where, params = f.where(i)
    if f.dups:
        before = (f"(dup_group, NOT kept, rid) < (SELECT (dup_group, NOT kept, rid) FROM clips_{i} "
                  "WHERE clip_id = ?)")
    else:
        before = f"rid < (SELECT rid FROM clips_{i} WHERE clip_id = ?)"
    found = store.one(f"SELECT count_if({before}) AS n, count_if(clip_id = ?) AS here FROM clips_{i} WHERE {where}",
                      [clip_id, clip_id, *params])
    if not found or not found["here"]:
        return None
    return int(found["n"]) // f.size


def clip(store: Store, i: int, clip_id: str) -> dict[str, Any] | None:
    """The clip's full manifest row (wide columns read from Parquet for this one row)."""
    found = store.one(f"SELECT rid FROM clips_{i} WHERE clip_id = ?", [clip_id])
    if not found:
        return None
    row = store.one(f"SELECT * FROM manifest_{i} WHERE rid = ?", [found["rid"]])
    return row or None


def duplicates(store: Store, i: int, group: str) -> list[dict[str, Any]]:
    cols = store.columns(i)
    select = ", ".join(c if c in cols else f"NULL AS {c}" for c in TILE_COLUMNS)
    return store.rows(f"SELECT {select} FROM clips_{i} WHERE dup_group = ? ORDER BY kept DESC, rid", [group])


def options(store: Store, i: int) -> dict[str, Any]:
    """Values for the filter menus (computed once)."""
    return store.memo(("options", i), lambda: _options(store, i))


def _options(store: Store, i: int) -> dict[str, Any]:
    reasons = [r["r"] for r in store.rows(f"SELECT DISTINCT unnest(reject_reasons) AS r FROM clips_{i} ORDER BY 1")]
    cameras = [r["c"] for r in store.rows(f"SELECT DISTINCT camera_motion AS c FROM clips_{i} "
                                          f"WHERE camera_motion IS NOT NULL ORDER BY 1")] \
        if "camera_motion" in store.columns(i) else []
    return {"reasons": reasons, "cameras": cameras, "columns": [label for label, _ in NUMERIC_COLUMNS],
            "sizes": PAGE_SIZES}
