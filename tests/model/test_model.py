"""The MAGI-1 model family: causality, KV cache, packing, attention backends, sizes, VAE."""

from __future__ import annotations

import pytest
import torch

from vidmill.model.attention import TokenLayout, block_causal_attention, visible
from vidmill.model.dit import DiT, KVCache, pack, unpack
from vidmill.model.sizes import count_parameters, get_size
from vidmill.model.vae import VideoVAE

CFG = get_size("tiny").dit  # chunk = 2 latent frames


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = DiT(CFG).eval()
    with torch.no_grad():  # random gates so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def sample(frames=8, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(CFG.latent_channels, frames, h, w, generator=g)


def caption(seed, length=5):
    return torch.randn(length, CFG.text_dim, generator=torch.Generator().manual_seed(seed))


def run(model, latents, ts, caps, **kw):
    p = pack(latents, ts, caps, CFG, kw.pop("frame_offsets", None))
    with torch.no_grad():
        return unpack(model(p, **kw), p, CFG)


def test_perturbing_chunk_k_changes_no_earlier_chunk(dit):
    x = sample()
    t = torch.tensor([0.9, 0.6, 0.4, 0.2])
    caps = [[caption(1), None, caption(2), caption(3)]]
    base = run(dit, [x], [t], caps)[0]
    for k in range(4):
        y = x.clone()
        y[:, 2 * k:2 * k + 2] += torch.randn_like(y[:, 2 * k:2 * k + 2])
        out = run(dit, [y], [t], caps)[0]
        assert torch.equal(out[:, :2 * k], base[:, :2 * k]), k
        assert not torch.allclose(out[:, 2 * k:2 * k + 2], base[:, 2 * k:2 * k + 2])


def test_kv_cache_equals_full_recompute(dit):
    x = sample()
    t = torch.tensor([1.0, 1.0, 0.7, 0.3])
    caps = [[caption(4), caption(5), caption(6), None]]
    full = run(dit, [x], [t], caps)[0]
    cache = KVCache(CFG.depth)
    for j in range(2):  # finished chunks enter the cache one at a time
        p = pack([x[:, 2 * j:2 * j + 2]], [t[j:j + 1]], [caps[0][j:j + 1]], CFG, [2 * j])
        with torch.no_grad():
            dit(p, cache=cache, record=True)
    rest = run(dit, [x[:, 4:]], [t[2:]], [caps[0][2:]], frame_offsets=[4], cache=cache)[0]
    torch.testing.assert_close(rest, full[:, 4:], atol=1e-5, rtol=1e-5)


def test_two_packed_samples_equal_each_alone(dit):
    a, b = sample(8, 8, 8, seed=1), sample(4, 6, 10, seed=2)
    ta, tb = torch.tensor([0.2, 0.5, 0.7, 0.9]), torch.tensor([0.3, 0.8])
    ca, cb = [caption(7), None, caption(8), caption(9)], [None, caption(10, length=3)]
    together = run(dit, [a, b], [ta, tb], [ca, cb])
    torch.testing.assert_close(together[0], run(dit, [a], [ta], [ca])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1], run(dit, [b], [tb], [cb])[0], atol=1e-5, rtol=1e-5)


def test_window_and_isolate_limit_what_a_chunk_sees(dit):
    x = sample()
    t = torch.full((4,), 0.5)
    caps = [[None] * 4]
    windowed = run(dit, [x], [t], caps, window=1)[0]
    y = x.clone()
    y[:, :2] += 1.0
    # one previous chunk per layer: with 2 layers chunk 3 can no longer be reached from chunk 0
    changed = run(dit, [y], [t], caps, window=1)[0]
    assert torch.equal(changed[:, 6:], windowed[:, 6:])
    assert not torch.allclose(changed[:, 4:6], windowed[:, 4:6])
    isolated = run(dit, [y], [t], caps, isolate=True)[0]
    assert torch.equal(isolated[:, 2:], run(dit, [x], [t], caps, isolate=True)[0][:, 2:])


def test_captions_reach_only_their_chunk(dit):
    x = sample()
    t = torch.full((4,), 0.5)
    a = run(dit, [x], [t], [[caption(1), caption(2), None, None]])[0]
    b = run(dit, [x], [t], [[caption(1), caption(3), None, None]])[0]
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:4], b[:, 2:4])


