"""VBench I2V's learned models, built from local weights (weights.py), with upstream's exact preprocessing.

Real architectures from packages: DINO ViT-B/16 (timm's VisionTransformer, run with DINO's own forward and
position-embedding interpolation), CLIP ViT-B/32 and ViT-L/14 (open_clip, QuickGELU as OpenAI's weights
need), the LAION linear head (768 -> 1), RAFT (torchvision `raft_large`, whose C_T_V1 weights are the
original raft-things port), DreamSim (the `dreamsim` package, models_dreamsim.py) and MUSIQ (pyiqa's
architecture, models_musiq.py); AMT-S and CoTracker2 are hand-written (models_amt.py, models_cotracker.py) with
upstream's checkpoint key layouts. A dimension whose model cannot be built reports why (`not computed: ...`).

Every builder returns a plain callable on uint8 RGB frames (T, H, W, 3) so the formulas in vbench_i2v.py
stay model-free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidmill.evaluation.models_dreamsim import build_dreamsim, dreamsim_embed_fn
from vidmill.evaluation.models_musiq import build_musiq, musiq_score_fn
from vidmill.evaluation.weights import WeightsMissing, load_into, load_state_dict, weight_path

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
BATCH = 16


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB (T, H, W, 3) -> uint8 tensor (T, 3, H, W), as upstream's load_video returns."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def _normalize(x: torch.Tensor, norm: tuple) -> torch.Tensor:
    from torchvision.transforms import functional as TF

    return TF.normalize(x, list(norm[0]), list(norm[1]))


def dino_frames_transform(frames: torch.Tensor) -> torch.Tensor:
    """Subject consistency: Resize(224, bilinear, antialias=False) on the short side, /255, ImageNet norm."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = TF.resize(frames, 224, interpolation=InterpolationMode.BILINEAR, antialias=False)
    return _normalize(x.float().div(255.0), IMAGENET)


def dino_i2v_transform(frames: torch.Tensor) -> torch.Tensor:
    """I2V-Subject frames: Resize(256, bicubic) with torchvision's default antialias, CenterCrop(224), /255, ImageNet.

    Upstream's `dino_transform_internet` leaves antialias unset, so current torchvision antialiases tensors.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = TF.resize(frames, 256, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return _normalize(TF.center_crop(x, 224).float().div(255.0), IMAGENET)


def dino_i2v_image_transform(image) -> torch.Tensor:
    """I2V-Subject input image (PIL, as upstream opens it): Resize(256, bicubic), CenterCrop(224), ToTensor, norm."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = TF.center_crop(TF.resize(image, 256, interpolation=InterpolationMode.BICUBIC), 224)
    return _normalize(TF.to_tensor(x), IMAGENET)[None]


def clip_transform(frames: torch.Tensor) -> torch.Tensor:
    """Background consistency / aesthetic: Resize(224, bicubic, antialias=False), CenterCrop(224), /255, CLIP norm."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = TF.resize(frames, 224, interpolation=InterpolationMode.BICUBIC, antialias=False)
    return _normalize(TF.center_crop(x, 224).float().div(255.0), CLIP_NORM)


def dreamsim_transform(frames: torch.Tensor) -> torch.Tensor:
    """I2V-Background frames: square Resize((224, 224), bicubic, torchvision's default antialias), /255."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return TF.resize(frames, [224, 224], interpolation=InterpolationMode.BICUBIC, antialias=True).float().div(255.0)


def dreamsim_image_transform(image) -> torch.Tensor:
    """I2V-Background input image (PIL): Resize((224, 224), bicubic), ToTensor."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return TF.to_tensor(TF.resize(image, [224, 224], interpolation=InterpolationMode.BICUBIC))[None]


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


# DINO ViT-B/16 -------------------------------------------------------------------------------------------------

def dino_pos_embed(pos_embed: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """DINO's interpolate_pos_encoding: bicubic with scale factors (n + 0.1)/sqrt(N) when the grid changes."""
    n = pos_embed.shape[1] - 1
    rows, cols = height // patch, width // patch
    if rows * cols == n and height == width:
        return pos_embed
    side = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / math.sqrt(n), (cols + 0.1) / math.sqrt(n)), mode="bicubic")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


def dino_forward(model, x: torch.Tensor) -> torch.Tensor:
    """DINO's forward over timm's modules: CLS token of the final norm (no head)."""
    patch = model.patch_embed.proj.kernel_size[0]
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    tokens = tokens + dino_pos_embed(model.pos_embed, x.shape[-2], x.shape[-1], patch)
    return model.norm(model.blocks(tokens))[:, 0]


def build_dino(config: dict[str, Any]):
    import timm

    path = weight_path(config, "dino_vitb16")
    arch = str(config["vbench"]["arch"]["dino_vitb16"])
    if arch.endswith(".json"):
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(**json.loads(Path(arch).read_text()) | {"num_classes": 0})
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    load_into(model, path, drop_prefixes=("head.",))
    return model.eval()


# CLIP (open_clip) and the LAION head ---------------------------------------------------------------------------

def build_clip(config: dict[str, Any], key: str):
    import open_clip

    path = weight_path(config, key)
    arch = str(config["vbench"]["arch"][key])
    if arch.endswith(".json"):
        open_clip.add_model_config(arch)
        arch = Path(arch).stem
    model = open_clip.create_model(arch, pretrained=str(path), device="cpu")
    return model.eval()


