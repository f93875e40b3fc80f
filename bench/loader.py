"""Packing loader benchmark: padding, rank balance, loader throughput vs the tiny trainer, padded baseline.

    .venv/bin/python bench/loader.py [--samples 20000] [--ranks 8] [--budget 65536] [--seed 0]

1. Plan quality on a seeded synthetic length distribution like MAGI-1's (several resolutions at 16 latent
   channels, videos of 1-8 one-second chunks of 6 latent frames, 20 % images): padding % and the busiest rank's
   attention cost over the mean (per global step, over `--ranks` simulated ranks), for one pack per rank and for
   four packs per rank; the same samples batched the usual way (random batches, padded to the longest) for the ratio.
2. Loader throughput on real latent shards written here (tiny-model shapes), against the tiny DiT's
   forward + backward on one pack of the same budget, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidmill.training.data.packing import (
    PackingSpec,
    SampleMeta,
    assign_ranks,
    attention_cost,
    chunk_tokens,
    plan_epoch,
)

# latent (H, W) after the VAE's 8x: 720x1280, 720x720, 480x848, 544x960, 368x640, 256x256, 1280x720
MAGI_RESOLUTIONS = [(90, 160), (90, 90), (60, 106), (68, 120), (46, 80), (32, 32), (160, 90)]


def synthetic(n: int, seed: int, chunk_frames: int, resolutions, image_share: float = 0.2) -> list[SampleMeta]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = resolutions[rng.integers(len(resolutions))]
        t = 1 if rng.random() < image_share else chunk_frames * int(rng.integers(1, 9))
        out.append(SampleMeta(f"s{i:06d}", f"shard-{i // 256:05d}.tar", t, h, w))
    return out


def plan_quality(metas, spec: PackingSpec, ranks: int, seed: int) -> dict:
    start = time.perf_counter()
    plan = plan_epoch(metas, spec, seed, 0)
    plan_s = time.perf_counter() - start
    packs = [p for step in plan.steps for p in step]
    padding = 100 * (1 - sum(p.tokens for p in packs) / (len(packs) * spec.budget))
    ratios = []
    for step in plan.steps:
        loads = [sum(step[i].cost for i in r) for r in assign_ranks(step, ranks)]
        ratios.append(max(loads) / statistics.mean(loads))
    return {"steps": len(plan.steps), "padding_pct": padding, "imbalance_mean": statistics.mean(ratios),
            "imbalance_p90": float(np.percentile(ratios, 90)), "imbalance_max": max(ratios), "plan_s": plan_s,
            "samples": len(metas)}


def padded_baseline(metas, spec: PackingSpec, ranks: int, batch: int, seed: int) -> dict:
    """Random batches of `batch` whole samples padded to the longest, one batch per rank per step."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(metas))
    lengths = np.array([sum(chunk_tokens(metas[i], spec)) for i in order])
    costs = np.array([attention_cost(chunk_tokens(metas[i], spec)) for i in order])
    n = len(lengths) // batch * batch
    groups = lengths[:n].reshape(-1, batch)
    padded = groups.max(1) * batch
    padding = 100 * (1 - groups.sum() / padded.sum())
    # a padded batch computes dense attention over its padded length (padding is masked, not skipped)
    work = (groups.max(1) ** 2 * batch).astype(float)
    steps = len(work) // ranks
    ratios = [w.max() / w.mean() for w in work[:steps * ranks].reshape(steps, ranks)]
    useful = costs[:n].sum() / work.sum()
    return {"padding_pct": padding, "imbalance_mean": float(np.mean(ratios)), "useful_attention": float(useful)}


