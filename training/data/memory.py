"""A deterministic in-memory loader of LatentSamples (tests, the demo, benchmarks) and a latents file.

Stand-in until the packing loader over latent shards is wired: same protocol (an iterable of
`PackedBatch`, `state_dict()` / `load_state_dict()`), samples held in memory. Each epoch shuffles with
(seed, epoch); rank r takes every world-th sample; `packed` fills a token budget in order (next-fit),
`padded` makes fixed-size batches whose budget is batch_size x the longest sample (the padded baseline).
The iterator never ends: it moves to the next epoch itself, and the state says where the next batch starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

from vidmill.training.data.sample import LatentSample, PackedBatch


def sample_tokens(sample: LatentSample, patch: tuple[int, int, int]) -> int:
    _, t, h, w = sample.latent.shape
    return (t // patch[0]) * (h // patch[1]) * (w // patch[2])


def _chunk_tokens(sample: LatentSample, patch) -> list[int]:
    per_chunk = sample_tokens(sample, patch) // max(1, sample.n_chunks)
    return [per_chunk] * sample.n_chunks


def attention_cost(samples: list[LatentSample], patch) -> int:
    """Visible (query, key) pairs under the block-causal mask, summed over the samples."""
    total = 0
    for s in samples:
        chunks = _chunk_tokens(s, patch)
        seen = 0
        for c in chunks:
            seen += c
            total += c * seen
    return total


class MemoryLoader:
    def __init__(self, samples: list[LatentSample], token_budget: int, patch: tuple[int, int, int],
                 rank: int = 0, world_size: int = 1, seed: int = 0, mode: str = "packed", batch_size: int = 4):
        if not samples:
            raise ValueError("no training samples")
        if mode not in ("packed", "padded"):
            raise ValueError(f"unknown loader mode {mode!r}")
        self.samples, self.budget, self.patch = samples, token_budget, patch
        self.rank, self.world, self.seed, self.mode, self.batch_size = rank, world_size, seed, mode, batch_size
        self.tokens = [sample_tokens(s, patch) for s in samples]
        self.epoch, self.index = 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "world_size": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", self.world) != self.world:
            raise ValueError("the loader state was saved with another world size: restart the epoch instead")
        self.epoch, self.index = state["epoch"], state["index"]

    def _order(self, epoch: int) -> list[int]:
        perm = torch.randperm(len(self.samples), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return perm.tolist()[self.rank::self.world] or perm.tolist()[:1]

    def __iter__(self) -> Iterator[PackedBatch]:
        while True:
            order = self._order(self.epoch)
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                continue
            take = []
            if self.mode == "padded":
                take = order[self.index:self.index + self.batch_size]
                budget = len(take) * max(self.tokens[i] for i in take)
            else:
                used = 0
                for i in order[self.index:]:
                    if take and used + self.tokens[i] > self.budget:
                        break
                    take.append(i)
                    used += self.tokens[i]
                budget = max(self.budget, used)
            self.index += len(take)
            samples = [self.samples[i] for i in take]
            tokens = sum(self.tokens[i] for i in take)
            yield PackedBatch(samples, tokens, budget, attention_cost(samples, self.patch),
                              {"padding": 1 - tokens / budget})


def save_latents(path: str | Path, samples: list[LatentSample]) -> None:
    """One file of samples (torch.save of plain dicts), written atomically."""
    path = Path(path)
    rows = [{"key": s.key, "latent": s.latent, "captions": s.captions, "first_chunk": s.first_chunk} for s in samples]
    tmp = path.with_suffix(".tmp")
    torch.save(rows, tmp)
    tmp.replace(path)


def load_latents(path: str | Path) -> list[LatentSample]:
    rows = torch.load(Path(path), weights_only=True)
    return [LatentSample(r["key"], r["latent"], r["captions"], r["first_chunk"]) for r in rows]


def synthetic_samples(n: int, channels: int, chunk_frames: int, hw_choices: list[tuple[int, int]],
                      chunk_choices: list[int], text_dim: int, seed: int = 0) -> list[LatentSample]:
    """Structured random latents (a moving blob per sample) with captions: for tests and benchmarks.

    Each sample is a smooth pattern that drifts frame to frame, so a model can learn it (loss falls).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = hw_choices[int(torch.randint(len(hw_choices), (1,), generator=g))]
        chunks = chunk_choices[int(torch.randint(len(chunk_choices), (1,), generator=g))]
        frames = chunks * chunk_frames
        phase = torch.rand(channels, 1, 1, 1, generator=g) * 2 * math.pi
        ys = torch.linspace(0, 2 * math.pi, h)[None, None, :, None]
        xs = torch.linspace(0, 2 * math.pi, w)[None, None, None, :]
        ts = torch.arange(frames, dtype=torch.float32)[None, :, None, None] * 0.3
        latent = torch.sin(ys + ts + phase) * torch.cos(xs - ts + phase)
        captions = [torch.randn(3, text_dim, generator=g) if torch.rand(1, generator=g) < 0.8 else None
                    for _ in range(chunks)]
        out.append(LatentSample(f"synthetic-{i:05d}", latent.float(), captions))
    return out
