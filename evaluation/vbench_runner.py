"""VBench I2V over a folder of generated videos (and their conditioning images): one row per video, a report.

Inputs: `videos/*.mp4`; `images/{stem}.png|jpg|jpeg` (the conditioning image of `{stem}.mp4`, needed by the
two I2V dimensions); camera motion reads the prompted motion from the file name (`... camera pans left ...`),
as upstream does. A dimension whose model is missing is reported with its reason and left out of the totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidmill.evaluation import vbench_i2v as vb
from vidmill.evaluation import vbench_models as vm
from vidmill.evaluation.video_io import bgr_to_rgb, read_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# dimension -> the probes it needs
NEEDS = {"i2v_subject": ("dino",), "i2v_background": ("dreamsim",), "subject_consistency": ("dino",),
         "background_consistency": ("clip_b32",), "motion_smoothness": ("interpolate",), "dynamic_degree": ("flow",),
         "aesthetic_quality": ("clip_l14", "laion_head"), "imaging_quality": ("musiq",), "camera_motion": ("tracker",)}


class Skip(Exception):
    """This video does not take part in this dimension (reason in the message)."""


def _image_for(video: Path, images: Path | None):
    """The conditioning image as upstream opens it (PIL, RGB)."""
    from PIL import Image

    if images is None:
        raise Skip("skipped: no --images folder")
    for suffix in IMAGE_SUFFIXES:
        path = images / f"{video.stem}{suffix}"
        if path.exists():
            try:
                with Image.open(path) as image:
                    return image.convert("RGB")
            except OSError as exc:
                raise ValueError(f"cannot read image {path}: {exc}") from exc
    raise Skip(f"skipped: no conditioning image {video.stem}.png|jpg in {images}")


def _features(probe: Callable, transform: Callable, frames: np.ndarray) -> torch.Tensor:
    return vm.batched(probe, transform(vm.to_tensor(frames)))


def score_video(dim: str, p: vm.Probes, frames: np.ndarray, fps: float, video: Path, images: Path | None) -> Any:
    """The per-video value of one dimension (a float, or (sum, count) for the frame-weighted consistencies)."""
    if dim == "i2v_subject":
        with torch.no_grad():
            img = p.dino(vm.dino_i2v_image_transform(_image_for(video, images)))[0]
        return vb.i2v_consistency(img, _features(p.dino, vm.dino_i2v_transform, frames))
    if dim == "i2v_background":
        with torch.no_grad():
            img = p.dreamsim(vm.dreamsim_image_transform(_image_for(video, images)))[0]
        return vb.i2v_consistency(img, _features(p.dreamsim, vm.dreamsim_transform, frames))
    if dim == "subject_consistency":
        return vb.frame_consistency(_features(p.dino, vm.dino_frames_transform, frames))
    if dim == "background_consistency":
        return vb.frame_consistency(_features(p.clip_b32, vm.clip_transform, frames))
    if dim == "motion_smoothness":
        return vb.motion_smoothness(frames, p.interpolate)
    if dim == "dynamic_degree":
        sampled = frames[::vb.sample_interval(fps)]
        t = vm.to_tensor(sampled).float()
        scores = [vb.top5_flow_magnitude(p.flow(t[i:i + 1], t[i + 1:i + 2])) for i in range(len(t) - 1)]
        return float(vb.is_dynamic(scores, len(sampled), min(frames.shape[1:3])))
    if dim == "aesthetic_quality":
        feats = F.normalize(_features(p.clip_l14, vm.clip_transform, frames).float(), dim=-1, p=2)
        with torch.no_grad():
            return float(torch.mean(p.laion_head(feats).squeeze(-1) / 10))
    if dim == "imaging_quality":
        h, w = vb.longer_side_size(*frames.shape[1:3])
        from torchvision.transforms import functional as TF

        x = TF.resize(vm.to_tensor(frames), [h, w], antialias=False).float().div(255.0)
        with torch.no_grad():
            return float(np.mean([float(p.musiq(x[i:i + 1])) for i in range(len(x))]))
    if dim == "camera_motion":
        target = vb.camera_type(video.name)
        if target is None:
            raise Skip("skipped: no camera prompt in the file name")
        first, last = p.tracker(frames)
        return 1.0 if target in vb.classify_camera(first, last, min(frames.shape[1:3])) else 0.0
    raise ValueError(f"unknown dimension {dim}")


def aggregate(dim: str, values: list) -> float:
    if dim in ("subject_consistency", "background_consistency"):
        return sum(s for s, _ in values) / sum(c for _, c in values)  # frame-weighted, one device
    mean = float(np.mean(values))
    return mean / 100.0 if dim == "imaging_quality" else mean


def evaluate_vbench(videos: str | Path, images: str | Path | None, probes: vm.Probes,
                    dimensions: tuple[str, ...] = vb.DIMENSIONS) -> dict:
    """Score every video on every dimension that has its models; returns the results.json document."""
    start = time.perf_counter()
    paths = sorted(Path(videos).glob("*.mp4"))
    if not paths:
        raise FileNotFoundError(f"no .mp4 files in {videos}")
    images = Path(images) if images else None
    reasons = probes.reasons or {}
    missing = {d: next((reasons.get(n, f"not computed: model not available ({n})") for n in NEEDS[d]
                        if getattr(probes, n) is None), None) for d in dimensions}
    active = [d for d in dimensions if missing[d] is None]
    rows, values = [], {d: [] for d in active}
    for path in paths:
        row: dict[str, Any] = {"video": path.name, "status": "ok", "dimensions": {}}
        try:
            video = read_video(path)
        except ValueError as exc:
            rows.append({"video": path.name, "status": "error", "error": str(exc)})
            continue
        frames = bgr_to_rgb(video.frames)
        for d in active:
            try:
                value = score_video(d, probes, frames, video.fps, path, images)
            except Skip as exc:
                row["dimensions"][d] = str(exc)
                continue
            except (ValueError, RuntimeError) as exc:
                row["dimensions"][d] = f"error: {exc}"
                continue
            values[d].append(value)
            row["dimensions"][d] = value[0] / value[1] if isinstance(value, tuple) else value
        rows.append(row)
    dims: dict[str, dict] = {}
    for d in dimensions:
        if missing[d] is not None:
            dims[d] = {"status": missing[d], "score": None}
        elif not values[d]:
            dims[d] = {"status": "not computed: no video could be scored", "score": None}
        else:
            score = aggregate(d, values[d])
            dims[d] = {"status": "ok", "score": score, "normalized": vb.normalise(d, score), "n_videos": len(values[d])}
    report = vb.totals({d: dims[d]["score"] for d in dimensions})
    return {"benchmark": "vbench-i2v", "videos": str(videos), "images": str(images) if images else None,
            "rows": rows, "dimensions": dims, "totals": report,
            "timing": {"seconds": time.perf_counter() - start, "videos": len(paths)}}
