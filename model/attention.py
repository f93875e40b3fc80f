"""Block-causal attention behind one interface, with three backends.

Tokens carry a sample id (packed sequences) and a chunk id. A query sees a key when both belong to the
same sample and the key's chunk is not later than the query's (full attention inside a chunk, causal
across chunks), optionally only within `window` previous chunks, or only its own chunk (`isolate`).
Padding tokens have sample id -1 and see only themselves.

Backends: "sdpa" (dense boolean mask; CPU and CUDA, forward and backward: the reference),
"flex" (torch flex_attention with a block mask: CUDA; on CPU forward only), "flash" (flash-attn varlen,
CUDA only, import-guarded). `sliced_attention` takes the same backends over a MagiAttention-style slice
description (model/mask.py), which the packing loader emits with every batch.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidmill.model.mask import AttnMask, mask_from_layout, to_dense, to_flash_varlen, to_flex_block_mask

BACKENDS = ("sdpa", "flex", "flash")


@dataclass
class TokenLayout:
    """Per-token sample and chunk ids, shape [N] each (one packed sequence)."""

    sample_id: torch.Tensor
    chunk_id: torch.Tensor

    def cat(self, other: TokenLayout) -> TokenLayout:
        return TokenLayout(torch.cat([self.sample_id, other.sample_id]), torch.cat([self.chunk_id, other.chunk_id]))

    def __len__(self) -> int:
        return self.sample_id.numel()


def visible(q: TokenLayout, k: TokenLayout, window: int | None = None, isolate: bool = False) -> torch.Tensor:
    """Boolean [Nq, Nk]: may query i attend to key j."""
    qs, qc = q.sample_id[:, None], q.chunk_id[:, None]
    ks, kc = k.sample_id[None, :], k.chunk_id[None, :]
    mask = (qs == ks) & (qs >= 0)
    mask &= (kc == qc) if isolate else (kc <= qc)
    if window is not None and not isolate:
        mask &= kc >= qc - window
    if len(q) == len(k):  # padding sees itself, so no row is empty
        mask |= torch.eye(len(q), dtype=torch.bool, device=mask.device) & (qs < 0)
    return mask


def check_backend(backend: str, device: torch.device, needs_grad: bool) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "flash":
        if device.type != "cuda":
            raise RuntimeError("attention backend 'flash' (flash-attn) needs a CUDA device; use 'sdpa' here")
        try:
            import flash_attn  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("attention backend 'flash' needs the flash-attn package (pip install flash-attn)") \
                from exc
    if backend == "flex" and device.type == "cpu" and needs_grad:
        raise RuntimeError("attention backend 'flex' has no backward pass on CPU; train with 'sdpa' on CPU")


def block_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_layout: TokenLayout,
                           k_layout: TokenLayout, backend: str = "sdpa", window: int | None = None,
                           isolate: bool = False) -> torch.Tensor:
    """q [Hq, Nq, D], k/v [Hkv, Nk, D] (GQA when Hkv < Hq) -> [Hq, Nq, D]."""
    check_backend(backend, q.device, torch.is_grad_enabled() and q.requires_grad)
    if backend == "sdpa":
        mask = visible(q_layout, k_layout, window, isolate)
        return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask[None, None],
                                              enable_gqa=k.shape[0] != q.shape[0])[0]
    if backend == "flex":
        return _flex(q, k, v, q_layout, k_layout, window, isolate)
    return _flash(q, k, v, q_layout, k_layout, window, isolate)


def sliced_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask,
                     backend: str = "sdpa") -> torch.Tensor:
    """q [Hq, Nq, D], k/v [Hkv, Nk, D] under a slice mask, compiled to the backend's form."""
    check_backend(backend, q.device, torch.is_grad_enabled() and q.requires_grad)
    gqa = k.shape[0] != q.shape[0]
    if backend == "sdpa":
        dense = to_dense(mask, q.device)
        return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=dense[None, None],
                                              enable_gqa=gqa)[0]
    if backend == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        block_mask = to_flex_block_mask(mask, q.device)
        return flex_attention(q[None], k[None], v[None], block_mask=block_mask, enable_gqa=gqa)[0]
    return _flash_varlen(q, k, v, mask)


