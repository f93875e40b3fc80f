"""Filter throughput, and the speed-up of sharing one decode pass, measured side by side in one run.

shared:   each input decoded once (shots + frame taps), every scorer reads the taps;
baseline: every filter decodes its clip itself (seek, decode the span, sample at the tap rate, scale)
          before scoring, as pipelines that re-open the file per filter do.

    python bench/filters.py [--inputs DIR] [--no-ocr] [--no-baseline] [--set KEY=VALUE ...]

Each stage's wall and CPU seconds (this process, threads included) are printed; `--set` overrides config
values as `vidmill curate --set` does, e.g. the settings of session 1:
    --set scoring.ocr.det_limit_side=480 --set scoring.ocr.unchanged_max=-1 --set scoring.motion.method=farneback
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curate import make_inputs  # noqa: E402

from vidmill.pipeline.analysis.analyze import AnalyzeInput, FrameTaps  # noqa: E402
from vidmill.pipeline.analysis.decode import VideoReader, scaled_to  # noqa: E402
from vidmill.pipeline.cascade import cheap_rejections, split_scorers  # noqa: E402
from vidmill.pipeline.config import load_config  # noqa: E402
from vidmill.pipeline.curate import scorer_classes  # noqa: E402
from vidmill.pipeline.scoring.base import ScoreBatch  # noqa: E402
from vidmill.pipeline.sources import list_inputs  # noqa: E402
from vidmill.pipeline.stream import score_batches  # noqa: E402


def own_decode(path: str, start: float, end: float, fps: float, short_side: int) -> FrameTaps:
    taps, next_t = FrameTaps(), start
    with VideoReader(path) as reader:
        size = scaled_to((reader.probe.display_width, reader.probe.display_height), short_side=short_side)
        for frame in reader.decoded(start_s=start, end_s=end):
            if frame.time_s >= next_t - 1e-6:
                taps.add(frame.time_s, frame.image(size))
                next_t = frame.time_s + 1.0 / fps
    return taps


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cascade_cost(config, scorers, analyses, rows, per_stage_cpu) -> None:
    """scoring.cascade: the expensive scorers again, on only the clips the cheap ones do not reject."""
    cheap, expensive = split_scorers([type(s) for s in scorers])
    eligible = frozenset(c for c, row in rows.items() if not cheap_rejections(row, cheap, config.thresholds))
    batches = [b for a in analyses if a.input.status == "ok"
               for b in score_batches(a, config.scoring.clips_per_task, eligible)]
    print(f"cascade: {len(eligible)} of {len(rows)} clips pass quality + motion and reach the expensive scorers")
    for scorer in (s for s in scorers if type(s) in expensive):
        cpu0 = cpu_seconds()
        for batch in batches:
            scorer.process(batch)
        cpu = cpu_seconds() - cpu0
        print(f"  {scorer.name:<10} {per_stage_cpu[scorer.name]:8.2f} CPU-s off -> {cpu:8.2f} CPU-s with the cascade")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs")
    parser.add_argument("--no-ocr", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-filter decode baseline")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = load_config(None, args.set)
    config.scoring.ocr.enabled = config.scoring.ocr.enabled and not args.no_ocr
    root = Path(args.inputs) if args.inputs else Path(tempfile.mkdtemp(prefix="vidmill-filters-")) / "inputs"
    if not args.inputs:
        make_inputs(root, 4, 20)
    scorers = [s for s in (cls(config) for cls in scorer_classes(config)) if not getattr(s, "missing", None)]
    for scorer in scorers:
        scorer.setup()
    analyze = AnalyzeInput(config)
    refs = [r for r in list_inputs(str(root), config.source)]

    start, cpu0 = time.perf_counter(), cpu_seconds()
    analyses = [analyze.process(ref) for ref in refs]
    decode_s, decode_cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    batches = [b for a in analyses if a.input.status == "ok"
               for b in score_batches(a, config.scoring.clips_per_task)]
    n_clips = sum(len(b.clips) for b in batches)
    n_frames = sum(len(b.taps.between(c.start_s, c.end_s)) for b in batches for c in b.clips)
    per_stage, per_stage_cpu, rows = {}, {}, {}
    for scorer in scorers:
        start, cpu0 = time.perf_counter(), cpu_seconds()
        for batch in batches:
            for clip_id, columns in scorer.process(batch).items():
                rows.setdefault(clip_id, {}).update(columns)
        per_stage[scorer.name] = time.perf_counter() - start
        per_stage_cpu[scorer.name] = cpu_seconds() - cpu0
    shared_s = decode_s + sum(per_stage.values())
    print(f"{len(refs)} inputs, {n_clips} clips, {n_frames} sampled frames ({root})")
    print(f"shared decode pass (shots + taps)   {decode_s:8.2f} s  {decode_cpu:8.2f} CPU-s")
    for name, seconds in per_stage.items():
        print(f"  {name:<10} {seconds:8.2f} s  {per_stage_cpu[name]:8.2f} CPU-s  {n_clips / seconds:8.1f} clips/s  "
              f"{n_frames / seconds:8.1f} frames/s")
    print(f"shared total                        {shared_s:8.2f} s")
    cascade_cost(config, scorers, analyses, rows, per_stage_cpu)
    if args.no_baseline:
        return

    start = time.perf_counter()
    uri = {a.input.input_id: a.input.source_uri for a in analyses}
    for batch in batches:
        for clip in batch.clips:
            for scorer in scorers:
                taps = own_decode(uri[batch.input_id], clip.start_s, clip.end_s, config.decode.tap_fps,
                                  config.decode.tap_short_side)
                scorer.process(ScoreBatch(batch.input_id, (clip,), taps))
    baseline_s = time.perf_counter() - start

    print(f"each filter decodes its clip itself {baseline_s:8.2f} s   shared is {baseline_s / shared_s:.2f}x faster")


if __name__ == "__main__":
    main()
