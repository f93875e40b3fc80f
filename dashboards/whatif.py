"""What-if: thresholds moved -> clips and hours kept, and which reasons change, from the stored scores.

The rule is the pipeline's `filter_reasons` (one copy, called, never restated). Calling it once per
row is too slow for a million rows, so the rows are grouped into classes on which the rule cannot
disagree, and the rule runs once per class on a real row of that class:

* a numeric column's value can only change a comparison against a threshold where it crosses a
  threshold value; between two consecutive threshold values (of the run's and the moved thresholds)
  and at each value the rule's answer is constant. Neighbouring intervals on which the rule, probed
  with that column alone (under every combination of the text columns present), answers the same
  are merged, so a column splits into 2-3 classes (e.g. sharpness: null, < 10, >= 10);
* a text column (statuses, camera class) is grouped by its raw value.

DuckDB groups the table by these classes (plus the stored reasons that are not the rule's, e.g.
`duplicate`, `too_short`) and returns the count, hours and one real row per group; the rule runs on
each group's row under the run's and the moved thresholds. The one assumption: the rule compares each
numeric column with thresholds (no arithmetic across two numeric columns). The tests check the result
against `filter_reasons` applied row by row.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from vidmill.dashboards import rules
from vidmill.dashboards.outputs import Store
from vidmill.pipeline.config import Thresholds

NUMERIC_TYPES = ("DOUBLE", "FLOAT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "DECIMAL", "HUGEINT", "UBIGINT",
                 "UINTEGER", "REAL")
MAX_CONTEXTS = 64  # text-value combinations used as probing contexts (beyond: one per distinct rule answer)


@dataclasses.dataclass
class _Column:
    name: str
    numeric: bool


class WhatIf:
    """The what-if engine for one output."""

    def __init__(self, store: Store, index: int):
        self.store, self.index = store, index
        self.table = f"clips_{index}"
        out = store.output(index)
        self.base = rules.run_thresholds(out.run.get("config"))
        types = store.columns(index)
        numeric = {n for n, t in types.items() if t.upper().startswith(NUMERIC_TYPES)}
        self.inputs = rules.rule_inputs(self.base, numeric)
        self.columns = [_Column(c, c in numeric) for c in self.inputs.columns if c in types]
        self.missing = [c for c in self.inputs.columns if c not in types]
        self.owned = self._owned_reasons()
        self.contexts = self._contexts()
        self.now = self._stored_counts()

    # -- set-up (once per output) ------------------------------------------------------------------------------
    def _owned_reasons(self) -> list[str]:
        """Reasons the rule itself gives on this data's values (the others are kept as stored)."""
        found: set[str] = set()
        for col in self.columns:
            if col.numeric:
                found.update(rules.reasons_of_column(col.name, self.base))
            else:
                sql = f'SELECT DISTINCT "{col.name}" FROM {self.table}'
                for (value,) in self.store.cursor().execute(sql).fetchall():
                    found.update(rules.filter_reasons({col.name: value}, self.base))
        return sorted(found)

    def _contexts(self) -> list[dict[str, Any]]:
        """The combinations of text-column values present in the data (probing contexts)."""
        text = [c.name for c in self.columns if not c.numeric]
        if not text:
            return [{}]
        cols = ", ".join(f'"{c}"' for c in text)
        combos = self.store.cursor().execute(f"SELECT DISTINCT {cols} FROM {self.table}").fetchall()
        contexts = [dict(zip(text, combo)) for combo in combos]
        if len(contexts) > MAX_CONTEXTS:  # keep one context per distinct answer of the rule on the text alone
            seen: dict[tuple, dict[str, Any]] = {}
            for ctx in contexts:
                seen.setdefault(tuple(rules.filter_reasons(ctx, self.base)), ctx)
            contexts = list(seen.values())[:MAX_CONTEXTS]
        return contexts or [{}]

    def _stored_counts(self) -> dict[str, Any]:
        cur = self.store.cursor()
        total = cur.execute(f"SELECT count(*), count_if(kept), coalesce(sum(duration_s), 0), "
                            f"coalesce(sum(duration_s) FILTER (WHERE kept), 0) FROM {self.table}").fetchone()
        reasons = dict(cur.execute(f"SELECT r, count(*) FROM (SELECT unnest(reject_reasons) AS r FROM {self.table}) "
                                   f"GROUP BY r").fetchall())
        return {"clips": total[0], "kept": total[1], "hours": total[2] / 3600, "kept_hours": total[3] / 3600,
                "reasons": reasons}

    # -- per move ----------------------------------------------------------------------------------------------
    def _numeric_class(self, column: str, th: Thresholds) -> str:
        """A SQL expression numbering the classes of `column` on which the rule cannot change its answer."""
        breaks = rules.threshold_values(self.base, th)
        probes = rules._probe_values(breaks)
        # fine pieces: (-inf, b0), b0, (b0, b1), b1, ..., bk, (bk, inf): probe i lies in piece i
        answers = [tuple(tuple(rules.filter_reasons({**ctx, column: v}, th)) for ctx in self.contexts)
                   for v in probes]
        col = f'"{column}"'
        cases, klass = [], 0
        for i in range(len(probes)):
            if i + 1 < len(probes) and answers[i + 1] == answers[i]:
                continue  # merged with the next piece
            if i == len(probes) - 1:
                cases.append(f"ELSE {klass}")
            else:
                cases.append(f"WHEN {col} {'<' if i % 2 == 0 else '<='} {breaks[i // 2]!r} THEN {klass}")
            klass += 1
        if len(cases) == 1:
            return f"({col} IS NULL)::INT"
        return f"CASE WHEN {col} IS NULL THEN -1 {' '.join(cases)} END"

    def evaluate(self, changes: dict[str, float]) -> dict[str, Any]:
        """Kept clips / hours and reason counts now and with the thresholds moved by `changes`."""
        started = time.perf_counter()
        th = rules.moved(self.base, changes)
        keys, fields = [], []
        for i, col in enumerate(self.columns):
            expr = self._numeric_class(col.name, th) if col.numeric else f'"{col.name}"'
            keys.append(f"{expr} AS k{i}")
            fields.append(f'"{col.name}" := "{col.name}"')
        owned = "[" + ", ".join("'" + r.replace("'", "''") + "'" for r in self.owned) + "]::VARCHAR[]"
        group = ", ".join([f"k{i}" for i in range(len(self.columns))] + ["other"])
        sql = (f"SELECT any_value(struct_pack({', '.join(fields)})) AS row, count(*) AS n, "
               f"coalesce(sum(duration_s), 0) AS seconds, other "
               f"FROM (SELECT *, {', '.join(keys)}, "
               f"list_filter(coalesce(reject_reasons, []), lambda r: NOT list_contains({owned}, r)) AS other "
               f"FROM {self.table}) GROUP BY {group}")
        groups = self.store.rows(sql)
        queried = time.perf_counter()
        kept = kept_s = 0
        reasons: dict[str, int] = {}
        for g in groups:
            row = dict(g["row"])
            new = list(g["other"]) + [r for r in rules.filter_reasons(row, th) if r not in g["other"]]
            if not new:
                kept += g["n"]
                kept_s += g["seconds"]
            for r in new:
                reasons[r] = reasons.get(r, 0) + g["n"]
        names = sorted(set(reasons) | set(self.now["reasons"]))
        changed = [{**rules.describe(r), "now": self.now["reasons"].get(r, 0), "new": reasons.get(r, 0)}
                   for r in names]
        return {
            "thresholds": dataclasses.asdict(th),
            "clips": self.now["clips"], "kept_now": self.now["kept"], "kept_new": kept,
            "hours_now": self.now["kept_hours"], "hours_new": kept_s / 3600,
            "reasons": changed, "groups": len(groups), "set_line": rules.set_line(self.base, th),
            "query_s": queried - started, "total_s": time.perf_counter() - started,
        }

    def sliders(self) -> list[dict[str, Any]]:
        """One slider per threshold the rule reads: its value, the column(s) it cuts and their range."""
        out = []
        for setting in self.inputs.settings:
            reasons = [name for name, info in ((r, rules.describe(r)) for r in self.owned)
                       if info["setting"] == f"thresholds.{setting}"]
            columns = [c.name for c in self.columns if c.numeric and
                       set(rules.reasons_of_column(c.name, self.base)) & set(reasons)]
            low = high = None
            if columns:
                col = f'"{columns[0]}"'
                low, high = self.store.cursor().execute(
                    f"SELECT approx_quantile({col}, 0.001), approx_quantile({col}, 0.999) FROM {self.table}").fetchone()
            value = getattr(self.base, setting)
            low = min(x for x in (low, value) if x is not None)
            high = max(x for x in (high, value) if x is not None)
            out.append({"setting": setting, "value": value, "reasons": reasons, "columns": columns,
                        "min": low, "max": high if high > low else low + 1.0})
        return out
