"""Aesthetic score: open_clip image embeddings (ViT-L-14 by default) and the LAION aesthetic head.

Both load from local files named in config (`scoring.aesthetic.clip_arch` an open_clip model name or a
local JSON architecture config, `scoring.aesthetic.clip_weights` as open_clip's
`pretrained=<path>`, `head_weights` as a state dict of the public MLP 768-1024-128-64-16-1 applied to
L2-normalised embeddings). Frames at 10 / 50 / 90 % of the clip; mean and min are stored, and the
middle frame's normalised embedding is kept for dedup and the dashboards. Without weights every clip
gets `aesthetic_status = not_scored: ...` and no number; no threshold is applied to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from vidmill.pipeline.config import AestheticScoring, Thresholds
from vidmill.pipeline.outcomes import Reason, ScoreStatus
from vidmill.pipeline.scoring.base import ClipScorer, Frames, ScoreBatch, below, key_frames
from vidmill.pipeline.scoring.registry import register

LOW_AESTHETIC = Reason("low_aesthetic", "CLIP + LAION aesthetic score below the minimum (only when scored)",
                       "thresholds.aesthetic_min")


def laion_head(dim: int = 768):
    """The public improved-aesthetic-predictor MLP (keys layers.0/2/4/6/7; no activations)."""
    from torch import nn

    class AestheticHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return AestheticHead()


@register
class AestheticScorer(ClipScorer):
    """Also keeps `clip_embedding` (middle frame), which goes to embeddings.parquet, not the manifest."""

    name = "aesthetic"
    status_column = "aesthetic_status"
    settings = AestheticScoring
    columns = {"aesthetic_mean": pa.float64(), "aesthetic_min": pa.float64(), "aesthetic_status": pa.string()}
    gives = (LOW_AESTHETIC,)
    manifest_order = 40
    expensive = True

    @classmethod
    def reasons(cls, row: Mapping[str, Any], th: Thresholds) -> list[str]:
        return [LOW_AESTHETIC.name] if below(row.get("aesthetic_mean"), th.aesthetic_min) else []

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config.scoring.aesthetic
        self.missing = self._missing_weights()
        self.model = None

    def _missing_weights(self) -> str | None:
        for label, path in (("clip_weights", self.cfg.clip_weights), ("head_weights", self.cfg.head_weights)):
            if not path:
                return str(ScoreStatus.not_scored(f"no weights (scoring.aesthetic.{label} is not set)"))
            if not Path(path).exists():
                return str(ScoreStatus.not_scored(f"no weights ({label} {path} not found)"))
        return None

    def setup(self) -> None:
        if self.missing or self.model is not None:
            return
        import open_clip
        import torch

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        arch = self.cfg.clip_arch
        if arch.endswith(".json"):  # a local architecture config: registered under its file stem
            open_clip.add_model_config(arch)
            arch = Path(arch).stem
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=self.cfg.clip_weights, device=device)
        self.model.eval()
        dim = self.model.visual.output_dim
        self.head = laion_head(dim).to(device).eval()
        self.head.load_state_dict(torch.load(self.cfg.head_weights, map_location=device, weights_only=True))

    def process(self, batch: ScoreBatch) -> dict[str, dict[str, Any]]:
        if self.missing:
            return {clip.clip_id: {self.status_column: self.missing} for clip in batch.clips}
        self.setup()
        return super().process(batch)

    def embed(self, images: list[np.ndarray]):
        import torch
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))) for im in images])
        with torch.no_grad():
            features = self.model.encode_image(pixels.to(self.device)).float()
        return torch.nn.functional.normalize(features, dim=-1)

    def score(self, frames: Frames) -> dict[str, Any]:
        import torch

        embeddings = self.embed(key_frames(frames))
        with torch.no_grad():
            scores = self.head(embeddings).squeeze(-1).cpu().numpy()
        return {"aesthetic_mean": round(float(scores.mean()), 5), "aesthetic_min": round(float(scores.min()), 5),
                "clip_embedding": [round(float(x), 6) for x in embeddings[1].cpu().numpy()]}
