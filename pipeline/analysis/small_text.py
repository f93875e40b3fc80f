"""Small text: a cheap text-line likelihood at tap resolution, and larger copies of the taps that need one.

Text under about 1/40 of the short side is 2-5 px tall at the 256 px taps: too small for PP-OCR to detect,
but still visible as thin, high-contrast strokes that line up horizontally. `text_line_fraction` measures
that (a 3x3 top-hat/black-hat, a horizontal closing, then the area of thin, wide components); natural footage
scores under 0.02, a page of 12-16 px text at 1080p about 0.19. Taps at or above `ocr.detail_line_min` are
also kept at `ocr.detail_short_side` (never above the source), and OCR detects and reads those instead, so
small dense text is seen without full-resolution OCR on every frame.
"""

from __future__ import annotations

import cv2
import numpy as np

STROKE_CONTRAST = 40  # grey levels a thin stroke stands out from its 3x3 surroundings


def text_line_fraction(grey: np.ndarray) -> float:
    """Fraction of the frame covered by thin horizontal runs of strokes (text lines at a few px tall)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    strokes = np.maximum(cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel),
                         cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel)) > STROKE_CONTRAST
    lines = cv2.morphologyEx(strokes.astype(np.uint8), cv2.MORPH_CLOSE,
                             cv2.getStructuringElement(cv2.MORPH_RECT, (5, 1)))
    _, _, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    w, h, area = stats[1:, 2], stats[1:, 3], stats[1:, 4]
    line_like = (w >= 3 * h) & (h <= 8) & (w >= 12) & (area >= 0.4 * w * h)
    return float((w[line_like] * h[line_like]).sum() / grey.size)


def detail_size(display: tuple[int, int], tap_size: tuple[int, int], short_side: int) -> tuple[int, int] | None:
    """(w, h) of the detail copy: short side `short_side`, never above the source; None when not larger
    than the tap (small sources are read at full size already) or when off (0)."""
    if short_side <= 0 or min(display) <= min(tap_size):
        return None
    factor = min(1.0, short_side / min(display))
    w, h = round(display[0] * factor), round(display[1] * factor)
    return (w - w % 2, h - h % 2) if min(w, h) > min(tap_size) else None


class DetailTapper:
    """Decides, tap by tap during the decode pass, which taps also get a detail copy.

    A likely tap that differs from the last detail's tap in at most `unchanged_max` of its pixels (a still
    page) shares that detail's JPEG instead of encoding another (same bytes object: no extra memory)."""

    def __init__(self, size: tuple[int, int] | None, line_min: float, unchanged_max: float):
        self.size = size
        self.line_min = line_min
        self.unchanged_max = unchanged_max
        self.last: tuple[np.ndarray, bytes] | None = None

    def detail(self, tap: np.ndarray, scale) -> bytes | None:
        """JPEG of the detail copy for this tap, or None. `scale(size)` returns the frame at `size` (BGR)."""
        if self.size is None:
            return None
        grey = cv2.cvtColor(tap, cv2.COLOR_BGR2GRAY)
        if text_line_fraction(grey) < self.line_min:
            return None
        if self.last is not None and (cv2.absdiff(self.last[0], grey) > 16).mean() <= self.unchanged_max:
            return self.last[1]
        ok, buf = cv2.imencode(".jpg", scale(self.size), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        self.last = (grey, buf.tobytes())
        return self.last[1]
