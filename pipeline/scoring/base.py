"""Clip scorers: stages that score candidate clips from the frame taps of the single decode pass.

A scorer gets one input's clips and the taps inside them (`ScoreBatch`), never re-opens the video, and
returns a dict of columns per clip. Every score is stored whatever the thresholds say; a scorer that
cannot run (no weights) returns its status column `not_scored: <reason>` and no number.

A scorer owns its rules: it declares its config section, its output columns with their Arrow types,
the reject reasons it gives and, in `reasons`, when it gives them. decide.py only asks each one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vidmill.pipeline.analysis.analyze import FrameTaps, StoredTaps
from vidmill.pipeline.analysis.spans import ClipSpan
from vidmill.pipeline.config import StageResources
from vidmill.pipeline.outcomes import Reason, ScoreState, ScoreStatus
from vidmill.pipeline.stage import Stage


@dataclass(frozen=True)
class ScoreBatch:
    """Some of one input's clips and the taps inside them: in memory (in process), or refs to the analysis
    workers' taps with the batch's time window (on Ray; the scorer worker fetches them, see `fetched`)."""

    input_id: str
    clips: tuple[ClipSpan, ...]
    taps: FrameTaps | StoredTaps


Frames = list[tuple[float, np.ndarray]]  # (time_s, BGR image) inside one clip, in time order


class ClipScorer(Stage):
    """Subclasses set the class attributes below and implement `score(frames) -> columns`."""

    name = "scorer"
    status_column = "status"
    columns: ClassVar[dict[str, pa.DataType]] = {}  # manifest columns, the status column included
    gives: ClassVar[tuple[Reason, ...]] = ()  # the reject reasons `reasons` may return
    settings: ClassVar[type | None] = None  # its config section `scoring.<name>` (a dataclass), if any
    thresholds: ClassVar[type | None] = None  # its `thresholds.<name>` section, for a filter outside config.py
    resources_key = ""  # which config.ray entry sizes its pool; default: its name, else a small pool
    manifest_order = 100  # where its columns stand among the scorers' in the manifest
    expensive = False  # scoring.cascade: scores only clips that no cheap scorer rejects (pipeline/cascade.py)

    def __init__(self, config):
        super().__init__(self.resources(config))
        self.config = config

    @classmethod
    def enabled(cls, config) -> bool:
        section = cls.section(config)
        return bool(getattr(section, "enabled", True))

    @classmethod
    def section(cls, config) -> Any:
        return getattr(config.scoring, cls.name, None)

    @classmethod
    def resources(cls, config) -> StageResources:
        return getattr(config.ray, cls.resources_key or cls.name, None) or StageResources(num_cpus=0.25,
                                                                                          concurrency=1)

    @classmethod
    def status(cls, row: Mapping[str, Any]) -> ScoreStatus | None:
        try:
            return ScoreStatus.parse(row.get(cls.status_column))
        except ValueError:  # not one of the three states: nothing to decide from
            return None

    @classmethod
    def reasons(cls, row: Mapping[str, Any], thresholds: Any) -> list[str]:
        """The reject reasons this scorer's columns in `row` give under `thresholds` (scores may be None)."""
        return []

    @classmethod
    def error_reason(cls, row: Mapping[str, Any]) -> str | None:
        status = cls.status(row)
        return f"{cls.name}_error" if status is not None and status.state is ScoreState.ERROR else None

    def fetched(self, batch: ScoreBatch, get: Callable[[list[Any]], list[FrameTaps]]) -> ScoreBatch:
        """In a worker: taps left in the object store are fetched (only the parts the batch overlaps)."""
        if isinstance(batch.taps, StoredTaps):
            return replace(batch, taps=batch.taps.fetch(get))
        return batch

    def process(self, batch: ScoreBatch) -> dict[str, dict[str, Any]]:
        out = {}
        for clip in batch.clips:
            frames = batch.taps.between(clip.start_s, clip.end_s)
            if not frames:
                out[clip.clip_id] = {self.status_column: str(ScoreStatus.error("no frames sampled in span"))}
                continue
            out[clip.clip_id] = {self.status_column: str(ScoreStatus.scored()), **self.score(frames)}
        return out

    def score(self, frames: Frames) -> dict[str, Any]:
        raise NotImplementedError


def below(value: Any, limit: float) -> bool:
    return value is not None and value < limit


def above(value: Any, limit: float) -> bool:
    return value is not None and value > limit


def key_frames(frames: Frames, fractions: tuple[float, ...] = (0.1, 0.5, 0.9)) -> list[np.ndarray]:
    """Frames nearest to the given fractions of the clip (10 / 50 / 90 % by default)."""
    return [frames[min(len(frames) - 1, int(f * len(frames)))][1] for f in fractions]
