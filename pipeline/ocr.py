"""Text and logos: PP-OCR detection + recognition at ~1 fps over the frame taps.

Default backend: the PP-OCR ONNX models shipped inside rapidocr (offline). `paddleocr` is selectable
when installed, from local model directories. A detected box counts as text only when it reads at
least `min_chars` letters or digits with `min_confidence` (textures and shapes read as '■').
Per clip: the largest and mean text-area ratio over sampled frames, and the area of text that persists
(a box matched at IoU >= `persist_iou` in another sampled frame: subtitles, logos, watermarks).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.scoring import ClipScorer, Frames

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


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


class TextScorer(ClipScorer):
    name = "ocr"
    status_column = "ocr_status"

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config.scoring.ocr
        self.engine = None

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.backend == "rapidocr":
            from rapidocr import RapidOCR

            self.engine = RapidOCR(params={"Global.use_cls": False, "Global.log_level": "error",
                                           "Det.limit_side_len": cfg.det_limit_side, "Det.limit_type": "min",
                                           "Det.box_thresh": cfg.det_box_thresh})
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

    def read(self, image: np.ndarray) -> list[tuple[Box, str, float]]:
        if self.cfg.backend == "rapidocr":
            res = self.engine(image, use_cls=False)
            if res.boxes is None:
                return []
            polys, texts, scores = res.boxes, res.txts, res.scores
        else:
            page = self.engine.predict(image)[0]
            polys, texts, scores = page["rec_polys"], page["rec_texts"], page["rec_scores"]
        out = []
        for poly, text, conf in zip(polys, texts, scores, strict=False):
            x, y, w, h = cv2.boundingRect(np.asarray(poly, dtype=np.float32))
            out.append(((x, y, x + w, y + h), str(text), float(conf)))
        return out

    def is_text(self, text: str, confidence: float) -> bool:
        return sum(ch.isalnum() for ch in text) >= self.cfg.min_chars and confidence >= self.cfg.min_confidence

    def score(self, frames: Frames) -> dict[str, Any]:
        if self.engine is None:
            self.setup()
        sampled, last = [], None
        for t, image in frames:  # ~ `fps` frames per second out of the taps
            if last is None or t - last >= 1.0 / self.cfg.fps - 1e-6:
                sampled.append(image)
                last = t
        per_frame = [[box for box, text, conf in self.read(image) if self.is_text(text, conf)] for image in sampled]
        return text_stats(per_frame, sampled[0].shape[:2], self.cfg.persist_iou)
