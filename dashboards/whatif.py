"""What-if: thresholds moved -> clips and hours kept, and which reasons change, from the stored scores.

The rule is the pipeline's `filter_reasons` (one copy, called, never restated). Calling it once per
row is too slow for a million rows, so the rows are split into classes on which the rule cannot
answer differently, and the rule runs once per class, on a real row of that class:

* a numeric column can only change a comparison against a threshold where it crosses a threshold
  value; between two consecutive threshold values (of the run's and the moved thresholds), and at
  each value, the answer is constant. Neighbouring pieces on which the rule, probed with that column
  alone (under every combination of the text columns present), answers the same are merged, so a
  column splits into 2-3 classes (sharpness: null, < 10, >= 10);
* the text columns the rule reads (statuses, camera class) and the stored reasons that are not the
  rule's (`duplicate`, `too_short`, ...) are taken together as one code per distinct combination,
  numbered once by DuckDB when the engine is built.

Per move, numpy places each row's numeric values into their classes (`searchsorted` on the threshold
values), combines them with the text code into one class number and counts rows and seconds per class
with `bincount`; the rule then runs on one real row per occupied class (a few hundred). The one
assumption: the rule compares each numeric column with thresholds (no arithmetic across two numeric
columns). The tests check the result against `filter_reasons` applied row by row.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from vidmill.dashboards import queries, rules
from vidmill.dashboards.outputs import Store
from vidmill.pipeline.config import Thresholds

NUMERIC_TYPES = ("DOUBLE", "FLOAT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "DECIMAL", "HUGEINT", "UBIGINT",
                 "UINTEGER", "REAL")
MAX_CONTEXTS = 64  # text-value combinations used as probing contexts (beyond: one per distinct rule answer)


class WhatIf:
    """The what-if engine for one output: built once (arrays of the rule's columns), evaluated per move."""

    def __init__(self, store: Store, index: int):
        self.store, self.index = store, index
        self.table = f"clips_{index}"
        self.base = rules.run_thresholds(store.output(index).run.get("config"))
        types = store.columns(index)
        numeric = {n for n, t in types.items() if t.upper().startswith(NUMERIC_TYPES)}
        self.inputs = rules.rule_inputs(self.base, numeric)
        present = [c for c in self.inputs.columns if c in types]
        self.numeric = [c for c in present if c in numeric]
        self.text = [c for c in present if c not in numeric]
        self.owned = self._owned_reasons()
        self._load_arrays()
        self.contexts = self._contexts()
        self.now = self._stored_counts()

    # -- set-up (once per output) ------------------------------------------------------------------------------
    def _owned_reasons(self) -> list[str]:
        """Reasons the rule itself gives on this data's values (the others are kept as stored)."""
        found: set[str] = set()
        for col in self.numeric:
            found.update(rules.reasons_of_column(col, self.base))
        for col in self.text:
            for (value,) in self.store.cursor().execute(f'SELECT DISTINCT "{col}" FROM {self.table}').fetchall():
                found.update(rules.filter_reasons({col: value}, self.base))
        return sorted(found)

    def _load_arrays(self) -> None:
        """Numeric rule columns as float arrays (NaN for null) and one code per (text values, other reasons)."""
        owned = "[" + ", ".join("'" + r.replace("'", "''") + "'" for r in self.owned) + "]::VARCHAR[]"
        text = ", ".join(f'"{c}"' for c in self.text) or "NULL"
        other = f"list_sort(list_filter(coalesce(reject_reasons, []), lambda r: NOT list_contains({owned}, r)))"
        cur = self.store.cursor()
        cur.execute(f"CREATE OR REPLACE TABLE whatif_combos_{self.index} AS "
                    f"SELECT row_number() OVER () - 1 AS code, * FROM (SELECT DISTINCT {text}, {other} AS other "
                    f"FROM {self.table})")
        combos = self.store.rows(f"SELECT * FROM whatif_combos_{self.index} ORDER BY code")
        self.combos = [({c: row[c] for c in self.text}, list(row["other"])) for row in combos]
        join = " AND ".join([f'c."{c}" IS NOT DISTINCT FROM t."{c}"' for c in self.text] +
                            [f"c.other = {other.replace('reject_reasons', 't.reject_reasons')}"])
        nums = "".join(f', t."{c}"::DOUBLE AS "{c}"' for c in self.numeric)
        arrays = cur.execute(f"SELECT c.code, coalesce(t.duration_s, 0)::DOUBLE AS duration_s{nums} "
                             f"FROM {self.table} t JOIN whatif_combos_{self.index} c ON {join} "
                             f"ORDER BY t.rid").fetchnumpy()
        self.code = np.asarray(arrays["code"], dtype=np.int64)
        self.seconds = np.asarray(arrays["duration_s"], dtype=np.float64)
        self.values = {c: np.ma.filled(np.ma.asarray(arrays[c], dtype=np.float64), np.nan) for c in self.numeric}
        self.nulls = {c: np.isnan(v) for c, v in self.values.items()}
        self._classes: dict[str, dict[tuple, np.ndarray]] = {}
        self._lock = threading.Lock()  # moves are evaluated one at a time (they share the class cache)

    def _contexts(self) -> list[dict[str, Any]]:
        """The combinations of text-column values present in the data (probing contexts)."""
        seen: dict[tuple, dict[str, Any]] = {}
        for ctx, _other in self.combos:
            seen.setdefault(tuple(ctx.get(c) for c in self.text), ctx)
        contexts = list(seen.values())
        if len(contexts) > MAX_CONTEXTS:  # keep one context per distinct answer of the rule on the text alone
            by_answer: dict[tuple, dict[str, Any]] = {}
            for ctx in contexts:
                by_answer.setdefault(tuple(rules.filter_reasons(ctx, self.base)), ctx)
            contexts = list(by_answer.values())[:MAX_CONTEXTS]
        return contexts or [{}]

    def _stored_counts(self) -> dict[str, Any]:
        groups = queries.reason_groups(self.store, self.index)
        reasons: dict[str, int] = {}
        for g in groups:
            for r in g["reasons"]:
                reasons[r] = reasons.get(r, 0) + g["n"]
        return {"clips": sum(g["n"] for g in groups), "kept": sum(g["n"] for g in groups if g["kept"]),
                "hours": sum(g["seconds"] for g in groups) / 3600,
                "kept_hours": sum(g["seconds"] for g in groups if g["kept"]) / 3600, "reasons": reasons}

    # -- per move ----------------------------------------------------------------------------------------------
    def classes(self, column: str, th: Thresholds) -> tuple[list[float], np.ndarray]:
        """The threshold values that cut `column`, and a map from fine piece to class.

        Fine pieces: (-inf, b0), b0, (b0, b1), b1, ..., b(n-1), (b(n-1), inf), then null; neighbouring
        pieces on which the probed rule answers the same share a class."""
        breaks = rules.threshold_values(self.base, th)
        probes = rules._probe_values(breaks)
        answers = [tuple(tuple(rules.filter_reasons({**ctx, column: v}, th)) for ctx in self.contexts)
                   for v in probes]
        klass = np.zeros(len(probes) + 1, dtype=np.int64)
        for k in range(1, len(probes)):
            klass[k] = klass[k - 1] + (answers[k] != answers[k - 1])
        klass[-1] = klass[-2] + 1  # null
        return breaks, klass

    def _class_of(self, column: str, breaks: list[float], klass: np.ndarray) -> np.ndarray:
        """Each row's class of `column`: the class boundaries it passes (one comparison per boundary).

        A slider moves one threshold at a time, so the other columns' boundaries repeat: the last two
        class arrays of each column are kept."""
        bounds = tuple((breaks[(k - 1) // 2], ">=") if k % 2 else (breaks[k // 2 - 1], ">")
                       for k in range(1, len(klass) - 1) if klass[k] != klass[k - 1])
        spec = (bounds, int(klass[-1]))
        cache = self._classes.setdefault(column, {})
        if spec not in cache:
            values = self.values[column]
            cls = np.zeros(len(values), dtype=np.int32)
            for bound, op in bounds:  # piece k starts a class: k odd is {b_j}, k even is (b_j, ...)
                cls += values >= bound if op == ">=" else values > bound
            cls[self.nulls[column]] = spec[1]
            if len(cache) >= 2:
                cache.pop(next(iter(cache)))
            cache[spec] = cls
        return cache[spec]

    def evaluate(self, changes: dict[str, float]) -> dict[str, Any]:
        """Kept clips / hours and reason counts now and with the thresholds moved by `changes`."""
        with self._lock:
            return self._evaluate(changes)

    def _evaluate(self, changes: dict[str, float]) -> dict[str, Any]:
        started = time.perf_counter()
        th = rules.moved(self.base, changes)
        combined = self.code.copy()
        radix = max(1, len(self.combos))
        for col in self.numeric:
            breaks, klass = self.classes(col, th)
            cls = self._class_of(col, breaks, klass)
            if klass[-1] > 0:
                combined += cls * np.int64(radix) if radix > 1 else cls
            radix *= int(klass[-1]) + 1
        counts = np.bincount(combined, minlength=1) if radix <= 50_000_000 else None
        if counts is not None:
            occupied = np.flatnonzero(counts)
            seconds = np.bincount(combined, weights=self.seconds)[occupied]
            first = np.full(len(counts), -1, dtype=np.int64)
            first[combined[::-1]] = np.arange(len(combined) - 1, -1, -1)
            firsts, ns = first[occupied], counts[occupied]
        else:  # a very fine split: sort instead of a dense count
            _keys, firsts, inverse, ns = np.unique(combined, return_index=True, return_inverse=True,
                                                   return_counts=True)
            seconds = np.bincount(inverse, weights=self.seconds)
        counted = time.perf_counter()
        kept = 0
        kept_s = 0.0
        reasons: dict[str, int] = {}
        for row_index, n, sec in zip(firsts.tolist(), ns.tolist(), seconds.tolist(), strict=False):
            ctx, other = self.combos[self.code[row_index]]
            row = dict(ctx)
            for col in self.numeric:
                value = self.values[col][row_index]
                row[col] = None if np.isnan(value) else float(value)
            new = other + [r for r in rules.filter_reasons(row, th) if r not in other]
            if not new:
                kept += n
                kept_s += sec
            for r in new:
                reasons[r] = reasons.get(r, 0) + n
        names = sorted(set(reasons) | set(self.now["reasons"]))
        changed = [{**rules.describe(r), "now": self.now["reasons"].get(r, 0), "new": reasons.get(r, 0)}
                   for r in names]
        return {
            "thresholds": rules.flat(th),
            "clips": self.now["clips"], "kept_now": self.now["kept"], "kept_new": kept,
            "hours_now": self.now["kept_hours"], "hours_new": kept_s / 3600,
            "reasons": changed, "groups": len(ns), "set_line": rules.set_line(self.base, th),
            "count_s": counted - started, "total_s": time.perf_counter() - started,
        }

    def sliders(self) -> list[dict[str, Any]]:
        """One slider per threshold the rule reads: its value, the column(s) it cuts and their range."""
        return self.store.memo(("sliders", self.index), self._sliders)

    def _sliders(self) -> list[dict[str, Any]]:
        out = []
        for setting in self.inputs.settings:
            reasons = [r for r in self.owned if rules.describe(r)["setting"] == f"thresholds.{setting}"]
            columns = [c for c in self.numeric if set(rules.reasons_of_column(c, self.base)) & set(reasons)]
            low = high = None
            if columns:
                low, high = queries.quantile_range(self.store, self.index, f'"{columns[0]}"')
            value = rules.flat(self.base)[setting]
            low = min(x for x in (low, value) if x is not None)
            high = max(x for x in (high, value) if x is not None)
            pad = 0.05 * (high - low)
            low, high = (low - pad if low < 0 or low - pad >= 0 else 0.0), high + pad
            out.append({"setting": setting, "value": value, "reasons": reasons, "columns": columns,
                        "min": low, "max": high if high > low else low + 1.0})
        return out
