"""Technical quality without learned weights: sharpness, exposure, colourfulness."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from vidmill.pipeline.config import QualityScoring, Thresholds
from vidmill.pipeline.outcomes import Reason
from vidmill.pipeline.scoring.base import ClipScorer, Frames, above, below
from vidmill.pipeline.scoring.registry import register

BLURRY = Reason("blurry", "variance of the Laplacian below the minimum", "thresholds.sharpness_min")
TOO_DARK = Reason("too_dark", "mean luma below the minimum", "thresholds.brightness_min")
TOO_BRIGHT = Reason("too_bright", "mean luma above the maximum", "thresholds.brightness_max")
DULL = Reason("dull", "colourfulness below the minimum", "thresholds.colourfulness_min")


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def colourfulness(bgr: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003): std and mean of the rg / yb opponent channels."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


@register
class TechnicalQuality(ClipScorer):
    name = "quality"
    status_column = "quality_status"
    settings = QualityScoring
    columns = {"sharpness": pa.float64(), "brightness": pa.float64(), "colourfulness": pa.float64(),
               "quality_status": pa.string()}
    gives = (BLURRY, TOO_DARK, TOO_BRIGHT, DULL)
    manifest_order = 10

    @classmethod
    def reasons(cls, row: Mapping[str, Any], th: Thresholds) -> list[str]:
        brightness = row.get("brightness")
        checks = [(BLURRY, below(row.get("sharpness"), th.sharpness_min)),
                  (TOO_DARK, below(brightness, th.brightness_min)), (TOO_BRIGHT, above(brightness, th.brightness_max)),
                  (DULL, below(row.get("colourfulness"), th.colourfulness_min))]
        return [reason.name for reason, failing in checks if failing]

    def score(self, frames: Frames) -> dict[str, Any]:
        grays = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for _, image in frames]
        return {
            "sharpness": round(float(np.mean([sharpness(g) for g in grays])), 4),
            "brightness": round(float(np.mean([g.mean() for g in grays]) / 255.0), 5),
            "colourfulness": round(float(np.mean([colourfulness(image) for _, image in frames])), 4),
        }
