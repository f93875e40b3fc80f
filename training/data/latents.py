"""`vidmill latents`: VAE-encode the kept clips of a curated output into latent shards, on Ray.

Reads OUTPUT/manifest.parquet (kept rows) and OUTPUT/shards/*.tar (the curated output contract, nothing of
pipeline/'s internals). OUTPUT is a local directory or any fsspec URL (`s3://bucket/curated` with
`storage_options` for s3fs): the encoder actors read their shards from it themselves. One Ray Data
`map_batches` over source shards with an encoder actor class (the VAE and text encoder load once per actor; a
GPU each when the cluster has GPUs) writes, per source shard:

  LATENTS/shards/<shard>.tar      {key}.latent.safetensors, {key}.text.safetensors, {key}.json
  LATENTS/parts/<shard>.parquet   that shard's rows (written after its tar: a finished shard is skipped on rerun)

and at the end LATENTS/manifest.parquet (every clip: ok | error with the reason) and LATENTS/run.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from vidmill.training.data.encode import LatentsConfig
from vidmill.training.data.shards import clip_members, write_shard

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("key", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("shard", pa.string()), ("member_index", pa.int32()), ("source_shard", pa.string()),
    ("bucket_h", pa.int32()), ("bucket_w", pa.int32()), ("fps", pa.float64()), ("n_chunks", pa.int32()),
    ("latent_t", pa.int32()), ("latent_h", pa.int32()), ("latent_w", pa.int32()),
    ("captioned_chunks", pa.int32()), ("duration_s", pa.float64()), ("config_hash", pa.string()),
])


def config_hash(config: LatentsConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in MANIFEST_SCHEMA} for r in rows],
                                schema=MANIFEST_SCHEMA)


def _read_members(path: str | Path, fs: fsspec.AbstractFileSystem | None = None) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with (fs or fsspec.filesystem("file")).open(str(path), "rb") as handle, tarfile.open(fileobj=handle) as tar:
        for info in tar:
            if info.isfile():
                key, _, suffix = Path(info.name).name.partition(".")
                out.setdefault(key, {})[suffix] = tar.extractfile(info).read()
    return out


def encode_shard(encoder, source: str | Path, rows: list[dict], out_dir: Path, digest: str,
                 fs: fsspec.AbstractFileSystem | None = None) -> list[dict]:
    """Encode one source shard's kept clips (a local path, or a path on `fs`) into out_dir/shards/<name>; every clip
    gets a row."""
    name = str(source).rstrip("/").rsplit("/", 1)[-1]
    base = {"source_shard": name, "config_hash": digest}
    try:
        members = _read_members(source, fs)
    except (tarfile.TarError, OSError) as exc:
        return [{**base, "clip_id": r["clip_id"], "key": r["key"], "status": "error",
                 "error": f"source shard unreadable: {exc}", "duration_s": r["duration_s"]} for r in rows]
    out_rows, clips = [], []
    for row in rows:
        result = {**base, "clip_id": row["clip_id"], "key": row["key"], "duration_s": row["duration_s"]}
        try:
            mp4 = members.get(row["key"], {}).get("mp4")
            if mp4 is None:
                raise ValueError(f"{row['key']}.mp4 is not in {name}")
            latent, text, info = encoder.encode(row, mp4)
            result.update({k: v for k, v in info.items() if k != "chunk_captions"})
            result.update(status="ok", error=None, shard=name, member_index=len(clips))
            record = {**result, "chunk_captions": info["chunk_captions"], "vae": encoder.vae_info,
                      "text_encoder": encoder.config.text, "source": row}
            clips.append((row["key"], clip_members(latent, text, record)))
        except Exception as exc:  # one bad clip is an error row, never the end of the run
            out_rows.append({**result, "status": "error", "error": f"{type(exc).__name__}: {exc}"})
            continue
        out_rows.append(result)
    write_shard(out_dir / "shards" / name, clips)
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir / "parts" / f"{Path(name).stem}.parquet", out_rows)
    return out_rows


def write_manifest(path: Path, rows: list[dict]) -> None:
    sink = io.BytesIO()
    pq.write_table(_table(rows), sink)
    _atomic_write(path, sink.getvalue())


class ShardEncoderActor:
    """Ray Data actor: builds the encoder once, encodes one source shard per call."""

    def __init__(self, config: dict, out_dir: str, digest: str, curated: str, storage_options: dict):
        from vidmill.training.data.encode import ClipEncoder

        cfg = dict(config)
        cfg["buckets"] = tuple(tuple(b) for b in cfg["buckets"])
        self.encoder = ClipEncoder(LatentsConfig(**cfg))
        self.out_dir, self.digest = Path(out_dir), digest
        self.fs, _ = fsspec.core.url_to_fs(curated, **storage_options)  # the shards are read here, not by the driver

    def __call__(self, batch: dict) -> dict:
        rows_out = []
        for source, rows_json in zip(batch["source"], batch["rows"], strict=True):
            rows_out += encode_shard(self.encoder, source, json.loads(rows_json), self.out_dir, self.digest, self.fs)
        return {"row": [json.dumps(r, default=str) for r in rows_out]}


def _done(part: Path, rows: list[dict], digest: str) -> bool:
    """A part from the same settings that covers exactly these clips: its shard is finished."""
    if not part.exists():
        return False
    try:
        table = pq.read_table(part).to_pylist()
    except Exception:  # a damaged part is redone
        return False
    return {r["clip_id"] for r in table} == {r["clip_id"] for r in rows} and \
        all(r["config_hash"] == digest for r in table)


def run_latents(curated: str | Path, out: str | Path, config: LatentsConfig, address: str | None = None,
                actors: int | None = None, storage_options: dict | None = None) -> dict:
    """Encode every kept clip; return the run summary (also written to LATENTS/run.json).

    `curated` is a local directory or an fsspec URL; `storage_options` go to its filesystem (s3fs: endpoint_url,
    key, secret, ...). LATENTS (`out`) is local."""
    out = Path(out)
    started = time.time()
    storage_options = storage_options or {}
    fs, root = fsspec.core.url_to_fs(str(curated), **storage_options)
    root = root.rstrip("/")
    manifest = f"{root}/manifest.parquet"
    if not fs.exists(manifest):
        raise FileNotFoundError(f"no curated manifest at {curated}/manifest.parquet; run `vidmill curate` first")
    # a single file or the manifest.parquet/ dataset directory (part-00000.parquet ...): read as one table
    kept = [r for r in pq.read_table(manifest, filesystem=fs).to_pylist() if r.get("kept") and r.get("shard")]
    by_shard: dict[str, list[dict]] = {}
    for r in kept:
        by_shard.setdefault(r["shard"], []).append(r)
    out.mkdir(parents=True, exist_ok=True)
    config = LatentsConfig(**{**asdict(config), "buckets": config.resolved_buckets()})
    digest = config_hash(config)
    todo = [(s, rows) for s, rows in sorted(by_shard.items())
            if not _done(out / "parts" / f"{Path(s).stem}.parquet", rows, digest)]
    if todo:
        _run_on_ray(str(curated), storage_options, f"{root}/shards", out, config, digest, todo, address, actors)
    rows = []
    for shard in sorted(by_shard):
        part = out / "parts" / f"{Path(shard).stem}.parquet"
        rows += pq.read_table(part).to_pylist()
    write_manifest(out / "manifest.parquet", rows)
    from vidmill.training.data.encode import describe_vae

    vae_info = describe_vae(config.vae, config.seed)
    ok = [r for r in rows if r["status"] == "ok"]
    summary = {"curated": str(curated), "config": asdict(config), "config_hash": digest, "vae": vae_info,
               "clips": len(rows), "ok": len(ok), "errors": len(rows) - len(ok),
               "shards": len(by_shard), "shards_resumed": len(by_shard) - len(todo),
               "latent_frames": sum(r["latent_t"] for r in ok), "wall_s": round(time.time() - started, 2)}
    _atomic_write(out / "run.json", json.dumps(summary, indent=2, default=str).encode())
    return summary


def _run_on_ray(curated: str, storage_options: dict, shards: str, out: Path, config: LatentsConfig, digest: str, todo,
                address, actors) -> None:
    """`shards`: the source shards' folder as a path on `curated`'s filesystem (what the actors open)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from vidmill.pipeline.executor.runner import init_ray

    init_ray(address)  # one place starts Ray: loopback, watchdog against leftovers
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    n = actors or max(1, min(len(todo), gpus or max(1, int(resources.get("CPU", 1)) - 1)))
    items = [{"source": f"{shards}/{s}", "rows": json.dumps(rows, default=str)} for s, rows in todo]
    ds = ray.data.from_items(items).map_batches(
        ShardEncoderActor, fn_constructor_kwargs={"config": asdict(config), "out_dir": str(out), "digest": digest,
                                                  "curated": curated, "storage_options": storage_options},
        batch_size=1, concurrency=n, num_gpus=1 if gpus else 0, num_cpus=0.5 if not gpus else 1)
    ds.take_all()  # rows land in the parts; the driver reads them back
