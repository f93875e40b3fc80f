"""The packing loader on synthetic latent shards: exact resume, elastic resume, coverage, corruption, stalls."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from vidmill.training.data.latents import write_manifest
from vidmill.training.data.loader import LoaderStalled, PackingLoader
from vidmill.training.data.packing import PackingSpec
from vidmill.training.data.shards import clip_members, write_shard

SPEC = PackingSpec(budget=256, chunk_frames=2, patch=(1, 2, 2), packs_per_step=4, buffer_size=16, balance_window=2)
CORRUPT = "clip0007"


def write_latents(root: Path, n: int = 60, per_shard: int = 12, corrupt: str | None = None) -> Path:
    """A latents output in the format `vidmill latents` writes (random latents, some captions)."""
    g = torch.Generator().manual_seed(0)
    rows, res = [], [(4, 4), (4, 6), (6, 4), (8, 8)]
    for s in range(0, n, per_shard):
        shard, clips = f"shard-{s // per_shard:06d}.tar", []
        for i in range(s, min(n, s + per_shard)):
            key = f"clip{i:04d}"
            h, w = res[i % len(res)]
            t = 2 * (1 + i % 6)
            row = {"clip_id": key, "key": key, "status": "ok", "shard": shard, "member_index": len(clips),
                   "latent_t": t, "latent_h": h, "latent_w": w, "n_chunks": t // 2}
            captions = {j: torch.randn(3, 8, generator=g) for j in range(0, t // 2, 2)}
            members = clip_members(torch.randn(4, t, h, w, generator=g), captions, row)
            if key == corrupt:
                members["latent.safetensors"] = b"not a safetensors file"
            clips.append((key, members))
            rows.append(row)
        write_shard(root / "shards" / shard, clips)
    write_manifest(root / "manifest.parquet", rows)
    return root


@pytest.fixture(scope="module")
def latents(tmp_path_factory) -> Path:
    return write_latents(tmp_path_factory.mktemp("latents"))


def loader(root, rank=0, world=1, **kw):
    return PackingLoader(root, SPEC, seed=3, rank=rank, world_size=world, max_epochs=kw.pop("max_epochs", 1), **kw)


def take(it, n=None):
    out = []
    for batch in it:
        out.append(batch)
        if n is not None and len(out) == n:
            break
    return out


def signature(batch):
    return [(s.key, s.latent.sum().item(), [c is None for c in s.captions]) for s in batch.samples]


def test_epoch_covers_every_chunk_once_across_ranks(latents):
    seen = Counter()
    for rank in range(2):
        for batch in take(loader(latents, rank, 2)):
            assert batch.tokens <= batch.budget == len(batch.packs) * SPEC.budget
            cost = 0
            for idx, mask in zip(batch.packs, batch.masks, strict=True):
                tokens = sum(s.latent[0].numel() // 4 for s in (batch.samples[i] for i in idx))
                assert mask.q_len == SPEC.budget  # each pack padded to the budget (padding sees itself)
                cost += mask.area - (SPEC.budget - tokens)
            assert cost == batch.attention_cost
            for s in batch.samples:
                for j in range(s.n_chunks):
                    seen[(s.key.split("@")[0], s.first_chunk + j)] += 1
    expected = {(f"clip{i:04d}", j) for i in range(60) for j in range(1 + i % 6)}
    assert set(seen) == expected and set(seen.values()) == {1}


def test_resume_after_k_steps_consumes_exactly_the_uninterrupted_samples(latents):
    for rank in range(2):
        full = [signature(b) for b in take(loader(latents, rank, 2))]
        first = loader(latents, rank, 2)
        head = [signature(b) for b in take(first, 3)]
        state = json.loads(json.dumps(first.state_dict()))  # JSON round trip: what a checkpoint stores
        first.close()
        resumed = loader(latents, rank, 2)
        resumed.load_state_dict(state)
        tail = [signature(b) for b in take(resumed)]
        assert head + tail == full


def test_resume_on_fewer_ranks_consumes_the_same_samples_by_each_global_step(latents):
    two = {rank: take(loader(latents, rank, 2)) for rank in range(2)}
    steps = len(two[0])
    k = 2
    first = loader(latents, 0, 2)
    take(first, k)
    state = first.state_dict()
    first.close()
    one = loader(latents, 0, 1)
    one.load_state_dict(state)
    rest = take(one)
    assert len(rest) == steps - k
    for g in range(k, steps):
        by_two = Counter(s.key for rank in range(2) for s in two[rank][g].samples)
        by_one = Counter(s.key for s in rest[g - k].samples)
        assert by_two == by_one
        assert rest[g - k].global_step == two[0][g].global_step == g


def test_corrupt_member_is_skipped_and_counted(tmp_path):
    root = write_latents(tmp_path / "bad", corrupt=CORRUPT)
    total, keys = 0, []
    for rank in range(2):
        run = loader(root, rank, 2)
        batches = take(run)
        keys += [s.key.split("@")[0] for b in batches for s in b.samples]
        total += run.skipped["corrupt"]
        assert batches[-1].stats["skipped_corrupt"] == run.skipped["corrupt"] == run.state_dict()["skipped"]["corrupt"]
    assert CORRUPT not in keys
    assert len(set(keys)) == 59  # every other clip still arrives
    assert total == 1  # one damaged clip, counted once, on the rank that needed it


def test_truncated_shard_is_counted_never_a_hang(tmp_path):
    root = write_latents(tmp_path / "trunc")
    shard = root / "shards" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    run = loader(root, 0, 1, stall_timeout_s=5)
    start = time.monotonic()
    batches = take(run)
    assert time.monotonic() - start < 30
    assert run.skipped["bad_shard"] == 1 and run.skipped["missing"] + run.skipped["corrupt"] >= 10
    assert batches and all(b.samples or b.stats["samples"] == 0 for b in batches)


def test_stall_watchdog_reports_a_loader_that_stops(latents):
    reports = []

    calls = []

    def slow_open(path):  # the first shard takes 1.5 s to open: a stuck filesystem
        calls.append(path)
        if len(calls) == 1:
            time.sleep(1.5)
        return open(path, "rb")

    run = loader(latents, 0, 1, stall_timeout_s=0.4, on_stall=reports.append, open_file=slow_open)
    batch = next(iter(run))
    run.close()
    assert reports and "reading" in reports[0]["activity"]
    assert batch.stats["stalls"] >= 1

    quiet = []
    finished = loader(latents, 0, 1, stall_timeout_s=0.2, on_stall=quiet.append)
    take(finished)
    time.sleep(0.8)  # a loader whose epochs are done is not stalled
    assert not quiet

    calls.clear()
    aborting = loader(latents, 0, 1, stall_timeout_s=0.2, stall_abort_s=0.5, open_file=slow_open)
    with pytest.raises(LoaderStalled, match="no progress"):
        next(iter(aborting))
    aborting.close()


def _gloo_worker(rank: int, world: int, root: str, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    run = PackingLoader(root, SPEC, seed=3, max_epochs=1)  # rank and world size from the process group
    assert (run.rank, run.world_size) == (rank, world)
    head = take(run, 2)
    state = run.state_dict()
    run.close()
    resumed = PackingLoader(root, SPEC, seed=3, max_epochs=1)
    resumed.load_state_dict(state)
    keys = [s.key for b in head + take(resumed) for s in b.samples]
    gathered = [None] * world
    dist.all_gather_object(gathered, keys)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


def test_two_gloo_ranks_resume_without_loss_or_repeat(latents, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "keys.json"
    mp.spawn(_gloo_worker, args=(2, str(latents), f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2)
    per_rank = json.loads(out.read_text())
    both = per_rank[0] + per_rank[1]
    assert len(both) == len(set(both))
    single = [s.key for b in take(loader(latents, 0, 1)) for s in b.samples]
    assert sorted(both) == sorted(single)


def test_pack_masks_match_the_model_layout(latents):
    """The slices a batch carries equal `visible()` over the layout `vidmill.model.dit.pack` builds for it."""
    from dataclasses import replace

    from vidmill.model.attention import TokenLayout, visible
    from vidmill.model.dit import pack
    from vidmill.model.mask import to_dense
    from vidmill.model.sizes import get_size

    cfg = replace(get_size("tiny").dit, latent_channels=4, text_dim=8)
    batch = next(iter(loader(latents, 0, 1)))
    for idx, mask in zip(batch.packs, batch.masks, strict=True):
        samples = [batch.samples[i] for i in idx]
        p = pack([s.latent for s in samples], [torch.zeros(s.n_chunks) for s in samples],
                 [s.captions for s in samples], cfg)
        pad = SPEC.budget - len(p.layout)
        layout = p.layout.cat(TokenLayout(torch.full((pad,), -1), torch.zeros(pad, dtype=torch.long)))
        assert torch.equal(to_dense(mask), visible(layout, layout))


def test_each_epoch_has_its_own_order_and_the_same_samples(latents):
    batches = take(loader(latents, 0, 1, max_epochs=2))
    epochs = [[s.key for b in batches if b.epoch == e for s in b.samples] for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    assert [b.step for b in batches] == list(range(len(batches)))


def test_micro_batches_are_the_step_packs_and_resume_mid_step(latents):
    """micro_batches=True: one pack per item (the trainer's micro-batch); a state saved mid-step resumes exactly."""
    steps = take(loader(latents, 0, 1))
    micro = take(loader(latents, 0, 1, micro_batches=True))
    assert len(micro) == sum(len(b.packs) for b in steps) == len(steps) * SPEC.packs_per_step
    assert [s.key for b in micro for s in b.samples] == [s.key for b in steps for s in b.samples]
    assert all(b.tokens <= b.budget == SPEC.budget and len(b.masks) == 1 for b in micro)
    first = loader(latents, 0, 1, micro_batches=True)
    head = take(first, 6)  # 4 packs per step: stops inside the second global step
    state = first.state_dict()
    first.close()
    assert (state["global_step"], state["micro"]) == (1, 2)
    resumed = loader(latents, 0, 1, micro_batches=True)
    resumed.load_state_dict(state)
    assert [signature(b) for b in head + take(resumed)] == [signature(b) for b in micro]
    with pytest.raises(ValueError, match="middle of a global step"):
        loader(latents, 0, 2, micro_batches=True).load_state_dict(state)
