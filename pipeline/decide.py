"""Thresholds -> reject reasons. Scores are always stored; only this decides `kept`."""

from __future__ import annotations

from typing import Any

from vidmill.pipeline.config import Thresholds
from vidmill.pipeline.outcomes import declare

# Filter reasons (moving beside their scorers: issue 10).
for _name, _meaning, _setting in [
    ("blurry", "variance of the Laplacian below the minimum", "thresholds.sharpness_min"),
    ("too_dark", "mean luma below the minimum", "thresholds.brightness_min"),
    ("too_bright", "mean luma above the maximum", "thresholds.brightness_max"),
    ("dull", "colourfulness below the minimum", "thresholds.colourfulness_min"),
    ("too_static", "mean optical flow below the minimum", "thresholds.motion_min"),
    ("too_shaky", "mean optical flow above the maximum, or camera class shaky", "thresholds.motion_max"),
    ("too_much_text", "text covers more of some frame than the maximum", "thresholds.text_area_max"),
    ("text_overlay", "persistent text or logo area above the maximum", "thresholds.text_persistent_area_max"),
    ("low_aesthetic", "CLIP + LAION aesthetic score below the minimum (only when scored)", "thresholds.aesthetic_min"),
]:
    declare(_name, _meaning, _setting)

STATUS_COLUMNS = {"quality": "quality_status", "hashes": "hash_status", "motion": "motion_status",
                  "ocr": "ocr_status", "aesthetic": "aesthetic_status"}


def filter_reasons(row: dict[str, Any], th: Thresholds) -> list[str]:
    reasons = []
    for stage, column in STATUS_COLUMNS.items():
        if str(row.get(column) or "").startswith("error"):
            reasons.append(f"{stage}_error")
    checks = [
        ("blurry", row.get("sharpness"), lambda v: v < th.sharpness_min),
        ("too_dark", row.get("brightness"), lambda v: v < th.brightness_min),
        ("too_bright", row.get("brightness"), lambda v: v > th.brightness_max),
        ("dull", row.get("colourfulness"), lambda v: v < th.colourfulness_min),
        ("too_static", row.get("motion_score"), lambda v: v < th.motion_min),
        ("too_shaky", row.get("motion_score"), lambda v: v > th.motion_max),
        ("too_much_text", row.get("text_area_max"), lambda v: v > th.text_area_max),
        ("text_overlay", row.get("text_persistent_area"), lambda v: v > th.text_persistent_area_max),
        ("low_aesthetic", row.get("aesthetic_mean"), lambda v: v < th.aesthetic_min),
    ]
    reasons += [name for name, value, failing in checks if value is not None and failing(value)]
    if row.get("camera_motion") == "shaky" and "too_shaky" not in reasons:
        reasons.append("too_shaky")
    return reasons


def rank_key(row: dict[str, Any]) -> tuple:
    """Which duplicate to keep: higher aesthetic, then sharper, then larger."""
    aesthetic = row.get("aesthetic_mean")
    return (aesthetic if aesthetic is not None else float("-inf"), row.get("sharpness") or 0.0,
            (row.get("width") or 0) * (row.get("height") or 0))