def test_block_causal_mask():
    q = TokenLayout(torch.tensor([0, 0, 0, 0, 1, 1, -1]), torch.tensor([0, 0, 1, 2, 0, 1, 0]))
    m = visible(q, q)
    assert m[2, :2].all() and not m[0, 2] and not m[1, 3]  # causal across chunks, full inside
    assert not m[4, :4].any() and m[5, 4]  # sample boundary
    assert m[6].tolist() == [False] * 6 + [True]  # padding sees itself only
    assert not visible(q, q, window=1)[3, 0] and visible(q, q, window=1)[3, 2]
    assert visible(q, q, isolate=True)[2].tolist() == [False, False, True, False, False, False, False]


def test_backends_agree_where_both_run():
    torch.manual_seed(0)
    layout = TokenLayout(torch.tensor([0] * 40 + [1] * 24), torch.tensor([0] * 16 + [1] * 24 + [0] * 12 + [1] * 12))
    q, k, v = torch.randn(4, 64, 16), torch.randn(2, 64, 16), torch.randn(2, 64, 16)
    dense = block_causal_attention(q, k, v, layout, layout, "sdpa")
    flex = block_causal_attention(q, k, v, layout, layout, "flex")  # CPU: forward only
    torch.testing.assert_close(flex, dense, atol=1e-4, rtol=1e-4)
    if torch.cuda.is_available():
        qc, kc, vc, lc = q.cuda(), k.cuda(), v.cuda(), TokenLayout(layout.sample_id.cuda(), layout.chunk_id.cuda())
        torch.testing.assert_close(block_causal_attention(qc, kc, vc, lc, lc, "flex").cpu(), dense, atol=2e-3,
                                   rtol=2e-3)


def test_flex_block_mask_is_built_once_per_layout():
    """The CUDA flex path shares one block mask across a forward pass's blocks, and never reuses it for new tensors."""
    from vidmill.model.attention import _cached_block_mask

    built = []

    def make():
        built.append(1)
        return object()

    a = TokenLayout(torch.zeros(8, dtype=torch.long), torch.arange(8) // 4)
    first = _cached_block_mask(a, a, None, False, make)
    assert _cached_block_mask(a, a, None, False, make) is first and len(built) == 1  # the next block: a hit
    assert _cached_block_mask(a, a, 2, False, make) is not first  # another window
    b = TokenLayout(a.sample_id.clone(), a.chunk_id.clone())  # equal values, a new batch's tensors
    assert _cached_block_mask(b, b, 2, False, make) is not _cached_block_mask(a, a, 2, False, make)
    assert len(built) == 4


def test_backend_that_cannot_run_here_is_a_clear_error():
    layout = TokenLayout(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    q = torch.randn(2, 4, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="no backward pass on CPU"):
        block_causal_attention(q, q, q, layout, layout, "flex")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA device"):
            block_causal_attention(q.detach(), q.detach(), q.detach(), layout, layout, "flash")
    with pytest.raises(ValueError, match="unknown attention backend"):
        block_causal_attention(q, q, q, layout, layout, "magic")


def test_sdpa_backend_trains():
    model = DiT(CFG)
    p = pack([sample()], [torch.tensor([0.1, 0.4, 0.6, 0.9])], [[caption(1)] * 4], CFG)
    model(p).square().mean().backward()
    assert model.blocks[0].q.weight.grad is not None and model.blocks[0].q.weight.grad.abs().sum() > 0


def test_parameter_counts_match_published_sizes():
    counts = {name: count_parameters(name)["dit"] for name in ("4.5B", "24B")}
    assert abs(counts["4.5B"] - 4.4e9) / 4.4e9 < 0.03
    assert abs(counts["24B"] - 2.39e10) / 2.39e10 < 0.01


def test_vae_shapes_and_chunkwise_decode():
    torch.manual_seed(0)
    vae = VideoVAE(get_size("tiny").vae, window=2).eval()
    video = torch.rand(1, 3, 16, 64, 48) * 2 - 1
    with torch.no_grad():
        mean, logvar = vae.encode(video)
        assert mean.shape == logvar.shape == (1, 16, 4, 8, 6)
        recon = vae.decode(mean)
        assert recon.shape == video.shape
        streamed = torch.cat(list(vae.decode_chunks(mean)), dim=2)
    torch.testing.assert_close(streamed, recon)
