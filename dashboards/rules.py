"""The project's decision rules as the dashboard sees them: `filter_reasons`, `Thresholds`, `REASONS`.

Nothing here restates a rule. What the rules read (row columns and threshold fields) is found by
calling `filter_reasons` with a row and thresholds that record every access; which reasons a column
can give, and so which settings draw a line on its histogram, is found by probing the rule with
single-column rows and looking each reason up in `REASONS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import vidmill.pipeline.decide as decide  # noqa: F401  (declares the filter reasons into REASONS)
from vidmill.pipeline.config import Thresholds, load_config
from vidmill.pipeline.outcomes import reason as reason_declaration


def filter_reasons(row: dict[str, Any], th: Thresholds) -> list[str]:
    """The pipeline's own rule, looked up at call time (so a moved implementation is still the one used)."""
    return decide.filter_reasons(row, th)


class _RecordingRow(dict):
    """A row that records which keys the rule reads."""

    def __init__(self, values: dict[str, Any], seen: set[str]):
        super().__init__(values)
        self.seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)


class _RecordingThresholds:
    """Thresholds that record which fields the rule reads (a filter's own section as `section.field`)."""

    def __init__(self, th: Any, seen: set[str], prefix: str = ""):
        self._th, self._seen, self._prefix = th, seen, prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._th, name)
        if dataclasses.is_dataclass(value):
            return _RecordingThresholds(value, self._seen, f"{self._prefix}{name}.")
        self._seen.add(self._prefix + name)
        return value


def flat(th: Any, prefix: str = "") -> dict[str, Any]:
    """Thresholds as `name -> value`, a filter's own section (set as an attribute) as `section.name`."""
    out: dict[str, Any] = {}
    for name, value in vars(th).items():
        if name.startswith("_"):
            continue
        if dataclasses.is_dataclass(value):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def _flat_dict(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            out.update(_flat_dict(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def _load(values: dict[str, Any]) -> Thresholds:
    return load_config(None, [f"thresholds.{k}={json.dumps(v)}" for k, v in values.items()]).thresholds


@dataclasses.dataclass(frozen=True)
class RuleInputs:
    columns: tuple[str, ...]  # row columns the rule reads
    settings: tuple[str, ...]  # Thresholds fields the rule reads (the what-if sliders)


def rule_inputs(th: Thresholds, numeric: set[str]) -> RuleInputs:
    """Columns and threshold fields `filter_reasons` reads: an empty row names the columns, a row with a
    value in each numeric column makes the rule compare them and so name the threshold fields."""
    columns: set[str] = set()
    filter_reasons(_RecordingRow({}, columns), th)
    settings: set[str] = set()
    for value in (0.0, 1e12, -1e12):
        row = {c: value for c in columns if c in numeric}
        filter_reasons(_RecordingRow(row, columns), _RecordingThresholds(th, settings))
    return RuleInputs(tuple(sorted(columns)), tuple(f for f in flat(th) if f in settings))


def reasons_of_column(column: str, th: Thresholds) -> list[str]:
    """Reasons the rule gives when only `column` has a value, over very low to very high values."""
    found: list[str] = []
    for value in _probe_values(threshold_values(th)):
        for name in filter_reasons({column: value}, th):
            if name not in found:
                found.append(name)
    return found


def threshold_values(*ths: Thresholds) -> list[float]:
    """Every numeric threshold value (the only places a comparison against a threshold can flip)."""
    values = set()
    for th in ths:
        for value in flat(th).values():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values.add(float(value))
    return sorted(values)


def _probe_values(breaks: list[float]) -> list[float]:
    """One value inside each open interval between breakpoints, and each breakpoint itself."""
    if not breaks:
        return [0.0]
    values = [breaks[0] - 1.0 - abs(breaks[0]) * 1e3]
    for low, high in zip(breaks, breaks[1:], strict=False):
        values += [low, (low + high) / 2]
    values += [breaks[-1], breaks[-1] + 1.0 + abs(breaks[-1]) * 1e3]
    return values


def describe(name: str) -> dict[str, str | None]:
    """A reason's meaning and the setting behind it, from the project's declarations."""
    try:
        declared = reason_declaration(name)
        return {"name": name, "meaning": declared.meaning, "setting": declared.setting}
    except KeyError:
        return {"name": name, "meaning": "(not declared by this version of vidmill)", "setting": None}


def run_thresholds(config: dict[str, Any] | None) -> Thresholds:
    """The thresholds a run used (run.json config), read through the project's config loader."""
    known = flat(_load({}))  # a setting of a filter this vidmill does not have is left out
    values = _flat_dict((config or {}).get("thresholds", {}) or {})
    return _load({k: v for k, v in values.items() if k in known})


def moved(base: Thresholds, changes: dict[str, float]) -> Thresholds:
    """`base` with `changes` (`name` or `section.name`) applied through `load_config`, which checks names
    and types."""
    return _load(flat(base) | changes)


def set_line(base: Thresholds, new: Thresholds) -> str:
    """The `--set` options that turn `base` into `new` (empty when nothing moved)."""
    old = flat(base)
    return " ".join(f"--set thresholds.{k}={_fmt(v)}" for k, v in flat(new).items() if old.get(k) != v)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(f"{value:.6g}")) if value == float(f"{value:.6g}") else repr(value)
    return str(value)
