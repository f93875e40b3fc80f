"""A training run's evaluations: the trainer hands each due checkpoint to an `EvalScheduler` (rank 0 only).

Background mode (default, `eval.background: true`): each evaluation is a subprocess,
`python -m vidmill.cli eval checkpoint RUN/checkpoints/step-N --run RUN --step N ...`, with its output in
RUN/eval/step-N/log.txt. Training is not blocked (other ranks never wait on rank 0 at a collective), a crash
of the evaluation (even a segfault or an out-of-memory kill) cannot take the run down, and its memory is
returned when it exits. One evaluation runs at a time; a checkpoint that comes due meanwhile waits its turn
(if `train.keep_checkpoints` prunes it first, it is recorded as skipped). In-process mode
(`background: false`) calls `evaluate_checkpoint` directly and restores every RNG state, so the run stays
bit-exact on resume; training waits for it.

Failures are logged (stderr, and an eval row with "eval/status": "failed: ...") and counted; never raised.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vidmill.evaluation.tail import PhysicsIQTail, VBenchTail, evaluate_checkpoint, log_eval_row


@dataclass
class EvalJob:
    step: int
    checkpoint: Path
    process: subprocess.Popen | None = None
    log: Any = None


@dataclass
class EvalCounts:
    launched: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def _suite(cls, values: dict[str, Any] | None, what: str):
    """PhysicsIQTail / VBenchTail from the config's mapping, with a clear error for unknown or missing keys."""
    if not values:
        return None
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown eval.{what} keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"eval.{what}: {exc}") from exc


def suites(config) -> tuple[PhysicsIQTail | None, VBenchTail | None]:
    """The benchmarks an `EvalConfig` asks for (ValueError on a bad section)."""
    piq = _suite(PhysicsIQTail, config.physics_iq, "physics_iq")
    vb = _suite(VBenchTail, config.vbench, "vbench")
    if piq is not None and piq.mode not in ("i2v", "v2v"):
        raise ValueError(f"eval.physics_iq.mode must be i2v or v2v, not {piq.mode!r}")
    return piq, vb


def command(checkpoint: Path, run_dir: Path, step: int, config) -> list[str]:
    """The `vidmill eval checkpoint` command line of one evaluation."""
    piq, vb = suites(config)
    cmd = [sys.executable, "-m", "vidmill.cli", "eval", "checkpoint", str(checkpoint), "--run", str(run_dir),
           "--step", str(step), "--device", config.device, "--threads", str(config.num_threads)]
    if config.steps:
        cmd += ["--steps", str(config.steps)]
    if not config.keep_videos:
        cmd.append("--no-keep-videos")
    if piq is not None:
        cmd += ["--physics-iq-real", piq.real, "--physics-iq-mode", piq.mode]
        cmd += ["--physics-iq-fps", str(piq.fps)] if piq.fps else []
        cmd += ["--physics-iq-limit", str(piq.limit)] if piq.limit else []
        cmd += ["--mask-round-trip"] if piq.mask_round_trip else []
    if vb is not None:
        if isinstance(vb.config, dict):
            raise ValueError("eval.vbench.config must be the path of an evaluation YAML in background mode")
        cmd += ["--vbench-images", vb.images, "--vbench-seconds", str(vb.seconds)]
        cmd += ["--vbench-config", vb.config] if vb.config else []
        cmd += ["--vbench-fps", str(vb.fps)] if vb.fps else []
    return cmd


def one_line(row: dict[str, Any]) -> str:
    """A short summary of an eval row for the training log."""
    parts = []
    if "eval/physics_iq/status" in row:
        scores = "/".join("-" if row.get(f"eval/physics_iq/{v}") is None else f"{row[f'eval/physics_iq/{v}']:.2f}"
                          for v in ("original", "stable", "verified"))
        parts.append(f"physics-iq original/stable/verified {scores} ({row['eval/physics_iq/status']})")
    if "eval/vbench/status" in row:
        total = row.get("eval/vbench/total")
        parts.append(f"vbench total {'-' if total is None else f'{100 * total:.2f}'} ({row['eval/vbench/status']})")
    return "; ".join(parts)


def _row_of(run_dir: Path, step: int) -> dict[str, Any] | None:
    from vidmill.training.metrics import read_metrics

    rows = [r for r in read_metrics(run_dir, "eval") if r.get("step") == step]
    return rows[-1] if rows else None


