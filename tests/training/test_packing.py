"""Mask slices (dense / flex / flash forms) and the packing plan (pure functions)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidmill.model.attention import TokenLayout, sliced_attention, visible
from vidmill.model.mask import (
    AttnMask,
    AttnSlice,
    MaskType,
    block_causal_mask,
    mask_from_layout,
    mask_mod,
    to_dense,
    to_flash_varlen,
)
from vidmill.training.data.packing import (
    PackingSpec,
    SampleMeta,
    assign_ranks,
    attention_cost,
    chunk_tokens,
    plan_epoch,
)

CHUNKS = [[4, 4, 4], [6], [3, 3]]  # three packed samples: tokens per chunk


def layout_of(chunks, padding=0):
    sid, cid = [], []
    for s, sample in enumerate(chunks):
        for c, n in enumerate(sample):
            sid += [s] * n
            cid += [c] * n
    return TokenLayout(torch.tensor(sid + [-1] * padding), torch.tensor(cid + [0] * padding))


@pytest.mark.parametrize("window", [None, 1])
def test_block_causal_slices_compile_to_visible(window):
    layout = layout_of(CHUNKS, padding=3)
    mask = block_causal_mask(CHUNKS, padding=3, window=window)
    assert torch.equal(to_dense(mask), visible(layout, layout, window))
    assert mask.area == int(visible(layout, layout, window).sum())


def test_slices_from_any_layout_match_visible():
    """A KV cache (earlier chunks) before the new tokens: keys and queries differ; isolate and window too."""
    k = TokenLayout(torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    q = TokenLayout(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 1, 1]))
    for window, isolate in ((None, False), (0, False), (None, True)):
        mask = mask_from_layout(q.sample_id, q.chunk_id, k.sample_id, k.chunk_id, window, isolate)
        assert torch.equal(to_dense(mask), visible(q, k, window, isolate))


def test_mask_types_follow_magiattention():
    full = AttnMask([AttnSlice((0, 2), (0, 3), MaskType.FULL)], 2, 3)
    causal = AttnMask([AttnSlice((0, 2), (0, 3), MaskType.CAUSAL)], 2, 3)
    inv = AttnMask([AttnSlice((0, 2), (0, 3), MaskType.INVCAUSAL)], 2, 3)
    bi = AttnMask([AttnSlice((0, 2), (0, 3), MaskType.BICAUSAL)], 2, 3)
    assert to_dense(full).all()
    assert to_dense(causal).tolist() == [[True, True, False], [True, True, True]]  # bottom-right aligned
    assert to_dense(inv).tolist() == [[True, True, True], [False, True, True]]  # top-left aligned
    assert to_dense(bi).tolist() == [[True, True, False], [False, True, True]]
    for m in (full, causal, inv, bi):
        assert m.area == int(to_dense(m).sum())


def qkv(n, seed=0, heads=2, dim=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(heads, n, dim, generator=g) for _ in range(3)]


def test_sdpa_slices_equal_each_sample_alone_and_do_not_mix():
    n = sum(map(sum, CHUNKS)) + 2
    mask = block_causal_mask(CHUNKS, padding=2)
    q, k, v = qkv(n)
    out = sliced_attention(q, k, v, mask)
    start = 0
    for sample in CHUNKS:
        end = start + sum(sample)
        alone = sliced_attention(q[:, start:end], k[:, start:end], v[:, start:end], block_causal_mask([sample]))
        torch.testing.assert_close(out[:, start:end], alone, rtol=1e-5, atol=1e-6)
        start = end

    def run(perturb: bool):
        tensors = [t.clone() for t in (q, k, v)]
        if perturb:  # sample A = the first 12 tokens
            for t in tensors:
                t[:, :12] += torch.randn(t[:, :12].shape, generator=torch.Generator().manual_seed(9))
        tensors = [t.requires_grad_() for t in tensors]
        o = sliced_attention(*tensors, mask)
        (o[:, 12:18] * torch.linspace(-1, 1, 8)).sum().backward()  # a loss on sample B only
        return o.detach(), [t.grad for t in tensors]

    base, base_grads = run(False)
    pert, pert_grads = run(True)
    assert not torch.equal(base[:, :12], pert[:, :12])
    assert torch.equal(base[:, 12:18], pert[:, 12:18])  # sample B bitwise unchanged
    for a, b in zip(base_grads, pert_grads, strict=True):
        assert torch.equal(a[:, 12:18], b[:, 12:18])


def test_flex_mask_mod_equals_dense():
    """The flex form's mask_mod evaluated on every (q, k) pair (flex itself runs on CUDA; this is its mask)."""
    mask = block_causal_mask(CHUNKS, padding=2, window=1)
    mod = mask_mod(mask)
    qi = torch.arange(mask.q_len)[:, None].expand(-1, mask.k_len)
    kj = torch.arange(mask.k_len)[None, :].expand(mask.q_len, -1)
    got = torch.vmap(torch.vmap(lambda a, b: mod(0, 0, a, b)))(qi, kj)
    assert torch.equal(got, to_dense(mask))


