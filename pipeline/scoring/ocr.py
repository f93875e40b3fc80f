"""Text and logos: PP-OCR detection + recognition at ~1 fps over the frame taps.

Default backend: the PP-OCR ONNX models shipped inside rapidocr (offline). `paddleocr` is selectable
when installed, from local model directories. A detected box counts as text only when it reads at
least `min_chars` letters or digits with `min_confidence` (textures and shapes read as '■').
Detection runs on every sampled frame at the taps' resolution; with rapidocr, recognition runs only on
boxes not already read in the same clip, so a subtitle line or a logo is recognised once per clip;
a sampled frame that differs from the last one read in at most `unchanged_max` of its pixels (a still
shot, a slide) keeps that frame's boxes without running detection again.
Small text: a sampled frame whose tap has a detail copy (the decode pass keeps one for taps likely to hold
small text, see small_text.py) is detected and read on that copy; its boxes are mapped back to tap
coordinates, so areas and persistence mix both kinds of frame. A page holds dozens of lines, so on a detail
copy only `detail_read_max` new boxes, spread over the frame, are recognised (each on its first
DETAIL_READ_WIDTH line-heights); the other new boxes take the verdict of the majority of those read.
Per clip: the largest and mean text-area ratio over sampled frames, and the area of text that persists
(a box matched at IoU >= `persist_iou` in another sampled frame: subtitles, logos, watermarks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from vidmill.pipeline.config import OcrScoring, Thresholds
from vidmill.pipeline.outcomes import Reason
from vidmill.pipeline.scoring.base import ClipScorer, Frames, above
from vidmill.pipeline.scoring.registry import register

TOO_MUCH_TEXT = Reason("too_much_text", "text covers more of some frame than the maximum", "thresholds.text_area_max")
TEXT_OVERLAY = Reason("text_overlay", "persistent text or logo area above the maximum",
                      "thresholds.text_persistent_area_max")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1
DETAIL_READ_WIDTH = 12  # detail copies: each box is read on its first 12 line-heights (~25 characters)


def bounding_box(poly: np.ndarray, scale: float = 1.0) -> Box:
    """Bounding box of a polygon, multiplied by `scale` (a detail copy's boxes in tap coordinates)."""
    x, y, w, h = cv2.boundingRect(poly)
    if scale == 1.0:
        return x, y, x + w, y + h
    return math.floor(x * scale), math.floor(y * scale), math.ceil((x + w) * scale), math.ceil((y + h) * scale)


def spread(items: list[int], most: int) -> list[int]:
    """At most `most` of `items`, evenly spread over the list (all when `most` <= 0)."""
    if most <= 0 or len(items) <= most:
        return items
    return [items[round(k * (len(items) - 1) / (most - 1))] for k in range(most)] if most > 1 else items[:1]


def changed_fraction(a: np.ndarray, b: np.ndarray, level: int = 16) -> float:
    """Fraction of pixels whose grey level differs by more than `level` between two frames."""
    return float((cv2.absdiff(a, b) > level).mean())


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def area_ratio(boxes: list[Box], shape: tuple[int, int]) -> float:
    mask = np.zeros(shape, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0):y1, max(0, x0):x1] = 1
    return float(mask.mean())


def text_stats(per_frame: list[list[Box]], shape: tuple[int, int], persist_iou: float) -> dict[str, float]:
    areas = [area_ratio(boxes, shape) for boxes in per_frame]
    persistent = [box for i, boxes in enumerate(per_frame) for box in boxes
                  if any(iou(box, other) >= persist_iou for j, others in enumerate(per_frame) if j != i
                         for other in others)]
    return {"text_area_max": round(max(areas), 5), "text_area_mean": round(float(np.mean(areas)), 5),
            "text_persistent_area": round(area_ratio(persistent, shape), 5)}


