"""Analyse and score, streaming: inputs -> analyse (long ones in ranges) -> every scorer -> stored marker,
and the clips that already pass every threshold on to transcode while the bucket is still analysed.

One handler per pool; the runner (executor/runner.py) does the Ray work and the counting. On Ray the taps
stay in the object store (analysis workers put them, scorer workers fetch them): the driver holds only their
refs (StoredTaps), and drops them once every scorer is done with the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from tqdm import tqdm

from vidmill.pipeline.analysis.analyze import AnalyzeInput, InputRange, RangeAnalysis
from vidmill.pipeline.analysis.spans import ClipSpan
from vidmill.pipeline.cascade import cheap_rejections, skipped_status, split_scorers
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.executor.actor_pool import ActorPool, Done
from vidmill.pipeline.executor.runner import StageRunner
from vidmill.pipeline.outcomes import ScoreStatus
from vidmill.pipeline.output.workdir import WorkDir
from vidmill.pipeline.records import ClipRecord, InputResult
from vidmill.pipeline.scoring.base import ScoreBatch
from vidmill.pipeline.sources import InputRef
from vidmill.pipeline.transcode import TranscodeClips, clip_batches


@dataclass
class _Input:
    """One input on its way: its ranges as they come back, then its result while scorers work on it."""

    ranges: list[RangeAnalysis] = field(default_factory=list)
    expected: int = 1
    result: InputResult | None = None
    batches_left: int = 0
    retryable: bool = False
    stored: InputResult | None = None  # follow-up pass: the stored result whose `only` clips are scored now
    only: frozenset[str] | None = None
    cheap_done: bool = False  # cascade: the cheap scorers are back, the expensive ones were sent
    ref: InputRef | None = None
    taps_lost: bool = False  # a scorer could not fetch the taps (the analysis worker that put them died)
    redone: bool = False  # analysed again after its taps were lost (once; then reported and redone next run)


def score_batches(result: InputResult, size: int, only: frozenset[str] | None = None) -> list[ScoreBatch]:
    """Clips long enough to score (of `only`, when given), in batches, each with only the taps inside its spans
    (FrameTaps in process; StoredTaps on Ray: the refs of the ranges the batch overlaps and its time window)."""
    spans = [ClipSpan(c.clip_id, c.start_s, c.end_s) for c in result.clips
             if "too_short" not in c.reject_reasons and (only is None or c.clip_id in only)]
    batches = []
    for i in range(0, len(spans), size):
        part = tuple(spans[i:i + size])
        batches.append(ScoreBatch(result.input.input_id, part, result.taps.subset(part[0].start_s, part[-1].end_s)))
    return batches


class AnalyseAndScore:
    def __init__(self, config: CurateConfig, runner: StageRunner, scorers: list[type],
                 finished: Callable[[InputResult, bool], None], passing: Callable[[list[ClipRecord]], list[ClipRecord]],
                 transcoded: Callable[[Done], None], progress: bool = True, work: WorkDir | None = None):
        """`finished(result, retryable)` stores an input; `passing` picks clips to transcode early;
        `transcoded` records what transcode returns; `work`: where transcode workers publish clip files."""
        self.config, self.runner = config, runner
        self.finished, self.passing, self.transcoded = finished, passing, transcoded
        self.progress = progress
        self.analyze = runner.pool(AnalyzeInput, config, resources=config.ray.analyze,
                                   timeout_s=lambda rng: config.decode.input_deadline_s(rng.ref.size_bytes))
        self.scoring = [runner.pool(cls, config, resources=cls.resources(config),
                                    timeout_s=config.decode.input_timeout_s) for cls in scorers]
        self.status_column = {cls.name: cls.status_column for cls in scorers}
        expensive = {cls.name for cls in scorers if cls.expensive} if config.scoring.cascade else set()
        self.first = [p for p in self.scoring if p.name not in expensive]  # all pools when the cascade is off
        self.second = [p for p in self.scoring if p.name in expensive]
        self.cheap, _ = split_scorers(scorers)
        self.transcode = runner.pool(TranscodeClips, config, work, resources=config.ray.transcode,
                                     timeout_s=config.decode.input_timeout_s)
        self.assembler = AnalyzeInput(config)
        self.inputs: dict[str, _Input] = {}

    def run(self, todo: Iterable[InputRef], rescore: dict[str, tuple[InputResult, frozenset[str]]] | None = None,
            total: Callable[[], int] | None = None) -> None:
        """Analyse and score `todo`, pulled lazily (the runner bounds the work in flight, so a streaming
        listing is read as fast as inputs are taken); `total()`: the inputs known so far (the bar's total
        grows as the listing goes on). `rescore` (follow-up pass, input_id -> stored result and clip ids):
        those inputs are decoded again for their taps, and only the expensive scorers score those clips."""
        for input_id, (stored, only) in (rescore or {}).items():
            self.inputs[input_id] = _Input(stored=stored, only=only)
        if total is None:
            todo = list(todo)
            total = partial(len, todo)
        self.total = total
        self.bar = tqdm(total=total(), desc="rescore" if rescore else "analyse + score", unit="video",
                        disable=not self.progress)
        handlers: dict[ActorPool, Callable[[Done], None]] = {self.analyze: self.analysed,
                                                             self.transcode: self.transcoded}
        handlers.update({pool: partial(self.scored, pool.name) for pool in self.scoring})
        try:
            self.runner.run(handlers, ((self.analyze, ref.input_id, InputRange(ref, split=True)) for ref in todo))
        finally:
            self.bar.close()

    def analysed(self, done: Done) -> None:
        """A range came back: queue the input's other ranges first; once all are in, join and score."""
        state = self.inputs.setdefault(done.tag, _Input())
        state.ref = done.item.ref
        state.ranges.append(RangeAnalysis(done.item, error=done.error) if done.error else done.value)
        state.retryable |= done.retryable or state.ranges[-1].transient  # an I/O or permission error: retried
        for rng in state.ranges[-1].rest:  # before other inputs: finish what has started
            self.analyze.submit(done.tag, rng, first=True)
            state.expected += 1
        if len(state.ranges) < state.expected:
            return
        state.result = self.assembler.assemble(done.item.ref, state.ranges)
        state.ranges = []
        if state.stored is not None:
            self._rescore(done.tag, state)
        else:
            self._submit(done.tag, state, self.first, score_batches(state.result, self.config.scoring.clips_per_task))
        self._maybe_done(done.tag)

    def _submit(self, tag: str, state: _Input, pools: list[ActorPool], batches: list[ScoreBatch]) -> None:
        for batch in batches:
            for pool in pools:
                pool.submit(tag, batch)
                state.batches_left += 1

    def _rescore(self, tag: str, state: _Input) -> None:
        """Follow-up pass: the stored result keeps its clips and cheap scores; the new decode gives the taps."""
        fresh, state.result = state.result, state.stored
        state.cheap_done = True
        if fresh.input.status == "error":  # the input cannot be read again: those clips are not kept
            failed = str(ScoreStatus.error(f"rescore: {fresh.input.error}"))
            for clip in state.result.clips:
                if clip.clip_id in state.only:
                    clip.scores.update({self.status_column[p.name]: failed for p in self.second})
            state.retryable = True
            return
        state.result.taps = fresh.taps
        self._submit(tag, state, self.second,
                     score_batches(state.result, self.config.scoring.clips_per_task, state.only))

    def _cascade(self, tag: str, state: _Input) -> None:
        """The cheap scorers are back: expensive ones skip the clips they reject and score the rest."""
        state.cheap_done = True
        if not self.second:
            return
        th, skip = self.config.thresholds, {}
        for clip in state.result.clips:
            rejections = cheap_rejections(clip.scores, self.cheap, th)
            if rejections and "too_short" not in clip.reject_reasons:
                skip[clip.clip_id] = skipped_status(rejections)
                clip.scores.update({self.status_column[p.name]: skip[clip.clip_id] for p in self.second})
        eligible = frozenset(c.clip_id for c in state.result.clips if c.clip_id not in skip)
        self._submit(tag, state, self.second, score_batches(state.result, self.config.scoring.clips_per_task, eligible))

    def _redo(self, tag: str, state: _Input) -> None:
        """Its taps died with the analysis worker that put them: analyse the input again and score it anew
        (the follow-up pass keeps its stored result); a second loss is reported and redone on the next run."""
        self.inputs[tag] = _Input(stored=state.stored, only=state.only, ref=state.ref, redone=True)
        self.analyze.submit(tag, InputRange(state.ref, split=True), first=True)

    def scored(self, name: str, done: Done) -> None:
        """One scorer's columns for a batch of an input's clips (an error status for each when it failed)."""
        state = self.inputs[done.tag]
        state.batches_left -= 1
        state.retryable |= done.retryable
        state.taps_lost |= done.refs_lost
        values = done.value or {span.clip_id: {self.status_column[name]: str(ScoreStatus.error(done.error))}
                                for span in done.item.clips}
        by_id = {c.clip_id: c for c in state.result.clips}
        for clip_id, columns in values.items():
            by_id[clip_id].scores.update(columns)
        self._maybe_done(done.tag)

    def _maybe_done(self, tag: str) -> None:
        state = self.inputs[tag]
        if not state.batches_left and state.taps_lost and not state.redone:
            self._redo(tag, state)
            return
        if not state.batches_left and not state.cheap_done and state.result.input.status != "error":
            self._cascade(tag, state)
        if state.batches_left:
            return
        del self.inputs[tag]
        self.finished(state.result, state.retryable)
        self.bar.total = max(self.total(), self.bar.n + 1)
        for batch in clip_batches(self.passing(state.result.clips), self.config.transcode.clips_per_task):
            self.transcode.submit(batch.input_id, batch)
        self.bar.update(1)