def _flash_varlen(q, k, v, mask: AttnMask):
    from flash_attn import flash_attn_varlen_func

    args = to_flash_varlen(mask, q.device)
    qi, kj = args.q_index, args.k_index
    out = flash_attn_varlen_func(
        q[:, qi].transpose(0, 1).contiguous(), k[:, kj].transpose(0, 1).contiguous(),
        v[:, kj].transpose(0, 1).contiguous(), args.cu_seqlens_q, args.cu_seqlens_k, args.max_seqlen_q,
        args.max_seqlen_k)
    result = torch.zeros_like(q)  # a query no slice covers (padding before a KV cache) reads nothing
    result[:, qi] = out.transpose(0, 1)
    return result


_LAST_BLOCK_MASK: tuple | None = None  # (weak refs to the layout tensors, window, isolate, lengths, BlockMask)


@functools.cache
def _flex_kernel():
    """flex_attention compiled once per process (fused kernels on CUDA; uncompiled it materialises the scores)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _cached_block_mask(q_layout: TokenLayout, k_layout: TokenLayout, window, isolate, make):
    """Every block of one forward pass shares its layouts: build their BlockMask once, not once per block.

    Keyed by weak references to the layout tensors themselves, so a new batch (new tensors) never hits."""
    global _LAST_BLOCK_MASK
    tensors = (q_layout.sample_id, q_layout.chunk_id, k_layout.sample_id, k_layout.chunk_id)
    key = (window, isolate, len(q_layout), len(k_layout))
    if _LAST_BLOCK_MASK is not None:
        refs, old_key, mask = _LAST_BLOCK_MASK
        if old_key == key and all(r() is t for r, t in zip(refs, tensors, strict=True)):
            return mask
    mask = make()
    _LAST_BLOCK_MASK = (tuple(weakref.ref(t) for t in tensors), key, mask)
    return mask


def _flex(q, k, v, q_layout, k_layout, window, isolate):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    qs, qc, ks, kc = q_layout.sample_id, q_layout.chunk_id, k_layout.sample_id, k_layout.chunk_id
    same_len = len(q_layout) == len(k_layout)

    def mask_mod(b, h, qi, kj):
        ok = (qs[qi] == ks[kj]) & (qs[qi] >= 0)
        ok = ok & ((kc[kj] == qc[qi]) if isolate else (kc[kj] <= qc[qi]))
        if window is not None and not isolate:
            ok = ok & (kc[kj] >= qc[qi] - window)
        if same_len:
            ok = ok | ((qi == kj) & (qs[qi] < 0))
        return ok

    def make():
        return create_block_mask(mask_mod, None, None, q.shape[1], k.shape[1], device=q.device)

    if q.device.type != "cuda":
        return flex_attention(q[None], k[None], v[None], block_mask=make(), enable_gqa=k.shape[0] != q.shape[0])[0]
    return _flex_fused(q, k, v, q_layout, k_layout, window, isolate, make)


@torch.compiler.disable
def _flex_fused(q, k, v, q_layout, k_layout, window, isolate, make):
    """The compiled flex kernel with the forward pass's shared block mask, run outside any compiled block (a
    graph break there): inductor fails on flex traced inside a block compiled with dynamic lengths (CantSplit,
    torch 2.11, measured on an H200), and this kernel is compiled already."""
    block_mask = _cached_block_mask(q_layout, k_layout, window, isolate, make)
    return _flex_kernel()(q[None], k[None], v[None], block_mask=block_mask, enable_gqa=k.shape[0] != q.shape[0])[0]


def _flash(q, k, v, q_layout, k_layout, window, isolate):
    """flash-attn varlen over the layout's slices: each (sample, chunk) query range against its visible keys."""
    mask = mask_from_layout(q_layout.sample_id, q_layout.chunk_id, k_layout.sample_id, k_layout.chunk_id,
                            window, isolate)
    return _flash_varlen(q, k, v, mask)
