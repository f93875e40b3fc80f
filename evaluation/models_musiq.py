"""MUSIQ (SPAQ weights) for VBench's Imaging Quality: pyiqa 0.1.16's architecture, weights from a local file.

Upstream builds `pyiqa.archs.musiq_arch.MUSIQ(pretrained_model_path=<musiq_spaq_ckpt-358bb6af.pth>)` (SPAQ: one
output, the MOS on ~0-100; multi-scale input 224/384 plus the native resolution, hash-based spatial and scale
embeddings), sets `training = False` and scores each frame at batch 1. Here the same class is built with
`pretrained=False` (its URL download never runs) and the file is loaded strictly through weights.py.

pyiqa is installed with `--no-deps` (its dependency list pulls the GUI opencv-python, which replaces our headless
cv2); `pyiqa.archs.musiq_arch` imports with torch, torchvision and huggingface_hub only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vidmill.evaluation.weights import WeightsMissing, load_into, weight_path

SPAQ_KWARGS: dict[str, Any] = {"num_class": 1}  # pyiqa's defaults otherwise: patch 32, width 384, 14 layers, 6 heads


def musiq_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """`vbench.arch.musiq`: "musiq_spaq" (upstream's model) or a JSON file of MUSIQ kwargs (tests: a tiny one)."""
    arch = str(config["vbench"]["arch"]["musiq"])
    if arch == "musiq_spaq":
        return dict(SPAQ_KWARGS)
    if arch.endswith(".json"):
        return json.loads(Path(arch).read_text())
    raise ValueError(f"vbench.arch.musiq must be musiq_spaq or a .json file of MUSIQ kwargs, not {arch}")


def build_musiq(config: dict[str, Any]) -> torch.nn.Module:
    """pyiqa's MUSIQ with the configured checkpoint loaded strictly (a checkpoint of another shape is an error)."""
    path = weight_path(config, "musiq")
    try:
        from pyiqa.archs.musiq_arch import MUSIQ
    except ImportError as exc:
        raise WeightsMissing(f"not computed: model not available (pyiqa's MUSIQ does not import: {exc}; "
                             "pip install --no-deps pyiqa==0.1.16)") from exc

    model = MUSIQ(**musiq_kwargs(config), pretrained=False, pretrained_model_path=None)
    load_into(model, path)
    return model.eval()


def musiq_score_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """(1, 3, H, W) RGB on [0, 1] -> the MOS (0-100 scale for SPAQ); the model maps to [-1, 1] and crops itself."""
    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)
    return score
