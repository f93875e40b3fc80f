"""The run summary: run.json (config, versions, per-stage counts, wall time, throughput) and the lines
`vidmill curate` prints."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from vidmill import __version__
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.outcomes import reason
from vidmill.pipeline.output.store import Store
from vidmill.pipeline.sources import Listing
from vidmill.pipeline.stage import StageStats


def run_summary(input_uri: str, output: Path | str, config: CurateConfig, counted: dict[str, Any],
                stats: dict[str, StageStats], resumed: int, started: float,
                listing: Listing | None = None) -> dict[str, Any]:
    """run.json; `counted`: the counts of inputs, shots and clips that finalize merged from its parts
    (finalize/stages.py part_counts)."""
    wall = time.time() - started
    video_s = counted["video_seconds"]
    counts = {
        "inputs": counted["inputs"], "inputs_ok": counted["inputs_ok"], "inputs_error": counted["inputs_error"],
        "inputs_resumed": resumed, "shots": counted["shots"], "clips": counted["clips"],
        "clips_kept": counted["clips_kept"], "clips_rejected": counted["clips_rejected"],
        "reject_reasons": dict(sorted(counted["reject_reasons"].items())),
        "video_seconds": round(video_s, 3),
        "not_scored": {name: Counter(counter) for name, counter in counted["not_scored"].items()},
        "skipped_extensions": dict(sorted(listing.skipped_extensions.items())) if listing else {},
        "excluded_output_files": listing.excluded_output if listing else 0,
        "error_inputs": counted["error_inputs"][:20],
    }
    return {
        "vidmill_version": __version__, "command": sys.argv, "input": input_uri,
        "output": str(output), "config": config.to_dict(), "versions": versions(),
        "counts": counts, "stages": {name: dataclasses.asdict(s) for name, s in stats.items()},
        "wall_s": round(wall, 3),
        "throughput": {"inputs_per_s": round(counts["inputs"] / wall, 4), "video_s_per_s": round(video_s / wall, 4),
                       "clips_per_s": round(counts["clips_kept"] / wall, 4), **caption_throughput(stats)},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }


def driver_traffic(received: dict[str, int], sent: dict[str, int], clip_bytes_written: int) -> dict[str, Any]:
    """run.json's measure of what passed through the driver (pickled sizes per stage) beside the clip bytes
    the workers published: clip files go worker -> OUTPUT, never through the driver."""
    return {"driver_bytes_received": {"total": sum(received.values()), **dict(sorted(received.items()))},
            "driver_bytes_sent": {"total": sum(sent.values()), **dict(sorted(sent.items()))},
            "clip_bytes_written": clip_bytes_written}


def write_run_json(summary: dict[str, Any], output: Store | Path | str) -> None:
    store = output if isinstance(output, Store) else Store(str(output))
    store.put("run.json", json.dumps(summary, indent=2, default=str).encode())


def caption_throughput(stats: dict[str, StageStats]) -> dict[str, float]:
    extra = stats["caption"].extra if "caption" in stats else {}
    wall = extra.get("wall_s", 0.0)
    if not extra.get("requested") or not wall:
        return {}
    return {"caption_clips_per_s": round(extra["requested"] / wall, 4),
            "caption_output_tokens_per_s": round(extra["output_tokens"] / wall, 4)}


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
        setting = reason(name).setting
        lines.append(f"           {n:5d} {name:<16} {setting_hint(setting, summary['config'])}".rstrip())
    for row in c.get("error_inputs", [])[:3]:
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
        skipped = sum(n for status, n in statuses.items() if status.startswith("not_scored: skipped: "))
        if skipped:  # the cascade: one line, the reasons are in the status column
            lines.append(f"  {stage}: skipped for {skipped} clips that a cheaper filter rejects (scoring.cascade)")
        for status, n in statuses.items():
            if not status.startswith("not_scored: skipped: "):
                lines.append(f"  {stage}: {status} for {n} clips; no {stage} threshold applied")
    t = summary["throughput"]
    lines.append(f"  wall     {summary['wall_s']:.1f}s, {c['video_seconds']:.1f} video-s "
                 f"({t['video_s_per_s']:.2f} video-s/s, {t['clips_per_s']:.2f} kept clips/s)")
    return "\n".join(lines)


def setting_hint(setting: str | None, config: dict[str, Any]) -> str:
    """`spans.min_s=2.0`: the setting behind a reason and its value in this run."""
    if not setting:
        return ""
    node: Any = config
    for part in setting.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return f"{setting}={node}"
