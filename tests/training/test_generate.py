"""`vidmill generate` on a tiny random-init checkpoint in the RUN layout: T2V, I2V, V2V, streaming, memory."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from vidmill.cli import main as cli_main
from vidmill.model.dit import DiT
from vidmill.model.sizes import get_size
from vidmill.model.vae import VideoVAE
from vidmill.training.generate import GenerateRequest, chunk_prompts, encode_prefix, generate, load_run
from vidmill.training.video_io import Mp4Writer, to_model_video, to_uint8_frames

FAST = {"steps": 8, "guidance": False}  # one pass per step: the guidance passes are tested in test_sampler.py
SIZE = get_size("tiny")  # 64x64, 24 fps, chunk = 2 latent frames = 8 video frames, VAE window 6 latent frames


def write_run(root: Path, distilled: bool = False) -> Path:
    """A tiny random-init run: RUN/config.yaml + checkpoints/step-0/{dit,dit_ema,vae}.safetensors + COMPLETE."""
    torch.manual_seed(0)
    dit, vae = DiT(SIZE.dit), VideoVAE(SIZE.vae)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    folder = root / "checkpoints" / "step-0"
    folder.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in dit.state_dict().items()}
    save_file(state, str(folder / "dit.safetensors"))
    save_file(state, str(folder / "dit_ema.safetensors"))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "vae.safetensors"))
    (folder / "COMPLETE").write_text("")
    config = {"size": "tiny", "fps": SIZE.fps, "resolution": list(SIZE.resolution)}
    if distilled:
        config["distill"] = {"teacher": "none"}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def models(run_dir):
    return load_run(run_dir)


def read_mp4(path: Path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        rate = float(container.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return frames, rate


def write_image(path: Path) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return image


def test_t2v_writes_a_playable_mp4_with_the_right_frames_and_fps(models, tmp_path):
    out = tmp_path / "t2v.mp4"
    summary = generate(models, GenerateRequest(seconds=1.0, **FAST), out)
    frames, rate = read_mp4(out)
    assert frames.shape == (24, 64, 64, 3) and rate == 24
    assert summary["frames"] == 24 and summary["chunks"] == 3 and summary["mode"] == "t2v"
    assert summary["peak_rss_mb"] > 0 and summary["peak_state_mb"] > 0


def test_chunks_stream_into_the_file_while_later_chunks_are_denoised(models, tmp_path):
    out = tmp_path / "stream.mp4"
    seen = []  # (first frame index, chunks final so far, frames a reader decodes from the file on disk now)
    progress = []

    def on_frames(frames, first):
        with av.open(str(out)) as container:  # the growing file, read while generation goes on
            readable = sum(1 for _ in container.decode(video=0))
        seen.append((first, len(progress), readable))

    summary = generate(models, GenerateRequest(seconds=2.0, **FAST), out, on_frames=on_frames,
                       on_progress=progress.append)
    assert summary["chunks"] == 6 and len(progress) == 6
    first, chunks_done, readable = seen[0]
    assert first == 0 and chunks_done < 6  # the first VAE window came out with later chunks still denoising
    assert readable >= 20  # ... and was already playable from disk (all but the newest frame)
    assert progress[0]["forwards"] < summary["forwards"] / 2
    assert read_mp4(out)[0].shape[0] == 48


def test_i2v_first_frame_matches_the_image_within_vae_error(models, tmp_path):
    image = write_image(tmp_path / "first.png")
    frames = []
    generate(models, GenerateRequest(seconds=1.0, **FAST, image=tmp_path / "first.png"), tmp_path / "i2v.mp4",
             on_frames=lambda f, first: frames.append(f))
    out = np.concatenate(frames)
    assert out.shape[0] == 24 and read_mp4(tmp_path / "i2v.mp4")[0].shape[0] == 24
    # VAE error: encode -> decode of the same image alone (an untrained tiny VAE reconstructs poorly)
    with torch.no_grad():
        latent = encode_prefix(models.vae, image[None], SIZE)
        recon = to_uint8_frames(models.vae.decode((latent / SIZE.vae.scale_factor)[None])[0])[0]
    vae_error = np.abs(recon.astype(float) - image).mean()
    first_error = np.abs(out[0].astype(float) - image).mean()
    assert first_error <= vae_error * 1.05 + 1.0, (first_error, vae_error)
    # and it is the image, not a free sample: a T2V first frame with the same seed is much further away
    t2v = []
    generate(models, GenerateRequest(seconds=1.0, **FAST), None, on_frames=lambda f, first: t2v.append(f))
    assert first_error < np.abs(t2v[0][0].astype(float) - image).mean()


def test_v2v_continues_a_prefix_video(models, tmp_path):
    prefix = tmp_path / "prefix.mp4"
    writer = Mp4Writer(prefix, 24, 64, 64)
    writer.write(np.stack([np.roll(write_image(tmp_path / "p.png"), 3 * i, axis=1) for i in range(12)]))
    writer.close()
    summary = generate(models, GenerateRequest(seconds=1.0, **FAST, video=prefix), tmp_path / "v2v.mp4")
    frames, rate = read_mp4(tmp_path / "v2v.mp4")
    assert summary["mode"] == "v2v" and frames.shape[0] == 24 and rate == 24
    # the 12 prefix frames (3 latent frames) are fixed: the latent of the continuation starts from them
    with av.open(str(prefix)) as c:
        pre = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    latent = encode_prefix(models.vae, pre, SIZE)
    assert latent.shape[1] == 3
    with pytest.raises(ValueError, match="shorter"):
        generate(models, GenerateRequest(seconds=0.25, video=prefix), None)


def test_chunkwise_prompts_map_seconds_to_chunks():
    request = GenerateRequest(prompts_per_second=["a cat", "a dog", None])
    assert chunk_prompts(request, 8, 1 / 3) == ["a cat"] * 3 + ["a dog"] * 3 + [None] * 2
    assert chunk_prompts(GenerateRequest(prompt="x"), 2, 1.0) == ["x", "x"]


def test_cli_generates_with_prompts_per_second(run_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball rolls\na blue ball bounces\n")
    out = tmp_path / "cli.mp4"
    code = cli_main(["generate", "--checkpoint", str(run_dir), "--prompts-per-second", str(prompts),
                     "--seconds", "1", "--steps", "8", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["frames"] == 24 and "chunk 3/3 final" in captured.err
    assert read_mp4(out)[0].shape[0] == 24
    assert cli_main(["generate", "--checkpoint", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_distilled_run_samples_with_step_conditioning_and_one_pass(tmp_path):
    models = load_run(write_run(tmp_path / "distilled", distilled=True))
    summary = generate(models, GenerateRequest(seconds=1.0), None)
    assert summary["distilled"] and summary["steps"] == 8 and not summary["guidance"]
    base = generate(load_run(tmp_path / "distilled"), GenerateRequest(seconds=1.0, guidance=True), None)
    assert summary["forwards"] < base["forwards"]  # one pass per step instead of three while t < 0.3


def _peak(models, chunks, in_flight=1, window=1):
    request = GenerateRequest(seconds=chunks / 3, in_flight=in_flight, window=window, **FAST)
    return generate(models, request, None, measure_heap=True)["peak_heap_mb"]


def test_peak_memory_is_flat_from_2_to_16_chunks(models):
    """Whole generation (DiT, KV cache, VAE windows, frames out): one chunk in flight, a one-chunk window.

    tiny's VAE window is 6 latent frames = 3 chunks: a 2-chunk video decodes one partial window (less memory),
    from 3 chunks on every window is full. With the default pipeline (4 in flight, window 4) the peak is flat
    once the pipeline is full; tests/test_sampler.py checks that at the sampler, bench/generate.py prints it.
    """
    _peak(models, 2)  # warm-up: one-off allocations
    two, three, sixteen = _peak(models, 2), _peak(models, 3), _peak(models, 16)
    assert abs(sixteen - three) / three < 0.10, (two, three, sixteen)
    assert two <= sixteen * 1.10, (two, three, sixteen)


def test_model_video_crops_and_resizes():
    frames = np.zeros((1, 48, 96, 3), np.uint8)
    frames[:, :, 24:72] = 255
    video = to_model_video(frames, 64, 64)
    assert video.shape == (1, 3, 1, 64, 64) and float(video.min()) > 0.99  # centre crop keeps the white square
