"""One mask description for packed varlen block-causal attention: MagiAttention-style slices.

A mask is a list of `AttnSlice(q_range, k_range, mask_type)`; a query sees a key when some slice covering
both allows it. Types follow MagiAttention (for a slice of Lq queries and Lk keys, i / j counted from the
slice's start): FULL (every pair), CAUSAL (j <= i + Lk - Lq, bottom-right aligned), INVCAUSAL (j >= i,
top-left aligned), BICAUSAL (both: on a square slice, the diagonal).

A packed block-causal batch is one FULL slice per (sample, chunk): q = the chunk's tokens, k = the sample's
tokens up to the chunk's end (MagiAttention: q = [iB, (i+1)B), k = [0, (i+1)B)); padding is one BICAUSAL
square (each padding token sees itself, as `attention.visible` has it).

Compiled forms: `to_dense` (the SDPA boolean mask: CPU reference), `to_flex_block_mask` (torch flex_attention,
CUDA fast path) and `to_flash_varlen` (flash-attn varlen arguments; FULL slices only, padding expanded to
single tokens). Pure torch; flash-attn itself is never imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import torch


class MaskType(IntEnum):
    FULL = 0
    CAUSAL = 1
    INVCAUSAL = 2
    BICAUSAL = 3


@dataclass(frozen=True)
class AttnSlice:
    q_range: tuple[int, int]  # [start, end)
    k_range: tuple[int, int]
    mask_type: MaskType = MaskType.FULL

    @property
    def area(self) -> int:
        """Visible (query, key) pairs of this slice."""
        lq, lk = self.q_range[1] - self.q_range[0], self.k_range[1] - self.k_range[0]
        if self.mask_type == MaskType.FULL:
            return lq * lk
        band = lk - lq  # CAUSAL: row i sees min(lk, i + band + 1) keys
        causal = sum(max(0, min(lk, i + band + 1)) for i in range(lq))
        if self.mask_type == MaskType.CAUSAL:
            return causal
        inv = sum(max(0, lk - i) for i in range(lq))
        if self.mask_type == MaskType.INVCAUSAL:
            return inv
        return sum(max(0, min(lk, i + band + 1) - i) for i in range(lq))


@dataclass
class AttnMask:
    """Slices over a query sequence of `q_len` tokens and a key sequence of `k_len` tokens."""

    slices: list[AttnSlice]
    q_len: int
    k_len: int

    @property
    def area(self) -> int:
        """Visible (query, key) pairs: the attention cost (slices of one mask never overlap)."""
        return sum(s.area for s in self.slices)


def block_causal_mask(chunk_tokens: Sequence[Sequence[int]], padding: int = 0, window: int | None = None) -> AttnMask:
    """Packed samples back to back, sample i made of chunks with `chunk_tokens[i][c]` tokens, then padding.

    Each chunk sees its own sample's chunks from `c - window` (or the first) up to itself.
    """
    slices, start = [], 0
    for chunks in chunk_tokens:
        ends = [start]
        for n in chunks:
            ends.append(ends[-1] + n)
        for c in range(len(chunks)):
            first = 0 if window is None else max(0, c - window)
            if chunks[c]:
                slices.append(AttnSlice((ends[c], ends[c + 1]), (ends[first], ends[c + 1])))
        start = ends[-1]
    if padding:
        slices.append(AttnSlice((start, start + padding), (start, start + padding), MaskType.BICAUSAL))
    return AttnMask(slices, start + padding, start + padding)


def mask_from_layout(q_sample: torch.Tensor, q_chunk: torch.Tensor, k_sample: torch.Tensor, k_chunk: torch.Tensor,
                     window: int | None = None, isolate: bool = False) -> AttnMask:
    """Slices for any token layout (e.g. a KV cache before the new tokens): one FULL slice per run of equal
    (sample, chunk) queries and run of visible keys; padding queries (sample -1) see only themselves."""
    q_sample, q_chunk, k_sample, k_chunk = (t.cpu() for t in (q_sample, q_chunk, k_sample, k_chunk))
    slices = []
    n, same_len = len(q_sample), len(q_sample) == len(k_sample)
    change = torch.ones(n, dtype=torch.bool)
    if n > 1:
        change[1:] = (q_sample[1:] != q_sample[:-1]) | (q_chunk[1:] != q_chunk[:-1])
    starts = change.nonzero()[:, 0].tolist() + [n]
    for a, b in zip(starts[:-1], starts[1:], strict=False):
        s, c = int(q_sample[a]), int(q_chunk[a])
        if s < 0:
            if same_len:
                slices.append(AttnSlice((a, b), (a, b), MaskType.BICAUSAL))
            continue
        row = (k_sample == s) & ((k_chunk == c) if isolate else (k_chunk <= c))
        if window is not None and not isolate:
            row &= k_chunk >= c - window
        for ka, kb in _runs(row):
            slices.append(AttnSlice((a, b), (ka, kb)))
    return AttnMask(slices, n, len(k_sample))


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) runs of True in a boolean vector."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), row.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    edges = padded.diff().nonzero()[:, 0].tolist()
    return list(zip(edges[0::2], edges[1::2], strict=False))


def _allowed(t: MaskType, i: torch.Tensor, j: torch.Tensor, lq: int | torch.Tensor, lk: int | torch.Tensor):
    """May slice-local query i see slice-local key j under mask type t (broadcasting tensors)."""
    causal = j <= i + (lk - lq)
    inv = j >= i
    full = torch.ones_like(causal)
    return torch.where(t == MaskType.FULL, full, torch.where(t == MaskType.CAUSAL, causal,
                       torch.where(t == MaskType.INVCAUSAL, inv, causal & inv)))


def to_dense(mask: AttnMask, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean [q_len, k_len] for scaled_dot_product_attention(attn_mask=...)."""
    out = torch.zeros(mask.q_len, mask.k_len, dtype=torch.bool, device=device)
    for s in mask.slices:
        (qa, qb), (ka, kb) = s.q_range, s.k_range
        if s.mask_type == MaskType.FULL:
            out[qa:qb, ka:kb] = True
            continue
        i = torch.arange(qb - qa, device=device)[:, None]
        j = torch.arange(kb - ka, device=device)[None, :]
        out[qa:qb, ka:kb] |= _allowed(torch.tensor(int(s.mask_type), device=device), i, j, qb - qa, kb - ka)
    return out


