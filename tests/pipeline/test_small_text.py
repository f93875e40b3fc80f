"""Small dense text: a 1080p page of 12-16 px text is seen (too_much_text) through the detail copies that the
decode pass keeps for taps likely to hold small text; footage without text keeps no copies and gets no text."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidmill.pipeline.analysis.analyze import AnalyzeInput
from vidmill.pipeline.analysis.decode import VideoReader
from vidmill.pipeline.analysis.small_text import detail_size, text_line_fraction
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.decide import filter_reasons
from vidmill.pipeline.samples import write_video
from vidmill.pipeline.scoring.ocr import TextScorer
from vidmill.pipeline.sources import list_inputs
from vidmill.pipeline.stream import score_batches

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "video", "curation", "pipeline",
         "shards", "manifest", "caption", "sidebar", "image", "article", "page", "menu", "search", "login",
         "weather", "news", "sport", "science", "history"]
REAL_CLIP = Path(__file__).resolve().parents[1] / "fixtures" / "realclips" / "testvideo.mp4"


def text_page(width: int = 1920, height: int = 1080, seed: int = 0) -> np.ndarray:
    """A web-page-like frame: lines of 12-16 px text (Hershey font, no font files needed), a right sidebar."""
    rng = random.Random(seed)
    page = np.full((height, width, 3), 250, np.uint8)
    y = 20
    while y < height - 20:
        px = rng.randint(12, 16)
        scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, px, 1)
        x = 20 if rng.random() < 0.7 else 1400
        line = " ".join(rng.choice(WORDS) for _ in range(40))
        cv2.putText(page, line, (x, y + px), cv2.FONT_HERSHEY_SIMPLEX, scale, (30, 30, 30), 1, cv2.LINE_AA)
        y += int(px * 1.8)
    return page


@pytest.fixture(scope="module")
def page_video(tmp_path_factory) -> Path:
    """3 s of the page at 10 fps, scrolling 2 px a frame (a screen recording)."""
    path = tmp_path_factory.mktemp("small_text") / "page.mp4"
    page = text_page()
    write_video(path, ((i / 10, np.roll(page, -2 * i, axis=0)) for i in range(30)), fps=10)
    return path


def score_text(path: Path, config: CurateConfig) -> tuple[list[dict], int]:
    """(each clip's OCR columns and reject reasons, number of detail copies kept)."""
    (ref,) = list_inputs(str(path), config.source)
    analysis = AnalyzeInput(config).process(ref)
    scorer = TextScorer(config)
    rows = []
    for batch in score_batches(analysis, config.scoring.clips_per_task):
        for row in scorer.process(batch).values():
            rows.append({**row, "reasons": filter_reasons(row, config.thresholds)})
    return rows, len(analysis.taps.details)


def test_page_of_small_text_is_too_much_text(page_video):
    rows, n_details = score_text(page_video, CurateConfig())
    assert n_details > 0 and rows
    for row in rows:
        assert row["ocr_status"] == "scored"
        assert row["text_area_max"] > 0.3  # most of the page is text lines
        assert "too_much_text" in row["reasons"]


def test_without_detail_copies_the_small_text_is_missed(page_video):
    """The issue's finding, kept as a guard: at the 256 px taps alone the page reads as no text."""
    config = CurateConfig()
    config.scoring.ocr.detail_short_side = 0
    rows, n_details = score_text(page_video, config)
    assert n_details == 0
    assert [row["text_area_max"] for row in rows] == [0.0] * len(rows)


@pytest.mark.parametrize("name", ["moving_subject.mp4", "pan_left.mp4"])
def test_clip_without_text_keeps_no_detail_and_gets_no_text(samples, name):
    rows, n_details = score_text(samples / name, CurateConfig())
    assert n_details == 0 and rows
    for row in rows:
        assert row["text_area_max"] == 0.0 and "too_much_text" not in row["reasons"]


def test_text_line_likelihood_separates_page_from_real_footage():
    config = CurateConfig()
    tap = cv2.resize(text_page(), (455, 256), interpolation=cv2.INTER_AREA)
    assert text_line_fraction(cv2.cvtColor(tap, cv2.COLOR_BGR2GRAY)) > 5 * config.scoring.ocr.detail_line_min
    with VideoReader(str(REAL_CLIP)) as reader:  # real footage with a small copyright line at the bottom
        fractions = [text_line_fraction(cv2.cvtColor(f.image((455, 256), "AREA"), cv2.COLOR_BGR2GRAY))
                     for f in reader.decoded() if f.index % 15 == 0]
    assert len(fractions) > 40 and max(fractions) < config.scoring.ocr.detail_line_min


def test_a_still_page_shares_one_detail_copy(tmp_path):
    path = tmp_path / "still.mp4"
    page = text_page(1280, 720, seed=1)
    write_video(path, ((i / 10, page) for i in range(25)), fps=10)
    (ref,) = list_inputs(str(path), CurateConfig().source)
    taps = AnalyzeInput(CurateConfig()).process(ref).taps
    assert len(taps.details) == len(taps.times_s) >= 4
    assert len({id(jpeg) for jpeg in taps.details.values()}) == 1
    assert taps.detail(taps.times_s[-1]).shape[:2] == (720, 1280)


@pytest.mark.parametrize(("display", "expected"), [((1920, 1080), (1280, 720)), ((1280, 720), (1280, 720)),
                                                   ((480, 270), (480, 270)), ((456, 256), None),
                                                   ((1080, 1920), (720, 1280))])
def test_detail_size_never_upscales(display, expected):
    tap = (round(256 * display[0] / min(display)), round(256 * display[1] / min(display)))
    assert detail_size(display, tap, 720) == expected
    assert detail_size(display, tap, 0) is None