def build_laion_head(config: dict[str, Any], dim: int = 768) -> torch.nn.Linear:
    path = weight_path(config, "laion_head")
    head = torch.nn.Linear(dim, 1)
    state = load_state_dict(path)
    head.load_state_dict({k.removeprefix("layers.0."): v for k, v in state.items()})
    return head.eval()


# AMT-S and CoTracker2 (hand-written architectures: models_amt.py, models_cotracker.py) ------------------------

def _arch_kwargs(config: dict[str, Any], key: str, default: str) -> dict[str, Any]:
    """`vbench.arch.<key>`: the published size (`default`) or a JSON file of constructor kwargs (tests: tiny)."""
    arch = str(config["vbench"]["arch"][key])
    if arch == default:
        return {}
    if arch.endswith(".json"):
        return json.loads(Path(arch).read_text())
    raise ValueError(f"vbench.arch.{key} must be {default} or a JSON file of its config, not {arch}")


def build_amt(config: dict[str, Any]):
    from vidmill.evaluation.models_amt import AMT, AMTConfig

    path = weight_path(config, "amt_s")
    model = AMT(AMTConfig(**_arch_kwargs(config, "amt_s", "amt-s")))
    load_into(model, path)
    return model.eval()


def build_cotracker(config: dict[str, Any]):
    from vidmill.evaluation.models_cotracker import CoTracker2, CoTrackerConfig

    path = weight_path(config, "cotracker2")
    model = CoTracker2(CoTrackerConfig(**_arch_kwargs(config, "cotracker2", "cotracker2")))
    load_into(model, path)
    return model.eval()


# RAFT (torchvision) --------------------------------------------------------------------------------------------

def build_raft(config: dict[str, Any]):
    from torchvision.models import optical_flow

    path = weight_path(config, "raft")
    arch = str(config["vbench"]["arch"]["raft"])
    if arch not in ("raft_large", "raft_small"):
        raise ValueError(f"vbench.arch.raft must be raft_large or raft_small, not {arch}")
    model = getattr(optical_flow, arch)(weights=None, progress=False)
    load_into(model, path)
    return model.eval()


def pad_to_8(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RAFT's InputPadder (sintel mode): replicate-pad H and W up to multiples of 8, split evenly."""
    h, w = a.shape[-2:]
    ph, pw = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
    pad = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]
    return F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")


def raft_flow_fn(model, iters: int) -> Callable[[torch.Tensor, torch.Tensor], np.ndarray]:
    """(1, 3, H, W) float [0, 255] pairs -> padded flow (2, H', W'); RAFT's own 2 x / 255 - 1 input scaling."""
    def flow(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        a, b = pad_to_8(a, b)
        with torch.no_grad():
            out = model(2 * (a / 255.0) - 1, 2 * (b / 255.0) - 1, num_flow_updates=iters)[-1]
        return out[0].numpy()
    return flow


@dataclass
class Probes:
    """Per-dimension model callables. Each is None when the model could not be built (see `reasons`)."""

    dino: Callable[[torch.Tensor], torch.Tensor] | None = None  # normalised input batch -> features
    clip_b32: Callable[[torch.Tensor], torch.Tensor] | None = None
    clip_l14: Callable[[torch.Tensor], torch.Tensor] | None = None
    laion_head: Callable[[torch.Tensor], torch.Tensor] | None = None
    dreamsim: Callable[[torch.Tensor], torch.Tensor] | None = None  # [0, 1] 224 x 224 batch -> embeddings
    flow: Callable[[torch.Tensor, torch.Tensor], np.ndarray] | None = None
    interpolate: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # uint8 RGB pair -> uint8 middle
    musiq: Callable[[torch.Tensor], torch.Tensor] | None = None  # (1, 3, H, W) [0, 1] -> score on 0-100
    tracker: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None  # frames -> first/last int grid
    reasons: dict[str, str] | None = None


def build_probes(config: dict[str, Any]) -> Probes:
    """Build every model that has local weights; record the reason for each that has none."""
    torch.manual_seed(0)
    probes, reasons = Probes(), {}

    def attempt(name: str, make: Callable[[], Any], wrap: Callable[[Any], Any] = lambda model: model) -> Any:
        """Build one model; set the probe `name` to `wrap(model)`, or record why it has none."""
        try:
            model = make()
        except WeightsMissing as exc:
            reasons[name] = str(exc)
            return None
        setattr(probes, name, wrap(model))
        return model

    from vidmill.evaluation.models_amt import interpolator
    from vidmill.evaluation.models_cotracker import tracker

    attempt("dino", lambda: build_dino(config), lambda model: lambda x: dino_forward(model, x))
    attempt("clip_b32", lambda: build_clip(config, "clip_vitb32"), lambda model: model.encode_image)
    clip_l14 = attempt("clip_l14", lambda: build_clip(config, "clip_vitl14"), lambda model: model.encode_image)
    attempt("laion_head", lambda: build_laion_head(config, clip_l14.visual.output_dim if clip_l14 else 768))
    attempt("flow", lambda: build_raft(config), lambda model: raft_flow_fn(model, int(config["vbench"]["raft_iters"])))
    attempt("dreamsim", lambda: build_dreamsim(config), dreamsim_embed_fn)
    attempt("musiq", lambda: build_musiq(config), musiq_score_fn)
    attempt("interpolate", lambda: build_amt(config), interpolator)
    attempt("tracker", lambda: build_cotracker(config), tracker)
    probes.reasons = reasons
    return probes
