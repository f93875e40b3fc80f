"""Global dedup: exact (content hash) and near duplicates (key-frame pHashes with LSH banding; CLIP
cosine as well when both clips have embeddings), across all inputs of a run.

The middle frame's 64-bit pHash is cut into `bands` pieces; clips that share a piece (or the exact
content hash) land in one bucket. Buckets are spread over partitions that the `NearDuplicatePairs`
stage checks on Ray, pairwise inside a bucket only, so no process ever compares all pairs. Connected
pairs form groups; the best-ranked member is kept and every other member records the group and it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from vidmill.pipeline.config import StageResources, Thresholds
from vidmill.pipeline.decide import rank_key
from vidmill.pipeline.executor.actor_pool import Done
from vidmill.pipeline.executor.runner import StageRunner
from vidmill.pipeline.outcomes import DUPLICATE
from vidmill.pipeline.records import ClipRecord
from vidmill.pipeline.scoring.hashes import hamming
from vidmill.pipeline.stage import Stage


@dataclass(frozen=True)
class DedupItem:
    clip_id: str
    content_hash: str
    phashes: tuple[int, ...]
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DedupRule:
    phash_distance_max: int
    clip_cosine_min: float


def bucket_keys(item: DedupItem, bands: int) -> list[tuple]:
    """The LSH buckets of one item: its exact hash and each band of its middle pHash."""
    width = 64 // bands
    middle = item.phashes[len(item.phashes) // 2]
    return [("exact", item.content_hash),
            *((band, (middle >> (band * width)) & ((1 << width) - 1)) for band in range(bands))]


def buckets(items: list[DedupItem], bands: int) -> list[list[DedupItem]]:
    """Groups of two or more items sharing an exact hash or one band of the middle pHash."""
    by_key: dict[tuple, list[DedupItem]] = defaultdict(list)
    for item in items:
        for key in bucket_keys(item, bands):
            by_key[key].append(item)
    return [members for members in by_key.values() if len(members) > 1]


def partitions(groups: list[list[DedupItem]], n: int) -> list[list[list[DedupItem]]]:
    parts: list[list[list[DedupItem]]] = [[] for _ in range(n)]
    for members in groups:
        key = hashlib.sha1(",".join(sorted(m.clip_id for m in members)).encode()).digest()
        parts[key[0] % n].append(members)
    return [p for p in parts if p]


def is_duplicate(a: DedupItem, b: DedupItem, rule: DedupRule) -> bool:
    if a.content_hash == b.content_hash:
        return True
    if any(hamming(x, y) > rule.phash_distance_max for x, y in zip(a.phashes, b.phashes, strict=True)):
        return False
    if a.embedding is not None and b.embedding is not None:
        return float(np.dot(a.embedding, b.embedding)) >= rule.clip_cosine_min
    return True


def bucket_pairs(members: list[DedupItem], rule: DedupRule, block: int = 512) -> set[tuple[str, str]]:
    """`is_duplicate` over every pair of one bucket, the pHash distances in numpy (rows in blocks)."""
    if len(members) < 2:
        return set()
    ids = [m.clip_id for m in members]
    hashes = np.array([list(m.phashes) for m in members], dtype=np.uint64)
    _, content = np.unique([m.content_hash for m in members], return_inverse=True)
    pairs = set()
    for start in range(0, len(members), block):
        rows = slice(start, start + block)
        distance = np.bitwise_count(hashes[rows, None, :] ^ hashes[None, :, :]).max(axis=2)
        same = content[rows, None] == content[None, :]
        near = distance <= rule.phash_distance_max
        upper = np.arange(start, min(start + block, len(members)))[:, None] < np.arange(len(members))[None, :]
        for i, j in zip(*np.nonzero((same | near) & upper), strict=True):
            a, b = members[start + i], members[j]
            if a.clip_id == b.clip_id:
                continue
            if same[i, j] or a.embedding is None or b.embedding is None or \
                    float(np.dot(a.embedding, b.embedding)) >= rule.clip_cosine_min:
                pairs.add(tuple(sorted((ids[start + i], ids[j]))))
    return pairs


class NearDuplicatePairs(Stage):
    """Pairs of duplicates inside each bucket of one partition."""

    name = "dedup"

    def __init__(self, rule: DedupRule, resources=None):
        super().__init__(resources)
        self.rule = rule

    def process(self, part: list[list[DedupItem]]) -> set[tuple[str, str]]:
        pairs = set()
        for members in part:
            for i, a in enumerate(members):
                for b in members[i + 1:]:
                    if a.clip_id != b.clip_id and is_duplicate(a, b, self.rule):
                        pairs.add(tuple(sorted((a.clip_id, b.clip_id))))
        return pairs


def duplicate_groups(clip_ids: list[str], pairs: set[tuple[str, str]], rank: dict[str, tuple]
                     ) -> dict[str, tuple[str, str | None]]:
    """clip_id -> (dup_group, dup_of) for every clip in a group; the best-ranked member has dup_of None."""
    parent = {c: c for c in clip_ids}

    def find(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for a, b in pairs:
        parent[find(a)] = find(b)
    members: dict[str, list[str]] = defaultdict(list)
    for c in clip_ids:
        members[find(c)].append(c)
    out = {}
    for group in members.values():
        if len(group) < 2:
            continue
        best = max(group, key=lambda c: (rank[c], c))
        group_id = "dup-" + hashlib.sha1(",".join(sorted(group)).encode()).hexdigest()[:12]
        for c in group:
            out[c] = (group_id, None if c == best else best)
    return out


def mark_duplicates(clips: list[ClipRecord], th: Thresholds, runner: StageRunner, resources: StageResources) -> None:
    """Global dedup among the clips still kept: set dup_group / dup_of, reject all but the best of a group."""
    candidates = [c for c in clips if c.kept and c.scores.get("phashes")]
    if not th.dedup or len(candidates) < 2:
        return
    items = [DedupItem(c.clip_id, c.scores["content_hash"], tuple(int(h, 16) for h in c.scores["phashes"]),
                       tuple(c.scores["clip_embedding"]) if c.scores.get("clip_embedding") else None)
             for c in candidates]
    parts = partitions(buckets(items, th.lsh_bands), max(1, resources.concurrency * 4))
    pairs: set[tuple[str, str]] = set()

    def collect(done: Done) -> None:
        if done.error:
            raise RuntimeError(f"dedup failed: {done.error}")
        pairs.update(done.value)

    if parts:
        pool = runner.pool(NearDuplicatePairs, DedupRule(th.phash_distance_max, th.clip_cosine_min),
                           resources=resources)
        runner.map(pool, enumerate(parts), collect)
    by_id = {c.clip_id: c for c in candidates}
    groups = duplicate_groups(list(by_id), pairs, {k: rank_key(v.row()) for k, v in by_id.items()})
    for clip_id, (group, dup_of) in groups.items():
        clip = by_id[clip_id]
        clip.dup_group, clip.dup_of = group, dup_of
        if dup_of is not None:
            clip.reject(DUPLICATE.name)
