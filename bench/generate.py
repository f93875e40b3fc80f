"""Generation benchmarks, measured side by side in one run (random-init models: speed and memory only).

1. Seconds of video per wall second for 64 / 16 / 8 steps per size: 64 steps is the base model with MAGI's
   guidance (3 passes while t < 0.3); 16 and 8 steps a distilled model (step-size conditioning, one pass).
   The whole `vidmill generate` path: sampler, VAE decode per window, mp4 writing.
2. KV-cache inference vs recomputing all previous chunks (same outputs; window large enough to see all).
3. Peak memory vs video length (CPU: heap peak after every operator; CUDA: max allocated).

    python bench/generate.py [--sizes tiny small] [--steps 64 16 8] [--throughput-chunks 4] [--chunks 2 4 8]
                             [--memory-chunks 2 4 8 16] [--only-throughput]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vidmill.model.dit import DiT
from vidmill.model.sizes import get_size
from vidmill.model.vae import VideoVAE
from vidmill.training.generate import GenerateRequest, RunModels, generate
from vidmill.training.sampler import ChunkSampler, SamplerConfig

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def models_for(size_name: str, distilled: bool) -> RunModels:
    torch.manual_seed(0)
    size = get_size(size_name)
    return RunModels(DiT(size.dit).to(DEVICE).eval(), VideoVAE(size.vae).to(DEVICE).eval(), size, distilled, 0)


def chunk_seconds(size_name: str) -> float:
    size = get_size(size_name)
    return size.dit.chunk_frames * size.vae.patch[0] / size.fps


def throughput(sizes: list[str], steps_list: list[int], chunks: int, out_dir: Path) -> None:
    print("\n1. video seconds per wall second (generate: sampler + VAE + mp4)")
    print(f"{'size':>6} {'steps':>5} {'model':>9} {'chunks':>6} {'wall s':>8} {'video s':>8} {'video s/wall s':>15} "
          f"{'first chunk s':>14} {'forwards':>9}")
    for name in sizes:
        for steps in steps_list:
            distilled = steps != 64
            models = models_for(name, distilled)
            request = GenerateRequest(seconds=chunks * chunk_seconds(name), steps=steps)
            s = generate(models, request, out_dir / f"{name}-{steps}.mp4")
            print(f"{name:>6} {steps:>5} {'distilled' if distilled else 'base+cfg':>9} {s['chunks']:>6} "
                  f"{s['wall_s']:8.2f} {s['seconds']:8.2f} {s['video_s_per_wall_s']:15.4f} {s['first_chunk_s']:14.2f} "
                  f"{s['forwards']:>9}")


def run_sampler(dit: DiT, n: int, hw: tuple[int, int], use_cache: bool, steps: int):
    sampler = ChunkSampler(dit, SamplerConfig(steps=steps, window=n, use_cache=use_cache))
    start = time.perf_counter()
    out = list(sampler.generate(n, hw, generator=torch.Generator().manual_seed(0)))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def cache_vs_recompute(size_name: str, chunks: list[int], hw: tuple[int, int], steps: int) -> None:
    torch.manual_seed(0)
    dit = DiT(get_size(size_name).dit).to(DEVICE).eval()
    run_sampler(dit, 2, hw, True, steps)  # warm-up
    print(f"\n2. KV cache vs recompute: size {size_name}, latent {hw}, {steps} steps, 4 chunks in flight")
    print(f"{'chunks':>6} {'kv cache s':>11} {'recompute s':>12} {'speed-up':>9} {'max diff':>9}")
    for n in chunks:
        cached_s, a = run_sampler(dit, n, hw, True, steps)
        recompute_s, b = run_sampler(dit, n, hw, False, steps)
        diff = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
        print(f"{n:>6} {cached_s:11.3f} {recompute_s:12.3f} {recompute_s / cached_s:8.2f}x {diff:9.1e}")


def memory_vs_length(size_name: str, chunks: list[int]) -> None:
    models = models_for(size_name, True)
    cuda = torch.cuda.is_available()
    print(f"\n3. peak memory vs length: size {size_name}, 8 steps, 4 in flight, window 4 "
          f"({'CUDA max allocated' if cuda else 'CPU heap peak'}; sampler state = KV cache + latents in flight)")
    print(f"{'chunks':>6} {'video s':>8} {'peak MiB':>9} {'state MiB':>10}")
    generate(models, GenerateRequest(seconds=2 * chunk_seconds(size_name), steps=8), None, measure_heap=not cuda)
    for n in chunks:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        s = generate(models, GenerateRequest(seconds=n * chunk_seconds(size_name), steps=8), None,
                     measure_heap=not cuda)
        peak = s["cuda_peak_mb"] if cuda else s["peak_heap_mb"]
        print(f"{n:>6} {s['seconds']:8.2f} {peak:9.2f} {s['peak_state_mb']:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 16, 8])
    parser.add_argument("--throughput-chunks", type=int, default=4)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--latent-hw", type=int, nargs=2, default=[16, 16])
    parser.add_argument("--cache-steps", type=int, default=8)
    parser.add_argument("--memory-chunks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--only-throughput", action="store_true", help="skip the cache and memory sections")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} (random-init weights; timings on a shared machine are noisy)")
    with tempfile.TemporaryDirectory() as tmp:
        throughput(args.sizes, args.steps, args.throughput_chunks, Path(tmp))
    if args.only_throughput:
        return
    cache_vs_recompute(args.sizes[0], args.chunks, tuple(args.latent_hw), args.cache_steps)
    memory_vs_length(args.sizes[0], args.memory_chunks)


if __name__ == "__main__":
    main()
