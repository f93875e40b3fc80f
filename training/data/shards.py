"""Latent shards: the files `vidmill latents` writes and the loader reads.

LATENTS/shards/shard-NNNNNN.tar (WebDataset) holds per clip `{key}.latent.safetensors` ("latent": [C, T, H, W]
scaled VAE mean), `{key}.text.safetensors` ("chunk_<j>": [L, text_dim] caption features of chunk j; chunks
without a caption have no entry) and `{key}.json` (the latents row plus the curated manifest row under
"source"). LATENTS/manifest.parquet has one row per clip (ok | error) with its shard and latent shape.

Members are read with tarfile rather than a WebDataset pipeline so that members this rank does not need are
skipped by seeking past them, and a damaged member is one counted error, not a broken stream.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from vidmill.training.data.packing import SampleMeta

LATENT_MEMBER, TEXT_MEMBER, JSON_MEMBER = "latent.safetensors", "text.safetensors", "json"


def read_index(latents_dir: str | Path) -> list[SampleMeta]:
    """Ok clips of a latents output in shard and member order, from its manifest."""
    import pyarrow.parquet as pq

    path = Path(latents_dir) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no latents manifest at {path}; run `vidmill latents` first")
    rows = pq.read_table(path).to_pylist()
    rows = [r for r in rows if r["status"] == "ok"]
    rows.sort(key=lambda r: (r["shard"], r["member_index"]))
    return [SampleMeta(r["key"], r["shard"], r["latent_t"], r["latent_h"], r["latent_w"]) for r in rows]


def decode_clip(members: dict[str, bytes], key: str) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict]:
    """(latent [C, T, H, W], {chunk: caption features}, json row) of one clip; raises on a damaged member."""
    for name in (LATENT_MEMBER, JSON_MEMBER):
        if name not in members:
            raise ValueError(f"{key}: member {key}.{name} is missing")
    latent = load_safetensors(members[LATENT_MEMBER])["latent"]
    row = json.loads(members[JSON_MEMBER])
    if list(latent.shape[1:]) != [row["latent_t"], row["latent_h"], row["latent_w"]]:
        raise ValueError(f"{key}: latent shape {list(latent.shape)} does not match its row")
    text = load_safetensors(members[TEXT_MEMBER]) if TEXT_MEMBER in members else {}
    captions = {int(name.split("_", 1)[1]): t for name, t in text.items()}
    return latent.float(), captions, row


def clip_members(latent: torch.Tensor, captions: dict[int, torch.Tensor], record: dict) -> dict[str, bytes]:
    """The members of one clip: latent, per-chunk caption features (if any), its json row."""
    from safetensors.torch import save

    members = {LATENT_MEMBER: save({"latent": latent.contiguous()}),
               JSON_MEMBER: json.dumps(record, default=str).encode()}
    if captions:
        members[TEXT_MEMBER] = save({f"chunk_{j}": t.contiguous() for j, t in captions.items()})
    return members


def write_shard(path: Path, clips: list[tuple[str, dict[str, bytes]]]) -> None:
    """A WebDataset tar of (key, members), written to a temporary name and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for key, members in clips:
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


ShardOpener = Callable[[Path], Any]


def open_binary(path: Path):
    return open(path, "rb")


def iter_shard(path: Path, wanted: Callable[[str], bool], open_file: ShardOpener = open_binary
               ) -> Iterator[tuple[str, dict[str, bytes] | Exception]]:
    """(key, {suffix: bytes}) for each wanted clip of a shard, in member order; unwanted members are skipped
    unread. A damaged tar yields ("", error) once and stops: the caller counts what it did not get."""
    current, members = None, {}
    try:
        with open_file(path) as handle, tarfile.open(fileobj=handle, mode="r|*" if not _seekable(handle)
                                                     else "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, suffix = Path(info.name).name.partition(".")
                if key != current:
                    if current is not None and members:
                        yield current, members
                    current, members = key, {}
                if wanted(key):
                    handle_member = tar.extractfile(info)
                    members[suffix] = handle_member.read() if handle_member else b""
            if current is not None and members:
                yield current, members
    except Exception as exc:  # any damage to the tar itself ends this shard, counted by the caller
        if current is not None and members:
            yield current, members
        yield "", exc


def _seekable(handle) -> bool:
    try:
        return bool(handle.seekable())
    except (AttributeError, OSError):
        return False
