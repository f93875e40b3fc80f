"""One writer per output: OUTPUT/.vidmill.lock holds the running command's host, PID and start time.

Taken with an exclusive create (O_EXCL locally, a conditional PUT `If-None-Match: *` on S3: the
Store's `create`), so two runs racing for one output cannot both win. A lock whose PID is
gone on this host is stale and taken over (with a message); a lock held by a live process, or by
another host (whose processes cannot be checked from here), refuses the run unless `force` is given.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from vidmill.pipeline.output.store import Store

LOCK_NAME = ".vidmill.lock"


class OutputLocked(RuntimeError):
    """Another run writes this output."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    def __init__(self, output: Store | Path | str, force: bool = False, note: callable = print):
        self.store = output if isinstance(output, Store) else Store(str(output))
        self.path = self.store.url(LOCK_NAME)  # for messages
        self.force, self.note = force, note
        self.held = False

    def holder(self) -> dict | None:
        try:
            return json.loads(self.store.get(LOCK_NAME))
        except (OSError, json.JSONDecodeError):
            return None

    def acquire(self) -> OutputLock:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(2):
            if not self.store.create(LOCK_NAME, json.dumps(me).encode()):
                self._clear_or_refuse()
                continue
            self.held = True
            return self
        raise OutputLocked(f"could not take the lock {self.path}")

    def _clear_or_refuse(self) -> None:
        held = self.holder()
        if held is None:  # unreadable or half-written: a run that died while taking it
            self.note(f"vidmill: removing an unreadable lock {self.path}")
        elif held.get("host") == socket.gethostname() and not _alive(int(held.get("pid", -1))):
            self.note(f"vidmill: a previous run (PID {held.get('pid')}, started {held.get('started')}) "
                      f"died without releasing {self.path}; taking it over")
        elif self.force and held.get("host") != socket.gethostname():
            self.note(f"vidmill: --force: breaking the lock of PID {held.get('pid')} on {held.get('host')}")
        else:
            where = "this host" if held.get("host") == socket.gethostname() else f"host {held.get('host')}"
            hint = "" if held.get("host") == socket.gethostname() else \
                " (if that run is dead, re-run with --force)"
            raise OutputLocked(f"another vidmill run is writing {self.store.uri}: PID {held.get('pid')} on "
                               f"{where}, started {held.get('started')}{hint}")
        self.store.remove(LOCK_NAME)

    def release(self) -> None:
        if self.held:
            self.store.remove(LOCK_NAME)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
