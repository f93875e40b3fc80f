"""`vidmill generate`: T2V, I2V and V2V from a RUN checkpoint, streamed chunk by chunk into an mp4.

The DiT's chunks come out of the ChunkSampler as soon as they are final; latent frames are decoded by the
VAE one attention window at a time (`vae.window` latent frames: windowed decoding equals whole decoding,
model/vae.py), so a chunk's frames reach the mp4, the `on_frames` callback and stdout as soon as its VAE
window is complete (every chunk when chunk_frames == vae.window, as in MAGI-1's sizes). Peak memory is the
sampler's bounded state plus one VAE window, whatever the length.

Checkpoint layout (the trainer's): RUN/config.yaml (size, dit/vae_model overrides, resolution, fps; a
`distill:` section marks a shortcut-distilled model), RUN/checkpoints/step-N/{dit,dit_ema,vae}.safetensors
and a COMPLETE marker.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vidmill.model.dit import DiT
from vidmill.model.sizes import ModelSize, get_size
from vidmill.model.vae import VideoVAE
from vidmill.training.sampler import ChunkSampler, SamplerConfig
from vidmill.training.video_io import Mp4Writer, read_frames, to_model_video, to_uint8_frames

STEP_CHOICES = (8, 12, 16, 32, 64)


@dataclass
class RunModels:
    dit: DiT
    vae: VideoVAE
    size: ModelSize
    distilled: bool  # shortcut-distilled: step-size conditioning, guidance folded in
    step: int
    config: dict[str, Any] = field(default_factory=dict)


def complete_steps(run_dir: Path) -> list[int]:
    ckpts = run_dir / "checkpoints"
    steps = [int(p.name.split("-", 1)[1]) for p in ckpts.glob("step-*") if (p / "COMPLETE").exists()] \
        if ckpts.is_dir() else []
    return sorted(steps)


def size_from_config(config: dict[str, Any]) -> ModelSize:
    """The model size a RUN/config.yaml describes (size preset plus its dit / vae_model overrides)."""
    size = get_size(config.get("size", "tiny"))
    tuples = {"patch", "rope_grid"}
    dit = replace(size.dit, **{k: tuple(v) if k in tuples else v for k, v in (config.get("dit") or {}).items()})
    vae = replace(size.vae, **{k: tuple(v) if k in tuples else v for k, v in (config.get("vae_model") or {}).items()})
    extra = {k: tuple(config[k]) if k == "resolution" else config[k] for k in ("resolution", "frames", "fps")
             if k in config}
    return replace(size, dit=dit, vae=vae, **extra)


def load_run(run_dir: str | Path, step: int | None = None, ema: bool = True, device: str = "cpu") -> RunModels:
    """The newest (or the given) complete checkpoint of a run; EMA weights unless ema=False."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"not a training run (no config.yaml): {run_dir}")
    config = yaml.safe_load(config_path.read_text()) or {}
    steps = complete_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint under {run_dir / 'checkpoints'}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no complete checkpoint step-{step} in {run_dir} (have {steps})")
    folder = run_dir / "checkpoints" / f"step-{step}"
    size = size_from_config(config)
    dit, vae = DiT(size.dit), VideoVAE(size.vae)
    use_ema = ema and (folder / "dit_ema.safetensors").exists()
    dit_file = folder / ("dit_ema.safetensors" if use_ema else "dit.safetensors")
    dit.load_state_dict(load_file(str(dit_file)))
    vae_file = folder / "vae.safetensors"
    if not vae_file.exists() and config.get("vae", {}).get("path"):
        vae_file = Path(config["vae"]["path"])
    vae.load_state_dict(load_file(str(vae_file)))
    return RunModels(dit.to(device).eval(), vae.to(device).eval(), size, bool(config.get("distill")), step, config)


