"""Content fingerprints for dedup: an exact hash of the sampled frames and perceptual hashes of key frames."""

from __future__ import annotations

import hashlib
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from vidmill.pipeline.scoring.base import ClipScorer, Frames, key_frames
from vidmill.pipeline.scoring.registry import register


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash: 32x32 gray, low 8x8 DCT coefficients against their median."""
    gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(gray.astype(np.float32))[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@register
class ContentHashes(ClipScorer):
    """Always on (dedup needs it); gives no reject reason itself (dedup does)."""

    name = "hashes"
    status_column = "hash_status"
    columns = {"content_hash": pa.string(), "phash": pa.string(), "phashes": pa.list_(pa.string()),
               "hash_status": pa.string()}
    resources_key = "quality"
    manifest_order = 50

    @classmethod
    def enabled(cls, config) -> bool:
        return True

    def score(self, frames: Frames) -> dict[str, Any]:
        digest = hashlib.sha1()
        for _, image in frames:
            digest.update(image.tobytes())
        hashes = [f"{phash(image):016x}" for image in key_frames(frames)]
        return {"content_hash": digest.hexdigest(), "phash": hashes[1], "phashes": hashes}