def write_bench_shards(root: Path, n: int, seed: int) -> None:
    from vidmill.training.data.latents import write_manifest
    from vidmill.training.data.shards import clip_members, write_shard

    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    res = [(8, 8), (6, 10), (10, 6), (4, 4)]  # tiny buckets (64x64 area) and a small one
    rows = []
    for s in range(0, n, 100):
        shard, clips = f"shard-{s // 100:05d}.tar", []
        for i in range(s, min(n, s + 100)):
            h, w = res[rng.integers(len(res))]
            t = 1 if rng.random() < 0.2 else 2 * int(rng.integers(1, 9))
            key = f"c{i:06d}"
            row = {"clip_id": key, "key": key, "status": "ok", "shard": shard, "member_index": len(clips),
                   "latent_t": t, "latent_h": h, "latent_w": w}
            caps = {j: torch.randn(12, 384, generator=g) for j in range(max(1, t // 2))}
            clips.append((key, clip_members(torch.randn(16, t, h, w, generator=g), caps, row)))
            rows.append(row)
        write_shard(root / "shards" / shard, clips)
    write_manifest(root / "manifest.parquet", rows)


def loader_throughput(root: Path, budget: int) -> dict:
    from vidmill.training.data.loader import PackingLoader

    loader = PackingLoader.for_model(root, "tiny", budget=budget, packs_per_step=8, max_epochs=1, world_size=1,
                                     rank=0, buffer_size=256)
    start = time.perf_counter()
    first = None
    samples = tokens = steps = 0
    pad = []
    for batch in loader:
        if first is None:
            first = time.perf_counter() - start
        samples += len(batch.samples)
        tokens += batch.tokens
        steps += 1
        pad.append(batch.stats["padding_pct"])
    wall = time.perf_counter() - start
    return {"samples_per_s": samples / wall, "tokens_per_s": tokens / wall, "steps": steps, "samples": samples,
            "wall_s": wall, "first_batch_s": first, "padding_pct": statistics.mean(pad)}


def trainer_consumption(root: Path, budget: int, repeats: int = 5) -> dict:
    """Tiny DiT forward + backward (sdpa) on one real pack of `budget` tokens, padded as the loader emits it."""
    from vidmill.model.dit import DiT, pack
    from vidmill.model.sizes import get_size
    from vidmill.training.data.loader import PackingLoader

    cfg = get_size("tiny").dit
    loader = PackingLoader.for_model(root, "tiny", budget=budget, packs_per_step=1, max_epochs=1, world_size=1,
                                     rank=0)
    batch = next(iter(loader))
    loader.close()
    samples = batch.samples
    default_threads = torch.get_num_threads()
    best = None
    for threads in sorted({1, default_threads}):  # the trainer's fastest setting: the conservative ratio
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = DiT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for _ in range(repeats + 1):
            t = [torch.rand(s.n_chunks) for s in samples]
            p = pack([s.latent for s in samples], t, [s.captions for s in samples], cfg)
            start = time.perf_counter()
            loss = (model(p) - torch.randn_like(p.x)).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - start)
        step_s = statistics.median(times[1:])
        if best is None or step_s < best[0]:
            best = (step_s, threads)
    torch.set_num_threads(default_threads)
    step_s, threads = best
    return {"step_s": step_s, "tokens_per_s": batch.tokens / step_s, "samples_per_s": len(samples) / step_s,
            "pack_tokens": batch.tokens, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--budget", type=int, default=65536)
    parser.add_argument("--buffer", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-samples", type=int, default=2000, help="samples in the throughput shards")
    parser.add_argument("--tiny-budget", type=int, default=1024, help="token budget of the tiny trainer's pack")
    args = parser.parse_args()

    metas = synthetic(args.samples, args.seed, 6, MAGI_RESOLUTIONS)
    print(f"synthetic MAGI-like set: {args.samples} samples, {len(MAGI_RESOLUTIONS)} resolutions, 1-8 chunks "
          f"of 6 latent frames, 20 % images; budget {args.budget} tokens, buffer {args.buffer}, {args.ranks} ranks")
    for per_rank, window in ((1, 16), (1, 64), (4, 16)):
        spec = PackingSpec(budget=args.budget, chunk_frames=6, packs_per_step=args.ranks * per_rank,
                           buffer_size=args.buffer, balance_window=window)
        q = plan_quality(metas, spec, args.ranks, args.seed)
        print(f"  packed, {per_rank} pack(s)/rank, balance window {window:>2} steps: padding {q['padding_pct']:.2f} %"
              f", busiest/mean attention cost {q['imbalance_mean']:.3f}x (p90 {q['imbalance_p90']:.3f}, "
              f"max {q['imbalance_max']:.3f}) over {q['steps']} steps; plan {q['plan_s']:.1f} s")
    base = padded_baseline(metas, PackingSpec(budget=args.budget, chunk_frames=6), args.ranks, 8, args.seed)
    print(f"  padded to the longest, random batches of 8: padding {base['padding_pct']:.1f} %, busiest/mean "
          f"attention work {base['imbalance_mean']:.3f}x, useful share of attention work "
          f"{100 * base['useful_attention']:.1f} %")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_bench_shards(root, args.shard_samples, args.seed)
        print(f"throughput shards: {args.shard_samples} tiny-shape latents written in "
              f"{time.perf_counter() - start:.1f} s")
        loader = loader_throughput(root, args.tiny_budget)
        trainer = trainer_consumption(root, args.tiny_budget)
    ratio = loader["tokens_per_s"] / trainer["tokens_per_s"]
    print(f"  loader (1 rank, budget {args.tiny_budget}): {loader['samples_per_s']:.0f} samples/s, "
          f"{loader['tokens_per_s']:.0f} tokens/s over {loader['steps']} steps ({loader['samples']} samples, "
          f"first batch after {loader['first_batch_s']:.2f} s, padding {loader['padding_pct']:.2f} %)")
    print(f"  tiny DiT forward+backward+AdamW on one pack ({trainer['pack_tokens']} tokens, "
          f"{trainer['threads']} torch thread(s), the faster of 1 and the default): "
          f"{trainer['step_s'] * 1000:.1f} ms, {trainer['tokens_per_s']:.0f} tokens/s, "
          f"{trainer['samples_per_s']:.1f} samples/s")
    print(f"  loader / trainer tokens per second: {ratio:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
