"""The packing loader: one `PackedBatch` per global step for this rank, resumable and elastic.

Usage (one loader per rank; it has no collective operations, each rank computes the same plan):

    from vidmill.training.data.loader import PackingLoader
    loader = PackingLoader.for_model("LATENTS", size="tiny", budget=4096, packs_per_step=8, seed=0)
    # rank / world_size default to torch.distributed's when it is initialised, else 0 / 1
    for batch in loader:                      # endless unless max_epochs is set
        for idx in batch.packs:               # this rank's packs: micro-batches of at most batch.pack_budget
            samples = [batch.samples[i] for i in idx]
            ...  # vidmill.model.dit.pack([s.latent for s in samples], t, [s.captions ...], cfg)
    # or micro_batches=True: one PackedBatch per pack (<= budget tokens), the trainer's micro-batch;
    # loader.packs_per_rank micro-batches make one global step (gradient accumulation)
    state = loader.state_dict()               # JSON-able; same on every rank at a step boundary
    loader.load_state_dict(state)             # before iterating: continues at the next global step

A global step is `packs_per_step` packs whatever the number of ranks; each rank gets a share of them balanced
by attention cost (one pack each when world_size == packs_per_step). Resuming on another number of ranks
consumes the same samples by the same global step. The state is (epoch, global step, settings, skipped
counts); the shuffle buffer and RNG are rebuilt exactly from the seed because the plan is a pure function
(training/data/packing.py). A stall watchdog reports a loader that stops making progress.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidmill.model.mask import AttnMask, block_causal_mask
from vidmill.training.data.packing import (
    EpochPlan,
    PackingSpec,
    Piece,
    SampleMeta,
    assign_ranks,
    chunk_tokens,
    fingerprint,
    plan_epoch,
)
from vidmill.training.data.sample import LatentSample, PackedBatch
from vidmill.training.data.shards import decode_clip, iter_shard, open_binary, read_index

log = logging.getLogger(__name__)
STATE_VERSION = 1


class LoaderStalled(RuntimeError):
    """The loader made no progress for longer than `stall_abort_s`."""


@dataclass
class RankBatch(PackedBatch):
    """PackedBatch plus what a rank needs to run it: its packs (micro-batches) and their masks."""

    packs: list[list[int]] = field(default_factory=list)  # indices into samples, one list per pack
    masks: list[AttnMask] = field(default_factory=list)  # block-causal slices of each pack, padded to pack_budget
    pack_budget: int = 0
    epoch: int = 0
    global_step: int = 0  # index of this step within the epoch
    step: int = 0  # global steps since the start of training


class PackingLoader:
    def __init__(self, latents_dir: str | Path, spec: PackingSpec, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, max_epochs: int | None = None, prefetch: int = 2,
                 stall_timeout_s: float = 60.0, stall_abort_s: float | None = None,
                 on_stall: Callable[[dict], None] | None = None, index: list[SampleMeta] | None = None,
                 open_file: Callable = open_binary, micro_batches: bool = False):
        self.root = Path(latents_dir)
        self.shard_dir = self.root / "shards"
        self.index = index if index is not None else read_index(self.root)
        self.spec, self.seed = spec, seed
        default_rank, default_world = _dist_rank_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        if micro_batches and spec.packs_per_step % self.world_size:
            log.warning("loader: packs_per_step %d is not a multiple of %d ranks: ranks get different numbers of "
                        "micro-batches per step", spec.packs_per_step, self.world_size)
        self.max_epochs, self.prefetch = max_epochs, prefetch
        self.stall_timeout_s, self.stall_abort_s, self.on_stall = stall_timeout_s, stall_abort_s, on_stall
        self.open_file = open_file
        self.fingerprint = fingerprint(self.index)
        self.epoch, self.global_step, self.step, self.micro = 0, 0, 0, 0
        self.micro_batches = micro_batches
        self._pending: list[RankBatch] = []
        self._after = (0, 0)
        self.skipped: dict[str, int] = {"corrupt": 0, "missing": 0, "bad_shard": 0}
        self.skipped_keys: list[str] = []
        self._pending_skips: list[tuple[str, str]] = []
        self.stalls = 0
        self._plans: dict[int, EpochPlan] = {}
        self._plan_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._busy = False
        self._activity = "idle"

    @classmethod
    def for_model(cls, latents_dir: str | Path, size: str = "tiny", budget: int = 4096, packs_per_step: int = 8,
                  **kw: Any) -> PackingLoader:
        """Chunk length and patch from a model size preset (vidmill.model.sizes)."""
        from vidmill.model.sizes import get_size

        cfg = get_size(size).dit
        spec_keys = {"buffer_size", "min_fill", "balance_window", "max_chunks"}
        spec = PackingSpec(budget=budget, chunk_frames=cfg.chunk_frames, patch=cfg.patch,
                           packs_per_step=packs_per_step, **{k: kw.pop(k) for k in list(kw) if k in spec_keys})
        return cls(latents_dir, spec, **kw)

    # -- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from; identical on every rank; JSON-able."""
        spec = asdict(self.spec)
        spec["patch"] = list(spec["patch"])
        return {"version": STATE_VERSION, "seed": self.seed, "epoch": self.epoch, "global_step": self.global_step,
                "micro": self.micro, "step": self.step, "spec": spec, "fingerprint": self.fingerprint,
                "shard_cursor": self._shard_cursor(), "skipped": dict(self.skipped), "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` left off (call before iterating). The packing settings and seed of the state
        win over this loader's, since they define the sample order; another world size is fine."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} is not {STATE_VERSION}")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError("loader state was made from a different latents index (manifest changed)")
        self.close()
        spec = dict(state["spec"])
        spec["patch"] = tuple(spec["patch"])
        new_spec = PackingSpec(**spec)
        if new_spec != self.spec or state["seed"] != self.seed:
            log.warning("loader: resuming with the saved packing settings %s and seed %s", new_spec, state["seed"])
        self.spec, self.seed = new_spec, state["seed"]
        if state.get("micro", 0) and state.get("world_size") != self.world_size:
            raise ValueError("this loader state is in the middle of a global step (micro-batch "
                             f"{state['micro']}): resume it on {state.get('world_size')} ranks, or from a state saved "
                             "at a step boundary")
        self.epoch, self.global_step, self.step = state["epoch"], state["global_step"], state["step"]
        self.micro, self._pending = state.get("micro", 0), []
        self.skipped = {**self.skipped, **state.get("skipped", {})}
        self._plans.clear()

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's plan (computed once; the reader thread and state_dict share the last two epochs')."""
        with self._plan_lock:
            if epoch not in self._plans:
                self._plans[epoch] = plan_epoch(self.index, self.spec, self.seed, epoch)
                for old in sorted(self._plans)[:-2]:
                    del self._plans[old]
            return self._plans[epoch]

    def _shard_cursor(self) -> int:
        """Position in the epoch's shard order of the first shard that still holds an unconsumed sample."""
        plan = self.plan(self.epoch)
        pending = {piece.clip for step in plan.steps[self.global_step:] for pack in step for piece in pack.pieces}
        shard_of = {m.key: m.shard for m in self.index}
        shards = {shard_of[c] for c in pending}
        return next((i for i, s in enumerate(plan.shard_order) if s in shards), len(plan.shard_order))

    # -- iteration ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RankBatch]:
        return self

    def __next__(self) -> RankBatch:
        if self.micro_batches:
            return self._next_micro()
        return self._next_step()

    @property
    def packs_per_rank(self) -> int:
        """Packs (micro-batches) each rank gets per global step, at most (the trainer's gradient accumulation)."""
        return -(-self.spec.packs_per_step // self.world_size)

    def _next_micro(self) -> RankBatch:
        """One pack of this rank's share of a global step; the cursor moves on after the step's last pack."""
        if not self._pending:
            epoch, step, total = self.epoch, self.global_step, self.step
            batch = self._next_step()
            self.epoch, self.global_step, self.step = epoch, step, total  # until the step's packs are consumed
            self._pending = [_one_pack(batch, i) for i in range(len(batch.packs))][self.micro:]
            self._after = (int(batch.stats["next_epoch"]), int(batch.stats["next_step"]))
        micro = self._pending.pop(0)
        self.micro += 1
        if not self._pending:
            (self.epoch, self.global_step), self.micro = self._after, 0
            self.step += 1
        return micro

    def _next_step(self) -> RankBatch:
        if self._worker is None:
            self._start()
        waited, start = 0.0, time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                waited = time.monotonic() - start
                if self.stall_abort_s is not None and self._busy and \
                        time.monotonic() - self._heartbeat > self.stall_abort_s:
                    raise LoaderStalled(f"loader made no progress for {self.stall_abort_s:.0f}s: {self._activity}") \
                        from None
        if isinstance(item, BaseException):
            self._worker = None
            raise item
        if item is None:
            self._worker = None
            raise StopIteration
        batch, next_epoch, next_step, skips = item
        for kind, what in skips:
            self.skipped[kind] += 1
            self.skipped_keys.append(what)
        self.epoch, self.global_step = next_epoch, next_step
        self.step += 1
        batch.step = self.step - 1
        batch.stats.update(next_epoch=float(next_epoch), next_step=float(next_step))
        batch.stats["wait_s"] = waited
        batch.stats.update({f"skipped_{k}": float(v) for k, v in self.skipped.items()})
        batch.stats["stalls"] = float(self.stalls)
        return batch

    def close(self) -> None:
        """Stop the background reader (a later iteration starts a fresh one from the current state)."""
        if self._worker is not None:
            self._stop.set()
            while self._worker.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
            self._worker = None
        self._queue = queue.Queue(maxsize=max(1, self.prefetch))
        self._stop = threading.Event()

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=max(1, self.prefetch))
        self._heartbeat = time.monotonic()
        self._worker = threading.Thread(target=self._produce, args=(self.epoch, self.global_step, self._stop,
                                                                    self._queue), daemon=True, name="packing-loader")
        self._worker.start()
        threading.Thread(target=self._watch, args=(self._stop,), daemon=True, name="loader-watchdog").start()

    def _beat(self, activity: str) -> None:
        self._heartbeat, self._activity = time.monotonic(), activity

    def _watch(self, stop: threading.Event) -> None:
        reported = False
        while not stop.wait(min(1.0, self.stall_timeout_s / 4)):
            idle = time.monotonic() - self._heartbeat
            if self._busy and idle > self.stall_timeout_s:
                if not reported:
                    self.stalls += 1
                    info = {"rank": self.rank, "seconds": idle, "activity": self._activity,
                            "epoch": self.epoch, "global_step": self.global_step}
                    log.warning("loader stalled: no progress for %.0fs while %s", idle, self._activity)
                    if self.on_stall is not None:
                        self.on_stall(info)
                    reported = True
            else:
                reported = False

    def _put(self, q: queue.Queue, stop: threading.Event, item) -> bool:
        self._busy = False
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                self._busy = True
                self._beat("producing")
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, epoch: int, step: int, stop: threading.Event, q: queue.Queue) -> None:
        self._busy = True
        self._pending_skips = []
        try:
            while self.max_epochs is None or epoch < self.max_epochs:
                self._beat(f"planning epoch {epoch}")
                plan = self.plan(epoch)
                for batch in self._epoch_batches(plan, epoch, step, stop):
                    step += 1
                    nxt = (epoch, step) if step < len(plan.steps) else (epoch + 1, 0)
                    skips, self._pending_skips = self._pending_skips, []
                    if not self._put(q, stop, (batch, *nxt, skips)):
                        return
                if stop.is_set():
                    return
                if not plan.steps:
                    raise RuntimeError("the latents index gives an empty epoch: nothing to train on")
                epoch, step = epoch + 1, 0
            self._put(q, stop, None)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(q, stop, exc)
        finally:  # done: nothing left to watch
            self._busy = False
            stop.set()

    def _epoch_batches(self, plan: EpochPlan, epoch: int, start: int, stop: threading.Event):
        spec = self.spec
        mine = [assign_ranks(step, self.world_size)[self.rank] for step in plan.steps]
        remaining: dict[str, int] = {}
        for g in range(start, len(plan.steps)):
            for i in mine[g]:
                for piece in plan.steps[g][i].pieces:
                    remaining[piece.clip] = remaining.get(piece.clip, 0) + 1
        reader = self._read(plan.shard_order, remaining, stop)
        stash: dict[str, tuple | None] = {}  # clip -> decoded, or None when it could not be read
        for g in range(start, len(plan.steps)):
            if stop.is_set():
                return
            step_packs = plan.steps[g]
            samples, packs, masks = [], [], []
            for i in mine[g]:
                idx = []
                for piece in step_packs[i].pieces:
                    while piece.clip not in stash:
                        item = next(reader, None)
                        if item is None:  # every shard read: the clip was never found
                            stash[piece.clip] = None
                            self._skip("missing", piece.clip)
                            break
                        key, value = item
                        stash[key] = value
                    decoded = stash[piece.clip]
                    remaining[piece.clip] -= 1
                    if remaining[piece.clip] == 0:
                        stash.pop(piece.clip, None)
                    if decoded is None:
                        continue
                    idx.append(len(samples))
                    samples.append(_sample(piece, decoded, spec))
                packs.append(idx)
                chunks = [_chunks_of(samples[j], spec) for j in idx]
                used = sum(sum(c) for c in chunks)
                masks.append(block_causal_mask(chunks, padding=spec.budget - used))
            yield self._batch(plan, g, epoch, mine[g], samples, packs, masks)

    def _read(self, shard_order: list[str], remaining: dict[str, int], stop: threading.Event):
        """(clip, decoded or None) for the clips this rank still needs, shard by shard in the epoch's order."""
        shard_clips: dict[str, set[str]] = {}
        for m in self.index:
            if m.key in remaining:
                shard_clips.setdefault(m.shard, set()).add(m.key)
        for shard in shard_order:
            wanted = shard_clips.get(shard)
            if not wanted:
                continue  # nothing this rank still needs: not even opened
            found = set()
            self._beat(f"reading {shard}")
            for key, members in iter_shard(self.shard_dir / shard, lambda k, w=wanted: k in w, self.open_file):
                if stop.is_set():
                    return
                self._beat(f"reading {shard} member {key}")
                if isinstance(members, Exception):
                    self._skip("bad_shard", f"{shard}: {members}")
                    break
                found.add(key)
                try:
                    yield key, decode_clip(members, key)
                except Exception as exc:  # a damaged member: skipped and counted
                    log.warning("loader: skipping %s in %s: %s", key, shard, exc)
                    self._skip("corrupt", key)
                    yield key, None
            for key in sorted(wanted - found):
                self._skip("missing", key)
                yield key, None

    def _skip(self, kind: str, what: str) -> None:
        """Counted when the batch that met it is consumed (a prefetched batch does not count yet)."""
        self._pending_skips.append((kind, what))

    def _batch(self, plan: EpochPlan, g: int, epoch: int, my_packs: list[int], samples: list[LatentSample],
               packs: list[list[int]], masks: list[AttnMask]) -> RankBatch:
        spec = self.spec
        step = plan.steps[g]
        loads = [sum(step[i].cost for i in r) for r in assign_ranks(step, self.world_size)]
        tokens = sum(_tokens(s, spec) for s in samples)
        budget = spec.budget * len(my_packs)
        cost = sum(m.area for m in masks) - sum(spec.budget - sum(_tokens(samples[j], spec) for j in idx)
                                                for idx in packs)  # real tokens only, padding diagonal excluded
        step_tokens = sum(p.tokens for p in step)
        stats = {
            "samples": float(len(samples)), "tokens": float(tokens), "packs": float(len(my_packs)),
            "padding_pct": 100.0 * (budget - tokens) / budget if budget else 0.0,
            "step_padding_pct": 100.0 * (1 - step_tokens / (spec.budget * len(step))),
            "busiest_rank_over_mean": max(loads) / (sum(loads) / len(loads)) if sum(loads) else 1.0,
            "attention_cost": float(cost), "epoch": float(epoch), "global_step": float(g),
        }
        return RankBatch(samples=samples, tokens=tokens, budget=budget, attention_cost=cost, stats=stats,
                         packs=packs, masks=masks, pack_budget=spec.budget, epoch=epoch, global_step=g)


