"""One clip to a latent sample: decode, resize to a resolution bucket, VAE-encode, embed per-chunk captions.

Time: frames are taken at `fps = chunk_frames * VAE time patch` (one chunk = one second, as in MAGI-1) and a
clip keeps its whole chunks only (up to `max_chunks`). Space: the bucket with the nearest aspect ratio; the
frame is scaled to cover it and centre-cropped. Chunk j carries the caption of the second it starts in.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vidmill.model.sizes import SIZES, VAEConfig, get_size
from vidmill.model.vae import VideoVAE


@dataclass(frozen=True)
class LatentsConfig:
    vae: str = "tiny"  # a size name (random init, untrained) or a local .safetensors VAE checkpoint
    size: str = "tiny"  # model size whose chunk length (and VAE config for a checkpoint) applies
    buckets: tuple[tuple[int, int], ...] = ()  # (height, width); default: the size's resolution in 3 shapes
    max_chunks: int = 8
    text: str = "minilm"
    text_path: str | None = None
    dtype: str = "float32"  # stored latent dtype: float32 | float16 | bfloat16
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def resolved_buckets(self) -> tuple[tuple[int, int], ...]:
        if self.buckets:
            return self.buckets
        h, w = get_size(self.size).resolution
        area, step = h * w, 16  # VAE 8x space, DiT patch 2: multiples of 16
        shapes = [(1, 1), (9, 16), (16, 9)]
        out = []
        for a, b in shapes:
            bh = max(step, round(math.sqrt(area * a / b) / step) * step)
            bw = max(step, round(area / bh / step) * step)
            out.append((bh, bw))
        return tuple(dict.fromkeys(out))

    @property
    def chunk_frames(self) -> int:
        return get_size(self.size).dit.chunk_frames

    def fps(self, vae: VAEConfig) -> float:
        return float(self.chunk_frames * vae.patch[0])


def choose_bucket(height: int, width: int, buckets) -> tuple[int, int]:
    ratio = math.log(width / max(1, height))
    return min(buckets, key=lambda b: (abs(math.log(b[1] / b[0]) - ratio), -b[0] * b[1]))


def describe_vae(spec: str, seed: int = 0) -> dict:
    if spec in SIZES:
        return {"vae": spec, "trained": False,
                "note": f"random init of the {spec} VAE (seed {seed}): untrained, latents carry no content"}
    return {"vae": spec, "trained": True}


def load_vae(spec: str, size: str, seed: int = 0) -> tuple[VideoVAE, dict]:
    """(VAE in eval mode, description). A size name gives a seeded random init, reported as untrained."""
    if spec in SIZES:
        torch.manual_seed(seed)
        return VideoVAE(get_size(spec).vae).eval(), describe_vae(spec, seed)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--vae {spec!r} is neither a size ({', '.join(SIZES)}) nor a file")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
    size_name, overrides = _run_config(path)
    size_name = meta.get("size") or size_name or size
    cfg = replace(get_size(size_name).vae, **overrides)
    vae = VideoVAE(cfg)
    state = {k.removeprefix("vae."): v for k, v in load_file(str(path)).items()}
    vae.load_state_dict(state)
    return vae.eval(), {"vae": str(path), "trained": True, "size": size_name}


def _run_config(path: Path) -> tuple[str | None, dict]:
    """The size (and VAEConfig overrides) in the config.yaml of the training run a checkpoint belongs to
    (RUN/checkpoints/step-N/vae.safetensors -> RUN/config.yaml), if there is one."""
    import yaml

    fields = set(VAEConfig.__dataclass_fields__)
    for parent in list(path.parents)[:3]:
        config = parent / "config.yaml"
        if config.is_file():
            data = yaml.safe_load(config.read_text()) or {}
            size = data.get("size")
            size = size.get("name") if isinstance(size, dict) else size
            vae = data.get("vae") if isinstance(data.get("vae"), dict) else {}
            overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in vae.items() if k in fields}
            return size, overrides
    return None, {}


def read_frames(data: bytes, fps: float, n_frames: int, bucket: tuple[int, int]) -> torch.Tensor:
    """[3, n_frames, H, W] in [-1, 1]: the frame showing at each k / fps, covered and centre-cropped."""
    import av
    import cv2

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base) if f.pts is not None else i / fps, f.to_ndarray(format="rgb24"))
                   for i, f in enumerate(container.decode(stream))]
    if not decoded:
        raise ValueError("no frames decoded")
    start = decoded[0][0]
    times = np.array([t - start for t, _ in decoded])
    bh, bw = bucket
    out = np.empty((n_frames, bh, bw, 3), dtype=np.uint8)
    for k in range(n_frames):
        i = int(np.searchsorted(times, k / fps + 1e-6, side="right")) - 1
        frame = decoded[max(0, i)][1]
        h, w = frame.shape[:2]
        scale = max(bh / h, bw / w)
        rh, rw = max(bh, round(h * scale)), max(bw, round(w * scale))
        resized = cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_AREA)
        top, left = (rh - bh) // 2, (rw - bw) // 2
        out[k] = resized[top:top + bh, left:left + bw]
    video = torch.from_numpy(out).permute(3, 0, 1, 2).float()
    return video / 127.5 - 1.0


def chunk_captions(captions_per_second: list[str] | None, n_chunks: int, chunk_seconds: float) -> list[str | None]:
    """Chunk j gets the caption of the second its start falls in (None past the captions)."""
    seconds = list(captions_per_second or [])
    out = []
    for j in range(n_chunks):
        s = int(math.floor(j * chunk_seconds + 1e-6))
        out.append(seconds[s] if s < len(seconds) and seconds[s] else None)
    return out


class ClipEncoder:
    """Holds the VAE and the text encoder; turns one clip into its latent-shard members."""

    def __init__(self, config: LatentsConfig, device: str | None = None):
        self.config = config
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vae, self.vae_info = load_vae(config.vae, config.size, config.seed)
        self.vae = vae.to(self.device)
        from vidmill.model.text import TextEncoder

        self.text = TextEncoder(config.text, config.text_path, device=self.device)
        self.fps = config.fps(self.vae.cfg)
        self.frames_per_chunk = config.chunk_frames * self.vae.cfg.patch[0]
        self.buckets = config.resolved_buckets()

    @torch.no_grad()
    def encode(self, row: dict, mp4: bytes) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict]:
        """(latent tensors, caption tensors, info) of a clip; raises ValueError for a clip that cannot be used."""
        cfg = self.config
        n_chunks = min(cfg.max_chunks, int(math.floor(row["duration_s"] * self.fps / self.frames_per_chunk + 1e-6)))
        if n_chunks < 1:
            raise ValueError(f"clip of {row['duration_s']:.2f}s is shorter than one chunk "
                             f"({self.frames_per_chunk / self.fps:.2f}s)")
        bucket = choose_bucket(row["height"], row["width"], self.buckets)
        video = read_frames(mp4, self.fps, n_chunks * self.frames_per_chunk, bucket).to(self.device)
        mean, _ = self.vae.encode(video[None])
        latent = (mean[0] * self.vae.cfg.scale_factor).to(getattr(torch, cfg.dtype)).cpu().contiguous()
        captions = chunk_captions(row.get("captions_per_second"), n_chunks, self.frames_per_chunk / self.fps)
        text = {j: self.text.encode(c).clone() for j, c in enumerate(captions) if c is not None}
        info = {"bucket_h": bucket[0], "bucket_w": bucket[1], "fps": self.fps, "n_chunks": n_chunks,
                "latent_t": latent.shape[1], "latent_h": latent.shape[2], "latent_w": latent.shape[3],
                "captioned_chunks": len(text), "chunk_captions": captions}
        return latent, text, info
