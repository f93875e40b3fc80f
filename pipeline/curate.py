"""`vidmill curate`: the data flow of one run, one call per step.

    listing (streaming) -> resume -> analyse + score -> per-input records on OUTPUT
    -> finalize (pipeline/finalize/): decide -> dedup -> [transcode -> caption, a part at a time] -> shards + tables

Inputs that are complete under the same config are skipped, so re-running a killed command finishes
the rest and gives the same manifest as an uninterrupted run. The driver keeps ids and counters; workers
read and write OUTPUT (a local path or an object store, output/store.py) themselves. Every step reads and
sets typed clip records (records.py); Ray work goes through one StageRunner (executor/runner.py).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vidmill.pipeline.captions.stage import CaptionClips, CaptionItem, apply_caption
from vidmill.pipeline.cascade import newly_eligible
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.decide import filter_reasons
from vidmill.pipeline.executor.actor_pool import Done
from vidmill.pipeline.executor.runner import StageRunner
from vidmill.pipeline.finalize import Finalize, Layout, ListingWriter
from vidmill.pipeline.finalize.run import bucket_partitions
from vidmill.pipeline.finalize.stages import Settings
from vidmill.pipeline.lock import OutputLock
from vidmill.pipeline.outcomes import TRANSCODE_ERROR
from vidmill.pipeline.output.report import driver_traffic, format_summary, run_summary, write_run_json
from vidmill.pipeline.output.store import Store
from vidmill.pipeline.output.workdir import WorkDir, prepare_output
from vidmill.pipeline.records import (
    ClipRecord,
    InputResult,
)
from vidmill.pipeline.scoring import registered
from vidmill.pipeline.sources import InputRef, Listing, stream_bucket
from vidmill.pipeline.stage import StageStats
from vidmill.pipeline.stream import AnalyseAndScore
from vidmill.pipeline.transcode import TranscodeClips, clip_batches

__all__ = ["Curation", "format_summary", "scorer_classes"]

INPUTS_PER_PART = 1000  # inputs per finalize part: one worker task reads and writes one part
WORK_SECTIONS = ("source", "decode", "shots", "spans", "transcode", "scoring")  # not thresholds


def scorer_classes(config: CurateConfig) -> list[type]:
    """The registered scorers that this config enables, in their order."""
    return [cls for cls in registered() if cls.enabled(config)]


def one_node() -> bool:
    """Ray runs on this machine alone (the driver's reads are then the workers' reads)."""
    import ray

    return ray.is_initialized() and sum(node["Alive"] for node in ray.nodes()) == 1


class Curation:
    def __init__(self, input_uri: str, output: str | Path, config: CurateConfig, progress: bool = True,
                 force: bool = False):
        self.input_uri, self.config = input_uri, config
        self.store = Store(str(output), config.output.storage_options)  # a local path, file://, s3://, gs://
        self.output = self.store.uri
        self.progress, self.force = progress, force
        self.listing = Listing()
        self.work = WorkDir(self.store, config.fingerprint(*WORK_SECTIONS))
        self.scorers = scorer_classes(config)
        self.runner = StageRunner(stats={name: StageStats() for name in
                                         ["analyze", "transcode", *(c.name for c in self.scorers), "dedup", "caption"]})
        self.layout = Layout(self.store)
        self.listed = ListingWriter(self.layout, INPUTS_PER_PART)
        self.resumed = self.analysed = 0
        self.rescore: dict[str, tuple[InputRef, InputResult, frozenset[str]]] = {}
        self.transcode_errors: dict[str, str] = {}
        self.clip_bytes_written = 0  # bytes of the clip files this run's transcode workers published

    def run(self, address: str | None = None, started: float | None = None) -> dict[str, Any]:
        """Curate INPUT into OUTPUT, holding OUTPUT's lock; `started`: when the command started."""
        started = started or time.time()
        self.runner.address = address
        self.check_output()
        with OutputLock(self.store, force=self.force, note=lambda m: print(m, file=sys.stderr)):
            return self._run(started)

    def _run(self, started: float) -> dict[str, Any]:
        self.layout.clear("listing", "unsaved")
        self.analyse_and_score(self.resume(self.list()))  # the listing is pulled as analysis takes inputs
        self.listed.flush()
        self.score_newly_eligible()
        # a one-part run finalizes in this process only on a one-node Ray: on a cluster, workers read the clips
        finalize = Finalize(self.finalize_settings(), self.listed.parts, self.runner, self.config.ray.dedup,
                            inline_parts=1 if one_node() else 0)
        self.phase(f"decide + dedup: {self.listed.count} inputs in {self.listed.parts} parts")
        finalize.decide_and_dedup()
        for part, kept in finalize.kept_clips():  # one part's kept clips in the driver at a time
            self.transcode(kept)
            if self.config.captions.enabled:
                self.phase(f"caption: {sum(c.kept for c in kept)} kept clips of part {part + 1}/{self.listed.parts}")
                self.caption([c for c in kept if c.kept])
            finalize.save_updates(part, kept)
        self.phase("write: shards, inputs / shots / manifest tables, run.json")
        counts = finalize.write()
        self.runner.stats["dedup"].add({k: v for k, v in finalize.stats.items() if isinstance(v, int)})
        summary = run_summary(self.input_uri, self.output, self.config, counts, self.runner.stats, self.resumed,
                              started, self.listing)
        summary.update(driver_traffic(self.runner.driver_bytes, self.runner.driver_bytes_sent,
                                      self.clip_bytes_written))
        write_run_json(summary, self.store)
        return summary

    def finalize_settings(self) -> Settings:
        clips_dir = self.store.path(self.work.clips_dir)
        return Settings(self.layout, self.work.fingerprint, self.config.thresholds, self.config.shards,
                        bucket_partitions(self.listed.parts), clips_dir)

    def phase(self, text: str) -> None:
        """One line as each phase after the analysis bar starts (so no phase passes in silence)."""
        if self.progress:
            print(f"vidmill: {text}", file=sys.stderr, flush=True)

    # -- steps, in order ----------------------------------------------------------------------
    def check_output(self) -> None:
        prepare_output(self.input_uri, self.store)

    def list(self) -> Iterator[InputRef]:
        """The bucket's inputs page by page (files under OUTPUT left out); its first page is read now, so an
        unlistable or empty bucket fails before any work; the total is known when the walk ends."""
        self.phase(f"listing {self.input_uri}")
        refs = stream_bucket(self.input_uri, self.config.source, self.store.uri, self.listing)
        first = next(refs)
        return itertools.chain([first], refs)

    def resume(self, refs: Iterable[InputRef]) -> Iterator[InputRef]:
        """Every listed input is written to the listing parts; those finished under this config from the same
        content are counted (and kept only when the cascade must score them again); the rest are yielded."""
        for ref in refs:
            self.listed.add(ref)
            result = self.work.load_current(ref)
            if result is None:
                yield ref
                continue
            self.resumed += 1
            eligible = newly_eligible(result.clips, self.scorers, self.config.thresholds) \
                if self.config.scoring.cascade else []
            if eligible:
                self.rescore[ref.input_id] = (ref, result, frozenset(c.clip_id for c in eligible))

    def analyse_and_score(self, todo: Iterable[InputRef]) -> None:
        AnalyseAndScore(self.config, self.runner, self.scorers, self.finished, self.passing, self.transcoded,
                        self.progress, self.work).run(todo, total=lambda: self.listed.count - self.resumed)

    def score_newly_eligible(self) -> None:
        """Cascade follow-up pass: clips whose expensive scores were skipped but that pass the cheap
        thresholds now (a threshold-only re-run that loosened one) are scored before decide."""
        if not self.config.scoring.cascade:
            return
        rescore = {input_id: (result, only) for input_id, (_, result, only) in self.rescore.items()}
        if rescore:
            expensive = [s for s in self.scorers if s.expensive]  # no pools for the cheap scorers
            AnalyseAndScore(self.config, self.runner, expensive, self.finished, self.passing, self.transcoded,
                            self.progress, self.work).run([ref for ref, _, _ in self.rescore.values()], rescore)
        self.runner.stats.setdefault("rescore", StageStats()).add(
            {"inputs": len(rescore), "clips": sum(len(only) for _, only in rescore.values())})
        self.rescore = {}

    def finished(self, result: InputResult, retryable: bool) -> None:
        """An input analysed and scored: its marker is written, unless a worker died (then it is reported
        now, from an unsaved record, and redone on the next run). Only the count stays in the driver."""
        result.taps = None
        if retryable:
            self.layout.save_unsaved(result, self.work.fingerprint)
        else:
            self.work.save(result)
        self.analysed += 1

    def passing(self, clips: list[ClipRecord]) -> list[ClipRecord]:
        """Clips that pass every per-clip threshold and have no clip file yet: transcoded while the
        rest of the bucket is analysed (global dedup may still drop a few of them at the end)."""
        th = self.config.thresholds
        return [c for c in clips if c.kept and not filter_reasons(c.scores, th)
                and not self.work.has_clip(c.input_id, c.clip_id)]

    def transcode(self, kept: list[ClipRecord]) -> None:
        """Transcode kept clips not made yet (e.g. after a threshold change); made files are reused."""
        cfg = self.config
        inputs = {c.input_id for c in kept}
        made = self.work.clip_sizes(inputs)
        todo = [c for c in kept if self.work.clip_path(c.input_id, c.clip_id) not in made
                and c.clip_id not in self.transcode_errors]  # failed once in this run: not again
        if todo:
            bar = tqdm(total=len(todo), desc="transcode", unit="clip", disable=not self.progress)

            def collect(done: Done) -> None:
                self.transcoded(done)
                bar.update(len(done.item.clips))

            pool = self.runner.pool(TranscodeClips, cfg, self.work, resources=cfg.ray.transcode,
                                    timeout_s=cfg.decode.input_timeout_s)
            try:
                self.runner.map(pool, ((b.input_id, b) for b in clip_batches(todo, cfg.transcode.clips_per_task)),
                                collect)
            finally:
                bar.close()
            made = self.work.clip_sizes(inputs)
        for clip in kept:
            size = made.get(self.work.clip_path(clip.input_id, clip.clip_id))
            if size is not None:
                clip.clip_bytes = size
            else:
                clip.error = self.transcode_errors.get(clip.clip_id, "transcode: no output")
                clip.reject(TRANSCODE_ERROR.name)

    def transcoded(self, done: Done) -> None:
        """Record what a transcode worker made (it published each clip file itself as it finished, so a
        crash loses none) and its failures."""
        if done.error:
            self.transcode_errors.update({span.clip_id: done.error for span in done.item.clips})
            return
        for clip_id, data in done.value.videos.items():  # a stage built without a WorkDir returns bytes
            self.work.save_clip(done.item.input_id, clip_id, data)
        self.transcode_errors.update(done.value.errors)
        self.clip_bytes_written += sum(done.value.sizes.values())
        self.runner.stats["transcode"].add({"clips": len(done.value.sizes), "frames_out": done.value.frames_out})

    def caption(self, kept: list[ClipRecord]) -> None:
        """Per-second captions for kept clips; stored captions (same captioner settings) are reused."""
        cfg = self.config.captions
        fingerprint = cfg.fingerprint()
        results, todo = {}, []
        for clip in kept:
            stored = self.work.load_caption(clip.clip_id, fingerprint)
            if stored is not None:
                results[clip.clip_id] = stored
            else:
                todo.append(CaptionItem(clip.clip_id, clip.duration_s, None, clip.scores.get("camera_motion"),
                                        clip.scores.get("text_area_max"),
                                        path=self.work.clip_path(clip.input_id, clip.clip_id)))
        started = time.time()

        def collect(done: Done) -> None:
            for result in done.value or [{"clip_id": i.clip_id, "error": done.error, "captioner": cfg.backend}
                                         for i in done.item]:
                results[result["clip_id"]] = result
                if result.get("caption"):  # saved as it arrives: a crash loses no finished caption
                    self.work.save_caption(result["clip_id"], fingerprint, result)

        pool = self.runner.pool(CaptionClips, self.config, self.store, resources=self.config.ray.caption,
                                timeout_s=cfg.timeout_s * (cfg.retries + 1) * 4 + cfg.health_timeout_s)
        if todo:
            batches = [tuple(todo[i:i + cfg.clips_per_task]) for i in range(0, len(todo), cfg.clips_per_task)]
            self.runner.map(pool, enumerate(batches), collect, weight=len)
        tokens = sum(results[c.clip_id].get("tokens_out", 0) for c in kept if c.clip_id in results)
        self.runner.stats["caption"].add({"requested": len(todo), "reused": len(kept) - len(todo),
                                          "failed": sum(not results.get(c.clip_id, {}).get("caption") for c in kept),
                                          "output_tokens": tokens, "wall_s": round(time.time() - started, 3)})
        for clip in kept:
            apply_caption(clip, results.get(clip.clip_id, {"error": "not captioned"}))
