"""List a bucket's inputs (local path, file://, s3://, gs:// and any fsspec protocol) and open them."""

from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import fsspec

from vidmill.pipeline.config import SourceConfig


@dataclass(frozen=True)
class InputRef:
    input_id: str
    source_uri: str
    size_bytes: int
    version: str = ""  # content version: size + mtime locally, ETag / generation on object stores
    problem: str = ""  # why it cannot be read at all (dangling symlink, loop): becomes its error row


@dataclass
class Listing:
    """What a bucket holds: the inputs to curate and what was left out, counted."""

    refs: list[InputRef] = field(default_factory=list)
    skipped_extensions: Counter = field(default_factory=Counter)  # ".wmv" -> files not in source.extensions
    excluded_output: int = 0  # files under OUTPUT when OUTPUT lies inside INPUT
    listed: int = 0  # inputs found so far (a streaming listing's total grows as it goes)

    def note(self) -> str:
        """What was left out, as a clause for messages ('; skipped 2 .wmv; 3 files under OUTPUT left out')."""
        parts = []
        if self.skipped_extensions:
            parts.append("; skipped " + ", ".join(f"{n} {e}" for e, n in sorted(self.skipped_extensions.items())))
        if self.excluded_output:
            parts.append(f"; {self.excluded_output} files under OUTPUT left out")
        return "".join(parts)


def input_id_for(source_uri: str) -> str:
    """Stable id: the same URI gives the same id on every run and every machine."""
    return hashlib.sha1(source_uri.encode()).hexdigest()[:16]


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return str(Path(uri.removeprefix("file://")).resolve())


