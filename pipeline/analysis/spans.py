"""Clip spans: shots trimmed at both ends, long ones split into even pieces, short ones rejected."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vidmill.pipeline.config import SpanConfig
from vidmill.pipeline.outcomes import TOO_SHORT
from vidmill.pipeline.records import Shot


@dataclass(frozen=True)
class Span:
    shot_index: int
    piece: int
    start_s: float
    end_s: float
    reject_reasons: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class ClipSpan:
    """A candidate clip's span, as later stages receive it."""

    clip_id: str
    start_s: float
    end_s: float


def clip_spans(shots: list[Shot], config: SpanConfig) -> list[Span]:
    """One span per piece; a shot shorter than the minimum after trimming gives one rejected span."""
    spans = []
    for shot in shots:
        start, end = shot.start_s + config.trim_s, shot.end_s - config.trim_s
        length = end - start
        if length < config.min_s - 1e-6:
            start, end = shot.start_s, shot.end_s
            spans.append(Span(shot.shot_index, 0, round(start, 6), round(end, 6), (TOO_SHORT.name,)))
            continue
        pieces = max(1, math.ceil(length / config.max_s - 1e-9))
        step = length / pieces
        for piece in range(pieces):
            spans.append(Span(shot.shot_index, piece, round(start + piece * step, 6),
                              round(start + (piece + 1) * step, 6)))
    return spans
