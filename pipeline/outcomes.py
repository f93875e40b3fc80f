"""Outcomes declared once: reject reasons with their meaning and the setting behind them, a score's
status as a small type, and the kinds of pool failure.

Decide, the run summary, the README table and the dashboard all read these declarations; nothing
parses a status or an error by its prefix elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Reason:
    """A reject reason as written in `manifest.reject_reasons`."""

    name: str
    meaning: str
    setting: str | None = None  # the config key a user changes to move this cut (None: not a threshold)


REASONS: dict[str, Reason] = {}


def declare(name: str, meaning: str, setting: str | None = None) -> Reason:
    """Declare a reject reason (once per name; declaring the same reason twice identically is a no-op)."""
    reason = Reason(name, meaning, setting)
    if REASONS.get(name, reason) != reason:
        raise ValueError(f"reject reason {name!r} declared twice with different meanings")
    REASONS[name] = reason
    return reason


def reason(name: str) -> Reason:
    """The declaration of a reason; a `<stage>_error` reason is declared on first use."""
    if name not in REASONS and name.endswith("_error"):
        return declare(name, f"the {name.removesuffix('_error')} stage failed on this clip (see its status column)")
    if name not in REASONS:
        raise KeyError(f"undeclared reject reason {name!r}")
    return REASONS[name]


# Reasons given by the pipeline itself (filters declare theirs beside their scorer).
TOO_SHORT = declare("too_short", "the clip span (after trimming) is shorter than the minimum", "spans.min_s")
TOO_SMALL = declare("too_small", "the source's short side is below the minimum", "spans.min_short_side")
DUPLICATE = declare("duplicate", "an exact or near duplicate of a better clip kept in this run",
                    "thresholds.phash_distance_max")
TRANSCODE_ERROR = declare("transcode_error", "the clip could not be cut and encoded (see the error column)")
CAPTION_ERROR = declare("caption_error", "no valid caption after retries (see caption_error)")


class ScoreState(str, Enum):
    SCORED = "scored"
    NOT_SCORED = "not_scored"
    ERROR = "error"


@dataclass(frozen=True)
class ScoreStatus:
    """A scorer's status for one clip; serialises to the manifest strings `scored`,
    `not_scored: <reason>` and `error: <message>`."""

    state: ScoreState
    detail: str = ""

    @classmethod
    def scored(cls) -> ScoreStatus:
        return cls(ScoreState.SCORED)

    @classmethod
    def not_scored(cls, why: str) -> ScoreStatus:
        return cls(ScoreState.NOT_SCORED, why)

    @classmethod
    def error(cls, message: str) -> ScoreStatus:
        return cls(ScoreState.ERROR, message)

    def __str__(self) -> str:
        return self.state.value if not self.detail else f"{self.state.value}: {self.detail}"

    @classmethod
    def parse(cls, text: str | None) -> ScoreStatus | None:
        if not text:
            return None
        head, _, detail = str(text).partition(": ")
        return cls(ScoreState(head), detail)


class FailureKind(str, Enum):
    """Why a pool item failed."""

    TIMEOUT = "timeout"
    WORKER_DIED = "worker_died"
    EXCEPTION = "exception"
