"""Evaluation config: defaults here, a YAML file over them, `--set key=value` over that.

Keys (all optional; a dimension whose weights are unset reports `not computed: no weights (...)`). Every model
runs on the CPU in float32 at the input's own size: the reference path (no GPU-dependent downscaling).

  vbench.weights.dino_vitb16     DINO ViT-B/16 state dict (facebookresearch/dino `dino_vitbase16_pretrain.pth` keys)
  vbench.weights.dreamsim        DreamSim ensemble folder, upstream's cache_dir: the unzipped ensemble checkpoint
                                 + checkpoints/dino_vitbase16_pretrain.pth (else dino_vitb16); models_dreamsim.py
  vbench.weights.clip_vitb32     OpenAI CLIP ViT-B/32 weights, as open_clip `pretrained=<path>`
  vbench.weights.clip_vitl14     OpenAI CLIP ViT-L/14 weights, as open_clip `pretrained=<path>`
  vbench.weights.laion_head      LAION aesthetic linear head 768 -> 1 (`sa_0_4_vit_l_14_linear.pth`)
  vbench.weights.amt_s           AMT-S checkpoint (upstream `amt-s.pth`, {"state_dict": ...}; models_amt.py)
  vbench.weights.raft            RAFT (things) as a torchvision `raft_large` state dict (torchvision's C_T_V1 port)
  vbench.weights.musiq           MUSIQ (SPAQ) state dict, pyiqa's `musiq_spaq_ckpt-358bb6af.pth` (models_musiq.py)
  vbench.weights.cotracker2      CoTracker2 checkpoint (upstream `cotracker2.pth`, a plain state dict; CC-BY-NC)
  vbench.arch.dino_vitb16        timm model name, or a JSON file of timm VisionTransformer kwargs (tests: tiny)
  vbench.arch.clip_vitb32        open_clip model name, or a local JSON architecture config
  vbench.arch.clip_vitl14        open_clip model name, or a local JSON architecture config
  vbench.arch.amt_s              amt-s (the published AMT-S), or a JSON file of AMTConfig kwargs (tests: tiny)
  vbench.arch.cotracker2         cotracker2 (the published model), or a JSON file of CoTrackerConfig kwargs (tiny)
  vbench.arch.raft               raft_large | raft_small (torchvision)
  vbench.arch.musiq              musiq_spaq (pyiqa MUSIQ, one output), or a JSON file of MUSIQ kwargs (tests: tiny)
  vbench.raft_iters              20 (upstream)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

WEIGHT_KEYS = ("dino_vitb16", "dreamsim", "clip_vitb32", "clip_vitl14", "laion_head", "amt_s", "raft", "musiq",
               "cotracker2")

DEFAULTS: dict[str, Any] = {
    "vbench": {
        "weights": {k: None for k in WEIGHT_KEYS},
        "arch": {"dino_vitb16": "vit_base_patch16_224", "clip_vitb32": "ViT-B-32-quickgelu",
                 "clip_vitl14": "ViT-L-14-quickgelu", "raft": "raft_large", "musiq": "musiq_spaq",
                 "amt_s": "amt-s", "cotracker2": "cotracker2"},
        "raft_iters": 20,
    },
}


def _merge(base: dict, over: dict, where: str = "") -> dict:
    for key, value in over.items():
        if key not in base:
            raise ValueError(f"unknown config key {where}{key}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value
    return base


def load_eval_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    config = copy.deepcopy(DEFAULTS)
    if path:
        _merge(config, yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw else None
        node: dict = {}
        parts = key.split(".")
        cursor = node
        for p in parts[:-1]:
            cursor = cursor.setdefault(p, {})
        cursor[parts[-1]] = value
        _merge(config, node)
    return config
