"""Thresholds -> reject reasons. Scores are always stored; only this decides `kept`.

Each registered scorer owns its rules (pipeline/scoring/): decide asks every one of them, in their
registered order, for an error reason from its status column and for the reasons its scores give.
Importing this module declares every scorer's reasons into `outcomes.REASONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vidmill.pipeline.config import Thresholds
from vidmill.pipeline.scoring import registered


def filter_reasons(row: Mapping[str, Any], thresholds: Thresholds) -> list[str]:
    """Reject reasons of one clip (a manifest row or a clip's columns) under `thresholds`."""
    scorers = registered()
    reasons = [r for r in (s.error_reason(row) for s in scorers) if r]
    for scorer in scorers:
        reasons += [r for r in scorer.reasons(row, thresholds) if r not in reasons]
    return reasons


def rank_key(row: Mapping[str, Any]) -> tuple:
    """Which duplicate to keep: higher aesthetic, then sharper, then larger."""
    aesthetic = row.get("aesthetic_mean")
    return (aesthetic if aesthetic is not None else float("-inf"), row.get("sharpness") or 0.0,
            (row.get("width") or 0) * (row.get("height") or 0))


registered()  # declare every scorer's reasons now (the dashboard reads outcomes.REASONS after importing this)
