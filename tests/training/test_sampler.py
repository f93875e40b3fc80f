"""Chunk-wise autoregressive inference: streaming, KV cache vs recompute, guidance, prefixes, memory."""

from __future__ import annotations

import pytest
import torch

from vidmill.model.dit import DiT
from vidmill.model.sizes import get_size
from vidmill.training.memory import PeakHeap
from vidmill.training.sampler import ChunkSampler, SamplerConfig
from vidmill.training.schedule import guidance_weights, guide, time_grid

CFG = get_size("tiny").dit


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = DiT(CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def generate(dit, n, **kw):
    captions = kw.pop("captions", None)
    prefix = kw.pop("prefix", None)
    sampler = ChunkSampler(dit, SamplerConfig(**kw))
    out = list(sampler.generate(n, (8, 8), captions=captions, prefix=prefix,
                                generator=torch.Generator().manual_seed(3)))
    return out, sampler


def test_time_grid_matches_reference_points():
    grid = time_grid(4)
    assert grid[0] == 0 and grid[-1] == pytest.approx(1.0)
    assert grid[1:4].tolist() == pytest.approx([0.0217, 0.1, 0.3], abs=1e-4)


def test_guidance_formula_and_dynamic_schedule():
    u, cp, ct = torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([5.0])
    assert guide(u, cp, ct, 1.5, 7.5) == pytest.approx((1 - 1.5) * 1 + (1.5 - 7.5) * 2 + 7.5 * 5)
    assert guidance_weights(0.1) == (1.5, 7.5) and guidance_weights(0.3) == (1.0, 0.0)
    assert guide(u, cp, ct, *guidance_weights(0.5)).item() == cp.item()  # late steps: context only


def test_streams_one_chunk_at_a_time(dit):
    sampler = ChunkSampler(dit, SamplerConfig(steps=8, in_flight=4))
    stream = sampler.generate(6, (8, 8), generator=torch.Generator().manual_seed(0))
    first = next(stream)
    forwards_at_first = sampler.forwards
    rest = list(stream)
    assert first.shape == (CFG.latent_channels, CFG.chunk_frames, 8, 8) and len(rest) == 5
    assert forwards_at_first < sampler.forwards / 2  # the first chunk arrived long before the end


def test_kv_cache_inference_equals_recomputing_previous_chunks(dit):
    cached, _ = generate(dit, 5, window=8, use_cache=True)
    recomputed, _ = generate(dit, 5, window=8, use_cache=False)
    for a, b in zip(cached, recomputed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_chunkwise_prompts_only_change_their_chunk_and_later(dit):
    cap = [torch.randn(4, CFG.text_dim, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    a, _ = generate(dit, 4, captions=[cap[0], cap[1], cap[2], cap[3]])
    b, _ = generate(dit, 4, captions=[cap[0], cap[1], cap[3], cap[3]])
    # chunks denoise together (pipelined), but attention is causal: earlier chunks never see chunk 2
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[2], b[2])


def test_i2v_and_v2v_prefixes_are_kept(dit):
    image = torch.randn(CFG.latent_channels, 1, 8, 8)
    out, _ = generate(dit, 3, prefix=image)
    assert torch.equal(out[0][:, :1], image)  # I2V: the first latent frame is the conditioning image
    video = torch.randn(CFG.latent_channels, 3, 8, 8)  # V2V: 1.5 chunks of context
    out, _ = generate(dit, 3, prefix=video)
    assert torch.equal(out[0], video[:, :2]) and torch.equal(out[1][:, :1], video[:, 2:3])


def _peak(dit, n, in_flight, window):
    sampler = ChunkSampler(dit, SamplerConfig(in_flight=in_flight, window=window))
    with PeakHeap() as heap:
        for _ in sampler.generate(n, (16, 16), generator=torch.Generator().manual_seed(1)):
            pass
    return heap.peak_bytes


def test_peak_memory_does_not_grow_with_video_length(dit):
    _peak(dit, 3, 4, 4)  # warm-up: one-off allocations of the first run
    _peak(dit, 3, 1, 1)
    two, eight = _peak(dit, 2, 1, 1), _peak(dit, 8, 1, 1)
    assert abs(eight - two) / two < 0.10, (two, eight)
    # pipelined (4 chunks in flight, window 4): constant once the pipeline and the window are full
    eight, sixteen = _peak(dit, 8, 4, 4), _peak(dit, 16, 4, 4)
    assert abs(sixteen - eight) / eight < 0.10, (eight, sixteen)
