"""Training configuration as data: a size preset plus the optimiser, objective, parallelism and VAE settings.

`--config` takes a size name (tiny, small, 4.5B, 24B) or a YAML file:

```yaml
size: tiny            # the model registry entry (model/sizes.py); `dit:` / `vae:` keys override its fields
train: {lr: 3.0e-4, warmup_steps: 10, grad_accum: 2, ...}      # TrainConfig fields
objective: {caption_dropout: 0.1, context_dropout: 0.1, ...}    # FlowMatchingConfig fields
vae: {path: /weights/vae.safetensors}                            # VAE settings (VAETrainConfig)
data: {text_encoder: minilm}                                     # curated-output conversion (DataConfig)
eval: {every: 500, at_end: true, physics_iq: {real: /data/physics-IQ-benchmark}}  # tail tasks (EvalConfig)
```

The resolved configuration is written to RUN/config.yaml, which is all `load_models` needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from vidmill.model.sizes import DiTConfig, ModelSize, VAEConfig, get_size


@dataclass
class TrainConfig:
    steps: int = 100  # the run's total optimiser steps (`--steps` overrides)
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per optimiser step (per rank)
    ema_decay: float = 0.999
    token_budget: int = 1024  # latent tokens per packed micro-batch (per rank)
    checkpoint_every: int = 50
    keep_checkpoints: int = 3  # newest complete checkpoints kept (0: keep all)
    log_every: int = 1
    seed: int = 0
    parallel: str = "auto"  # auto | none | ddp | fsdp
    compile: bool = False
    activation_checkpointing: bool = False
    attention: str = "sdpa"  # sdpa | flex | flash (model/attention.py)
    bf16: bool = True  # autocast to bfloat16 on CUDA (never on CPU)
    deterministic: bool = True  # torch.use_deterministic_algorithms: bit-exact resume
    num_threads: int = 0  # torch CPU threads per rank (0: torch's default)


@dataclass
class FlowMatchingConfig:
    window_chunks: int = 4  # W: chunks denoised together at inference (SamplerConfig.in_flight)
    tail_prob: float = 0.2  # newest chunk beyond the first stage (the end of a video: no younger chunk)
    caption_dropout: float = 0.1  # null caption, context kept: the `cp` guidance term
    context_dropout: float = 0.1  # each noisy chunk alone with the null caption: the `u` term
    clean_t: float = 0.9999  # t of clean context chunks (the sampler's cache_t)
    attention_window: int | None = 4  # previous chunks a chunk may see (the sampler's window)


@dataclass
class VAETrainConfig:
    path: str | None = None  # local pretrained weights (safetensors); skips VAE training
    steps: int = 200
    lr: float = 2e-4
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.0
    perceptual_path: str | None = None  # local VGG16 feature weights for the perceptual term
    batch_size: int = 2


@dataclass
class DataConfig:
    text_encoder: str = "minilm"  # minilm (embedded, 384-d) | t5 (local path, 4096-d): must match dit.text_dim
    text_path: str | None = None
    clip_frames: int | None = None  # video frames per clip from a curated output (default: the size's frames)


@dataclass
class EvalConfig:
    """Evaluation of the run's checkpoints as tail tasks (evaluation/tail_schedule.py; docs/tail.md)."""

    every: int = 0  # evaluate every N steps (a checkpoint is written at those steps); 0: never periodically
    at_end: bool = False  # evaluate the final checkpoint
    background: bool = True  # a subprocess per evaluation, training goes on; False: in-process, training waits
    device: str = "cpu"  # where the evaluation generates (cuda shares the trainer's GPU)
    steps: int | None = None  # sampling steps for generation (default: the model's)
    num_threads: int = 1  # torch CPU threads of a background evaluation (0: torch's default)
    keep_videos: bool = True  # keep the generated videos under RUN/eval/step-N/
    wait_at_end: bool = True  # the run returns only when its evaluations have finished
    physics_iq: dict[str, Any] | None = None  # {real: DIR, fps, mode: v2v|i2v, limit, mask_round_trip} (PhysicsIQTail)
    vbench: dict[str, Any] | None = None  # {images: DIR, config: eval.yaml, seconds} (VBenchTail)

    @property
    def enabled(self) -> bool:
        return bool((self.every or self.at_end) and (self.physics_iq or self.vbench))

    def due(self, step: int, final: bool) -> bool:
        """True at every `every`-th step and, with at_end, at the run's last step."""
        return self.enabled and ((final and self.at_end) or bool(self.every and step > 0 and step % self.every == 0))


@dataclass
class RunConfig:
    size: ModelSize
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size.name, "dit": _plain(asdict(self.size.dit)),
                "vae_model": _plain(asdict(self.size.vae)),
                "resolution": list(self.size.resolution), "frames": self.size.frames, "fps": self.size.fps,
                "train": _plain(asdict(self.train)), "objective": asdict(self.objective), "vae": asdict(self.vae),
                "data": asdict(self.data), "eval": asdict(self.eval)}

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _update(obj, values: dict[str, Any] | None, what: str):
    if not values:
        return obj
    known = {f.name: f for f in fields(obj)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(sorted(unknown))}")
    coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return replace(obj, **coerced)


def from_dict(data: dict[str, Any]) -> RunConfig:
    size = get_size(data.get("size", "tiny"))
    dit: DiTConfig = _update(size.dit, data.get("dit"), "dit")
    vae_model: VAEConfig = _update(size.vae, data.get("vae_model"), "vae_model")
    extra = {k: tuple(data[k]) if k == "resolution" else data[k] for k in ("resolution", "frames", "fps") if k in data}
    size = replace(size, dit=dit, vae=vae_model, **extra)
    return RunConfig(size, _update(TrainConfig(), data.get("train"), "train"),
                     _update(FlowMatchingConfig(), data.get("objective"), "objective"),
                     _update(VAETrainConfig(), data.get("vae"), "vae"),
                     _update(DataConfig(), data.get("data"), "data"),
                     _update(EvalConfig(), data.get("eval"), "eval"))


def load_config(spec: str | Path) -> RunConfig:
    """A size name, or a YAML file (see the module docstring)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return from_dict(yaml.safe_load(path.read_text()) or {})
    return RunConfig(get_size(str(spec)))
