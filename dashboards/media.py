"""Clip media: tar member index and byte ranges (no extraction), WebVTT captions, thumbnails, and a
preview of a rejected clip's source span.

A shard's member index is read from the tar headers on first use (tarfile walks the headers and seeks
over the data) and kept in a small LRU; the shards are never written to, so it needs no invalidation
beyond the file's size and mtime.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 256 * 1024


@dataclass(frozen=True)
class Member:
    offset: int  # of the member's data in the tar file
    size: int


class LRU:
    """A thread-safe LRU bounded by the total size of its values."""

    def __init__(self, max_bytes: int, size_of: Any = len):
        self.max_bytes, self.size_of = max_bytes, size_of
        self.items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.total = 0
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key not in self.items:
                return None
            self.items.move_to_end(key)
            return self.items[key][0]

    def put(self, key: Any, value: Any) -> Any:
        size = self.size_of(value)
        with self.lock:
            if key in self.items:
                self.total -= self.items.pop(key)[1]
            self.items[key] = (value, size)
            self.total += size
            while self.total > self.max_bytes and len(self.items) > 1:
                self.total -= self.items.popitem(last=False)[1][1]
        return value


_INDEXES = LRU(64 * 1024 * 1024, size_of=lambda index: 120 * len(index) + 100)


def tar_index(path: Path) -> dict[str, Member]:
    """Member name -> data offset and size, from the tar headers (cached per path, size and mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    index = _INDEXES.get(key)
    if index is None:
        with tarfile.open(path, "r:") as tar:
            index = {m.name: Member(m.offset_data, m.size) for m in tar if m.isfile()}
        _INDEXES.put(key, index)
    return index


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range -> (start, end inclusive); None for no header; ValueError when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise ValueError(f"unsupported range {header!r}")
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError(f"range {header!r} outside 0-{size - 1}")
    return start, end


def read_slice(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """Stream `length` bytes of `path` from `offset` in chunks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < length:
            chunk = os.pread(fd, min(CHUNK, length - done), offset + done)
            if not chunk:
                break
            done += len(chunk)
            yield chunk
    finally:
        os.close(fd)


def read_member(path: Path, member: Member) -> bytes:
    return b"".join(read_slice(path, member.offset, member.size))


def webvtt(captions: list[str] | None, duration_s: float | None) -> str:
    """Per-second captions as a WebVTT track: cue k spans [k, k+1) seconds, the last one ends with the clip."""
    lines = ["WEBVTT", ""]
    captions = list(captions or [])
    end_all = float(duration_s) if duration_s else float(len(captions))
    for k, text in enumerate(captions):
        start, end = float(k), min(float(k + 1), end_all) if k + 1 >= len(captions) else float(k + 1)
        if end <= start:
            end = start + 1.0
        lines += [f"s{k}", f"{_ts(start)} --> {_ts(end)}", (text or "").replace("-->", "->").strip() or "-", ""]
    return "\n".join(lines)


def _ts(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _open_source(source: str | bytes, storage_options: dict | None) -> Any:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if "://" in source and not source.startswith("file://"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
        return fs.open(path, "rb")
    return source.removeprefix("file://")


def _frames(source: Any, start_s: float, end_s: float) -> Iterator[Any]:
    import av

    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_s > 0:
            container.seek(int(max(0.0, start_s - 0.5) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is None or frame.time < start_s - 1e-3:
                continue
            if frame.time >= end_s:
                break
            yield frame


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = min(1.0, short_side / max(1, min(width, height)))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def thumbnail(source: str | bytes, at_s: float, short_side: int = 144, storage_options: dict | None = None) -> bytes:
    """A JPEG of the first frame at or after `at_s` (of an mp4's bytes or a source URI)."""
    import cv2

    for frame in _frames(_open_source(source, storage_options), at_s, float("inf")):
        w, h = _scaled(frame.width, frame.height, short_side)
        rgb = frame.reformat(width=w, height=h, format="bgr24").to_ndarray()
        ok, jpg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            return jpg.tobytes()
    raise ValueError("no frame at that time")


def span_preview(source: str, start_s: float, end_s: float, short_side: int = 360,
                 storage_options: dict | None = None) -> bytes:
    """An H.264 mp4 of a source span (rejected clips have no shard member); a preview, not training data."""
    import av

    out = io.BytesIO()
    container = av.open(out, "w", format="mp4")
    stream = None
    n = 0
    try:
        for frame in _frames(_open_source(source, storage_options), start_s, end_s):
            if stream is None:
                stream = container.add_stream("libx264", rate=24)
                stream.width, stream.height = _scaled(frame.width, frame.height, short_side)
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast", "crf": "26"}
                stream.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
            image = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
            image.pts = int(round((frame.time - start_s) * 1000))
            image.time_base = stream.codec_context.time_base
            container.mux(stream.encode(image))
            n += 1
        if stream is None:
            raise ValueError("no frames in the span")
        container.mux(stream.encode(None))
    finally:
        container.close()
    return out.getvalue()
