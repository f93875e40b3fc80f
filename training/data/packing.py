"""The packing plan of an epoch: a pure function of (seed, epoch, sample index, packing settings).

Samples (clips' latents, known by their shapes only) stream in a seeded shard order; samples longer than the
token budget are split at chunk boundaries; a shuffle buffer of `buffer_size` pieces is packed by
first-fit-decreasing into packs of `budget` tokens (packs filled below `min_fill` go back to the buffer to meet
the next samples). Packs are grouped into global steps of `packs_per_step` packs that have similar attention
cost per token (sorted by cost per token within a window of packs), so that a step's packs split evenly
across ranks; `assign_ranks` then gives each rank a share of a step's packs, longest (costliest) first onto
the least-loaded rank. The plan does not depend on the number of ranks: that is what makes resuming on a
different number of ranks consume the same samples by the same global step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SampleMeta:
    """One clip's latent as the plan sees it: where it lives and its shape."""

    key: str
    shard: str
    frames: int  # latent T
    height: int  # latent H
    width: int  # latent W


@dataclass(frozen=True)
class PackingSpec:
    budget: int  # tokens per pack
    chunk_frames: int = 6  # latent frames per chunk (DiT config)
    patch: tuple[int, int, int] = (1, 2, 2)  # DiT patch (t, h, w)
    packs_per_step: int = 8  # packs per global step, whatever the number of ranks
    buffer_size: int = 512  # pieces in the shuffle buffer
    min_fill: float = 0.98  # packs below this fill wait for more samples (until the epoch's end)
    balance_window: int = 16  # global steps whose packs are sorted together by cost per token
    max_chunks: int | None = None  # split samples into pieces of at most this many chunks