class EvalScheduler:
    """Runs the evaluations of one training run; `submit` at each due checkpoint, `poll` often, `close` at the end."""

    def __init__(self, config, run_dir: str | Path, log=None):
        self.config, self.run_dir = config, Path(run_dir)
        self.physics_iq, self.vbench = suites(config)  # a bad section fails the run at start, not at every eval
        self.queue: list[EvalJob] = []
        self.running: EvalJob | None = None
        self.counts = EvalCounts()
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))

    def submit(self, step: int, checkpoint: Path) -> None:
        job = EvalJob(step, Path(checkpoint))
        if self.config.background:
            self.queue.append(job)
            self.poll()
        else:
            self._run_inline(job)

    def _fail(self, job: EvalJob, reason: str, row_written: bool = False) -> None:
        self.counts.failed += 1
        self.counts.failures.append(f"step {job.step}: {reason}")
        self.log(f"evaluation of step {job.step} failed: {reason}")
        if not row_written:
            log_eval_row(self.run_dir, {"step": job.step, "kind": "eval", "checkpoint": str(job.checkpoint),
                                        "eval/status": f"failed: {reason}"})

    def _finish(self, job: EvalJob, row: dict) -> None:
        if row.get("eval/failed"):
            self._fail(job, "; ".join(f"{n}: {row.get(f'eval/{n}/status')}" for n in row["eval/failed"]), True)
        else:
            self.counts.ok += 1
            self.log(f"evaluation of step {job.step}: {one_line(row)}")

    def _run_inline(self, job: EvalJob) -> None:
        from vidmill.training.checkpoint import rng_state, set_rng_state

        self.counts.launched += 1
        state = rng_state()  # python, numpy, torch (and CUDA) RNGs: restored, so a resumed run stays bit-exact
        try:
            row = evaluate_checkpoint(job.checkpoint, self.run_dir, job.step, physics_iq=self.physics_iq,
                                      vbench=self.vbench, keep_videos=self.config.keep_videos,
                                      device=self.config.device, steps=self.config.steps)
        except Exception as exc:  # noqa: BLE001 (an evaluation never stops training)
            self._fail(job, f"{type(exc).__name__}: {exc}")
            return
        finally:
            set_rng_state(state)
        self._finish(job, row)

    def _start(self, job: EvalJob) -> None:
        if not (job.checkpoint / "COMPLETE").is_file():
            self.counts.skipped += 1
            reason = "skipped: checkpoint pruned before its evaluation started (raise train.keep_checkpoints)"
            self.log(f"evaluation of step {job.step} {reason}")
            log_eval_row(self.run_dir, {"step": job.step, "kind": "eval", "checkpoint": str(job.checkpoint),
                                        "eval/status": reason})
            return
        folder = self.run_dir / "eval" / f"step-{job.step}"
        folder.mkdir(parents=True, exist_ok=True)
        job.log = open(folder / "log.txt", "w")  # noqa: SIM115 (closed when the process ends)
        job.process = subprocess.Popen(command(job.checkpoint, self.run_dir, job.step, self.config),
                                       stdout=job.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.counts.launched += 1
        self.running = job

    def _reap(self, job: EvalJob, code: int) -> None:
        job.log.close()
        self.running = None
        log_path = self.run_dir / "eval" / f"step-{job.step}" / "log.txt"
        if code == 0:
            self.counts.ok += 1
            row = _row_of(self.run_dir, job.step)
            self.log(f"evaluation of step {job.step}: {one_line(row) if row else 'done'}")
        elif code == 1:  # `vidmill eval checkpoint`: a benchmark failed, its row is written
            self._fail(job, f"a benchmark failed (see the eval row and {log_path})", row_written=True)
        else:
            self._fail(job, f"exit code {code} (see {log_path})")

    def poll(self) -> None:
        """Reap a finished evaluation, start the next queued one. Cheap: call it every step."""
        if self.running is not None:
            code = self.running.process.poll()
            if code is None:
                return
            self._reap(self.running, code)
        while self.running is None and self.queue:
            self._start(self.queue.pop(0))

    def close(self, wait: bool = True) -> EvalCounts:
        """Wait for the running and queued evaluations (wait=True), or leave them running detached."""
        while wait and (self.running is not None or self.queue):
            if self.running is not None:
                self._reap(self.running, self.running.process.wait())
            self.poll()
        for job in self.queue:
            self.counts.skipped += 1
            self.log(f"evaluation of step {job.step} not started: the run ended (eval.wait_at_end is false)")
        self.queue.clear()
        if self.running is not None:
            self.log(f"evaluation of step {self.running.step} still running (pid {self.running.process.pid}); "
                     f"its row will be appended to {self.run_dir / 'metrics.jsonl'}")
        return self.counts
