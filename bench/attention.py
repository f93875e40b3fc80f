"""Block-causal attention: dense-mask SDPA vs flex_attention (compiled) vs flash-attn, as ratios.

Same q/k/v and the same varlen block-causal mask (two packed samples, chunks of `chunk` tokens) at
several sequence lengths. On CUDA it also prints TFLOP/s of the unmasked work (4 * N_visible_pairs * D *
heads). On CPU, flex runs forward only and compiles once per length (compile time excluded).

    python bench/attention.py [--lengths 1024 2048 4096] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from vidmill.model.attention import TokenLayout, block_causal_attention, visible


def layout_for(n: int, chunk: int, device: str) -> TokenLayout:
    first = n * 5 // 8 // chunk * chunk  # two packed samples of unequal length
    sample = torch.cat([torch.zeros(first), torch.ones(n - first)]).long()
    chunk_id = torch.cat([torch.arange(first) // chunk, torch.arange(n - first) // chunk]).long()
    return TokenLayout(sample.to(device), chunk_id.to(device))


def timed(fn, repeats: int, device: str) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-groups", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()
    dev = args.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    backends = ["sdpa", "flex"] + (["flash"] if dev == "cuda" else [])
    print(f"device {dev}, dtype {dtype}, heads {args.heads}/{args.kv_groups}, head_dim {args.head_dim}, "
          f"chunk {args.chunk} tokens")
    print(f"{'tokens':>7} {'backend':>7} {'ms':>9} {'vs sdpa':>8} {'TFLOP/s':>8}")
    compiled_on_cpu = False
    for n in args.lengths:
        layout = layout_for(n, args.chunk, dev)
        q = torch.randn(args.heads, n, args.head_dim, device=dev, dtype=dtype)
        k, v = (torch.randn(args.kv_groups, n, args.head_dim, device=dev, dtype=dtype) for _ in range(2))
        pairs = int(visible(layout, layout).sum())
        flops = 4 * pairs * args.head_dim * args.heads
        base = None
        for backend in backends:
            try:
                def fn(b=backend, q=q, k=k, v=v, layout=layout):
                    return block_causal_attention(q, k, v, layout, layout, b)

                if backend == "flex" and dev == "cpu" and not compiled_on_cpu:
                    # on CUDA the backend compiles flex itself and builds one block mask per layout (cached)
                    from torch.nn.attention import flex_attention as fa

                    fa.flex_attention = torch.compile(fa.flex_attention, dynamic=False)
                    compiled_on_cpu = True
                seconds = timed(fn, 3 if dev == "cpu" else 20, dev)
            except Exception as exc:  # report a backend that cannot run here, keep going
                print(f"{n:>7} {backend:>7}   unavailable: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            base = base or seconds
            tflops = f"{flops / seconds / 1e12:8.2f}" if dev == "cuda" else f"{'-':>8}"
            print(f"{n:>7} {backend:>7} {seconds * 1e3:9.2f} {base / seconds:7.2f}x {tflops}")


if __name__ == "__main__":
    main()