def _version(info: dict) -> str:
    """A string that changes when the object's content does (size plus mtime, ETag or generation)."""
    for key in ("ETag", "etag", "generation", "md5Hash"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
    return f"size:{int(info.get('size') or 0)}:mtime:{mtime}"


def _local_problem(path: str) -> str:
    """Dangling symlinks and symlink loops named as such (a stat of them fails)."""
    if not os.path.islink(path):
        return ""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"dangling symlink (target {os.readlink(path)} does not exist)"
    return ""


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _walk_local(root: str, recursive: bool) -> Iterator[tuple[str, dict]]:
    """Files under `root` depth first, one os.scandir page per directory, entries ordered so the whole walk
    is in path order (a directory sorts as its name + "/"); symlinked directories are followed once."""
    seen: set[str] = set()

    def walk(folder: str) -> Iterator[tuple[str, dict]]:
        real = os.path.realpath(folder)
        if real in seen:  # a directory symlink loop: each real directory once
            return
        seen.add(real)
        with os.scandir(folder) as it:
            page = [(entry.name + "/" if _is_dir(entry) else entry.name, entry) for entry in it]
        page.sort(key=lambda pair: pair[0])
        for key, entry in page:
            if not key.endswith("/"):
                yield entry.path, _local_info(entry)
            elif recursive:
                yield from walk(entry.path)

    yield from walk(root)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for dangling ones and loops
    except OSError:
        return False


def _local_info(entry: os.DirEntry) -> dict:
    return _local_file_info(entry.path)  # a dangling symlink or a loop: size 0, named by _local_problem


def _local_file_info(path: str) -> dict:
    try:
        st = os.stat(path)
    except OSError:
        return {"type": "file", "size": 0}
    return {"type": "file", "size": st.st_size, "mtime": st.st_mtime}


def _walk_store(fs: fsspec.AbstractFileSystem, root: str, recursive: bool) -> Iterator[tuple[str, dict]]:
    """Objects under `root` one listing page per prefix (fs.ls: s3fs and gcsfs page through it), in key order.
    A page is one prefix's direct children: a flat prefix of a million objects is one page of a million."""
    page = fs.ls(root, detail=True)
    fs.invalidate_cache(root)  # s3fs / gcsfs keep every listing otherwise: the driver would hold the bucket
    keyed = sorted(((info["name"].rstrip("/") + "/" if info.get("type") == "directory" else info["name"], info)
                    for info in page), key=lambda pair: pair[0])
    for key, info in keyed:
        if key.endswith("/"):
            if recursive and key.rstrip("/") != root.rstrip("/"):
                yield from _walk_store(fs, key.rstrip("/"), recursive)
            continue
        yield info["name"], info


def iter_inputs(uri: str, config: SourceConfig, output: str | None = None,
                listing: Listing | None = None) -> Iterator[InputRef]:
    """Every file under `uri` whose extension is in config.extensions, in URI order, page by page as the
    bucket is listed (analysis can start on the first page); files under `output` (an OUTPUT inside INPUT)
    are left out. `listing` counts what was left out as the walk goes (its `refs` stay empty)."""
    listing = listing if listing is not None else Listing()
    local = _is_local(uri)
    if local:
        uri = _local_path(uri)
        if not os.path.lexists(uri):
            raise FileNotFoundError(f"input {uri} does not exist")
        fs, root = None, uri
        entries = _walk_local(uri, config.recursive) if os.path.isdir(uri) else iter([(uri, _local_file_info(uri))])
    else:
        fs, root = fsspec.core.url_to_fs(uri, **config.storage_options)
        entries = iter([(root, fs.info(root))]) if fs.isfile(root) else _walk_store(fs, root, config.recursive)
    out_root = None
    if output is not None:
        out_root = _local_path(output) if _is_local(output) else fsspec.core.url_to_fs(output)[1]
    extensions = {e.lower() for e in config.extensions}
    for path, info in entries:
        if out_root is not None and _inside(path, out_root):
            listing.excluded_output += 1
            continue
        suffix = Path(path).suffix.lower()
        if suffix not in extensions:
            listing.skipped_extensions[suffix or "(none)"] += 1
            continue
        source_uri = path if local else fs.unstrip_protocol(path)
        problem = _local_problem(path) if local else ""
        listing.listed += 1
        yield InputRef(input_id_for(source_uri), source_uri, int(info.get("size") or 0), _version(info), problem)


def scan_inputs(uri: str, config: SourceConfig, output: str | None = None) -> Listing:
    """`iter_inputs` collected: every input (sorted by URI) and what was left out, counted."""
    listing = Listing()
    listing.refs = sorted(iter_inputs(uri, config, output, listing), key=lambda r: r.source_uri)
    return listing


def list_inputs(uri: str, config: SourceConfig, output: str | None = None) -> list[InputRef]:
    """The inputs of `scan_inputs`, without the counts."""
    return scan_inputs(uri, config, output).refs


def same_location(a: str, b: str) -> bool:
    """INPUT and OUTPUT name the same place (after resolving local paths)."""
    if _is_local(a) and _is_local(b):
        return _local_path(a) == _local_path(b)
    return a.rstrip("/") == b.rstrip("/")


def open_input(source_uri: str, storage_options: dict | None = None) -> str | IO[bytes]:
    """A local path as is (FFmpeg reads it directly), anything else as a buffered fsspec file."""
    if _is_local(source_uri):
        return _local_path(source_uri)
    fs, path = fsspec.core.url_to_fs(source_uri, **(storage_options or {}))
    return fs.open(path, "rb", block_size=4 * 1024 * 1024, cache_type="readahead")


def stream_bucket(uri: str, config: SourceConfig, output: str | None = None,
                  listing: Listing | None = None) -> Iterator[InputRef]:
    """`iter_inputs` for a run: an unlistable bucket (missing credentials, unreachable endpoint, denied) and an
    empty one are one-line errors that say why (raised when the failing page is reached, or the walk ends empty)."""
    listing = listing if listing is not None else Listing()
    refs = iter_inputs(uri, config, output, listing)
    while True:
        try:
            ref = next(refs)
        except StopIteration:
            break
        except FileNotFoundError:
            raise
        except Exception as exc:  # whatever the fsspec driver raises: one line, no traceback
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
            raise ValueError(f"cannot list {uri}: {type(exc).__name__}: {detail}") from None
        yield ref
    if not listing.listed:
        raise ValueError(f"no inputs found under {uri} with extensions {', '.join(config.extensions)}{listing.note()}")