@dataclass
class GenerateRequest:
    prompt: str | None = None
    prompts_per_second: list[str] | None = None  # line i: the prompt of second i (last one repeats)
    seconds: float = 1.0  # length of the output video, the conditioning image / prefix included
    steps: int | None = None  # default: 8 for a distilled model, the size's steps otherwise
    image: str | Path | None = None  # I2V: first frame
    video: str | Path | None = None  # V2V: prefix video
    seed: int = 0
    guidance: bool | None = None  # default: off for a distilled model (one pass), on otherwise
    in_flight: int = 4
    window: int = 4
    use_cache: bool = True


class StreamingDecoder:
    """Decode latent frames one VAE window at a time, as soon as a window is complete."""

    def __init__(self, vae: VideoVAE, scale: float):
        self.vae, self.scale = vae, scale
        self.pending: list[torch.Tensor] = []

    def push(self, latent: torch.Tensor) -> Iterator[torch.Tensor]:
        """latent [C, f, H, W] (DiT scale) -> decoded windows [3, 4w, H', W'] in [-1, 1]."""
        self.pending.append(latent)
        while sum(x.shape[1] for x in self.pending) >= self.vae.window:
            frames = torch.cat(self.pending, dim=1)
            window, rest = frames[:, :self.vae.window], frames[:, self.vae.window:]
            self.pending = [rest] if rest.shape[1] else []
            yield self._decode(window)

    def flush(self) -> Iterator[torch.Tensor]:
        if self.pending:
            frames = torch.cat(self.pending, dim=1)
            self.pending = []
            yield self._decode(frames)

    @torch.no_grad()
    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((latent / self.scale)[None])[0]


