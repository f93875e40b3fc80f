from vidmill.pipeline.analysis.shots import Shot
from vidmill.pipeline.analysis.spans import clip_spans
from vidmill.pipeline.config import SpanConfig


def shot(i, start, end):
    return Shot(i, start, end, 0, 0)


def test_trim_both_ends():
    (span,) = clip_spans([shot(0, 0.0, 5.0)], SpanConfig())
    assert (span.start_s, span.end_s, span.reject_reasons) == (0.25, 4.75, ())


def test_long_shot_split_into_even_pieces():
    spans = clip_spans([shot(3, 10.0, 35.5)], SpanConfig())  # 25 s after trim -> 3 pieces of 8.333 s
    assert [s.piece for s in spans] == [0, 1, 2]
    assert all(abs(s.duration_s - 25 / 3) < 1e-5 for s in spans)
    assert spans[0].start_s == 10.25 and abs(spans[-1].end_s - 35.25) < 1e-6


def test_exactly_max_is_one_piece_and_short_shot_is_rejected_not_dropped():
    spans = clip_spans([shot(0, 0.0, 10.5), shot(1, 10.5, 12.0)], SpanConfig())
    assert len(spans) == 2
    assert spans[0].reject_reasons == () and abs(spans[0].duration_s - 10.0) < 1e-9
    assert spans[1].reject_reasons == ("too_short",) and (spans[1].start_s, spans[1].end_s) == (10.5, 12.0)


def test_settings_come_from_config():
    spans = clip_spans([shot(0, 0.0, 7.0)], SpanConfig(min_s=1.0, max_s=3.0, trim_s=0.5))
    assert len(spans) == 2 and spans[0].start_s == 0.5 and spans[-1].end_s == 6.5
