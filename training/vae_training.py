"""VAE training on curated clips (no pretrained VAE can be downloaded here), run by the same Trainer.

Loss = L1 reconstruction + kl_weight * KL(q(z|x) || N(0, I)) + perceptual_weight * perceptual, where the
perceptual term compares VGG16 features of the frames (a feature-matching loss like LPIPS without its
learned linear heads) and needs local VGG16 weights (`vae.perceptual_path`, a torchvision state dict).
A pretrained VAE loads from local weights (`vae.path`) instead, and is then not trained.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidmill.model.vae import VideoVAE


@dataclass
class VideoClip:
    key: str
    video: torch.Tensor  # [3, T, H, W] in [-1, 1]
    caption: dict | None  # the curated caption JSON {"summary", "seconds": [{"t", "caption"}]}
    fps: float


@dataclass
class VideoBatch:
    videos: torch.Tensor  # [B, 3, T, H, W]
    keys: list[str] = field(default_factory=list)


def _decode(data: bytes, size: tuple[int, int], frames: int) -> tuple[torch.Tensor, float]:
    import av

    height, width = size
    out = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 24)
        for frame in container.decode(stream):
            out.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
            if len(out) == frames:
                break
    if not out:
        raise ValueError("no frames")
    video = torch.from_numpy(np.stack(out)).permute(3, 0, 1, 2).float() / 127.5 - 1
    return video, fps


def read_curated_clips(curated: Path, size: tuple[int, int], frames_multiple: int, max_frames: int,
                       ) -> tuple[list[VideoClip], dict[str, int]]:
    """Kept clips of a curated output (its WebDataset shards), resized, cut to a multiple of `frames_multiple`.

    Returns the clips and counts {"clips", "too_short", "corrupt"}; a bad member is skipped and counted.
    """
    clips, counts = [], {"clips": 0, "too_short": 0, "corrupt": 0}
    shards = sorted((curated / "shards").glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"{curated}/shards/*.tar not found: not a curated output")
    for shard in shards:
        members: dict[str, dict[str, bytes]] = {}
        try:
            with tarfile.open(shard) as tar:
                for info in tar:
                    if info.isfile():
                        key, _, ext = info.name.partition(".")
                        members.setdefault(key, {})[ext] = tar.extractfile(info).read()
        except (tarfile.TarError, OSError):
            counts["corrupt"] += 1
            continue
        for key, parts in sorted(members.items()):
            if "mp4" not in parts:
                continue
            try:
                video, fps = _decode(parts["mp4"], size, max_frames)
            except Exception:  # noqa: BLE001 (any decode failure of one member is counted, not fatal)
                counts["corrupt"] += 1
                continue
            usable = video.shape[1] // frames_multiple * frames_multiple
            if usable == 0:
                counts["too_short"] += 1
                continue
            caption = None
            if "txt" in parts:
                try:
                    caption = json.loads(parts["txt"].decode())
                except (ValueError, UnicodeDecodeError):
                    caption = {"summary": parts["txt"].decode(errors="replace"), "seconds": []}
            clips.append(VideoClip(key, video[:, :usable], caption, fps))
            counts["clips"] += 1
    return clips, counts


class ClipLoader:
    """Deterministic batches of equal-length clip windows; the same protocol as the latent loaders."""

    def __init__(self, clips: list[VideoClip], frames: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.windows = [c.video[:, s:s + frames] for c in clips
                        for s in range(0, c.video.shape[1] - frames + 1, frames)]
        if not self.windows:
            raise ValueError("no clip is long enough for VAE training")
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.epoch, self.index = 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]

    def __iter__(self) -> Iterator[VideoBatch]:
        while True:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(len(self.windows), generator=g).tolist()[self.rank::self.world]
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                continue
            take = order[self.index:self.index + self.batch_size]
            self.index += len(take)
            yield VideoBatch(torch.stack([self.windows[i] for i in take]), [str(i) for i in take])


class VGGPerceptual(torch.nn.Module):
    """Distances between VGG16 feature maps (relu1_2 .. relu4_3) of frames, from local weights."""

    LAYERS = (3, 8, 15, 22)

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models import vgg16

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"perceptual VGG16 weights not found at {path}")
        net = vgg16(weights=None)
        state = torch.load(path, weights_only=True)
        net.load_state_dict(state if any(k.startswith("features") for k in state) else {"features." + k: v
                                                                                         for k, v in state.items()},
                            strict=False)
        self.features = net.features[:max(self.LAYERS) + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None])
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None])

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b [B, 3, T, H, W] in [-1, 1]."""
        def frames(x):
            x = x.transpose(1, 2).flatten(0, 1)
            return ((x + 1) / 2 - self.mean) / self.std

        x, y, total = frames(a), frames(b), a.new_zeros(())
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in self.LAYERS:
                nx = x / (x.norm(dim=1, keepdim=True) + 1e-8)
                ny = y / (y.norm(dim=1, keepdim=True) + 1e-8)
                total = total + (nx - ny).pow(2).sum(1).mean()
        return total


class VAEObjective:
    name = "vae"

    def __init__(self, kl_weight: float, perceptual_weight: float = 0.0, perceptual_path: str | None = None):
        self.kl_weight, self.perceptual_weight = kl_weight, perceptual_weight
        self.perceptual = VGGPerceptual(perceptual_path) if perceptual_weight > 0 else None
        self.device = torch.device("cpu")

    def attach(self, trainer) -> None:
        self.device = trainer.device
        if self.perceptual is not None:
            self.perceptual.to(self.device)

    def loss(self, model: VideoVAE, batch: VideoBatch, step: int, rng: torch.Generator):
        videos = batch.videos.to(self.device)
        vae = getattr(model, "module", model)
        mean, logvar = vae.encode(videos)
        noise = torch.randn(mean.shape, generator=rng).to(self.device)
        recon = vae.decode(mean + (0.5 * logvar).exp() * noise).float()
        rec = F.l1_loss(recon, videos)
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).mean()
        loss = rec + self.kl_weight * kl
        metrics = {"reconstruction": float(rec.detach()), "kl": float(kl.detach()),
                   "tokens": float(mean[:, 0].numel()), "samples": float(len(videos))}
        if self.perceptual is not None:
            perceptual = self.perceptual(recon, videos)
            loss = loss + self.perceptual_weight * perceptual
            metrics["perceptual"] = float(perceptual.detach())
        return loss, metrics