@torch.no_grad()
def encode_prefix(vae: VideoVAE, frames: np.ndarray, size: ModelSize) -> torch.Tensor:
    """Conditioning frames -> DiT-scale latent [C, f, H, W]; an image is repeated over one latent frame."""
    pt = size.vae.patch[0]
    if len(frames) == 1:
        frames = np.repeat(frames, pt, axis=0)
    frames = frames[: len(frames) // pt * pt]
    if not len(frames):
        raise ValueError(f"the prefix video needs at least {pt} frames")
    video = to_model_video(frames, *size.resolution).to(next(vae.parameters()).device)
    mean, _ = vae.encode(video)
    return mean[0] * size.vae.scale_factor


def chunk_prompts(request: GenerateRequest, n_chunks: int, seconds_per_chunk: float) -> list[str | None]:
    """The prompt of each chunk: the line of the second its first frame falls in (the last line repeats)."""
    lines = request.prompts_per_second
    if not lines:
        return [request.prompt] * n_chunks
    return [lines[min(len(lines) - 1, math.floor(j * seconds_per_chunk + 1e-9))] for j in range(n_chunks)]


_ENCODERS: dict[tuple, Any] = {}


def text_encoder(config: dict[str, Any], max_tokens: int):
    """The run's text encoder (`text: {kind, path}` in config.yaml; MiniLM by default), loaded once."""
    from vidmill.model.text import TextEncoder

    text = config.get("text") or {}
    key = (text.get("kind", "minilm"), text.get("path"), max_tokens)
    if key not in _ENCODERS:
        _ENCODERS[key] = TextEncoder(key[0], key[1], max_tokens=max_tokens)
    return _ENCODERS[key]


def generate(models: RunModels, request: GenerateRequest, out: str | Path | None,
             on_frames: Callable[[np.ndarray, int], None] | None = None,
             on_progress: Callable[[dict], None] | None = None, measure_heap: bool = False) -> dict[str, Any]:
    """Generate `request.seconds` of video into `out` (mp4; None: callback only). Returns a summary.

    on_frames(frames [n, H, W, 3] uint8, first_frame_index) is called as each VAE window is decoded;
    on_progress(info) after each final chunk.
    """
    size, cfg = models.size, models.size.dit
    steps = request.steps or (8 if models.distilled else cfg.steps)
    if steps not in STEP_CHOICES or steps % request.in_flight:
        raise ValueError(f"--steps must be one of {STEP_CHOICES} and divisible by in_flight ({request.in_flight})")
    if request.image is not None and request.video is not None:
        raise ValueError("give either an image (I2V) or a video prefix (V2V), not both")
    fps, pt = size.fps, size.vae.patch[0]
    total_frames = round(request.seconds * fps)
    if total_frames < 1:
        raise ValueError("--seconds gives no frames")
    latent_frames = math.ceil(total_frames / pt)
    n_chunks = math.ceil(latent_frames / cfg.chunk_frames)
    height, width = size.resolution
    latent_hw = (height // size.vae.patch[1], width // size.vae.patch[2])

    prefix = None
    if request.image is not None or request.video is not None:
        frames = read_frames(request.image or request.video, None if request.video else 1)
        if request.image is not None:
            frames = frames[:1]
        if len(frames) >= total_frames:
            raise ValueError(f"the prefix ({len(frames)} frames) must be shorter than the output ({total_frames})")
        prefix = encode_prefix(models.vae, frames, size)

    frames_per_chunk = cfg.chunk_frames * pt
    prompts = chunk_prompts(request, n_chunks, frames_per_chunk / fps)
    encoder = text_encoder(models.config, cfg.max_text_tokens) if any(p for p in prompts) else None
    captions = [encoder.encode(p) if p else None for p in prompts] if encoder else [None] * n_chunks
    if encoder is not None and encoder.dim != cfg.text_dim:
        raise ValueError(f"text encoder gives {encoder.dim}-d features; the model expects {cfg.text_dim}")

    guidance = (not models.distilled) if request.guidance is None else request.guidance
    sampler = ChunkSampler(models.dit, SamplerConfig(
        steps=steps, in_flight=request.in_flight, window=request.window, use_cache=request.use_cache,
        step_conditioning=models.distilled, guidance=guidance))
    decoder = StreamingDecoder(models.vae, size.vae.scale_factor)
    writer = Mp4Writer(out, fps, width, height) if out is not None else None
    written, chunk_times = 0, []
    start = time.perf_counter()

    def emit(video: torch.Tensor) -> None:
        nonlocal written
        frames = to_uint8_frames(video)[: total_frames - written]
        if not len(frames):
            return
        if writer is not None:
            writer.write(frames)
        if on_frames is not None:
            on_frames(frames, written)
        written += len(frames)

    def run() -> None:
        stream = sampler.generate(n_chunks, latent_hw, captions=captions, prefix=prefix,
                                  generator=torch.Generator().manual_seed(request.seed))
        for index, latent in enumerate(stream):
            for video in decoder.push(latent):
                emit(video)
            chunk_times.append(time.perf_counter() - start)
            if on_progress is not None:
                on_progress({"chunk": index + 1, "chunks": n_chunks, "elapsed_s": round(chunk_times[-1], 3),
                             "frames_written": written, "forwards": sampler.forwards})
        for video in decoder.flush():
            emit(video)

    heap_peak = None
    try:
        if measure_heap:
            from vidmill.training.memory import PeakHeap

            with PeakHeap() as heap:
                run()
            heap_peak = heap.peak_bytes
        else:
            run()
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - start
    summary = {
        "out": None if out is None else str(out), "mode": "v2v" if request.video else "i2v" if request.image else "t2v",
        "frames": written, "fps": fps, "seconds": written / fps, "chunks": n_chunks, "steps": steps,
        "distilled": models.distilled, "guidance": guidance, "checkpoint_step": models.step,
        "wall_s": round(wall, 3), "video_s_per_wall_s": round(written / fps / wall, 4),
        "first_chunk_s": round(chunk_times[0], 3) if chunk_times else None, "forwards": sampler.forwards,
        "peak_state_mb": round(sampler.peak_state_bytes / 2**20, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if heap_peak is not None:
        summary["peak_heap_mb"] = round(heap_peak / 2**20, 3)
    if torch.cuda.is_available():
        summary["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return summary


def progress_to_stderr(info: dict) -> None:
    print(f"chunk {info['chunk']}/{info['chunks']} final at {info['elapsed_s']:.2f} s, "
          f"{info['frames_written']} frames written", file=sys.stderr, flush=True)
