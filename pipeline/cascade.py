"""Scoring cascade (`scoring.cascade`): expensive scorers (OCR, aesthetic: `ClipScorer.expensive`) score
only the clips that the cheap ones (quality, motion, hashes) do not already reject.

A skipped clip's expensive status is `not_scored: skipped: rejected by <scorer> (<reasons>)`: no number, so
no threshold applies to it. Thresholds are not part of the resume fingerprint, so a threshold-only re-run
that loosens a cheap threshold finds the clips whose expensive scores were skipped but that pass the cheap
thresholds now (`newly_eligible`), and scores just those (curate.py's follow-up pass) before decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vidmill.pipeline.outcomes import ScoreState, ScoreStatus

SKIPPED = "skipped: "


def cheap_rejections(row: Mapping[str, Any], cheap: Sequence[type], thresholds: Any) -> dict[str, list[str]]:
    """Each cheap scorer's reject reasons for `row` (its error reason included), only those that give some."""
    found = {}
    for scorer in cheap:
        reasons = [r for r in (scorer.error_reason(row), *scorer.reasons(row, thresholds)) if r]
        if reasons:
            found[scorer.name] = reasons
    return found


def skipped_status(rejections: Mapping[str, list[str]]) -> str:
    """`not_scored: skipped: rejected by motion (too_static), quality (blurry)`."""
    by = ", ".join(f"{name} ({' '.join(reasons)})" for name, reasons in rejections.items())
    return str(ScoreStatus.not_scored(f"{SKIPPED}rejected by {by}"))


def was_skipped(row: Mapping[str, Any], scorer: type) -> bool:
    status = scorer.status(row)
    return status is not None and status.state is ScoreState.NOT_SCORED and status.detail.startswith(SKIPPED)


def split_scorers(scorers: Sequence[type]) -> tuple[list[type], list[type]]:
    """(cheap, expensive) in their registered order."""
    return [s for s in scorers if not s.expensive], [s for s in scorers if s.expensive]


def newly_eligible(clips: Sequence[Any], scorers: Sequence[type], thresholds: Any) -> list[Any]:
    """Clips (ClipRecords) with a skipped expensive score that no cheap scorer rejects under `thresholds`."""
    cheap, expensive = split_scorers(scorers)
    return [c for c in clips if any(was_skipped(c.scores, s) for s in expensive)
            and not cheap_rejections(c.scores, cheap, thresholds)]
