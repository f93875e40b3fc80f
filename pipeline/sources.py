"""List a bucket's inputs (local path, file://, s3://, gs:// and any fsspec protocol) and open them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec

from vidmill.pipeline.config import SourceConfig


@dataclass(frozen=True)
class InputRef:
    input_id: str
    source_uri: str
    size_bytes: int


def input_id_for(source_uri: str) -> str:
    """Stable id: the same URI gives the same id on every run and every machine."""
    return hashlib.sha1(source_uri.encode()).hexdigest()[:16]


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return str(Path(uri.removeprefix("file://")).resolve())


def list_inputs(uri: str, config: SourceConfig) -> list[InputRef]:
    """Every file under `uri` whose extension is in config.extensions, sorted by URI."""
    if _is_local(uri):
        uri = _local_path(uri)
        if not Path(uri).exists():
            raise FileNotFoundError(f"input {uri} does not exist")
    fs, root = fsspec.core.url_to_fs(uri, **config.storage_options)
    if fs.isfile(root):
        entries = {root: fs.info(root)}
    else:
        entries = fs.find(root, maxdepth=None if config.recursive else 1, detail=True)
    extensions = {e.lower() for e in config.extensions}
    refs = []
    for path, info in entries.items():
        if info.get("type") == "directory" or Path(path).suffix.lower() not in extensions:
            continue
        source_uri = path if _is_local(uri) else fs.unstrip_protocol(path)
        refs.append(InputRef(input_id_for(source_uri), source_uri, int(info.get("size") or 0)))
    return sorted(refs, key=lambda r: r.source_uri)


def open_input(source_uri: str, storage_options: dict | None = None) -> str | IO[bytes]:
    """A local path as is (FFmpeg reads it directly), anything else as a buffered fsspec file."""
    if _is_local(source_uri):
        return _local_path(source_uri)
    fs, path = fsspec.core.url_to_fs(source_uri, **(storage_options or {}))
    return fs.open(path, "rb", block_size=4 * 1024 * 1024, cache_type="readahead")
