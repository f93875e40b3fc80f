"""Technical quality without learned weights: sharpness, exposure, colourfulness."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from vidmill.pipeline.scoring import ClipScorer, Frames


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def colourfulness(bgr: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003): std and mean of the rg / yb opponent channels."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


class TechnicalQuality(ClipScorer):
    name = "quality"
    status_column = "quality_status"

    def score(self, frames: Frames) -> dict[str, Any]:
        grays = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for _, image in frames]
        return {
            "sharpness": round(float(np.mean([sharpness(g) for g in grays])), 4),
            "brightness": round(float(np.mean([g.mean() for g in grays]) / 255.0), 5),
            "colourfulness": round(float(np.mean([colourfulness(image) for _, image in frames])), 4),
        }
