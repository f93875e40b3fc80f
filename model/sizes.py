"""Size presets: tiny (tests, CPU demo), small, and the published 4.5B and 24B configurations.

Parameter counts are computed by building the real modules on the meta device (no memory used).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 16
    patch: tuple[int, int, int] = (4, 8, 8)  # time, height, width compression
    dim: int = 1024
    depth: int = 24  # transformer blocks on each side
    heads: int = 16
    mlp_ratio: float = 4.0
    scale_factor: float = 0.18215


@dataclass(frozen=True)
class DiTConfig:
    latent_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    hidden: int = 3072
    depth: int = 34
    ffn: int = 12288
    activation: str = "gelu"  # gelu | swiglu
    heads: int = 24
    kv_groups: int = 8
    head_dim: int = 128
    text_dim: int = 4096  # T5 features
    max_text_tokens: int = 800
    cond_ratio: float = 0.25  # conditioning width = hidden * cond_ratio
    chunk_frames: int = 6  # latent frames per chunk (24 video frames at 4x time compression)
    rope_grid: tuple[int, int] = (45, 45)  # reference latent-patch grid spatial positions are rescaled to
    steps: int = 64
    distilled_steps: int = 64

    @property
    def cond_dim(self) -> int:
        return int(self.hidden * self.cond_ratio)


@dataclass(frozen=True)
class ModelSize:
    name: str
    dit: DiTConfig
    vae: VAEConfig
    resolution: tuple[int, int] = (720, 720)  # height, width
    frames: int = 96
    fps: int = 24
    notes: str = ""
    extra: dict = field(default_factory=dict)


_BASE = DiTConfig()

SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(
        "tiny",
        replace(_BASE, hidden=64, depth=2, ffn=128, heads=4, kv_groups=2, head_dim=16, text_dim=384,
                max_text_tokens=32, chunk_frames=2, rope_grid=(8, 8), steps=8, distilled_steps=4),
        VAEConfig(dim=64, depth=1, heads=4),
        resolution=(64, 64), frames=16, notes="tests and the CPU demo; text_dim 384 = MiniLM"),
    "small": ModelSize(
        "small",
        replace(_BASE, hidden=512, depth=8, ffn=2048, heads=8, kv_groups=4, head_dim=64, text_dim=384,
                max_text_tokens=128, chunk_frames=3, rope_grid=(16, 16), steps=32, distilled_steps=8),
        VAEConfig(dim=256, depth=4, heads=8),
        resolution=(256, 256), frames=48, notes="single-GPU experiments"),
    "4.5B": ModelSize("4.5B", _BASE, VAEConfig(), resolution=(720, 720), frames=96,
                      notes="public MAGI-1 4.5B config"),
    "24B": ModelSize(
        "24B",
        replace(_BASE, latent_channels=32, hidden=6144, depth=48, ffn=16384, activation="swiglu", heads=48,
                kv_groups=8, head_dim=128, steps=32, distilled_steps=16),
        VAEConfig(), resolution=(720, 1280), frames=96,
        notes="public MAGI-1 24B config; latent channels 32 = the 16-channel VAE latent duplicated"),
}


def get_size(name: str) -> ModelSize:
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; known: {', '.join(SIZES)}")
    return SIZES[name]


def count_parameters(name: str) -> dict[str, int]:
    """Parameters of the DiT and the VAE of a size, counted on the meta device."""
    import torch

    from vidmill.model.dit import DiT
    from vidmill.model.vae import VideoVAE

    size = get_size(name)
    with torch.device("meta"):
        dit = DiT(size.dit)
        vae = VideoVAE(size.vae)
    return {"dit": sum(p.numel() for p in dit.parameters()), "vae": sum(p.numel() for p in vae.parameters())}


def describe(name: str) -> dict:
    size = get_size(name)
    return {"name": size.name, "notes": size.notes, "resolution": size.resolution, "frames": size.frames,
            "fps": size.fps, "dit": asdict(size.dit), "vae": asdict(size.vae),
            "parameters": count_parameters(name)}
