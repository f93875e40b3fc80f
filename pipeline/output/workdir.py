"""OUTPUT/_work: per-input results (the resume markers), clip files and captions.

An input is complete when inputs/{input_id}.json exists and was made under the same config
fingerprint. Clip files and captions are written one by one, atomically,
as they are made, under a directory named by the fingerprint, so a re-run reuses exactly what exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vidmill.pipeline.output.store import FILE_MODE, Store, atomic_write
from vidmill.pipeline.records import InputResult
from vidmill.pipeline.sources import InputRef

__all__ = ["FILE_MODE", "WorkDir", "atomic_write", "prepare_output"]


def prepare_output(input_uri: str, output: Store | str) -> None:
    """OUTPUT must be a writable local directory or a reachable, writable object-store prefix, and not
    INPUT itself (one line each, before any work)."""
    from vidmill.pipeline.sources import same_location

    store = output if isinstance(output, Store) else Store(output)
    if not store.local:
        if same_location(input_uri, store.uri):
            raise ValueError(f"OUTPUT {store.uri} is INPUT itself: choose another prefix (outputs would be "
                             "listed as inputs on the next run)")
        _check_object_store(store)
        return
    output = Path(store.uri)
    if same_location(input_uri, str(output)):
        raise ValueError(f"OUTPUT {output} is INPUT itself: choose another directory (outputs would be "
                         "listed as inputs on the next run)")
    if output.exists() and not output.is_dir():
        raise ValueError(f"OUTPUT {output} is a file, not a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create OUTPUT {output}: {exc.strerror or exc}") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise ValueError(f"OUTPUT {output} is not writable by this user")


def _check_object_store(store: Store) -> None:
    """Write, read back and remove a probe object: the bucket exists, is reachable and writable."""
    probe = f"_work/.probe-{uuid.uuid4().hex}"
    try:
        store.put(probe, b"vidmill")
        ok = store.get(probe) == b"vidmill"
        store.remove(probe)
    except ImportError as exc:
        raise ValueError(f"OUTPUT {store.uri}: {exc} (every node needs the filesystem package)") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the filesystem is one line for the user
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"OUTPUT {store.uri} is not writable: {type(exc).__name__}: {text}") from None
    if not ok:
        raise ValueError(f"OUTPUT {store.uri}: a probe object read back different bytes")


class WorkDir:
    """_work under a Store: paths are relative to OUTPUT; pickles small (the Store is URI + options)."""

    def __init__(self, store: Store | Path | str, fingerprint: str):
        self.store = store if isinstance(store, Store) else Store(str(store))
        self.root = "_work"
        self.fingerprint = fingerprint
        self.clips_dir = f"{self.root}/clips/{hashlib.sha1(fingerprint.encode()).hexdigest()[:12]}"

    def marker(self, input_id: str) -> str:
        return f"{self.root}/inputs/{input_id}.json"

    def clip_path(self, input_id: str, clip_id: str) -> str:
        return f"{self.clips_dir}/{input_id}/{clip_id}.mp4"

    def has_clip(self, input_id: str, clip_id: str) -> bool:
        return self.store.exists(self.clip_path(input_id, clip_id))

    def clip_sizes(self, input_ids: Iterable[str]) -> dict[str, int]:
        """Clip files of these inputs made under this fingerprint: clip path -> size (one listing an input)."""
        sizes: dict[str, int] = {}
        for input_id in sorted(set(input_ids)):
            sizes.update(self.store.find(f"{self.clips_dir}/{input_id}"))
        return sizes

    def save_clip(self, input_id: str, clip_id: str, data: bytes) -> None:
        self.store.put(self.clip_path(input_id, clip_id), data)

    def read_clip(self, input_id: str, clip_id: str) -> bytes:
        return self.store.get(self.clip_path(input_id, clip_id))

    def save(self, result: InputResult) -> None:
        """Persist one analysed and scored input (its marker); taps are not kept once scored."""
        record = {"fingerprint": self.fingerprint, **result.work_json()}
        self.store.put(self.marker(result.input.input_id), json.dumps(record).encode())

    def caption_path(self, clip_id: str) -> str:
        return f"{self.root}/captions/{clip_id}.json"

    def save_caption(self, clip_id: str, fingerprint: str, result: dict[str, Any]) -> None:
        self.store.put(self.caption_path(clip_id), json.dumps({"fingerprint": fingerprint, **result}).encode())

    def load_caption(self, clip_id: str, fingerprint: str) -> dict[str, Any] | None:
        record = self._read_json(self.caption_path(clip_id))
        return record if record and record.get("fingerprint") == fingerprint and record.get("caption") else None

    def _read_json(self, rel: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get(rel))
        except (OSError, json.JSONDecodeError):  # FileNotFoundError is an OSError
            return None

    def load_current(self, ref: InputRef) -> InputResult | None:
        """The stored result of `ref` if it was made from the same content version, else None; a stale
        result's clip files and captions are removed so the input is redone from scratch."""
        result = self.load(ref.input_id)
        if result is None:
            return None
        stored = result.input.source_version  # None: made before versions were recorded; compare sizes
        if (stored != ref.version) if stored is not None else (result.input.size_bytes != ref.size_bytes):
            self.forget(ref.input_id)
            return None
        return result

    def forget(self, input_id: str) -> None:
        """Remove an input's marker, clip files (under every fingerprint) and captions."""
        self.store.remove(self.marker(input_id))
        for clip in self.store.glob(f"{self.root}/clips/*/{input_id}/*"):
            self.store.remove(clip)
        for folder in self.store.glob(f"{self.root}/clips/*/{input_id}"):
            self.store.remove_tree(folder)
        for caption in self.store.glob(f"{self.root}/captions/{input_id}_*.json"):
            self.store.remove(caption)

    def load(self, input_id: str) -> InputResult | None:
        """The stored result of a complete input made under this fingerprint, else None."""
        record = self._read_json(self.marker(input_id))
        if record is None or record.get("fingerprint") != self.fingerprint:
            return None
        return InputResult.from_work_json(record)
