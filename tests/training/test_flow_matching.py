"""The flow-matching objective: noise levels cover what the sampler visits, guidance terms, loss masking."""

from __future__ import annotations

import pytest
import torch

from vidmill.model.dit import DiT
from vidmill.model.sizes import get_size
from vidmill.training.config import FlowMatchingConfig
from vidmill.training.data.memory import synthetic_samples
from vidmill.training.data.sample import PackedBatch
from vidmill.training.objectives import Objective, build_objective
from vidmill.training.objectives.flow_matching import FlowMatching, shift
from vidmill.training.sampler import ChunkSampler, SamplerConfig
from vidmill.training.schedule import time_grid

CFG = get_size("tiny").dit


def u_of(t: torch.Tensor) -> torch.Tensor:
    """Inverse of the shift: t = (u^2/3) / (1 - 2/3 u^2) <=> u^2 = 3t / (1 + 2t)."""
    t = t.double()
    return (3 * t / (1 + 2 * t)).sqrt()


def visited_vectors(steps: int, in_flight: int, n_chunks: int) -> set[tuple[int, tuple[float, ...], bool]]:
    """(visible clean chunks, noisy u oldest->newest, isolated) of every DiT pass the sampler makes."""
    torch.manual_seed(0)
    dit = DiT(CFG).eval()
    cfg = SamplerConfig(steps=steps, in_flight=in_flight, window=4, use_cache=False)
    seen = set()

    def record(p, *args, isolate=False, **kw):
        t = p.group_t
        clean = int((t >= cfg.cache_t - 1e-6).sum())
        noisy = tuple(round(float(u), 6) for u in u_of(t[clean:]))
        seen.add((clean, noisy, isolate))
        return torch.zeros_like(p.x)  # only the noise levels matter here

    dit.forward = record
    list(ChunkSampler(dit, cfg).generate(n_chunks, (4, 4), generator=torch.Generator().manual_seed(0)))
    return seen


def test_shift_is_the_sampler_grid():
    u = torch.linspace(0, 1, 9)
    torch.testing.assert_close(shift(u)[:-1], time_grid(8)[:-1])
    torch.testing.assert_close(u_of(time_grid(8)), u.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [8, 16])
def test_every_t_vector_the_sampler_visits_has_training_probability(steps):
    """Each visited vector has training draws in every neighbourhood (here: within 1/(2 steps) in u)."""
    objective = FlowMatching(CFG, FlowMatchingConfig(window_chunks=4))
    visited = visited_vectors(steps, in_flight=4, n_chunks=7)
    assert len(visited) > steps  # start, steady state and tail of the pipeline were all seen
    g = torch.Generator().manual_seed(0)
    draws: dict[int, tuple[list[int], list[torch.Tensor]]] = {}
    for _ in range(4000):
        levels = objective.noise_levels(8, g)
        cleans, us = draws.setdefault(int(levels.noisy.sum()), ([], []))
        cleans.append(int((~levels.noisy).sum()))
        us.append(levels.u[levels.noisy])
    half_bin = 0.5 / steps
    for clean, noisy, _ in visited:
        assert len(noisy) in draws, f"never trained with {len(noisy)} noisy chunks"
        cleans, us = draws[len(noisy)]
        distance = (torch.stack(us) - torch.tensor(noisy, dtype=torch.float64)).abs().amax(1)
        distance[torch.tensor(cleans) < clean] = float("inf")  # too little context to match
        assert distance.min() < half_bin, f"sampler vector (clean {clean}, noisy u {noisy}) never drawn in training"
        assert distance.min() < 0.02  # a density, not a lucky bin: draws come arbitrarily close


def test_isolated_and_null_text_passes_are_trained():
    """The sampler's `u` (isolated, null text) and `cp` (null text) passes: both dropout modes occur."""
    visited = visited_vectors(8, 4, 5)
    assert any(iso for *_, iso in visited)
    objective = FlowMatching(CFG, FlowMatchingConfig(caption_dropout=0.3, context_dropout=0.3))
    samples = synthetic_samples(40, CFG.latent_channels, CFG.chunk_frames, [(4, 4)], [3, 4], CFG.text_dim, seed=3)
    for s in samples:
        s.captions = [torch.randn(2, CFG.text_dim) for _ in s.captions]  # every chunk captioned
    packed, _, mask, metrics = objective.build(samples, torch.Generator().manual_seed(1))
    assert 0 < metrics["context_dropout"] < 1 and 0 < metrics["caption_dropout"] < 1
    # isolated samples hold one noisy chunk each and no caption
    n_groups = len(packed.group_t)
    per_sample = torch.bincount(packed.group_layout.sample_id, minlength=int(packed.group_layout.sample_id.max()) + 1)
    singles = (per_sample == 1).nonzero()[:, 0]
    assert len(singles) > 0 and n_groups > len(samples)
    for s in singles.tolist():
        g = (packed.group_layout.sample_id == s).nonzero()[0, 0]
        assert packed.group_t[g] < 0.9999
    # clean context chunks: t = clean_t and no caption; the loss mask skips exactly them
    clean = packed.group_t >= 0.9999 - 1e-6
    assert clean.any() and not packed.group_caption[clean].any()
    assert torch.equal(mask, ~clean[packed.group_index])


def test_loss_ignores_clean_chunks_and_is_finite():
    objective = build_objective("flow_matching", type("C", (), {"size": get_size("tiny"),
                                                                "objective": FlowMatchingConfig()})())
    assert isinstance(objective, Objective)
    torch.manual_seed(0)
    dit = DiT(CFG)
    samples = synthetic_samples(4, CFG.latent_channels, CFG.chunk_frames, [(4, 4)], [4], CFG.text_dim)
    batch = PackedBatch(samples, 64, 64, 0)
    loss, metrics = objective.loss(dit, batch, 1, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and metrics["noisy_tokens"] <= metrics["tokens"]
    # the loss is the mean squared velocity error over the noisy chunks' tokens only
    packed, target, mask, _ = objective.build(samples, torch.Generator().manual_seed(0))
    pred = dit(packed, window=4)
    expected = ((pred - target)[mask] ** 2).mean()
    torch.testing.assert_close(loss, expected)
