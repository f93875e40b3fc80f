"""`vidmill curate`: list the bucket, run the stages on Ray, write shards, tables and run.json.

Inputs that are complete under the same config are skipped, so re-running a killed command
finishes the rest and gives the same manifest as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vidmill.pipeline import __version__
from vidmill.pipeline.aesthetic import AestheticScorer
from vidmill.pipeline.analyze import Analysis, AnalyzeInput, InputRange, RangeAnalysis, error_analysis
from vidmill.pipeline.caption_stage import CaptionClips, CaptionItem
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.decide import STATUS_COLUMNS, filter_reasons, rank_key
from vidmill.pipeline.dedup import DedupItem, DedupRule, NearDuplicatePairs, buckets, duplicate_groups, partitions
from vidmill.pipeline.hashes import ContentHashes
from vidmill.pipeline.lock import OutputLock
from vidmill.pipeline.motion import MotionScorer
from vidmill.pipeline.ocr import TextScorer
from vidmill.pipeline.outcomes import reason as reason_declaration
from vidmill.pipeline.quality import TechnicalQuality
from vidmill.pipeline.ray_plan import ActorPool, Done, fit_to_cluster, init_ray, run_pools
from vidmill.pipeline.scoring import ScoreBatch
from vidmill.pipeline.sources import InputRef, Listing, same_location, scan_inputs
from vidmill.pipeline.spans import ClipSpan
from vidmill.pipeline.stage import StageStats
from vidmill.pipeline.transcode import ClipBatch, TranscodeClips
from vidmill.pipeline.workdir import WorkDir, atomic_write
from vidmill.pipeline.writers import (
    EMBEDDINGS_SCHEMA,
    INPUTS_SCHEMA,
    MANIFEST_SCHEMA,
    SHOTS_SCHEMA,
    write_shards,
    write_table,
)

WORK_SECTIONS = ("source", "decode", "shots", "spans", "transcode", "scoring")  # not thresholds


def scorer_classes(config: CurateConfig) -> list[type]:
    s = config.scoring
    return [cls for cls, on in ((TechnicalQuality, s.quality.enabled), (ContentHashes, True),
                                (MotionScorer, s.motion.enabled), (TextScorer, s.ocr.enabled),
                                (AestheticScorer, s.aesthetic.enabled)) if on]


@dataclass
class _InFlight:
    analysis: Analysis
    batches_left: int
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    retryable: bool = False


@dataclass
class _Ranges:
    results: list[RangeAnalysis] = field(default_factory=list)
    expected: int = 1
    retryable: bool = False


def clip_batches(clips: list[dict[str, Any]], size: int) -> list[ClipBatch]:
    """Clips grouped by input, in batches of at most `size` spans (one seek per batch)."""
    by_input: dict[str, list[dict[str, Any]]] = {}
    for clip in clips:
        by_input.setdefault(clip["input_id"], []).append(clip)
    batches = []
    for input_id, members in by_input.items():
        spans = [ClipSpan(c["clip_id"], c["start_s"], c["end_s"]) for c in sorted(members, key=lambda c: c["start_s"])]
        batches += [ClipBatch(input_id, members[0]["source_uri"], tuple(spans[i:i + size]))
                    for i in range(0, len(spans), size)]
    return batches


def score_batches(analysis: Analysis, size: int) -> list[ScoreBatch]:
    """Clips long enough to score, in batches, each with only the frame taps inside its spans."""
    spans = [ClipSpan(c["clip_id"], c["start_s"], c["end_s"]) for c in analysis.clips
             if "too_short" not in c["reject_reasons"]]
    batches = []
    for i in range(0, len(spans), size):
        part = tuple(spans[i:i + size])
        taps = analysis.taps.subset(part[0].start_s, part[-1].end_s)
        batches.append(ScoreBatch(analysis.input["input_id"], part, taps))
    return batches


class Curation:
    def __init__(self, input_uri: str, output: str | Path, config: CurateConfig, progress: bool = True,
                 force: bool = False):
        self.input_uri, self.output, self.config = input_uri, Path(output), config
        self.progress, self.force = progress, force
        self.listing = Listing()
        self.work = WorkDir(self.output, config.fingerprint(*WORK_SECTIONS))
        self.records: dict[str, dict[str, Any]] = {}
        self.scorers = scorer_classes(config)
        self.stats = {name: StageStats() for name in ["analyze", "transcode", *(c.name for c in self.scorers),
                                                      "dedup", "caption"]}
        self.resumed = 0
        self.address: str | None = None
        self.transcode_errors: dict[str, str] = {}

    def run(self, address: str | None = None, started: float | None = None) -> dict[str, Any]:
        """Curate INPUT into OUTPUT; `started`: when the command started (wall time counts from it)."""
        started = started or time.time()
        self.address = address
        self._check_output()
        with OutputLock(self.output, force=self.force, note=lambda m: print(m, file=sys.stderr)):
            self.listing = scan_inputs(self.input_uri, self.config.source, str(self.output))
            refs = self.listing.refs
            if not refs:
                raise ValueError(f"no inputs found under {self.input_uri} with extensions "
                                 f"{', '.join(self.config.source.extensions)}{_skipped_note(self.listing)}")
            todo = []
            for ref in refs:
                record = self.work.load_current(ref)
                if record is None:
                    todo.append(ref)
                else:
                    self.records[ref.input_id] = record
            self.resumed = len(refs) - len(todo)
            if todo:
                init_ray(address)
                self._process(todo)
            return self._finalize(refs, started)

    def _check_output(self) -> None:
        """OUTPUT must be a writable directory that is not INPUT itself (one line each, before any work)."""
        if same_location(self.input_uri, str(self.output)):
            raise ValueError(f"OUTPUT {self.output} is INPUT itself: choose another directory (outputs would be "
                             "listed as inputs on the next run)")
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"OUTPUT {self.output} is a file, not a directory")
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create OUTPUT {self.output}: {exc.strerror or exc}") from None
        if not os.access(self.output, os.W_OK | os.X_OK):
            raise ValueError(f"OUTPUT {self.output} is not writable by this user")

    # -- streaming over Ray -------------------------------------------------------------------
    def _process(self, todo: list[InputRef]) -> None:
        cfg = self.config
        analyze = ActorPool("analyze", partial(AnalyzeInput, cfg), cfg.ray.analyze,
                            lambda rng: cfg.decode.input_deadline_s(rng.ref.size_bytes))
        assembler = AnalyzeInput(cfg)
        ranges: dict[str, _Ranges] = {}
        scoring = [ActorPool(cls.name, partial(cls, cfg), cls.resources(cfg), cfg.decode.input_timeout_s)
                   for cls in self.scorers]
        transcode = self._transcode_pool()
        status_column = {cls.name: cls.status_column for cls in self.scorers}
        in_flight: dict[str, _InFlight] = {}
        bar = tqdm(total=len(todo), desc="analyse + score", unit="video", disable=not self.progress)

        def on_done(pool: ActorPool, done: Done) -> None:
            if pool is transcode:
                self._transcoded(done)
                return
            stats = self.stats[pool.name]
            stats.items += 1
            stats.busy_s += done.seconds
            if done.error:
                stats.errors += 1
            if pool is analyze:  # a long input comes back in ranges: wait for all, then join them
                parts = ranges.setdefault(done.tag, _Ranges())
                parts.results.append(RangeAnalysis(done.item, error=done.error) if done.error else done.value)
                parts.retryable |= done.retryable or parts.results[-1].transient  # retried next run
                for rng in parts.results[-1].rest:  # before other inputs: finish what has started
                    analyze.submit(done.tag, rng, first=True)
                    parts.expected += 1
                if len(parts.results) < parts.expected:
                    return
                del ranges[done.tag]
                analysis = assembler.assemble(done.item.ref, parts.results)
                state = _InFlight(analysis, 0, retryable=parts.retryable)
                for batch in score_batches(analysis, cfg.scoring.clips_per_task):
                    for scorer in scoring:
                        scorer.submit(done.tag, batch)
                        state.batches_left += 1
                in_flight[done.tag] = state
            else:
                state = in_flight[done.tag]
                state.batches_left -= 1
                state.retryable |= done.retryable
                values = done.value or {span.clip_id: {status_column[pool.name]: f"error: {done.error}"}
                                        for span in done.item.clips}
                for clip_id, columns in values.items():
                    state.scores.setdefault(clip_id, {}).update(columns)
            if state.batches_left == 0:
                analysis = self._store(in_flight.pop(done.tag))
                for batch in clip_batches(self._passing(analysis.clips), cfg.transcode.clips_per_task):
                    transcode.submit(batch.input_id, batch)
                bar.update(1)

        pools = [analyze, *scoring, transcode]
        fit_to_cluster(pools)
        try:
            run_pools(analyze, ((ref.input_id, InputRange(ref, split=True)) for ref in todo), on_done, pools)
        finally:
            bar.close()
            for pool in pools:
                self.stats[pool.name].count_failures(pool.failures)
                pool.shutdown()

    def _store(self, state: _InFlight) -> Analysis:
        analysis = state.analysis
        for clip in analysis.clips:
            clip.update(state.scores.get(clip["clip_id"], {}))
        input_id = analysis.input["input_id"]
        if state.retryable:  # a worker died: report it now, redo it on the next run
            self.records[input_id] = asdict_record(analysis)
            return analysis
        self.work.save(analysis)
        self.records[input_id] = self.work.load(input_id)
        return analysis

    def _passing(self, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Clips that pass every per-clip threshold and have no clip file yet: transcoded while the
        rest of the bucket is analysed (global dedup may still drop a few of them at the end)."""
        th = self.config.thresholds
        return [c for c in clips if not c["reject_reasons"] and not filter_reasons(c, th)
                and not self.work.clip_path(c["input_id"], c["clip_id"]).exists()]

    def _transcode_pool(self) -> ActorPool:
        cfg = self.config
        return ActorPool("transcode", partial(TranscodeClips, cfg), cfg.ray.transcode, cfg.decode.input_timeout_s)

    def _transcoded(self, done: Done) -> None:
        """Save each finished clip file as it arrives (a crash loses none) and record failures."""
        stats = self.stats["transcode"]
        stats.items += 1
        stats.busy_s += done.seconds
        if done.error:
            stats.errors += 1
            self.transcode_errors.update({span.clip_id: done.error for span in done.item.clips})
            return
        for clip_id, data in done.value.videos.items():
            atomic_write(self.work.clip_path(done.item.input_id, clip_id), data)
        self.transcode_errors.update(done.value.errors)
        stats.add({"clips": len(done.value.videos), "frames_out": done.value.frames_out})

    # -- outputs ------------------------------------------------------------------------------
    def _finalize(self, refs: list[InputRef], started: float) -> dict[str, Any]:
        inputs, shots, clips = [], [], []
        for ref in refs:
            record = self.records.get(ref.input_id) or asdict_record(error_analysis(ref, "not processed"))
            inputs.append(record["input"])
            shots += [{"input_id": ref.input_id, **asdict(s)} for s in record["shots"]]
            clips += [{**clip, "reject_reasons": list(clip["reject_reasons"]), "kept": not clip["reject_reasons"],
                       "error": None, "clip_bytes": None, "shard": None, "key": None} for clip in record["clips"]]
        self._decide(clips)
        self._transcode([c for c in clips if c["kept"]])
        if self.config.captions.enabled:
            self._caption([c for c in clips if c["kept"]])
        kept = [c for c in clips if c["kept"]]
        embeddings = [{"clip_id": c["clip_id"], "clip_embedding": c.pop("clip_embedding")}
                      for c in clips if c.get("clip_embedding") is not None]
        for clip in clips:
            clip.pop("clip_embedding", None)
        write_table(embeddings, EMBEDDINGS_SCHEMA, self.output / "embeddings.parquet")
        write_shards(kept, lambda r: self.work.clip_path(r["input_id"], r["clip_id"]).read_bytes(),
                     lambda r: {"txt": r["caption"].encode()} if r.get("caption") else {},
                     self.output / "shards", self.config.shards)
        write_table(inputs, INPUTS_SCHEMA, self.output / "inputs.parquet")
        write_table(shots, SHOTS_SCHEMA, self.output / "shots.parquet")
        write_table(clips, MANIFEST_SCHEMA, self.output / "manifest.parquet")
        summary = self._run_json(inputs, shots, clips, started)
        atomic_write(self.output / "run.json", json.dumps(summary, indent=2, default=str).encode())
        return summary

    def _decide(self, clips: list[dict[str, Any]]) -> None:
        """Thresholds, then global dedup among what passes them; sets reject_reasons, kept, dup columns."""
        th = self.config.thresholds
        for clip in clips:
            clip["reject_reasons"] = list(clip["reject_reasons"]) + filter_reasons(clip, th)
            clip["kept"] = clip["kept"] and not clip["reject_reasons"]
            clip["dup_group"] = clip["dup_of"] = None
        candidates = [c for c in clips if c["kept"] and c.get("phashes")]
        if not th.dedup or len(candidates) < 2:
            return
        items = [DedupItem(c["clip_id"], c["content_hash"], tuple(int(h, 16) for h in c["phashes"]),
                           tuple(c["clip_embedding"]) if c.get("clip_embedding") else None) for c in candidates]
        parts = partitions(buckets(items, th.lsh_bands), max(1, self.config.ray.dedup.concurrency * 4))
        pairs: set[tuple[str, str]] = set()
        if parts:
            init_ray(self.address)
            rule = DedupRule(th.phash_distance_max, th.clip_cosine_min)
            pool = ActorPool("dedup", partial(NearDuplicatePairs, rule), self.config.ray.dedup)
            fit_to_cluster([pool])

            def collect(_pool: ActorPool, done: Done) -> None:
                if done.error:
                    raise RuntimeError(f"dedup failed: {done.error}")
                self.stats["dedup"].items += 1
                self.stats["dedup"].busy_s += done.seconds
                pairs.update(done.value)

            try:
                run_pools(pool, enumerate(parts), collect, [pool])
            finally:
                self.stats[pool.name].count_failures(pool.failures)
                pool.shutdown()
        by_id = {c["clip_id"]: c for c in candidates}
        groups = duplicate_groups(list(by_id), pairs, {k: rank_key(v) for k, v in by_id.items()})
        for clip_id, (group, dup_of) in groups.items():
            clip = by_id[clip_id]
            clip["dup_group"], clip["dup_of"] = group, dup_of
            if dup_of is not None:
                clip["reject_reasons"].append("duplicate")
                clip["kept"] = False

    def _transcode(self, kept: list[dict[str, Any]]) -> None:
        """Transcode kept clips not made yet (e.g. after a threshold change); made files are reused."""
        cfg = self.config
        todo = [c for c in kept if not self.work.clip_path(c["input_id"], c["clip_id"]).exists()
                and c["clip_id"] not in self.transcode_errors]  # failed once in this run: not again
        if todo:
            init_ray(self.address)
            pool = self._transcode_pool()
            fit_to_cluster([pool])
            bar = tqdm(total=len(todo), desc="transcode", unit="clip", disable=not self.progress)

            def collect(_pool: ActorPool, done: Done) -> None:
                self._transcoded(done)
                bar.update(len(done.item.clips))

            try:
                run_pools(pool, ((b.input_id, b) for b in clip_batches(todo, cfg.transcode.clips_per_task)),
                          collect, [pool])
            finally:
                bar.close()
                self.stats[pool.name].count_failures(pool.failures)
                pool.shutdown()
        for clip in kept:
            path = self.work.clip_path(clip["input_id"], clip["clip_id"])
            if path.exists():
                clip["clip_bytes"] = path.stat().st_size
            else:
                clip["error"] = self.transcode_errors.get(clip["clip_id"], "transcode: no output")
                clip["reject_reasons"].append("transcode_error")
                clip["kept"] = False

    def _caption(self, kept: list[dict[str, Any]]) -> None:
        """Per-second captions for kept clips; stored captions (same captioner settings) are reused."""
        cfg = self.config.captions
        fingerprint = cfg.fingerprint()
        results, todo = {}, []
        for clip in kept:
            stored = self.work.load_caption(clip["clip_id"], fingerprint)
            if stored is not None:
                results[clip["clip_id"]] = stored
            else:
                todo.append(CaptionItem(clip["clip_id"], clip["duration_s"],
                                        self.work.clip_path(clip["input_id"], clip["clip_id"]).read_bytes(),
                                        clip.get("camera_motion"), clip.get("text_area_max")))
        started = time.time()
        if todo:
            init_ray(self.address)
            pool = ActorPool("caption", partial(CaptionClips, self.config), self.config.ray.caption,
                             cfg.timeout_s * (cfg.retries + 1) * 4 + cfg.health_timeout_s)
            fit_to_cluster([pool])

            def collect(_pool: ActorPool, done: Done) -> None:
                stats = self.stats["caption"]
                stats.items += len(done.item)
                stats.busy_s += done.seconds
                for result in done.value or [{"clip_id": i.clip_id, "error": done.error, "captioner": cfg.backend}
                                             for i in done.item]:
                    results[result["clip_id"]] = result
                    if result.get("caption"):  # saved as it arrives: a crash loses no finished caption
                        self.work.save_caption(result["clip_id"], fingerprint, result)
                    else:
                        stats.errors += 1

            try:
                batches = [tuple(todo[i:i + cfg.clips_per_task]) for i in range(0, len(todo), cfg.clips_per_task)]
                run_pools(pool, enumerate(batches), collect, [pool])
            finally:
                self.stats[pool.name].count_failures(pool.failures)
                pool.shutdown()
        wall = time.time() - started
        tokens = sum(results[c["clip_id"]].get("tokens_out", 0) for c in kept if c["clip_id"] in results)
        self.stats["caption"].add({"requested": len(todo), "reused": len(kept) - len(todo),
                                   "output_tokens": tokens, "wall_s": round(wall, 3)})
        for clip in kept:
            result = results.get(clip["clip_id"], {"error": "not captioned"})
            caption = result.get("caption")
            clip.update({
                "caption": caption["summary"] if caption else None,
                "captions_per_second": [s["caption"] for s in caption["seconds"]] if caption else None,
                "captioner": result.get("captioner"), "caption_tokens_in": result.get("tokens_in"),
                "caption_tokens_out": result.get("tokens_out"), "caption_latency_s": result.get("latency_s"),
                "caption_error": None if caption else result.get("error"),
                "caption_raw": None if caption else result.get("raw"),
            })
            if not caption:
                clip["reject_reasons"].append("caption_error")
                clip["kept"] = False

    def _caption_throughput(self) -> dict[str, float]:
        extra = self.stats["caption"].extra
        wall = extra.get("wall_s", 0.0)
        if not extra.get("requested") or not wall:
            return {}
        return {"caption_clips_per_s": round(extra["requested"] / wall, 4),
                "caption_output_tokens_per_s": round(extra["output_tokens"] / wall, 4)}

    def _run_json(self, inputs: list[dict], shots: list[dict], clips: list[dict], started: float) -> dict:
        wall = time.time() - started
        video_s = sum(r["duration_s"] or 0.0 for r in inputs)
        reasons = Counter(reason for c in clips for reason in c["reject_reasons"])
        counts = {
            "inputs": len(inputs), "inputs_ok": sum(r["status"] == "ok" for r in inputs),
            "inputs_error": sum(r["status"] == "error" for r in inputs), "inputs_resumed": self.resumed,
            "shots": len(shots), "clips": len(clips), "clips_kept": sum(c["kept"] for c in clips),
            "clips_rejected": sum(not c["kept"] for c in clips), "reject_reasons": dict(sorted(reasons.items())),
            "video_seconds": round(video_s, 3),
            "skipped_extensions": dict(sorted(self.listing.skipped_extensions.items())),
            "excluded_output_files": self.listing.excluded_output,
            "error_inputs": [{"source_uri": r["source_uri"], "error": r["error"]}
                             for r in inputs if r["status"] == "error"][:20],
            "not_scored": {stage: Counter(str(c.get(col)) for c in clips
                                          if str(c.get(col) or "").startswith("not_scored"))
                           for stage, col in STATUS_COLUMNS.items()},
        }
        return {
            "vidmill_version": __version__, "command": sys.argv, "input": self.input_uri,
            "output": str(self.output), "config": self.config.to_dict(), "versions": versions(),
            "counts": counts, "stages": {name: asdict(s) for name, s in self.stats.items()},
            "wall_s": round(wall, 3),
            "throughput": {"inputs_per_s": round(len(inputs) / wall, 4), "video_s_per_s": round(video_s / wall, 4),
                           "clips_per_s": round(counts["clips_kept"] / wall, 4), **self._caption_throughput()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        }


def asdict_record(analysis: Analysis) -> dict[str, Any]:
    return {"input": analysis.input, "shots": analysis.shots, "clips": analysis.clips}


def versions() -> dict[str, str]:
    import av
    import cv2
    import numpy
    import pyarrow
    import ray
    import scenedetect
    import webdataset

    return {"python": platform.python_version(), "ray": ray.__version__, "av": av.__version__,
            "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "scenedetect": scenedetect.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__, "webdataset": getattr(webdataset, "__version__", "unknown")}


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"vidmill curate: {summary['input']} -> {summary['output']}",
        f"  inputs   {c['inputs']} ({c['inputs_ok']} ok, {c['inputs_error']} error, {c['inputs_resumed']} resumed)",
        f"  shots    {c['shots']}",
        f"  clips    {c['clips']} candidates, {c['clips_kept']} kept, {c['clips_rejected']} rejected",
    ]
    for name, n in c["reject_reasons"].items():
        setting = reason_declaration(name).setting
        lines.append(f"           {n:5d} {name:<16} {_setting_hint(setting, summary['config'])}".rstrip())
    errors = c.get("error_inputs", [])
    for row in errors[:3]:
        lines.append(f"  error    {row['source_uri']}: {row['error']}")
    if c["inputs_error"] > 3:
        lines.append(f"           ... {c['inputs_error'] - 3} more: rows with status = error in "
                     f"{summary['output']}/inputs.parquet")
    if c.get("skipped_extensions"):
        skipped = ", ".join(f"{n} {ext}" for ext, n in c["skipped_extensions"].items())
        lines.append(f"  skipped  {skipped} (not in source.extensions)")
    if c.get("excluded_output_files"):
        lines.append(f"  skipped  {c['excluded_output_files']} files under OUTPUT (inside INPUT)")
    for stage, statuses in c["not_scored"].items():
        for status, n in statuses.items():
            lines.append(f"  {stage}: {status} for {n} clips; no {stage} threshold applied")
    t = summary["throughput"]
    lines.append(f"  wall     {summary['wall_s']:.1f}s, {c['video_seconds']:.1f} video-s "
                 f"({t['video_s_per_s']:.2f} video-s/s, {t['clips_per_s']:.2f} kept clips/s)")
    return "\n".join(lines)


def _setting_hint(setting: str | None, config: dict[str, Any]) -> str:
    """`spans.min_s=2.0`: the setting behind a reason and its value in this run."""
    if not setting:
        return ""
    node: Any = config
    for part in setting.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return f"{setting}={node}"


def _skipped_note(listing: Listing) -> str:
    parts = []
    if listing.skipped_extensions:
        parts.append("; skipped " + ", ".join(f"{n} {e}" for e, n in sorted(listing.skipped_extensions.items())))
    if listing.excluded_output:
        parts.append(f"; {listing.excluded_output} files under OUTPUT left out")
    return "".join(parts)