def _tokens(sample: LatentSample, spec: PackingSpec) -> int:
    pt, ph, pw = spec.patch
    _, t, h, w = sample.latent.shape
    return (t // pt) * (h // ph) * (w // pw)


def _chunks_of(sample: LatentSample, spec: PackingSpec) -> list[int]:
    _, t, h, w = sample.latent.shape
    return chunk_tokens(SampleMeta(sample.key, "", t, h, w), spec)


def _sample(piece: Piece, decoded: tuple, spec: PackingSpec) -> LatentSample:
    latent, captions, _row = decoded
    start = piece.first_chunk * spec.chunk_frames
    stop = start + len(piece.chunks) * spec.chunk_frames
    chunk_latent = latent[:, start:stop].contiguous()
    caps = [captions.get(piece.first_chunk + j) for j in range(len(piece.chunks))]
    return LatentSample(key=piece.key, latent=chunk_latent, captions=caps, first_chunk=piece.first_chunk)


def _one_pack(batch: RankBatch, i: int) -> RankBatch:
    """Pack i of a rank's step as a batch of its own (one micro-batch of at most pack_budget tokens)."""
    idx = batch.packs[i]
    samples = [batch.samples[j] for j in idx]
    mask = batch.masks[i]
    pad = next((s.q_range[1] - s.q_range[0] for s in mask.slices if s.mask_type != 0), 0)
    tokens = mask.q_len - pad
    cost = mask.area - pad
    stats = {**batch.stats, "samples": float(len(samples)), "tokens": float(tokens), "packs": 1.0,
             "padding_pct": 100.0 * pad / mask.q_len, "attention_cost": float(cost), "micro_batch": float(i),
             "micro_batches": float(len(batch.packs))}
    return RankBatch(samples=samples, tokens=tokens, budget=mask.q_len, attention_cost=cost, stats=stats,
                     packs=[list(range(len(samples)))], masks=[mask], pack_budget=batch.pack_budget,
                     epoch=batch.epoch, global_step=batch.global_step, step=batch.step)


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
