"""OUTPUT/_work: per-input results (the resume markers), clip files and captions.

An input is complete when inputs/{input_id}.json exists and was made under the same config
fingerprint. Clip files and captions are written one by one, atomically,
as they are made, under a directory named by the fingerprint, so a re-run reuses exactly what exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vidmill.pipeline.records import InputResult
from vidmill.pipeline.sources import InputRef


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: outputs readable as the umask allows


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_output(input_uri: str, output_uri: str) -> None:
    """OUTPUT must be a writable local directory that is not INPUT itself (one line each, before any work)."""
    from vidmill.pipeline.sources import same_location

    if "://" in output_uri and not output_uri.startswith("file://"):
        raise ValueError(f"OUTPUT {output_uri}: object-store outputs are not supported yet; write to a local "
                         "or shared filesystem path")
    output = Path(output_uri.removeprefix("file://"))
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


class WorkDir:
    def __init__(self, output: Path, fingerprint: str):
        self.root = output / "_work"
        self.fingerprint = fingerprint
        self.clips_dir = self.root / "clips" / hashlib.sha1(fingerprint.encode()).hexdigest()[:12]

    def marker(self, input_id: str) -> Path:
        return self.root / "inputs" / f"{input_id}.json"

    def clip_path(self, input_id: str, clip_id: str) -> Path:
        return self.clips_dir / input_id / f"{clip_id}.mp4"

    def save(self, result: InputResult) -> None:
        """Persist one analysed and scored input (its marker); taps are not kept once scored."""
        record = {"fingerprint": self.fingerprint, **result.work_json()}
        atomic_write(self.marker(result.input.input_id), json.dumps(record).encode())

    def caption_path(self, clip_id: str) -> Path:
        return self.root / "captions" / f"{clip_id}.json"

    def save_caption(self, clip_id: str, fingerprint: str, result: dict[str, Any]) -> None:
        atomic_write(self.caption_path(clip_id), json.dumps({"fingerprint": fingerprint, **result}).encode())

    def load_caption(self, clip_id: str, fingerprint: str) -> dict[str, Any] | None:
        path = self.caption_path(clip_id)
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if record.get("fingerprint") == fingerprint and record.get("caption") else None

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
        self.marker(input_id).unlink(missing_ok=True)
        for folder in (self.root / "clips").glob(f"*/{input_id}"):
            shutil.rmtree(folder, ignore_errors=True)
        for caption in (self.root / "captions").glob(f"{input_id}_*.json"):
            caption.unlink(missing_ok=True)

    def load(self, input_id: str) -> InputResult | None:
        """The stored result of a complete input made under this fingerprint, else None."""
        path = self.marker(input_id)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if record.get("fingerprint") != self.fingerprint:
            return None
        return InputResult.from_work_json(record)