def test_flash_varlen_arguments_reproduce_dense_attention():
    """flash_attn_varlen_func emulated segment by segment with SDPA: same output as the dense mask."""
    mask = block_causal_mask(CHUNKS, padding=2)
    q, k, v = qkv(mask.q_len, seed=3)
    args = to_flash_varlen(mask)
    qg, kg, vg = q[:, args.q_index], k[:, args.k_index], v[:, args.k_index]
    out = torch.empty_like(q)
    cu_q, cu_k = args.cu_seqlens_q.tolist(), args.cu_seqlens_k.tolist()
    for s in range(len(cu_q) - 1):
        seg = F.scaled_dot_product_attention(qg[None, :, cu_q[s]:cu_q[s + 1]], kg[None, :, cu_k[s]:cu_k[s + 1]],
                                             vg[None, :, cu_k[s]:cu_k[s + 1]])[0]
        out[:, args.q_index[cu_q[s]:cu_q[s + 1]]] = seg
    torch.testing.assert_close(out, sliced_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)
    assert args.max_seqlen_k == 12


def metas(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    res = [(8, 8), (6, 10), (10, 6), (16, 16)]
    out = []
    for i in range(n):
        h, w = res[int(torch.randint(len(res), (1,), generator=g))]
        t = 1 if i % 5 == 0 else 2 * int(torch.randint(1, 9, (1,), generator=g))  # images and 1-8 chunks
        out.append(SampleMeta(f"clip{i:04d}", f"shard-{i // 40:02d}.tar", t, h, w))
    return out


SPEC = PackingSpec(budget=512, chunk_frames=2, patch=(1, 2, 2), packs_per_step=4, buffer_size=64)


def test_plan_covers_every_chunk_once_within_budget_and_is_deterministic():
    index = metas()
    plan = plan_epoch(index, SPEC, seed=1, epoch=0)
    assert plan_epoch(index, SPEC, seed=1, epoch=0).steps == plan.steps
    assert plan_epoch(index, SPEC, seed=2, epoch=0).steps != plan.steps
    assert all(len(step) == SPEC.packs_per_step for step in plan.steps)
    covered = {}
    for piece in plan.pieces():
        assert piece.tokens <= SPEC.budget
        for j in range(len(piece.chunks)):
            covered[(piece.clip, piece.first_chunk + j)] = covered.get((piece.clip, piece.first_chunk + j), 0) + 1
    expected = {(m.key, j) for m in index for j in range(len(chunk_tokens(m, SPEC)))}
    assert set(covered) == expected and set(covered.values()) == {1}
    assert not plan.dropped
    assert any(p.first_chunk > 0 for p in plan.pieces())  # long samples were split at chunk boundaries
    packs = [p for s in plan.steps for p in s]
    padding = 1 - sum(p.tokens for p in packs) / (len(packs) * SPEC.budget)
    assert padding < 0.10


def test_ranks_balanced_by_attention_cost():
    plan = plan_epoch(metas(), SPEC, seed=0, epoch=0)
    ratios = []
    for step in plan.steps:
        ranks = assign_ranks(step, 2)
        assert sorted(i for r in ranks for i in r) == list(range(len(step)))
        assert [len(r) for r in ranks] == [2, 2]  # the same number of micro-batches on every rank
        loads = [sum(step[i].cost for i in r) for r in ranks]
        ratios.append(max(loads) / (sum(loads) / 2))
    assert sum(ratios) / len(ratios) < 1.1
    assert [len(r) for r in assign_ranks(plan.steps[0], 3)] == [2, 1, 1]
    with pytest.raises(ValueError, match="packs_per_step"):
        assign_ranks(plan.steps[0], 5)


def test_attention_cost_is_visible_pairs():
    assert attention_cost([4, 4, 4]) == block_causal_mask([[4, 4, 4]]).area == 4 * 4 + 4 * 8 + 4 * 12
