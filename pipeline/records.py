"""Typed records: one input, one shot, one clip, the same shape in flight, in _work and in the tables.

Each field carries its Arrow type (`column`), so the schemas of inputs.parquet, shots.parquet and
manifest.parquet are derived from these classes and written nowhere else. A clip's scores are a dict
filled by the scorers; the manifest lays them out as the registered scorers declare their columns.
_work keeps the JSON written before these records existed (flat rows), so earlier runs still resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


def column(arrow_type: pa.DataType, default: Any = None, **kwargs: Any) -> Any:
    """A dataclass field that is also a table column of `arrow_type`."""
    if "default_factory" in kwargs:
        return field(metadata={"arrow": arrow_type}, **kwargs)
    return field(default=default, metadata={"arrow": arrow_type}, **kwargs)


def schema_of(cls: type) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.metadata["arrow"]) for f in dataclasses.fields(cls) if "arrow" in f.metadata]


@dataclass
class InputRecord:
    """One row of inputs.parquet: every listed input, ok or error, never dropped."""

    input_id: str = column(pa.string())
    source_uri: str = column(pa.string())
    size_bytes: int = column(pa.int64(), 0)
    status: str = column(pa.string(), "ok")  # ok | error
    error: str | None = column(pa.string())
    duration_s: float | None = column(pa.float64())
    n_shots: int = column(pa.int32(), 0)
    n_clips: int = column(pa.int32(), 0)
    fps: float | None = column(pa.float64())
    width: int | None = column(pa.int32())
    height: int | None = column(pa.int32())
    rotation: int | None = column(pa.int32())
    codec: str | None = column(pa.string())
    video_start_s: float | None = column(pa.float64())
    source_version: str | None = column(pa.string())  # size + mtime, or the object store's ETag: resume key

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Shot:
    """One detected shot of an input (times in seconds, frames counted in the decoded stream)."""

    shot_index: int = column(pa.int32())
    start_s: float = column(pa.float64())
    end_s: float = column(pa.float64())  # exclusive: the next shot's first frame time, or the end of the last frame
    start_frame: int = column(pa.int32())
    end_frame: int = column(pa.int32())  # exclusive


@dataclass
class ClipRecord:
    """One candidate clip, kept or not: born from a span, scored, decided, transcoded, captioned, written."""

    clip_id: str = column(pa.string())
    input_id: str = column(pa.string())
    source_uri: str = column(pa.string())
    shot_index: int = column(pa.int32())
    start_s: float = column(pa.float64())
    end_s: float = column(pa.float64())
    duration_s: float = column(pa.float64())
    fps: float = column(pa.float64())
    width: int = column(pa.int32())
    height: int = column(pa.int32())
    kept: bool = column(pa.bool_(), True)
    reject_reasons: list[str] = column(pa.list_(pa.string()), default_factory=list)
    error: str | None = column(pa.string())
    clip_bytes: int | None = column(pa.int64())
    shard: str | None = column(pa.string())
    key: str | None = column(pa.string())
    scores: dict[str, Any] = field(default_factory=dict)  # every registered scorer's columns, here in the manifest
    dup_group: str | None = column(pa.string())
    dup_of: str | None = column(pa.string())
    caption: str | None = column(pa.string())
    captions_per_second: list[str] | None = column(pa.list_(pa.string()))
    captioner: str | None = column(pa.string())
    caption_tokens_in: int | None = column(pa.int64())
    caption_tokens_out: int | None = column(pa.int64())
    caption_latency_s: float | None = column(pa.float64())
    caption_error: str | None = column(pa.string())
    caption_raw: str | None = column(pa.string())

    def reject(self, reason: str) -> None:
        self.reject_reasons.append(reason)
        self.kept = False

    def work_row(self) -> dict[str, Any]:
        """The flat dict kept in _work (the format of earlier runs): span fields, reasons and scores."""
        return {**{name: getattr(self, name) for name in WORK_FIELDS}, **self.scores}

    @classmethod
    def from_work_row(cls, row: dict[str, Any]) -> ClipRecord:
        known = {name: row[name] for name in WORK_FIELDS if name in row}
        clip = cls(**known)
        clip.reject_reasons = list(clip.reject_reasons)
        clip.kept = not clip.reject_reasons
        clip.scores = {k: v for k, v in row.items() if k not in WORK_FIELDS}
        return clip

    def row(self) -> dict[str, Any]:
        """The manifest row (also each shard's {key}.json), scores flattened in place."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "scores":
                out.update(self.scores)
            else:
                out[f.name] = getattr(self, f.name)
        return out


WORK_FIELDS = ("clip_id", "input_id", "source_uri", "shot_index", "start_s", "end_s", "duration_s", "fps",
               "width", "height", "reject_reasons")


@dataclass
class InputResult:
    """What one input yields: its row, its shots and its candidate clips (and, in flight only, its taps)."""

    input: InputRecord
    shots: list[Shot] = field(default_factory=list)
    clips: list[ClipRecord] = field(default_factory=list)
    taps: Any = None  # FrameTaps while scoring; never stored

    def work_json(self) -> dict[str, Any]:
        return {"input": self.input.row(), "shots": [dataclasses.asdict(s) for s in self.shots],
                "clips": [c.work_row() for c in self.clips]}

    @classmethod
    def from_work_json(cls, data: dict[str, Any]) -> InputResult:
        return cls(InputRecord(**data["input"]), [Shot(**s) for s in data["shots"]],
                   [ClipRecord.from_work_row(c) for c in data["clips"]])


def inputs_schema() -> pa.Schema:
    return pa.schema(schema_of(InputRecord))


def shots_schema() -> pa.Schema:
    return pa.schema([("input_id", pa.string()), *schema_of(Shot)])


def manifest_schema() -> pa.Schema:
    """ClipRecord's columns with each registered scorer's columns where `scores` stands."""
    from vidmill.pipeline.scoring import registered

    fields: list[tuple[str, pa.DataType]] = []
    for f in dataclasses.fields(ClipRecord):
        if f.name == "scores":
            scorers = sorted(registered(), key=lambda scorer: scorer.manifest_order)  # stable: ties keep their order
            fields += [col for scorer in scorers for col in scorer.columns.items()]
        else:
            fields.append((f.name, f.metadata["arrow"]))
    return pa.schema(fields)


EMBEDDINGS_SCHEMA = pa.schema([("clip_id", pa.string()), ("clip_embedding", pa.list_(pa.float32()))])
