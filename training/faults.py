"""Fault injection for tests and drills, read from the VIDMILL_FAULTS environment variable.

A comma-separated list of `KIND@STEP[=VALUE]`:
- `nan@S`: the loss of step S becomes NaN on rank 0 (the step must be skipped and counted);
- `kill@S`: after step S (and its checkpoint, if any) rank 0 SIGKILLs itself;
- `sleep@S=SECONDS`: after step S, every rank sleeps (gives an outside killer a window).
Unset in normal runs: then every check is a dictionary miss.
"""

from __future__ import annotations

import os
import signal
import time


class Faults:
    def __init__(self, spec: str | None = None):
        spec = os.environ.get("VIDMILL_FAULTS", "") if spec is None else spec
        self.events: dict[tuple[str, int], float] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            kind, _, rest = item.partition("@")
            step, _, value = rest.partition("=")
            if kind not in ("nan", "kill", "sleep") or not step.isdigit():
                raise ValueError(f"bad VIDMILL_FAULTS entry {item!r}: expected nan@STEP, kill@STEP or sleep@STEP=S")
            self.events[(kind, int(step))] = float(value or 0)

    def nan_loss(self, step: int, rank: int) -> bool:
        return rank == 0 and ("nan", step) in self.events

    def after_step(self, step: int, rank: int) -> None:
        if ("sleep", step) in self.events:
            time.sleep(self.events[("sleep", step)])
        if rank == 0 and ("kill", step) in self.events:
            os.kill(os.getpid(), signal.SIGKILL)
