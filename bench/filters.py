"""Filter throughput, and the speed-up of sharing one decode pass, measured side by side in one run.

shared:   each input decoded once (shots + frame taps), every scorer reads the taps;
baseline: every filter decodes its clip itself (seek, decode the span, sample at the tap rate, scale)
          before scoring, as pipelines that re-open the file per filter do.

    python bench/filters.py [--inputs DIR] [--no-ocr]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curate import make_inputs  # noqa: E402

from pipeline.analyze import AnalyzeInput, FrameTaps  # noqa: E402
from pipeline.config import CurateConfig  # noqa: E402
from pipeline.curate import score_batches, scorer_classes  # noqa: E402
from pipeline.decode import VideoReader, scaled_to  # noqa: E402
from pipeline.scoring import ScoreBatch  # noqa: E402
from pipeline.sources import list_inputs  # noqa: E402


def own_decode(path: str, start: float, end: float, fps: float, short_side: int) -> FrameTaps:
    taps, next_t = FrameTaps(), start
    with VideoReader(path) as reader:
        size = scaled_to((reader.probe.display_width, reader.probe.display_height), short_side=short_side)
        for frame in reader.decoded(start_s=start, end_s=end):
            if frame.time_s >= next_t - 1e-6:
                taps.add(frame.time_s, frame.image(size))
                next_t = frame.time_s + 1.0 / fps
    return taps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs")
    parser.add_argument("--no-ocr", action="store_true")
    args = parser.parse_args()
    config = CurateConfig()
    config.scoring.ocr.enabled = not args.no_ocr
    root = Path(args.inputs) if args.inputs else Path(tempfile.mkdtemp(prefix="vidmill-filters-")) / "inputs"
    if not args.inputs:
        make_inputs(root, 4, 20)
    scorers = [s for s in (cls(config) for cls in scorer_classes(config)) if not getattr(s, "missing", None)]
    for scorer in scorers:
        scorer.setup()
    analyze = AnalyzeInput(config)
    refs = [r for r in list_inputs(str(root), config.source)]

    start = time.perf_counter()
    analyses = [analyze.process(ref) for ref in refs]
    decode_s = time.perf_counter() - start
    batches = [b for a in analyses if a.input["status"] == "ok" for b in score_batches(a, 32)]
    n_clips = sum(len(b.clips) for b in batches)
    n_frames = sum(len(b.taps.between(c.start_s, c.end_s)) for b in batches for c in b.clips)
    per_stage = {}
    for scorer in scorers:
        start = time.perf_counter()
        for batch in batches:
            scorer.process(batch)
        per_stage[scorer.name] = time.perf_counter() - start
    shared_s = decode_s + sum(per_stage.values())

    start = time.perf_counter()
    uri = {a.input["input_id"]: a.input["source_uri"] for a in analyses}
    for batch in batches:
        for clip in batch.clips:
            for scorer in scorers:
                taps = own_decode(uri[batch.input_id], clip.start_s, clip.end_s, config.decode.tap_fps,
                                  config.decode.tap_short_side)
                scorer.process(ScoreBatch(batch.input_id, (clip,), taps))
    baseline_s = time.perf_counter() - start

    print(f"{len(refs)} inputs, {n_clips} clips, {n_frames} sampled frames ({root})")
    print(f"shared decode pass (shots + taps)   {decode_s:8.2f} s")
    for name, seconds in per_stage.items():
        print(f"  {name:<10} {seconds:8.2f} s  {n_clips / seconds:8.1f} clips/s  {n_frames / seconds:8.1f} frames/s")
    print(f"shared total                        {shared_s:8.2f} s")
    print(f"each filter decodes its clip itself {baseline_s:8.2f} s   shared is {baseline_s / shared_s:.2f}x faster")


if __name__ == "__main__":
    main()
