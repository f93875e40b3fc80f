"""OUTPUT as a Store: a root URI on any filesystem fsspec reaches (a local path, file://, s3://, gs://).

Paths given to a Store are relative to its root and '/'-separated. Publication is atomic everywhere:
a local file is written to a temporary name in its folder and renamed into place; an object store
object is published by one PUT (or one completed multipart upload), which S3 and GCS make visible
all-or-nothing, so readers never see a partial object and no rename is needed. `create` publishes
only if the name is free (O_EXCL locally, `If-None-Match: *` on S3).

A Store pickles as its URI and storage options only; a worker rebuilds the filesystem from them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: outputs readable as the umask allows


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so readers never see a partial file."""
    with _local_temp(path) as (handle, _):
        handle.write(data)


@contextlib.contextmanager
def _local_temp(path: Path) -> Iterator[tuple[IO[bytes], str]]:
    """A temp file beside `path`, renamed onto it when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as handle:
            yield handle, tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class Store:
    """OUTPUT's root (`uri`) and the fsspec options to reach it; paths are relative to the root."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        uri = str(uri)
        # A local root keeps the form Path() gives it (as OUTPUT always had); a URL keeps its scheme.
        self.uri = str(Path(uri.removeprefix("file://"))) if is_local(uri) else uri.rstrip("/")
        # workers may run in another working directory: a local root travels absolute
        self.location = os.path.abspath(self.uri) if is_local(uri) else self.uri
        self.storage_options = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "location": self.location, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["storage_options"])
        self.location = state["location"]

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def local(self) -> bool:
        return is_local(self.uri)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs, self._root = fsspec.core.url_to_fs(self.location, **self.storage_options)
            self._root = self._root.rstrip("/") if self._root != "/" else ""
        return self._fs

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` (a local path, or bucket/key for an object store)."""
        _ = self.fs  # sets the root
        return f"{self._root}/{rel}" if rel else self._root

    def url(self, rel: str = "") -> str:
        """`rel` as a user would write it (for messages and run.json)."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def rel(self, path: str) -> str:
        """A filesystem path under the root, relative to it (as `put` and `get` take it)."""
        return path[len(self._root) + 1:] if path.startswith(self._root + "/") else path

    # -- writing ---------------------------------------------------------------------------------
    def put(self, rel: str, data: bytes) -> None:
        """Publish `data` at `rel` atomically (replacing what was there)."""
        if self.local:
            atomic_write(Path(self.path(rel)), data)
        else:
            self.fs.pipe_file(self.path(rel), data)

    @contextlib.contextmanager
    def writer(self, rel: str) -> Iterator[IO[bytes]]:
        """A file to write `rel` into, published atomically when the block ends without an error (a big
        object is staged in a local temp file and uploaded in one go, never held in memory)."""
        if self.local:
            with _local_temp(Path(self.path(rel))) as (handle, _):
                yield handle
            return
        with tempfile.NamedTemporaryFile(prefix="vidmill-", suffix=".part") as tmp:
            yield tmp
            tmp.flush()
            self.fs.put_file(tmp.name, self.path(rel))

    def create(self, rel: str, data: bytes) -> bool:
        """Publish `data` at `rel` only if nothing is there; False if something is."""
        path = self.path(rel)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return True
        if self.conditional_writes:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            return True
        if self.exists(rel):  # no conditional write known for this filesystem: a race remains (docs/storage.md)
            return False
        self.fs.pipe_file(path, data)
        return True

    @property
    def conditional_writes(self) -> bool:
        """Whether `create` is one conditional PUT: s3fs sends `If-None-Match: *` for mode="create"."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        return "s3" in protocols

    def remove(self, rel: str) -> None:
        """Remove one file or object; a missing one is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    def remove_tree(self, rel: str) -> None:
        """Remove everything under `rel`; nothing there is fine."""
        if self.local:
            shutil.rmtree(self.path(rel), ignore_errors=True)
            return
        for name in self.find(rel):
            self.remove(name)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, rel: str) -> bytes:
        """The bytes at `rel` (FileNotFoundError if none)."""
        return self.fs.cat_file(self.path(rel))

    def open(self, rel: str, mode: str = "rb") -> IO[bytes]:
        return self.fs.open(self.path(rel), mode)

    def exists(self, rel: str) -> bool:
        self._fresh(rel)
        return self.fs.exists(self.path(rel))

    def isdir(self, rel: str = "") -> bool:
        return self.fs.isdir(self.path(rel))

    def size(self, rel: str) -> int | None:
        try:
            return int(self.fs.size(self.path(rel)))
        except FileNotFoundError:
            return None

    def find(self, rel: str) -> dict[str, int]:
        """Every file under the folder `rel`: relative path -> size."""
        self._fresh(rel)
        try:
            found = self.fs.find(self.path(rel), detail=True)
        except FileNotFoundError:
            return {}
        return {self.rel(path): int(info.get("size") or 0) for path, info in found.items()
                if info.get("type", "file") != "directory"}

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching `pattern` (fsspec glob: *, **, ?, [..])."""
        self._fresh(pattern.split("*", 1)[0].rsplit("/", 1)[0])
        return sorted(self.rel(p) for p in self.fs.glob(self.path(pattern)))

    def _fresh(self, rel: str) -> None:
        """Object stores cache listings per filesystem instance: other processes write here, so drop them."""
        if not self.local:
            self.fs.invalidate_cache(self.path(rel))
