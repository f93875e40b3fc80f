"""A local Ray started by vidmill dies with the command, even when the command is SIGKILLed.

Ray's head processes share the driver's fate, but its DashboardAgent and RuntimeEnvAgent outlive a
killed driver (reparented to PID 1, holding ports). `start(...)` forks a small detached process that
waits for the driver to end and then kills what is left of that Ray instance: the head processes it
was told about, and every process whose environment names the instance's raylet (RAY_RAYLET_PID).
Linux only (/proc); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(driver_pid: int, raylet_pid: int, head_pids: list[int]) -> subprocess.Popen | None:
    """Detach a watchdog for the local Ray instance whose raylet is `raylet_pid`."""
    if not Path("/proc").is_dir():
        return None
    return subprocess.Popen([sys.executable, "-m", "vidmill.pipeline.executor.ray_watchdog", str(driver_pid),
                             str(raylet_pid), *map(str, head_pids)], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def leftovers(raylet_pid: int, head_pids: list[int]) -> list[int]:
    """Live processes of the instance: the recorded head processes and the raylet's descendants by env."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        env = _environ(pid)
        if pid in head_pids and env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is not None or \
                env.get("RAY_RAYLET_PID") == str(raylet_pid):
            found.append(pid)
    return [pid for pid in found if _alive(pid)]


def main(argv: list[str]) -> None:
    driver, raylet, *heads = map(int, argv)
    while _alive(driver):
        time.sleep(0.5)
    time.sleep(3.0)  # a clean exit shuts Ray down itself; only what is still there afterwards is killed
    for pid in leftovers(raylet, heads):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
