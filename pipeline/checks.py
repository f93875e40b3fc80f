"""The whole curation config checked before any work: types, ranges, choices, known keys.

Every problem is one line naming the key (`spans.max_s must be > 0, got 0`); all are reported at
once as a `ConfigError`, which the CLI prints and turns into exit code 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]  # a value -> None when fine, else what is wrong


class ConfigError(ValueError):
    """One or more config problems, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be >= {low}, got {value!r}"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}, got {value!r}"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"


def extensions(value: list[str]) -> str | None:
    bad = [e for e in value if not e.startswith(".")]
    return f"entries must start with '.', got {bad}" if bad else None


# Range and choice rules by dotted key; `*` matches any one section name (ray.*.concurrency).
RULES: dict[str, Check] = {
    "source.extensions": extensions,
    "decode.threads": at_least(0),
    "decode.tap_fps": positive,
    "decode.tap_short_side": at_least(16),
    "decode.segment_s": at_least(0),
    "decode.input_timeout_s": positive,
    "decode.timeout_s_per_gb": at_least(0),
    "shots.detector": one_of("adaptive", "content"),
    "shots.min_scene_len": at_least(1),
    "shots.adaptive_threshold": positive,
    "shots.window_width": at_least(1),
    "shots.content_threshold": positive,
    "spans.min_s": at_least(0),
    "spans.max_s": positive,
    "spans.trim_s": at_least(0),
    "spans.min_short_side": at_least(0),
    "transcode.fps": positive,
    "transcode.short_side": at_least(16),
    "transcode.crf": between(0, 51),
    "transcode.clips_per_task": at_least(1),
    "transcode.audio": one_of("drop", "aac"),
    "shards.max_bytes": at_least(1),
    "shards.max_samples": at_least(1),
    "scoring.clips_per_task": at_least(1),
    "scoring.motion.method": one_of("dis", "farneback"),
    "scoring.motion.dis_preset": one_of("ultrafast", "fast", "medium"),
    "scoring.motion.short_side": at_least(16),
    "scoring.ocr.backend": one_of("rapidocr", "paddleocr"),
    "scoring.ocr.fps": positive,
    "scoring.ocr.det_limit_side": at_least(16),
    "scoring.ocr.persist_iou": between(0, 1),
    "scoring.aesthetic.device": one_of("auto", "cpu", "cuda"),
    "thresholds.phash_distance_max": between(0, 64),
    "thresholds.lsh_bands": between(1, 64),
    "thresholds.clip_cosine_min": between(-1, 1),
    "captions.backend": one_of("signals", "openai", "vllm"),
    "captions.fps": positive,
    "captions.short_side": at_least(16),
    "captions.concurrency": at_least(1),
    "captions.timeout_s": positive,
    "captions.retries": at_least(0),
    "captions.tensor_parallel": at_least(1),
    "captions.clips_per_task": at_least(1),
    "ray.*.num_cpus": at_least(0),
    "ray.*.num_gpus": at_least(0),
    "ray.*.concurrency": at_least(1),
}


def _rule(key: str) -> Check | None:
    if key in RULES:
        return RULES[key]
    parts = key.split(".")
    for pattern, check in RULES.items():
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(p in ("*", k) for p, k in zip(pat, parts, strict=True)):
            return check
    return None


def type_problem(value: Any, default: Any) -> str | None:
    """What is wrong with the value's type, judged by the default's type (None when fine)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be a boolean (true or false), got {value!r}"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"must be a number, got {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    if isinstance(default, list):
        if not isinstance(value, list):
            return f"must be a list, got {value!r}"
        kinds = {type(v) for v in default}
        bad = [v for v in value if kinds and type(v) not in kinds]
        return f"list entries must be {', '.join(k.__name__ for k in kinds)}, got {bad}" if bad else None
    if isinstance(default, dict):
        return None if isinstance(value, dict) else f"must be a mapping, got {value!r}"
    return None


def leaves(config: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) for every non-dataclass field of a config tree."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += leaves(value, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append((f"{prefix}{f.name}", value, default))
    return out


def problems(config: Any) -> list[str]:
    """Every type, range and choice problem of a built config, plus the cross-field ones."""
    found = []
    for key, value, default in leaves(config):
        wrong = type_problem(value, default)
        if wrong is None and (check := _rule(key)) is not None:
            wrong = check(value)
        if wrong:
            found.append(f"{key} {wrong}")
    found += _cross_field(config)
    return found


def _cross_field(config: Any) -> list[str]:
    found = []
    spans, th = getattr(config, "spans", None), getattr(config, "thresholds", None)
    if spans is not None and _numbers(spans.min_s, spans.max_s) and spans.min_s > spans.max_s:
        found.append(f"spans.min_s ({spans.min_s}) must not exceed spans.max_s ({spans.max_s})")
    if spans is not None and _numbers(spans.trim_s, spans.max_s) and 2 * spans.trim_s >= spans.max_s > 0:
        found.append(f"spans.trim_s ({spans.trim_s}) trims away every clip of spans.max_s ({spans.max_s})")
    if th is not None and _numbers(th.brightness_min, th.brightness_max) and th.brightness_min > th.brightness_max:
        found.append(f"thresholds.brightness_min ({th.brightness_min}) exceeds thresholds.brightness_max "
                     f"({th.brightness_max})")
    if th is not None and _numbers(th.motion_min, th.motion_max) and th.motion_min > th.motion_max:
        found.append(f"thresholds.motion_min ({th.motion_min}) exceeds thresholds.motion_max ({th.motion_max})")
    return found


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