def chunk_tokens(meta: SampleMeta, spec: PackingSpec) -> list[int]:
    """Tokens of each chunk of a sample after the DiT patchify (the last chunk may be short)."""
    pt, ph, pw = spec.patch
    per_frame = (meta.height // ph) * (meta.width // pw)
    frames = meta.frames // pt
    frames_per_chunk = max(1, spec.chunk_frames // pt)
    return [min(frames_per_chunk, frames - start) * per_frame for start in range(0, frames, frames_per_chunk)]


def attention_cost(chunks: Sequence[int]) -> int:
    """Visible (query, key) pairs of one sample under the block-causal mask: sum_c n_c * (n_0 + ... + n_c)."""
    total, seen = 0, 0
    for n in chunks:
        seen += n
        total += n * seen
    return total


@dataclass(frozen=True)
class Piece:
    """Whole chunks [first_chunk, first_chunk + len(chunks)) of one clip: one training sample."""

    clip: str
    first_chunk: int
    chunks: tuple[int, ...]  # tokens per chunk
    n_clip_chunks: int

    @property
    def key(self) -> str:
        return self.clip if len(self.chunks) == self.n_clip_chunks else f"{self.clip}@{self.first_chunk}"

    @property
    def tokens(self) -> int:
        return sum(self.chunks)

    @property
    def cost(self) -> int:
        return attention_cost(self.chunks)


@dataclass
class Pack:
    pieces: list[Piece] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.pieces)

    @property
    def cost(self) -> int:
        return sum(p.cost for p in self.pieces)


@dataclass
class EpochPlan:
    steps: list[list[Pack]]  # global steps, each exactly packs_per_step packs
    shard_order: list[str]
    dropped: list[str]  # pieces that fit no complete global step at the epoch's end (reported, never silent)
    budget: int

    def pieces(self):
        for step in self.steps:
            for pack in step:
                yield from pack.pieces


def split(meta: SampleMeta, spec: PackingSpec) -> list[Piece]:
    """A sample as pieces of whole chunks, each within the budget (and `max_chunks`)."""
    chunks = chunk_tokens(meta, spec)
    if not chunks:
        return []
    if max(chunks) > spec.budget:
        raise ValueError(f"sample {meta.key}: one chunk has {max(chunks)} tokens, over the budget {spec.budget}")
    pieces, start = [], 0
    while start < len(chunks):
        end, used = start, 0
        while end < len(chunks) and used + chunks[end] <= spec.budget and \
                (spec.max_chunks is None or end - start < spec.max_chunks):
            used += chunks[end]
            end += 1
        pieces.append(Piece(meta.key, start, tuple(chunks[start:end]), len(chunks)))
        start = end
    return pieces


def first_fit_decreasing(pieces: list[Piece], budget: int) -> list[Pack]:
    """Largest pieces first, each into the first pack with room (ties broken by key: deterministic)."""
    packs: list[Pack] = []
    room: list[int] = []
    for piece in sorted(pieces, key=lambda p: (-p.tokens, p.key)):
        for i, free in enumerate(room):
            if piece.tokens <= free:
                packs[i].pieces.append(piece)
                room[i] -= piece.tokens
                break
        else:
            packs.append(Pack([piece]))
            room.append(budget - piece.tokens)
    return packs


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _stream(metas: Sequence[SampleMeta], spec: PackingSpec, rng: np.random.Generator):
    """Pieces in the epoch's shard order (shards shuffled, members in shard order) and that order."""
    shards = list(dict.fromkeys(m.shard for m in metas))
    order = [shards[i] for i in rng.permutation(len(shards))]
    by_shard: dict[str, list[SampleMeta]] = {}
    for m in metas:
        by_shard.setdefault(m.shard, []).append(m)

    def pieces():
        for shard in order:
            for m in by_shard[shard]:
                yield from split(m, spec)

    return pieces(), order


def _packs(stream, spec: PackingSpec, rng: np.random.Generator):
    """First-fit-decreasing over a shuffle buffer; well-filled packs leave, the rest wait for more pieces."""
    buffer: list[Piece] = []
    for piece in stream:
        buffer.append(piece)
        if len(buffer) < spec.buffer_size:
            continue
        packs = sorted(first_fit_decreasing(buffer, spec.budget), key=lambda p: -p.tokens)  # stable
        n_ready = sum(p.tokens >= spec.min_fill * spec.budget for p in packs)
        waiting_pieces = sum(len(p.pieces) for p in packs[n_ready:])
        while n_ready < len(packs) and (n_ready == 0 or waiting_pieces > spec.buffer_size * 3 // 4):
            waiting_pieces -= len(packs[n_ready].pieces)  # the buffer must drain: fullest waiting packs go too
            n_ready += 1
        ready, waiting = packs[:n_ready], packs[n_ready:]
        rng.shuffle(ready)
        yield from ready
        buffer = [piece for p in waiting for piece in p.pieces]
    final = first_fit_decreasing(buffer, spec.budget)
    rng.shuffle(final)
    yield from final


def _complete(packs: list[Pack], n: int) -> list[Pack]:
    """Split packs (at sample, then chunk boundaries) until there are n of them; [] if that cannot be done."""
    packs = [Pack(list(p.pieces)) for p in packs]
    while 0 < len(packs) < n:
        pack = max(packs, key=lambda p: (len(p.pieces), p.tokens))
        if len(pack.pieces) > 1:
            half = len(pack.pieces) // 2
            packs.remove(pack)
            packs += [Pack(pack.pieces[:half]), Pack(pack.pieces[half:])]
            continue
        longest = max(packs, key=lambda p: len(p.pieces[0].chunks))
        piece = longest.pieces[0]
        if len(piece.chunks) < 2:
            return []
        half = len(piece.chunks) // 2
        packs.remove(longest)
        packs += [Pack([Piece(piece.clip, piece.first_chunk, piece.chunks[:half], piece.n_clip_chunks)]),
                  Pack([Piece(piece.clip, piece.first_chunk + half, piece.chunks[half:], piece.n_clip_chunks)])]
    return packs


def _steps(packs, spec: PackingSpec, rng: np.random.Generator, dropped: list[str]) -> list[list[Pack]]:
    """Windows of packs sorted by cost per token, cut into global steps, the window's steps shuffled."""
    steps: list[list[Pack]] = []
    window: list[Pack] = []
    size = spec.packs_per_step * spec.balance_window

    def flush(final: bool) -> None:
        ordered = sorted(window, key=lambda p: (-p.cost / max(1, p.tokens), -p.tokens, p.pieces[0].key))
        cut = len(ordered) - len(ordered) % spec.packs_per_step
        group = [ordered[i:i + spec.packs_per_step] for i in range(0, cut, spec.packs_per_step)]
        rest = ordered[cut:]
        if final and rest:
            completed = _complete(rest, spec.packs_per_step)
            if completed:
                group.append(completed)
            else:
                dropped.extend(piece.key for p in rest for piece in p.pieces)
            rest = []
        order = rng.permutation(len(group))
        steps.extend(group[i] for i in order)
        window[:] = rest

    for pack in packs:
        window.append(pack)
        if len(window) >= size:
            flush(final=False)
    flush(final=True)
    return steps


def plan_epoch(metas: Sequence[SampleMeta], spec: PackingSpec, seed: int, epoch: int) -> EpochPlan:
    """The whole epoch's global steps; the same inputs always give the same plan."""
    rng = _rng(seed, epoch)
    stream, order = _stream(metas, spec, rng)
    dropped: list[str] = []
    steps = _steps(_packs(stream, spec, rng), spec, rng, dropped)
    return EpochPlan(steps, order, dropped, spec.budget)


def assign_ranks(step: Sequence[Pack], world_size: int) -> list[list[int]]:
    """Pack indices per rank: costliest pack first onto the rank with the least attention cost so far, among the
    ranks that still have room: every rank gets len(step) // world_size packs (the first len(step) % world_size
    ranks one more), so ranks run the same number of micro-batches."""
    if world_size > len(step):
        raise ValueError(f"a global step has {len(step)} packs, fewer than the {world_size} ranks: set "
                         f"packs_per_step to at least the largest number of ranks you will train (or resume) on")
    caps = [len(step) // world_size + (1 if r < len(step) % world_size else 0) for r in range(world_size)]
    loads = [0] * world_size
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(step)), key=lambda i: (-step[i].cost, i)):
        r = min((r for r in range(world_size) if len(ranks[r]) < caps[r]), key=lambda r: (loads[r], r))
        ranks[r].append(i)
        loads[r] += step[i].cost
    return [sorted(r) for r in ranks]


def fingerprint(metas: Sequence[SampleMeta]) -> str:
    """Identifies the sample index a plan was made from (a resumed run checks it is the same)."""
    digest = hashlib.sha256()
    for m in metas:
        digest.update(f"{m.key}|{m.shard}|{m.frames}|{m.height}|{m.width}\n".encode())
    return digest.hexdigest()[:16]