def slice_table(mask: AttnMask, device: torch.device | str = "cpu") -> torch.Tensor:
    """Per query token, the slices covering it: int64 [q_len, M, 5] rows (q_start, q_len, k_start, k_len, type);
    unused rows have k_len 0. M is the largest number of slices over one query (1 for a packed batch)."""
    per_query = torch.zeros(mask.q_len + 1, dtype=torch.long)
    for s in mask.slices:
        per_query[s.q_range[0]] += 1
        per_query[s.q_range[1]] -= 1
    width = max(1, int(per_query.cumsum(0).max()))
    table = torch.zeros(mask.q_len, width, 5, dtype=torch.long)
    fill = torch.zeros(mask.q_len, dtype=torch.long)
    for s in mask.slices:
        (qa, qb), (ka, kb) = s.q_range, s.k_range
        slot = int(fill[qa:qb].max()) if qb > qa else 0
        table[qa:qb, slot] = torch.tensor([qa, qb - qa, ka, kb - ka, int(s.mask_type)])
        fill[qa:qb] = slot + 1
    return table.to(device)


def mask_mod(mask: AttnMask, device: torch.device | str = "cpu"):
    """A flex_attention mask_mod(b, h, q_idx, kv_idx) that evaluates the slices (vectorised by flex)."""
    table = slice_table(mask, device)

    def mod(b, h, q_idx, kv_idx):
        rows = table[q_idx]  # [M, 5]
        qa, lq, ka, lk, t = rows.unbind(-1)
        j = kv_idx - ka
        inside = (j >= 0) & (j < lk)
        return (inside & _allowed(t, q_idx - qa, j, lq, lk)).any()

    return mod


def to_flex_block_mask(mask: AttnMask, device: torch.device | str = "cuda"):
    """torch flex_attention BlockMask of the slices (CUDA fast path; on CPU forward only)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod(mask, device), None, None, mask.q_len, mask.k_len, device=device)


@dataclass
class FlashVarlen:
    """Arguments of flash_attn_varlen_func for a gathered layout: query segment n is q[q_index][cu_q[n]:cu_q[n+1]]
    against keys k[k_index][cu_k[n]:cu_k[n+1]] with full (non-causal) attention."""

    q_index: torch.Tensor  # [total_q] positions in the original query sequence
    k_index: torch.Tensor  # [total_k] positions in the original key sequence
    cu_seqlens_q: torch.Tensor  # int32 [S + 1]
    cu_seqlens_k: torch.Tensor  # int32 [S + 1]
    max_seqlen_q: int
    max_seqlen_k: int


def to_flash_varlen(mask: AttnMask, device: torch.device | str = "cpu") -> FlashVarlen:
    """One varlen segment per query range: its keys are the union of its FULL slices' key ranges (gathered);
    a BICAUSAL square (padding) becomes one single-token segment per token. Other types are refused."""
    by_q: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for s in mask.slices:
        if s.mask_type == MaskType.FULL:
            by_q.setdefault(s.q_range, []).append(s.k_range)
        elif s.mask_type == MaskType.BICAUSAL and s.q_range[1] - s.q_range[0] == s.k_range[1] - s.k_range[0]:
            for n in range(s.q_range[1] - s.q_range[0]):
                by_q.setdefault((s.q_range[0] + n, s.q_range[0] + n + 1), []).append(
                    (s.k_range[0] + n, s.k_range[0] + n + 1))
        else:
            raise ValueError(f"flash-attn varlen cannot express a {s.mask_type.name} slice {s}")
    q_idx, k_idx, cu_q, cu_k = [], [], [0], [0]
    for (qa, qb), k_ranges in sorted(by_q.items()):
        q_idx.append(torch.arange(qa, qb))
        keys = torch.cat([torch.arange(a, b) for a, b in sorted(k_ranges)])
        k_idx.append(keys)
        cu_q.append(cu_q[-1] + qb - qa)
        cu_k.append(cu_k[-1] + len(keys))
    lens_q = [b - a for a, b in zip(cu_q[:-1], cu_q[1:], strict=False)]
    lens_k = [b - a for a, b in zip(cu_k[:-1], cu_k[1:], strict=False)]
    return FlashVarlen(torch.cat(q_idx).to(device), torch.cat(k_idx).to(device),
                       torch.tensor(cu_q, dtype=torch.int32, device=device),
                       torch.tensor(cu_k, dtype=torch.int32, device=device), max(lens_q), max(lens_k))
