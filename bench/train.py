"""Training throughput, measured side by side in one run (CPU here; GPU items only where CUDA exists).

Prints:
Packed and padded steps alternate so both see the same machine load (timings on a shared machine are noisy).

- tokens/s (real latent tokens per second, forward + backward + AdamW + EMA) for tiny and small;
- packed vs padded-batch throughput on the same data: the same samples (a mix of resolutions and 1-8 chunks,
  as in the reference's packing simulation) either packed into a token budget or batched `--batch` at a time
  and padded to the longest; both go through the same DiT (dense-mask SDPA), padding tokens included;
- loader stall %: the share of step time spent waiting for the loader (the in-memory loader here);
- MFU (GPU only, block-causal attention FLOPs): `not measured` without CUDA.

    python bench/train.py [--steps 6] [--sizes tiny,small]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from vidmill.model.dit import DiT
from vidmill.model.sizes import get_size
from vidmill.training.config import FlowMatchingConfig, RunConfig, TrainConfig
from vidmill.training.data.memory import MemoryLoader, synthetic_samples
from vidmill.training.objectives.flow_matching import FlowMatching
from vidmill.training.trainer import Trainer

# latent (h, w) buckets per size: four resolutions, like the reference's simulation
BUCKETS = {"tiny": [(8, 8), (8, 12), (12, 8), (6, 6)], "small": [(16, 16), (16, 24), (24, 16), (12, 12)]}
BUDGET = {"tiny": 1536, "small": 2048}
# chunks per sample: 1-8 as in the reference simulation; small keeps to 1-4 so the padded baseline's dense mask
# (batch x longest tokens, squared) stays within this machine's memory
CHUNKS = {"tiny": list(range(1, 9)), "small": list(range(1, 5))}


def make_trainer(size_name: str, samples, steps: int, mode: str, batch: int, budget: int, out: Path,
                 attention: str = "sdpa", compile: bool = False) -> Trainer:
    size = get_size(size_name)
    config = RunConfig(size, TrainConfig(steps=steps + 2, warmup_steps=1, checkpoint_every=10**9,
                                         token_budget=budget, deterministic=False, compile=compile))
    loader = MemoryLoader(samples, budget, size.dit.patch, mode=mode, batch_size=batch)
    objective = FlowMatching(size.dit, FlowMatchingConfig(), pad_to_budget=mode == "padded")
    torch.manual_seed(0)
    dit = DiT(size.dit)
    dit.backend = attention
    trainer = Trainer(config, out / f"{size_name}-{mode}", dit, objective, loader, progress=False,
                      flops_config=size.dit)
    trainer._iter = iter(loader)
    return trainer


def measure(size_name: str, samples, steps: int, batch: int, budget: int, out: Path, attention: str = "sdpa",
            compile: bool = False) -> dict[str, dict]:
    """Packed and padded steps alternate, so both see the same machine load; two warm-up steps each."""
    trainers = {mode: make_trainer(size_name, samples, steps, mode, batch, budget, out, attention, compile)
                for mode in ("packed", "padded")}
    rows: dict[str, list[dict]] = {mode: [] for mode in trainers}
    for i in range(steps + 2):
        for mode, trainer in trainers.items():
            row = trainer.train_step()
            if i >= 2:
                rows[mode].append(row)
    result = {}
    for mode, trainer in trainers.items():
        trainer.metrics.close()
        r = rows[mode]
        seconds = sum(x["step_s"] for x in r)
        result[mode] = {
            "tokens_per_s": sum(x["tokens"] for x in r) / seconds,
            "median_tokens_per_s": statistics.median(x["tokens"] / x["step_s"] for x in r),
            "padding": statistics.mean(x["padding"] for x in r),
            "stall_pct": 100 * sum(x["loader_wait_frac"] * x["step_s"] for x in r) / seconds,
            "mfu": r[-1]["mfu"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batch", type=int, default=4, help="samples per padded batch")
    parser.add_argument("--attention", default="sdpa", choices=("sdpa", "flex", "flash"),
                        help="the DiT's attention backend (flex and flash train on CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each DiT block (as the trainer does)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"attention {args.attention}, compile {args.compile}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            cfg = get_size(name).dit
            samples = synthetic_samples(256, cfg.latent_channels, cfg.chunk_frames, BUCKETS[name],
                                        CHUNKS[name], cfg.text_dim, seed=0)
            both = measure(name, samples, args.steps, args.batch, BUDGET[name], Path(tmp), args.attention,
                           args.compile)
            packed, padded = both["packed"], both["padded"]
            ratio = packed["tokens_per_s"] / padded["tokens_per_s"]
            median_ratio = packed["median_tokens_per_s"] / padded["median_tokens_per_s"]
            print(f"{name}: packed {packed['tokens_per_s']:.0f} tokens/s (padding {100 * packed['padding']:.1f} %), "
                  f"padded batches {padded['tokens_per_s']:.0f} tokens/s (padding {100 * padded['padding']:.1f} %), "
                  f"packed/padded {ratio:.2f}x (median step {median_ratio:.2f}x; "
                  f"target >= 1.3x); loader stall {packed['stall_pct']:.2f} % "
                  f"(target < 2 %); MFU {'not measured (no GPU)' if packed['mfu'] is None else packed['mfu']}")
    if not torch.cuda.is_available():
        print("flex / flash-attn block-causal speed vs dense SDPA: not measured (CUDA only; no GPU on this machine)")


if __name__ == "__main__":
    main()