@register
class TextScorer(ClipScorer):
    name = "ocr"
    status_column = "ocr_status"
    settings = OcrScoring
    columns = {"text_area_max": pa.float64(), "text_area_mean": pa.float64(), "text_persistent_area": pa.float64(),
               "ocr_status": pa.string()}
    gives = (TOO_MUCH_TEXT, TEXT_OVERLAY)
    manifest_order = 30
    expensive = True

    @classmethod
    def reasons(cls, row: Mapping[str, Any], th: Thresholds) -> list[str]:
        checks = [(TOO_MUCH_TEXT, above(row.get("text_area_max"), th.text_area_max)),
                  (TEXT_OVERLAY, above(row.get("text_persistent_area"), th.text_persistent_area_max))]
        return [reason.name for reason, failing in checks if failing]

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config.scoring.ocr
        self.engine = None
        self.taps = None  # the batch's taps, for their detail copies

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.backend == "rapidocr":
            from rapidocr import RapidOCR

            threads = max(1, math.ceil(self.resources.num_cpus))  # what the actor reserved
            self.engine = RapidOCR(params={
                "Global.use_cls": False, "Global.log_level": "error", "Det.limit_side_len": cfg.det_limit_side,
                "Det.limit_type": "min", "Det.box_thresh": cfg.det_box_thresh,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1})
        elif cfg.backend == "paddleocr":
            try:
                from paddleocr import PaddleOCR
            except ImportError as exc:
                raise RuntimeError("ocr backend 'paddleocr' needs the paddleocr package (pip install paddleocr)") \
                    from exc
            if not cfg.model_dir:
                raise RuntimeError("ocr backend 'paddleocr' needs scoring.ocr.model_dir (no model downloads here)")
            self.engine = PaddleOCR(text_detection_model_dir=f"{cfg.model_dir}/det",
                                    text_recognition_model_dir=f"{cfg.model_dir}/rec",
                                    use_doc_orientation_classify=False, use_doc_unwarping=False,
                                    use_textline_orientation=False)
        else:
            raise ValueError(f"unknown ocr backend {cfg.backend!r}; choose 'rapidocr' or 'paddleocr'")

    def process(self, batch):
        self.taps = batch.taps
        return super().process(batch)

    def text_boxes(self, image: np.ndarray, seen: list[tuple[Box, bool]], scale: float = 1.0) -> list[Box]:
        """Boxes in `image` that read as text, times `scale` (tap coordinates). With rapidocr, a box
        matching one already read in this clip (IoU >= persist_iou: a subtitle line, a logo) reuses that
        verdict and only new boxes are recognised; paddleocr detects and recognises in one call."""
        if self.cfg.backend != "rapidocr":
            return [box for box, text, conf in self.read(image, scale) if self.is_text(text, conf)]
        from rapidocr.utils.process_img import get_rotate_crop_image

        det = self.engine(image, use_cls=False, use_rec=False)
        polys = [] if det.boxes is None else [np.asarray(p, dtype=np.float32) for p in det.boxes]
        boxes = [bounding_box(poly, scale) for poly in polys]
        verdicts: list[bool | None] = [next((v for old, v in seen if iou(box, old) >= self.cfg.persist_iou), None)
                                       for box in boxes]
        new = [i for i, v in enumerate(verdicts) if v is None]
        read = new if scale == 1.0 else spread(new, self.cfg.detail_read_max)
        if read:
            crops = [get_rotate_crop_image(image, polys[i].copy()) for i in read]
            if scale != 1.0:  # a detail copy: the head of each line is enough to tell text from texture
                crops = [crop[:, :DETAIL_READ_WIDTH * crop.shape[0]] for crop in crops]
            rec = self.engine.recognize_txt(crops)
            for i, text, conf in zip(read, rec.txts, rec.scores, strict=True):
                verdicts[i] = self.is_text(str(text), float(conf))
            majority = 2 * sum(bool(verdicts[i]) for i in read) >= len(read)
            verdicts = [majority if v is None else v for v in verdicts]  # boxes left unread
        seen += [(box, bool(v)) for box, v in zip(boxes, verdicts, strict=True) if v is not None]
        return [box for box, v in zip(boxes, verdicts, strict=True) if v]

    def read(self, image: np.ndarray, scale: float = 1.0) -> list[tuple[Box, str, float]]:
        """paddleocr: detection and recognition of every box in one call."""
        page = self.engine.predict(image)[0]
        return [(bounding_box(np.asarray(poly, dtype=np.float32), scale), str(text), float(conf))
                for poly, text, conf in zip(page["rec_polys"], page["rec_texts"], page["rec_scores"], strict=False)]

    def is_text(self, text: str, confidence: float) -> bool:
        return sum(ch.isalnum() for ch in text) >= self.cfg.min_chars and confidence >= self.cfg.min_confidence

    def score(self, frames: Frames) -> dict[str, Any]:
        if self.engine is None:
            self.setup()
        sampled, last = [], None
        for t, image in frames:  # ~ `fps` frames per second out of the taps
            if last is None or t - last >= 1.0 / self.cfg.fps - 1e-6:
                sampled.append((t, image))
                last = t
        seen: list[tuple[Box, bool]] = []
        per_frame, last_read, last_boxes = [], None, []
        for t, image in sampled:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            if last_read is None or changed_fraction(last_read, gray) > self.cfg.unchanged_max:
                detail = None if self.taps is None else self.taps.detail(t)
                if detail is None:
                    last_boxes = self.text_boxes(image, seen)
                else:  # small text likely: detect and read the larger copy
                    last_boxes = self.text_boxes(detail, seen, image.shape[1] / detail.shape[1])
                last_read = gray
            per_frame.append(last_boxes)
        return text_stats(per_frame, sampled[0][1].shape[:2], self.cfg.persist_iou)
