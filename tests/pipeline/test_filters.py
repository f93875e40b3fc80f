"""Quality filters and global dedup on the sample bucket, and their units."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vidmill.pipeline.config import CurateConfig, load_config
from vidmill.pipeline.curate import Curation
from vidmill.pipeline.decide import filter_reasons
from vidmill.pipeline.dedup import DedupItem, DedupRule, NearDuplicatePairs, buckets, duplicate_groups, partitions
from vidmill.pipeline.scoring.motion import camera_class
from vidmill.pipeline.scoring.ocr import iou, text_stats

SCORE_COLUMNS = ["aesthetic_mean", "aesthetic_min", "sharpness", "brightness", "colourfulness", "motion_score",
                 "camera_motion", "text_area_max", "text_area_mean", "text_persistent_area", "phash", "dup_group",
                 "dup_of", "quality_status", "motion_status", "ocr_status", "aesthetic_status", "hash_status"]


def rows(out: Path) -> dict[str, list[dict]]:
    by_name: dict[str, list[dict]] = {}
    for row in pq.read_table(out / "manifest.parquet").to_pylist():
        by_name.setdefault(Path(row["source_uri"]).name, []).append(row)
    return by_name


def test_manifest_has_every_score_column(curated):
    manifest = pq.read_table(curated / "manifest.parquet")
    assert set(SCORE_COLUMNS) <= set(manifest.column_names)


def test_text_and_logo_rejected_clean_kept(curated):
    r = rows(curated)
    assert "text_overlay" in r["logo.mp4"][0]["reject_reasons"]
    assert {"too_much_text", "text_overlay"} <= set(r["subtitles.mp4"][0]["reject_reasons"])
    for name in ["moving_subject.mp4", "pan_left.mp4", "zoom_in.mp4", "portrait.mp4"]:
        assert r[name][0]["kept"], (name, r[name][0]["reject_reasons"])
        assert r[name][0]["text_area_max"] == 0.0
    assert 0.01 < r["logo.mp4"][0]["text_persistent_area"] < 0.05


def test_static_flagged_moving_not(curated):
    r = rows(curated)
    static = r["static.mp4"][0]
    assert static["camera_motion"] == "static" and "too_static" in static["reject_reasons"]
    moving = r["moving_subject.mp4"][0]
    assert moving["camera_motion"] == "static"  # the camera does not move; the subject does
    assert moving["motion_score"] > static["motion_score"] and "too_static" not in moving["reject_reasons"]


@pytest.mark.parametrize("name", ["pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out"])
def test_camera_moves_are_named_right(curated, name):
    (row,) = rows(curated)[f"{name}.mp4"]
    assert row["camera_motion"] == name
    assert row["motion_score"] > 0.005


def test_reencoded_copy_grouped_as_duplicate_and_distinct_clips_not(curated):
    r = rows(curated)
    original, copy = r["moving_subject.mp4"][0], r["moving_subject_reencoded.mp4"][0]
    assert copy["dup_group"] == original["dup_group"] is not None
    assert copy["dup_of"] == original["clip_id"] and original["dup_of"] is None
    assert "duplicate" in copy["reject_reasons"] and original["kept"]
    grouped = [row for rs in r.values() for row in rs if row["dup_group"]]
    assert len(grouped) == 2


def test_aesthetic_not_scored_without_weights_and_said_so(curated):
    run = json.loads((curated / "run.json").read_text())
    statuses = {row["aesthetic_status"] for rs in rows(curated).values() for row in rs if row["aesthetic_status"]}
    assert statuses == {"not_scored: no weights (scoring.aesthetic.clip_weights is not set)"}
    assert run["counts"]["not_scored"]["aesthetic"]
    assert all(row["aesthetic_mean"] is None for rs in rows(curated).values() for row in rs)


def test_threshold_only_rerun_recomputes_nothing(curated, tmp_path, local_ray):
    out = tmp_path / "out"
    shutil.copytree(curated, out)
    config = load_config(None, ["thresholds.text_persistent_area_max=0.5", "thresholds.text_area_max=0.5"])
    summary = Curation(str(Path(json.loads((curated / "run.json").read_text())["input"])), out, config,
                       progress=False).run()
    assert summary["counts"]["inputs_resumed"] == summary["counts"]["inputs"]
    assert all(stage["items"] == 0 for name, stage in summary["stages"].items()
               if name not in ("dedup", "transcode", "caption", "shards"))  # new members: shards rewritten
    before, after = rows(curated), rows(out)
    assert after["logo.mp4"][0]["kept"] and not before["logo.mp4"][0]["kept"]
    # only clips that became kept are captioned; every earlier caption is reused
    newly_kept = sum(a["kept"] and not b["kept"] for n in before for a, b in zip(after[n], before[n], strict=True))
    was_kept = sum(b["kept"] for rs in before.values() for b in rs)
    assert summary["stages"]["caption"]["extra"]["requested"] == newly_kept == 2  # logo and subtitles
    assert summary["stages"]["transcode"]["extra"]["clips"] == newly_kept  # only they are transcoded now
    assert summary["stages"]["caption"]["extra"]["reused"] == was_kept
    for name in before:
        for a, b in zip(before[name], after[name], strict=True):
            assert {k: a[k] for k in SCORE_COLUMNS if k not in ("dup_group", "dup_of")} == \
                {k: b[k] for k in SCORE_COLUMNS if k not in ("dup_group", "dup_of")}


def test_ocr_persistence_and_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    logo, caption_a, caption_b = (80, 0, 100, 10), (10, 80, 60, 90), (10, 80, 90, 90)
    stats = text_stats([[logo, caption_a], [logo, caption_b], [logo]], (100, 100), 0.9)
    assert stats["text_persistent_area"] == pytest.approx(0.02)  # only the logo persists
    assert stats["text_area_max"] == pytest.approx(0.02 + 0.08)


def test_ocr_reads_a_persistent_box_once_with_the_same_verdicts(samples):
    from vidmill.pipeline.analysis.analyze import AnalyzeInput
    from vidmill.pipeline.scoring.ocr import TextScorer
    from vidmill.pipeline.sources import list_inputs

    config = CurateConfig()
    (ref,) = list_inputs(str(samples / "subtitles.mp4"), config.source)
    analysis = AnalyzeInput(config).process(ref)
    frames = [image for _, image in analysis.taps.between(0.0, 1e9)][::2]  # ~1 fps
    scorer = TextScorer(config)
    scorer.setup()
    recognised = []
    recognise = scorer.engine.recognize_txt
    scorer.engine.recognize_txt = lambda crops: recognised.append(len(crops)) or recognise(crops)
    seen: list = []
    reused = [scorer.text_boxes(image, seen) for image in frames]
    n_reused = sum(recognised)
    recognised.clear()
    every_box = [scorer.text_boxes(image, []) for image in frames]  # nothing seen: every box recognised
    assert reused == every_box and any(reused)
    assert n_reused < sum(recognised)


def test_ocr_reads_a_still_frame_once_and_a_changed_one_again(samples):
    from vidmill.pipeline.analysis.analyze import AnalyzeInput
    from vidmill.pipeline.scoring.ocr import TextScorer
    from vidmill.pipeline.sources import list_inputs

    config = CurateConfig()
    (ref,) = list_inputs(str(samples / "subtitles.mp4"), config.source)
    taps = AnalyzeInput(config).process(ref).taps.between(0.0, 1e9)
    still, other = taps[0][1], next(image for _, image in taps if np.abs(image.astype(int) - taps[0][1]).mean() > 5)
    scorer = TextScorer(config)
    scorer.setup()
    reads = []
    text_boxes = scorer.text_boxes
    scorer.text_boxes = lambda image, seen: reads.append(image) or text_boxes(image, seen)
    frames = [(float(t), still) for t in range(4)] + [(4.0, other)] + [(float(t), still) for t in range(5, 8)]
    stats = scorer.score(frames)
    assert len(reads) == 3 and reads[1] is other  # still, the changed frame, still again
    assert stats == text_stats([text_boxes(image, []) for _, image in frames], still.shape[:2], 0.9)


def test_camera_class_from_synthetic_flow():
    right = [(5.0, 0.0, 0.0)] * 4
    assert camera_class(right, 100.0, 40.0) == "pan_left"
    assert camera_class([(0.0, -5.0, 0.0)] * 4, 100.0, 40.0) == "tilt_down"
    assert camera_class([(0.0, 0.0, 0.05)] * 4, 100.0, 40.0) == "zoom_in"
    assert camera_class([(5.0, 0.0, 0.0), (-5.0, 0.0, 0.0)] * 2, 100.0, 40.0) == "shaky"
    assert camera_class([(0.01, 0.0, 0.0)] * 4, 100.0, 40.0) == "static"


def test_dedup_buckets_partitions_and_groups():
    base = 0x0123456789ABCDEF
    items = [DedupItem("a", "h1", (base, base, base)), DedupItem("b", "h2", (base ^ 0b111, base ^ 0b1, base)),
             DedupItem("c", "h3", (~base & (2**64 - 1),) * 3), DedupItem("d", "h1", (1, 2, 3))]
    groups = buckets(items, 8)
    parts = partitions(groups, 3)
    assert sum(len(p) for p in parts) == len(groups)
    stage = NearDuplicatePairs(DedupRule(10, 0.98))
    pairs = set().union(*(stage.process(p) for p in parts))
    assert pairs == {("a", "b"), ("a", "d")}  # near (3 bits), exact (same content hash); c is distinct
    rank = {"a": (0, 1.0, 1), "b": (0, 5.0, 1), "c": (0, 0.0, 1), "d": (0, 0.5, 1)}
    result = duplicate_groups(["a", "b", "c", "d"], pairs, rank)
    assert result["b"][1] is None and result["a"][1] == "b" and result["d"][1] == "b" and "c" not in result


def test_clip_cosine_vetoes_a_phash_match():
    e1, e2 = tuple(np.eye(4)[0]), tuple(np.eye(4)[1])
    a, b = DedupItem("a", "x", (1, 1, 1), e1), DedupItem("b", "y", (1, 1, 1), e2)
    assert NearDuplicatePairs(DedupRule(10, 0.98)).process([[a, b]]) == set()


def test_thresholds_decide_reasons():
    th = CurateConfig().thresholds
    assert filter_reasons({"sharpness": 1.0, "brightness": 0.5}, th) == ["blurry"]
    assert filter_reasons({"brightness": 0.01, "motion_score": 0.5}, th) == ["too_dark", "too_shaky"]
    assert filter_reasons({"aesthetic_status": "not_scored: no weights", "aesthetic_mean": None}, th) == []
    assert filter_reasons({"ocr_status": "error: boom"}, th) == ["ocr_error"]


TINY_CLIP = {"embed_dim": 768, "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


@pytest.fixture()
def tiny_aesthetic(tmp_path):
    """A tiny random-init open_clip model and a LAION-layout head whose map is known: score = 2 * e[0] + 3."""
    import open_clip

    from vidmill.pipeline.scoring.aesthetic import laion_head

    arch = tmp_path / "tiny-vit.json"
    arch.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(arch))
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-vit", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    head = laion_head(768)
    with torch.no_grad():
        for layer in head.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        head.layers[0].weight[0, 0] = 2.0  # h0 = 2 * e[0]; then passed through unchanged
        for i in (2, 4, 6, 7):
            head.layers[i].weight[0, 0] = 1.0
        head.layers[7].bias[0] = 3.0
    torch.save(head.state_dict(), tmp_path / "head.pt")
    return {"arch": str(arch), "clip": str(tmp_path / "clip.pt"), "head": str(tmp_path / "head.pt"), "model": model}


def test_aesthetic_end_to_end_with_tiny_clip_matches_hand_computation(samples, tiny_aesthetic):
    import open_clip
    from PIL import Image

    from vidmill.pipeline.analysis.analyze import AnalyzeInput
    from vidmill.pipeline.analysis.spans import ClipSpan
    from vidmill.pipeline.scoring.aesthetic import AestheticScorer
    from vidmill.pipeline.scoring.base import ScoreBatch, key_frames
    from vidmill.pipeline.sources import list_inputs

    config = load_config(None, [f"scoring.aesthetic.clip_arch={tiny_aesthetic['arch']}",
                                f"scoring.aesthetic.clip_weights={tiny_aesthetic['clip']}",
                                f"scoring.aesthetic.head_weights={tiny_aesthetic['head']}"])
    (ref,) = list_inputs(str(samples / "moving_subject.mp4"), config.source)
    analysis = AnalyzeInput(config).process(ref)
    clip = analysis.clips[0]
    span = ClipSpan(clip.clip_id, clip.start_s, clip.end_s)
    scored = AestheticScorer(config).process(ScoreBatch(ref.input_id, (span,), analysis.taps))[clip.clip_id]
    # by hand: the same three frames through the same CLIP, normalised, then 2 * e[0] + 3
    _, _, preprocess = open_clip.create_model_and_transforms("tiny-vit", pretrained=tiny_aesthetic["clip"])
    frames = key_frames(analysis.taps.between(span.start_s, span.end_s))
    pixels = torch.stack([preprocess(Image.fromarray(f[..., ::-1].copy())) for f in frames])
    model = tiny_aesthetic["model"].eval()
    with torch.no_grad():
        e = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
    expected = 2 * e[:, 0] + 3
    assert scored["aesthetic_status"] == "scored"
    assert scored["aesthetic_mean"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert scored["aesthetic_min"] == pytest.approx(float(expected.min()), abs=1e-4)
    assert np.allclose(scored["clip_embedding"], e[1].numpy(), atol=1e-5)


def test_aesthetic_scores_flow_through_ray_into_manifest(samples, tiny_aesthetic, tmp_path, local_ray):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for name in ["moving_subject.mp4", "pan_left.mp4"]:
        shutil.copy(samples / name, bucket / name)
    config = load_config(None, [f"scoring.aesthetic.clip_arch={tiny_aesthetic['arch']}",
                                f"scoring.aesthetic.clip_weights={tiny_aesthetic['clip']}",
                                f"scoring.aesthetic.head_weights={tiny_aesthetic['head']}",
                                "scoring.ocr.enabled=false", "thresholds.aesthetic_min=10"])
    Curation(str(bucket), tmp_path / "out", config, progress=False).run()
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert all(r["aesthetic_status"] == "scored" and 2.0 < r["aesthetic_mean"] < 4.0 for r in manifest)
    assert all("low_aesthetic" in r["reject_reasons"] for r in manifest)  # 2 e0 + 3 < 10 always
    embeddings = pq.read_table(tmp_path / "out" / "embeddings.parquet").to_pylist()
    assert len(embeddings) == 2 and len(embeddings[0]["clip_embedding"]) == 768
