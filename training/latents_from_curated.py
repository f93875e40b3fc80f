"""A curated output -> a VAE (trained here, or loaded from local weights) -> RUN/latents.pt.

The in-process stand-in for `vidmill latents` (the shard-writing latents stage of the data side): decode
each kept clip's first frames at the size's resolution (native frame rate, no resampling), train the VAE
on them (RUN/vae/, its own resumable Trainer run) unless `vae.path` names pretrained weights, encode every
clip (posterior mean x scale_factor) and attach one caption per chunk: the per-second caption of the
second the chunk starts in, else the clip summary.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from vidmill.model.vae import VideoVAE
from vidmill.training.config import EvalConfig, RunConfig
from vidmill.training.data.memory import save_latents
from vidmill.training.data.sample import LatentSample
from vidmill.training.parallelize import DistInfo
from vidmill.training.vae_training import ClipLoader, VAEObjective, VideoClip, read_curated_clips


def train_vae(clips: list[VideoClip], config: RunConfig, run_dir: Path, frames: int, progress: bool) -> VideoVAE:
    from vidmill.training.trainer import Trainer

    vc = config.vae
    torch.manual_seed(config.train.seed)
    vae = VideoVAE(config.size.vae)
    vae_config = replace(config, train=replace(config.train, steps=vc.steps, lr=vc.lr, grad_accum=1, parallel="none",
                                               warmup_steps=min(config.train.warmup_steps, vc.steps // 4),
                                               checkpoint_every=max(1, vc.steps // 2), compile=False),
                         eval=EvalConfig())  # the run's evaluations are of the DiT, not of this VAE run
    loader = ClipLoader(clips, frames, vc.batch_size, config.train.seed)
    objective = VAEObjective(vc.kl_weight, vc.perceptual_weight, vc.perceptual_path)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    trainer = Trainer(vae_config, run_dir, vae, objective, loader, DistInfo(device=device), name="vae",
                      resume=True, progress=progress)
    trainer.fit(vc.steps)
    return vae.cpu().eval()


def chunk_captions(clip: VideoClip, n_chunks: int, video_frames_per_chunk: int, encoder) -> list[torch.Tensor | None]:
    if clip.caption is None or encoder is None:
        return [None] * n_chunks
    seconds = [s.get("caption") for s in clip.caption.get("seconds", [])]
    summary = clip.caption.get("summary")
    out = []
    for j in range(n_chunks):
        second = int(j * video_frames_per_chunk / max(clip.fps, 1e-6))
        text = seconds[second] if second < len(seconds) and seconds[second] else summary
        out.append(encoder.encode(text) if text else None)
    return out


def encode_curated(curated: Path, config: RunConfig, out: Path, progress: bool = True) -> list[LatentSample]:
    from safetensors.torch import load_file

    from vidmill.model.text import TextEncoder

    dit, size = config.size.dit, config.size
    per_chunk = dit.chunk_frames * size.vae.patch[0]  # video frames per DiT chunk
    max_frames = config.data.clip_frames or size.frames
    clips, counts = read_curated_clips(curated, size.resolution, per_chunk, max_frames)
    print(f"latents: {counts['clips']} clips from {curated} ({counts['corrupt']} corrupt, {counts['too_short']} too "
          f"short, skipped)", file=sys.stderr, flush=True)
    if not clips:
        raise ValueError(f"{curated}: no usable kept clip to train on")
    if config.vae.path:
        vae = VideoVAE(size.vae)
        vae.load_state_dict(load_file(config.vae.path))
        vae.eval()
    else:
        vae = train_vae(clips, config, out / "vae", per_chunk, progress)
    encoder = TextEncoder(config.data.text_encoder, config.data.text_path, dit.max_text_tokens)
    if encoder.dim != dit.text_dim:
        raise ValueError(f"text encoder {config.data.text_encoder!r} gives {encoder.dim}-d features; the DiT takes "
                         f"{dit.text_dim}")
    samples = []
    with torch.no_grad():
        for i, clip in enumerate(clips):
            mean, _ = vae.encode(clip.video[None])
            latent = (mean[0] * size.vae.scale_factor).float()
            n_chunks = latent.shape[1] // dit.chunk_frames
            latent = latent[:, :n_chunks * dit.chunk_frames]
            samples.append(LatentSample(clip.key, latent, chunk_captions(clip, n_chunks, per_chunk, encoder)))
            if progress:
                print(f"\rlatents: encoded {i + 1}/{len(clips)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / "vae.safetensors"))
    save_latents(out / "latents.pt", samples)
    return samples
