"""`vidmill latents` on the curated sample bucket: written, read back by the loader, resumed, errors as rows."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from vidmill.training.data.encode import LatentsConfig, choose_bucket, chunk_captions
from vidmill.training.data.latents import run_latents
from vidmill.training.data.loader import PackingLoader


@pytest.fixture(scope="module")
def latents(curated: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("latents")
    return out, run_latents(curated, out, LatentsConfig(vae="tiny", size="tiny"))


def test_latents_of_the_sample_bucket_written_and_read_back(curated, latents):
    out, summary = latents
    kept = [r for r in pq.read_table(curated / "manifest.parquet").to_pylist() if r["kept"]]
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {r["clip_id"] for r in rows} == {r["clip_id"] for r in kept}
    assert summary["vae"]["trained"] is False and "untrained" in summary["vae"]["note"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == summary["ok"] > 0
    for r in ok:
        # tiny: 8 fps, 8 frames per chunk (2 latent frames), buckets of the 64x64 area; VAE 4x time, 8x space
        assert r["latent_t"] == 2 * r["n_chunks"] and r["n_chunks"] == min(8, int(r["duration_s"]))
        assert (r["latent_h"], r["latent_w"]) == (r["bucket_h"] // 8, r["bucket_w"] // 8)
    for r in rows:
        assert r["status"] == "ok" or r["error"]
    with tarfile.open(out / "shards" / ok[0]["shard"]) as tar:
        names = tar.getnames()
        record = json.loads(tar.extractfile(f"{ok[0]['key']}.json").read())
    assert {f"{ok[0]['key']}.latent.safetensors", f"{ok[0]['key']}.json"} <= set(names)
    assert record["source"]["clip_id"] == ok[0]["clip_id"] and len(record["chunk_captions"]) == ok[0]["n_chunks"]

    run = PackingLoader.for_model(out, "tiny", budget=512, packs_per_step=1, max_epochs=1)
    samples = [s for b in run for s in b.samples]
    assert sorted({s.key.split("@")[0] for s in samples}) == sorted(r["key"] for r in ok)
    for s in samples:
        assert s.latent.shape[0] == 16 and torch.isfinite(s.latent).all()
        assert len(s.captions) == s.n_chunks and any(c is not None and c.shape[1] == 384 for c in s.captions)


def test_rerun_skips_finished_shards(curated, latents, capsys):
    """The same command again (through the CLI) finds every shard finished and encodes nothing."""
    from vidmill.cli import main

    out, first = latents
    assert main(["latents", str(curated), "--vae", "tiny", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["shards_resumed"] == printed["shards"] == first["shards"]
    assert printed["ok"] == first["ok"] and printed["vae"]["trained"] is False


def test_latents_read_a_curated_output_on_s3(curated, latents, moto_s3, tmp_path, capsys):
    """The curated output on an S3 endpoint (moto on 127.0.0.1), given as s3:// with --storage-options: the encoder
    actors read the shards from the bucket, and the latents equal those of the local output, byte for byte."""
    import s3fs

    from vidmill.cli import main

    fs = s3fs.S3FileSystem(**moto_s3)
    for path in sorted(p for p in curated.rglob("*") if p.is_file()):
        rel = path.relative_to(curated).as_posix()
        if rel.startswith(("manifest.parquet", "shards/")):
            fs.put_file(str(path), f"vidmill/curated/{rel}")
    out = tmp_path / "from-s3"
    assert main(["latents", "s3://vidmill/curated", "--vae", "tiny", "--out", str(out),
                 "--storage-options", json.dumps(moto_s3)]) == 0
    assert json.loads(capsys.readouterr().out)["shards_resumed"] == 0
    local = latents[0]
    assert pq.read_table(out / "manifest.parquet").to_pylist() == pq.read_table(local / "manifest.parquet").to_pylist()
    shards = sorted(p.name for p in (local / "shards").glob("*.tar"))
    assert shards and shards == sorted(p.name for p in (out / "shards").glob("*.tar"))
    for name in shards:
        with tarfile.open(local / "shards" / name) as a, tarfile.open(out / "shards" / name) as b:
            assert [(m.name, a.extractfile(m).read()) for m in a if m.isfile()] == \
                [(m.name, b.extractfile(m).read()) for m in b if m.isfile()], name


def test_a_clip_that_fails_is_an_error_row(curated, latents, tmp_path):
    """A kept clip whose mp4 is gone from its shard: an error row, and every other clip of the shard encoded."""
    from vidmill.training.data.encode import ClipEncoder
    from vidmill.training.data.latents import encode_shard

    rows = [r for r in pq.read_table(curated / "manifest.parquet").to_pylist() if r["kept"]]
    victim = rows[0]
    shard = tmp_path / victim["shard"]
    with tarfile.open(curated / "shards" / victim["shard"]) as src, tarfile.open(shard, "w") as dst:
        for info in src:
            if info.name != f"{victim['key']}.mp4":
                dst.addfile(info, src.extractfile(info))
    same_shard = [r for r in rows if r["shard"] == victim["shard"]][:3]  # the victim and two more: fast
    out_rows = encode_shard(ClipEncoder(LatentsConfig(vae="tiny", size="tiny")), shard, same_shard,
                            tmp_path / "latents", "test")
    by_id = {r["clip_id"]: r for r in out_rows}
    assert by_id[victim["clip_id"]]["status"] == "error" and "mp4" in by_id[victim["clip_id"]]["error"]
    ok_before = {r["clip_id"] for r in pq.read_table(latents[0] / "manifest.parquet").to_pylist()
                 if r["status"] == "ok"}
    assert {c for c, r in by_id.items() if r["status"] == "ok"} == ok_before & {r["clip_id"] for r in same_shard} - \
        {victim["clip_id"]}
    assert (tmp_path / "latents" / "parts" / f"{shard.stem}.parquet").exists()


def test_buckets_and_chunk_captions():
    assert LatentsConfig(size="tiny").resolved_buckets() == ((64, 64), (48, 80), (80, 48))
    assert choose_bucket(256, 448, ((64, 64), (48, 80), (80, 48))) == (48, 80)
    assert chunk_captions(["a", "b"], 3, 1.0) == ["a", "b", None]
    assert chunk_captions(["a", "b"], 4, 0.5) == ["a", "a", "b", "b"]


def test_vae_checkpoint_of_a_training_run_loads(tmp_path):
    """RUN/checkpoints/step-N/vae.safetensors (plain parameter names) with the size from RUN/config.yaml."""
    from safetensors.torch import save_file

    from vidmill.model.sizes import get_size
    from vidmill.model.vae import VideoVAE
    from vidmill.training.data.encode import load_vae

    torch.manual_seed(5)
    vae = VideoVAE(get_size("tiny").vae)
    ckpt = tmp_path / "RUN" / "checkpoints" / "step-3"
    ckpt.mkdir(parents=True)
    (tmp_path / "RUN" / "config.yaml").write_text("size: tiny\n")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(ckpt / "vae.safetensors"))
    loaded, info = load_vae(str(ckpt / "vae.safetensors"), size="small")
    assert info == {"vae": str(ckpt / "vae.safetensors"), "trained": True, "size": "tiny"}
    for (name, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError):
        load_vae(str(tmp_path / "nope.safetensors"), size="tiny")
