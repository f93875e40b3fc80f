"""Clip scorers: stages that score candidate clips from the frame taps of the single decode pass.

A scorer gets one input's clips and the taps inside them (`ScoreBatch`), never re-opens the video, and
returns a dict of columns per clip. Every score is stored whatever the thresholds say; a scorer that
cannot run (no weights) returns its status column `not_scored: <reason>` and no number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vidmill.pipeline.analyze import FrameTaps
from vidmill.pipeline.spans import ClipSpan
from vidmill.pipeline.stage import Stage


@dataclass(frozen=True)
class ScoreBatch:
    input_id: str
    clips: tuple[ClipSpan, ...]
    taps: FrameTaps


Frames = list[tuple[float, np.ndarray]]  # (time_s, BGR image) inside one clip, in time order


class ClipScorer(Stage):
    """Subclasses set `name`, `status_column`, and implement `score(frames) -> columns`."""

    status_column = "status"
    resources_key = ""  # which config.ray entry sizes this scorer's pool; default: its name

    def __init__(self, config):
        super().__init__(self.resources(config))
        self.config = config

    @classmethod
    def resources(cls, config):
        return getattr(config.ray, cls.resources_key or cls.name)

    def process(self, batch: ScoreBatch) -> dict[str, dict[str, Any]]:
        out = {}
        for clip in batch.clips:
            frames = batch.taps.between(clip.start_s, clip.end_s)
            if not frames:
                out[clip.clip_id] = {self.status_column: "error: no frames sampled in span"}
                continue
            out[clip.clip_id] = {self.status_column: "scored", **self.score(frames)}
        return out

    def score(self, frames: Frames) -> dict[str, Any]:
        raise NotImplementedError


def key_frames(frames: Frames, fractions: tuple[float, ...] = (0.1, 0.5, 0.9)) -> list[np.ndarray]:
    """Frames nearest to the given fractions of the clip (10 / 50 / 90 % by default)."""
    return [frames[min(len(frames) - 1, int(f * len(frames)))][1] for f in fractions]
