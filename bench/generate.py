"""Chunk-wise AR generation: KV-cache inference vs recomputing all previous chunks, as ratios.

Both runs use the same model, noise and settings (window large enough to see every previous chunk, so
the outputs are equal); the baseline re-encodes the finished chunks in every forward.

    python bench/generate.py [--size tiny|small] [--chunks 2 4 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from vidmill.model.dit import DiT
from vidmill.model.sizes import get_size
from vidmill.training.sampler import ChunkSampler, SamplerConfig


def run(dit: DiT, n: int, hw: tuple[int, int], use_cache: bool, steps: int) -> tuple[float, list[torch.Tensor]]:
    sampler = ChunkSampler(dit, SamplerConfig(steps=steps, window=n, use_cache=use_cache))
    start = time.perf_counter()
    out = list(sampler.generate(n, hw, generator=torch.Generator().manual_seed(0)))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--latent-hw", type=int, nargs=2, default=[16, 16])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    dit = DiT(get_size(args.size).dit).eval()
    hw = tuple(args.latent_hw)
    run(dit, 2, hw, True, args.steps)  # warm-up
    print(f"size {args.size}, latent {hw}, {args.steps} steps, 4 chunks in flight")
    print(f"{'chunks':>6} {'kv cache s':>11} {'recompute s':>12} {'speed-up':>9} {'max diff':>9}")
    for n in args.chunks:
        cached_s, a = run(dit, n, hw, True, args.steps)
        recompute_s, b = run(dit, n, hw, False, args.steps)
        diff = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
        print(f"{n:>6} {cached_s:11.3f} {recompute_s:12.3f} {recompute_s / cached_s:8.2f}x {diff:9.1e}")


if __name__ == "__main__":
    main()
