"""Per-second captions (MAGI-1 style): prompt, output validation and repair, and the signals captioner.

A caption is JSON {"summary": str, "seconds": [{"t": 0, "caption": str}, ...]} with exactly
ceil(duration) entries, one per second, so chunk-wise prompts line up with one-second chunks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

PROMPT = """You are captioning a {duration:.1f}-second video clip for training a video generation model.
You see {n_frames} frames sampled at {fps:g} per second, in order; frame k is at {step:.2f} * k seconds.
Describe what is visible and what changes, second by second.
Answer with JSON only, no prose and no code fences, exactly in this form:
{{"summary": "<one or two sentences about the whole clip>",
 "seconds": [{{"t": 0, "caption": "<what happens during second 0>"}}, ...]}}
"seconds" must have exactly {n_seconds} entries, t = 0 to {last}, one per second of the clip."""


def n_seconds(duration_s: float) -> int:
    return max(1, math.ceil(duration_s - 1e-6))


def build_prompt(duration_s: float, n_frames: int, fps: float) -> str:
    n = n_seconds(duration_s)
    return PROMPT.format(duration=duration_s, n_frames=n_frames, fps=fps, step=1 / fps, n_seconds=n, last=n - 1)


@dataclass
class Caption:
    summary: str
    seconds: list[str]
    repaired: list[str] = field(default_factory=list)  # what was fixed, if anything


class CaptionInvalid(ValueError):
    pass


def _json_candidates(text: str) -> list[str]:
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip(), flags=re.MULTILINE).strip()
    start = text.find("{")
    if start < 0:
        return []
    body = text[start:]
    end = body.rfind("}")
    return [body] + ([body[:end + 1]] if 0 <= end < len(body) - 1 else [])  # whole, or cut after the last }


def _close_truncated(text: str) -> str:
    """Close an output cut off mid-way: drop a dangling fragment, then close strings and brackets."""
    text = re.sub(r",\s*$", "", text.rstrip())
    stack, in_string, escape = [], False, False
    for ch in text:
        if in_string:
            escape = ch == "\\" and not escape
            if ch == '"' and not escape:
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    if in_string:
        text += '"'
    text = re.sub(r',\s*"[^"]*"\s*:\s*$', "", text)  # a key whose value never came
    text = re.sub(r",\s*$", "", text)
    return text + "".join(reversed(stack))


def parse_caption(raw: str, duration_s: float) -> Caption:
    """Validate a model output against the schema, repairing what can be repaired honestly.

    Repaired: code fences, prose around the JSON, trailing commas, truncation (closing brackets), extra
    seconds (dropped), t values not 0..n-1 (renumbered). Not invented: missing seconds or summary.
    """
    want = n_seconds(duration_s)
    data, repaired = None, []
    for i, candidate in enumerate(_json_candidates(raw)):
        for fixed, note in ((candidate, None), (re.sub(r",\s*([}\]])", r"\1", candidate), "trailing_commas"),
                            (_close_truncated(candidate), "truncated")):
            try:
                data = json.loads(fixed)
            except json.JSONDecodeError:
                continue
            repaired += [n for n in (note, "extracted_json" if i or fixed != raw.strip() else None) if n]
            break
        if data is not None:
            break
    if not isinstance(data, dict):
        raise CaptionInvalid("output is not a JSON object, even after repair")
    summary = data.get("summary")
    seconds = data.get("seconds")
    if not isinstance(summary, str) or not summary.strip():
        raise CaptionInvalid("missing summary")
    if not isinstance(seconds, list) or not all(isinstance(s, dict) and isinstance(s.get("caption"), str)
                                                and s["caption"].strip() for s in seconds):
        raise CaptionInvalid("seconds must be a list of {t, caption} with non-empty captions")
    if len(seconds) < want:
        raise CaptionInvalid(f"{len(seconds)} seconds described, {want} needed")
    if len(seconds) > want:
        seconds = seconds[:want]
        repaired.append("extra_seconds_dropped")
    if [s.get("t") for s in seconds] != list(range(want)):
        repaired.append("t_renumbered")
    return Caption(summary.strip(), [s["caption"].strip() for s in seconds], sorted(set(repaired)))


def caption_json(caption: Caption) -> dict[str, Any]:
    return {"summary": caption.summary, "seconds": [{"t": i, "caption": c} for i, c in enumerate(caption.seconds)]}


# -- the signals captioner (embedded default: no model) ---------------------------------------------

CAMERA_WORDS = {"static": "the camera holds still", "pan_left": "the camera pans left",
                "pan_right": "the camera pans right", "tilt_up": "the camera tilts up",
                "tilt_down": "the camera tilts down", "zoom_in": "the camera zooms in",
                "zoom_out": "the camera zooms out", "shaky": "the camera shakes"}


def _where(motion: np.ndarray) -> str:
    h, w = motion.shape
    ys, xs = np.nonzero(motion > max(1.0, float(motion.mean()) * 3))
    if len(xs) == 0:
        return "across the frame"
    cx, cy = xs.mean() / w, ys.mean() / h
    horizontal = "left" if cx < 0.36 else "right" if cx > 0.64 else "centre"
    vertical = "top" if cy < 0.36 else "bottom" if cy > 0.64 else "middle"
    return f"in the {vertical} {horizontal}" if (horizontal, vertical) != ("centre", "middle") else "in the centre"


def signals_caption(frames: list[tuple[float, np.ndarray]], duration_s: float, row: dict[str, Any]) -> Caption:
    """Deterministic per-second descriptions from measured signals; not a model's words."""
    camera = row.get("camera_motion") or "static"
    text = (row.get("text_area_max") or 0.0) > 0
    seconds = []
    for sec in range(n_seconds(duration_s)):
        inside = [img for t, img in frames if sec <= t < sec + 1] or [frames[min(len(frames) - 1, sec)][1]]
        grays = [cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) for img in inside]
        brightness = float(np.mean([g.mean() for g in grays])) / 255
        light = "dark" if brightness < 0.25 else "bright" if brightness > 0.75 else "evenly lit"
        parts = [CAMERA_WORDS.get(camera, "the camera holds still")]
        if camera == "static" and len(grays) > 1:
            diff = np.abs(grays[-1] - grays[0])
            parts.append(f"something moves {_where(diff)}" if diff.mean() > 1.0 else "nothing in the scene moves")
        hue = cv2.cvtColor(inside[0], cv2.COLOR_BGR2HSV)[..., 0]
        parts.append(f"the scene is {light}, mostly {_hue_name(float(np.median(hue)))}")
        if text:
            parts.append("text is visible on screen")
        seconds.append("; ".join(parts))
    summary = (f"A {duration_s:.1f}-second shot in which {CAMERA_WORDS.get(camera, 'the camera holds still')}"
               + (", with text on screen." if text else "."))
    return Caption(summary, seconds)


def _hue_name(hue: float) -> str:
    names = [(10, "red"), (25, "orange"), (35, "yellow"), (85, "green"), (130, "blue"), (160, "purple"), (181, "red")]
    return next(name for limit, name in names if hue < limit)
