"""DreamSim for VBench's I2V-Background, built offline from local files with the `dreamsim` package (0.2.1).

Upstream calls `dreamsim(pretrained=True)`: the "ensemble" model (DINO ViT-B/16 CLS of block 11, CLIP ViT-B/16 and
OpenCLIP ViT-B/16 projected embeddings, concatenated; LoRA adapters; `normalize_embeds=True`) and uses `.embed`.
This module calls that same function with its two network steps replaced:
- `download_weights` (fetches a zip into `cache_dir` when a file is missing) becomes a check that names what is
  missing (`WeightsMissing`, so the dimension reports `not computed: no weights (...)`);
- the DINO backbone, which the package loads through `torch.hub.load('facebookresearch/dino:main', ...)` (code and
  weights from the network), is built from the package's own copy of DINO's `vit_base(patch_size=16)` (the hub
  entry point's constructor) and the hub's weight file, read from disk.
Everything else (CLIP/OpenCLIP loaders, the ensemble, LoRA through peft, the embedding normalisation) is the
package's code.

Files, in upstream's own `cache_dir` layout (the unzipped `dreamsim_ensemble_checkpoint.zip`, plus the DINO file
that torch.hub saves under `<cache_dir>/checkpoints/` when upstream runs):
  <dir>/dino_vitb16_pretrain.pth, clip_vitb16_pretrain.pth.tar, open_clip_vitb16_pretrain.pth.tar,
  <dir>/ensemble_lora/adapter_config.json and adapter_model.safetensors|bin,
  <dir>/checkpoints/dino_vitbase16_pretrain.pth (else `vbench.weights.dino_vitb16`, the same official file).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vidmill.evaluation.weights import WeightsMissing, load_into, weight_path

ENSEMBLE_FILES = ("dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                  "ensemble_lora/adapter_config.json")
ADAPTER_WEIGHTS = ("ensemble_lora/adapter_model.safetensors", "ensemble_lora/adapter_model.bin")
HUB_DINO = "checkpoints/dino_vitbase16_pretrain.pth"
HEAD_KEYS = ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
             "last_layer.weight")


def missing_files(folder: Path) -> list[str]:
    """The ensemble files that `folder` lacks (the adapter weights may be .safetensors or .bin)."""
    missing = [name for name in ENSEMBLE_FILES if not (folder / name).exists()]
    if not any((folder / name).exists() for name in ADAPTER_WEIGHTS):
        missing.append("ensemble_lora/adapter_model.safetensors|bin")
    return missing


def dino_backbone_path(config: dict[str, Any], folder: Path) -> Path:
    """torch.hub's DINO ViT-B/16 file inside the DreamSim folder, else the configured DINO weights."""
    if (folder / HUB_DINO).exists():
        return folder / HUB_DINO
    try:
        return weight_path(config, "dino_vitb16")
    except WeightsMissing as exc:
        raise WeightsMissing(f"not computed: no weights (vbench.weights.dreamsim: {folder / HUB_DINO} not found, "
                             f"and vbench.weights.dino_vitb16 gives no DINO backbone either)") from exc


def build_dino_vitb16(backbone: Path, load_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """What the package's `create_model('dino_vitb16')` returns, without torch.hub: (DINO ViT-B/16, DINO head).

    The backbone is `vit_base(patch_size=16, num_classes=0)` (torch.hub's `dino_vitb16`) with the hub file loaded
    strictly; the head is the student head of `dino_vitb16_pretrain.pth`, assigned as the package does.
    """
    from dreamsim.feature_extraction import vision_transformer as vits

    model = vits.vit_base(patch_size=16, num_classes=0)
    load_into(model, backbone)
    state = torch.load(str(load_dir / "dino_vitb16_pretrain.pth"), map_location="cpu", weights_only=True)
    head = vits.DINOHead(model.embed_dim, 2048)
    for key in HEAD_KEYS:
        module_path, attr = key.rsplit(".", 1)
        getattr(head.get_submodule(module_path), attr).data = state["student"][f"module.head.{key}"]
    return model, head


@contextmanager
def offline_dreamsim(backbone: Path) -> Iterator[None]:
    """Swap the package's two network steps for local ones while `dreamsim()` builds (restored afterwards)."""
    from dreamsim import model as ds_model
    from dreamsim.feature_extraction.extractor import ViTExtractor

    package_create = ViTExtractor.create_model
    package_download = ds_model.download_weights

    def create_model(model_type: str, load_dir: str = "./models"):
        if model_type == "dino_vitb16":
            return build_dino_vitb16(backbone, Path(load_dir))
        if "dino" in model_type:
            raise ValueError(f"{model_type} would load through torch.hub; only the ensemble is supported offline")
        return package_create(model_type, load_dir)

    def check_files(cache_dir: str, dreamsim_type: str) -> None:
        if dreamsim_type != "ensemble":
            raise ValueError(f"DreamSim type {dreamsim_type}: only upstream's ensemble is supported offline")
        missing = missing_files(Path(cache_dir))
        if missing:
            raise WeightsMissing(f"not computed: no weights (vbench.weights.dreamsim: {cache_dir} lacks "
                                 f"{', '.join(missing)})")

    ViTExtractor.create_model = staticmethod(create_model)
    ds_model.download_weights = check_files
    try:
        yield
    finally:
        ViTExtractor.create_model = staticmethod(package_create)
        ds_model.download_weights = package_download


def build_dreamsim(config: dict[str, Any]) -> torch.nn.Module:
    """Upstream's `dreamsim(pretrained=True)` (ensemble, normalised embeddings) on the CPU from local files."""
    folder = weight_path(config, "dreamsim")
    if not folder.is_dir():
        raise WeightsMissing(f"not computed: no weights (vbench.weights.dreamsim: {folder} is not a folder)")
    missing = missing_files(folder)
    if missing:
        raise WeightsMissing(f"not computed: no weights (vbench.weights.dreamsim: {folder} lacks {', '.join(missing)})")
    backbone = dino_backbone_path(config, folder)
    try:
        from dreamsim import dreamsim
    except ImportError as exc:
        raise WeightsMissing(f"not computed: model not available (the dreamsim package does not import: {exc}; "
                             "pip install dreamsim==0.2.1)") from exc

    with offline_dreamsim(backbone), warnings.catch_warnings():
        # upstream's own sequence (get_peft_model, then PeftModel.from_pretrained on it) and DINO's old weight_norm
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated")
        model, _ = dreamsim(pretrained=True, device="cpu", cache_dir=str(folder), normalize_embeds=True,
                            dreamsim_type="ensemble")
    return model.eval()


def dreamsim_embed_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """[0, 1] (B, 3, 224, 224) -> (B, D) embeddings: upstream's `dream_model.embed`."""
    def embed(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.embed(x)
    return embed
