"""Physics-IQ: public reference values, masks and metrics against hand-computed answers, the runner end to end.

Deviation checked here and documented in docs/eval.md: masks skip upstream's lossy mp4v round trip by default
(`mask_round_trip=True` reproduces it); the fps changer works in memory (upstream re-encodes with H.264).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vidmill.evaluation import physics_iq as piq
from vidmill.evaluation.physics_iq_score import VIEWS, all_scores, original_score, verified_score
from vidmill.evaluation.video_io import read_video, write_video


def uniform_scenario(n=10, mse=0.1, st=0.4, sp=0.5, wsp=0.6, vmse=0.05, vst=0.3, vsp=0.25, vwsp=0.5):
    vm = piq.ViewMetrics([st] * n, sp, wsp, [mse] * n, [vst] * n, vsp, vwsp, [vmse] * n)
    return {v: vm for v in VIEWS}


def test_public_uniform_values_give_raw_1_4611_and_100():
    # The public test's default fixture: raw = ((.4/.3 + .5/.25 + .6/.5)/3) - (.1 - .05) = 1.4611..., reported 100.0
    scores = all_scores([uniform_scenario() for _ in range(3)])
    assert scores["original"]["raw"] == pytest.approx(1.461111, abs=1e-6)
    assert scores["original"]["score"] == 100.0
    assert scores["original_unrounded"]["score"] == 100.0
    # stable: clip(4/3)=1, clip(2)=1, clip(1.2)=1; 1 - clip(.05) = .95
    assert scores["stable"]["fraction"] == pytest.approx(0.95)


def test_public_clipping_cases():
    low = [uniform_scenario(mse=0.9, st=0.01, sp=0.01, wsp=0.01, vmse=0.05, vst=1.0, vsp=1.0, vwsp=1.0)]
    assert original_score(low)["score"] == 0.0
    high = [uniform_scenario(mse=0.0, st=5.0, sp=5.0, wsp=5.0, vmse=0.05, vst=0.1, vsp=0.1, vwsp=0.1)]
    assert original_score(high)["score"] == 100.0


def test_original_rounds_variances_and_per_frame_values():
    # per-frame values are read back rounded to 4 decimals; V_sp rounded to 5, others to 4
    s = uniform_scenario(mse=0.100004, st=0.30004, sp=0.2, wsp=0.2, vmse=0.05, vst=0.3, vsp=0.123456, vwsp=0.5)
    out = original_score([s])
    assert out["variances"] == {"var_st": 0.3, "var_mse": 0.05, "var_sp": 0.12346, "var_wsp": 0.5}
    raw = (0.3 / 0.3 + 0.2 / 0.12346 + 0.2 / 0.5) / 3 - (0.1 - 0.05)
    assert out["raw"] == pytest.approx(raw, abs=1e-12)
    assert out["score"] == round(min(raw * 100, 100), 2)


def test_verified_per_row_ratios_by_hand():
    a = uniform_scenario(mse=0.1, st=0.15, sp=0.5, wsp=0.25, vmse=0.05, vst=0.3, vsp=0.25, vwsp=0.5)
    # rows: sp .5/(.25 + 1e-8) -> clipped 1, wsp .25/(.5 + 1e-8), st .15/(.3 + 1e-8), mse (.05 + 1e-8)/.1
    parts = [1.0, 0.25 / (0.5 + 1e-8), 0.15 / (0.3 + 1e-8), (0.05 + 1e-8) / 0.1]
    out = verified_score([a])
    assert out["fraction"] == pytest.approx(sum(parts) / 4, abs=1e-12)
    assert out["components"]["mse"] == pytest.approx(parts[3], abs=1e-12)


def moving_square_video(t=20, h=48, w=64, start=4, speed=2, size=10, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.full((t, h, w, 3), 40, np.uint8) + rng.integers(0, 2, (1, h, w, 3), dtype=np.uint8)
    for i in range(t):
        x = start + speed * i
        frames[i, 16:16 + size, x:x + size] = 220
    return frames


def test_masks_static_video_is_empty_and_first_mask_zero():
    frames = np.full((6, 32, 32, 3), 100, np.uint8)
    masks = piq.motion_masks(frames)
    assert masks.shape == (6, 32, 32) and masks.max() == 0


def test_masks_follow_a_moving_square_by_hand():
    frames = np.zeros((3, 40, 60, 3), np.uint8)
    frames[:, 10:30, 5:25] = 200  # frame 0: square at x 5..24
    frames[1:, 10:30, 5:25] = 0
    frames[1:, 10:30, 30:50] = 200  # frames 1, 2: square jumps to x 30..49
    masks = piq.motion_masks(frames)
    assert masks[0].max() == 0
    # frame 1: avg = .7 * old + .3 * new; |new - avg| = .7 * 200 = 140 over both squares (beyond blur borders)
    assert masks[1][20, 40] == 255 and masks[1][20, 15] == 255
    assert masks[1][2, 2] == 0 and masks[1][38, 58] == 0
    # frame 2: avg = .49 old + .51 new: diff .49 * 200 = 98 at both places, still > 10
    assert masks[2][20, 40] == 255 and masks[2][20, 15] == 255


def test_threshold_is_strictly_greater_than_10():
    base = np.full((2, 30, 30, 3), 100, np.uint8)
    # avg = .7 * 100 + .3 * (100 + step), cast by convertScaleAbs (round half even):
    # step 14: avg 104.2 -> 104, diff 10 (not > 10); step 15: avg 104.5 -> 104, diff 11
    for step, expected in ((14, 0), (15, 255)):
        f = base.copy()
        f[1] = 100 + step
        assert piq.motion_masks(f)[1][15, 15] == expected


def test_metrics_on_synthetic_masks_by_hand():
    m1 = np.zeros((2, 4, 4), np.uint8)
    m2 = np.zeros((2, 4, 4), np.uint8)
    m1[0, 0, :2] = 1  # 2 px
    m2[0, 0, 1:3] = 1  # 2 px, overlap 1 -> 1/3
    # frame 1 empty in both -> 1.0
    assert piq.spatiotemporal_iou(m1, m2) == [pytest.approx(1 / 3), 1.0]
    m1[1, 3, 3] = 1
    # ever-moved: m1 {(0,0),(0,1),(3,3)}, m2 {(0,1),(0,2)}: 1 / 4
    assert piq.spatial_iou(m1, m2) == pytest.approx(0.25)
    # weighted: W1 = .5 at 3 px; W2 = .5 at 2 px: min sum .5, max sum 2
    assert piq.weighted_spatial_iou(m1, m2) == pytest.approx(0.25)
    assert piq.weighted_spatial_iou(np.zeros((2, 3, 3)), np.zeros((2, 3, 3))) == 1.0
    v1 = np.zeros((2, 2, 2, 3))
    v2 = np.full((2, 2, 2, 3), 0.5)
    v2[1] = 0.0
    assert piq.mse_per_frame(v1, v2) == [pytest.approx(0.25), 0.0]


def test_vectorised_mse_equals_upstream_per_frame_loop():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 5, 27, 33, 3)) / 255.0
    loop = [float(np.mean((f1.astype(np.float32) - f2.astype(np.float32)) ** 2)) for f1, f2 in zip(a, b, strict=False)]
    assert piq.mse_per_frame(a, b) == loop


def test_fps_changer_blends_and_truncates():
    frames = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 10, 21, 30, 40, 50)])  # 6 frames at 6 fps = 1 s
    out = piq.change_fps(frames, 6.0, 4.0)  # M = 4, alpha = j * 5 / 3
    # alphas 0, 1.667, 3.333, 5: 0; 10 + .667 * 11 = 17.33 -> 17; 30 + .333 * 10 = 33.33 -> 33; 50
    assert [int(f[0, 0, 0]) for f in out] == [0, 17, 33, 50]
    frames = np.stack([np.full((1, 1, 3), v, np.uint8) for v in range(0, 240, 8)])  # 30 frames at 30 fps
    out = piq.change_fps(frames, 30.0, 16.0)
    assert len(out) == 16 and out[-1, 0, 0, 0] == 232


def test_mask_round_trip_is_lossy_but_binarises_back(tmp_path):
    masks = piq.motion_masks(moving_square_video())
    back = piq.mask_round_trip(masks, 30.0, tmp_path)
    assert back.shape == masks.shape + (3,)
    binar = (back[..., 0] > 127).astype(np.uint8)
    agree = (binar == (masks > 127)).mean()
    assert agree > 0.98  # mp4v is lossy: close, not bit-identical (the reason it is an option)


def write_benchmark(root, scenarios=("trimmed-a.mp4", "trimmed-b.mp4"), fps=8, size=(64, 48)):
    """A miniature benchmark tree: 5 s takes at `fps` under split-videos/testing/{fps}FPS."""
    folder = root / "split-videos" / "testing" / f"{fps}FPS"
    ids = {}
    n = 0
    for s_i, scenario in enumerate(scenarios):
        for v_i, view in enumerate(VIEWS):
            for take in ("take-1", "take-2"):
                n += 1
                file_id = f"{n:04d}"
                video = moving_square_video(5 * fps, size[1], size[0], start=2 + v_i, speed=1 + s_i,
                                            seed=n if take == "take-2" else 0)
                write_video(folder / f"{file_id}_testing-videos_{fps}FPS_{view}_{take}_{scenario}", video, fps)
                if take == "take-1":
                    ids[(scenario, view)] = file_id
    return ids


@pytest.fixture(scope="module")
def bench_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("piq")
    ids = write_benchmark(root / "physics-IQ-benchmark")
    return root, ids


def copy_take1_as_generated(root, ids, gen):
    real = root / "physics-IQ-benchmark" / "split-videos" / "testing" / "8FPS"
    gen.mkdir(parents=True, exist_ok=True)
    for (scenario, view), file_id in ids.items():
        src = next(real.glob(f"{file_id}_*"))
        (gen / f"{file_id}_{view}_{scenario}").write_bytes(src.read_bytes())


def test_a_video_against_itself_scores_1_in_all_three_variants(bench_tree, tmp_path):
    # Public check: a real take scored against itself gives 1.0 in original, stable and verified (abs 1e-6).
    from vidmill.evaluation.physics_iq_runner import PhysicsIQOptions, evaluate_physics_iq

    root, ids = bench_tree
    copy_take1_as_generated(root, ids, tmp_path / "gen")
    doc = evaluate_physics_iq(root / "physics-IQ-benchmark", tmp_path / "gen", PhysicsIQOptions(workers=2))
    s = doc["summary"]
    assert s["n_ok"] == 2 and s["complete"]
    scores = s["scores"]
    assert scores["original"]["score"] == 100.0
    assert scores["stable"]["fraction"] == pytest.approx(1.0, abs=1e-6)
    assert scores["verified"]["fraction"] == pytest.approx(1.0, abs=1e-6)
    view = doc["rows"][0]["views"]["perspective-left"]
    assert view["spatial_iou"] == 1.0 and set(view["mse"]) == {0.0}
    json.dumps(doc)


def test_runner_rows_statuses_and_hand_checked_view(bench_tree, tmp_path):
    from vidmill.evaluation.physics_iq_runner import PhysicsIQOptions, evaluate_physics_iq, score_view

    root, ids = bench_tree
    gen = tmp_path / "gen"
    copy_take1_as_generated(root, ids, gen)
    # scenario b: one view replaced by a static video (no motion), one view deleted, one too short
    b_left = gen / f"{ids[('trimmed-b.mp4', 'perspective-left')]}_perspective-left_trimmed-b.mp4"
    write_video(b_left, np.full((40, 48, 64, 3), 40, np.uint8), 8)
    (gen / f"{ids[('trimmed-b.mp4', 'perspective-center')]}_perspective-center_trimmed-b.mp4").unlink()
    a_right = gen / f"{ids[('trimmed-a.mp4', 'perspective-right')]}_perspective-right_trimmed-a.mp4"
    write_video(a_right, moving_square_video(30), 8)  # 3.75 s
    doc = evaluate_physics_iq(root / "physics-IQ-benchmark", gen, PhysicsIQOptions(fps=8))
    rows = {r["scenario"]: r for r in doc["rows"]}
    assert rows["trimmed-a.mp4"]["status"] == "error" and "must last 5 s" in rows["trimmed-a.mp4"]["error"]
    assert rows["trimmed-b.mp4"]["status"] == "missing"  # one view absent, the others scored
    assert rows["trimmed-b.mp4"]["views"]["perspective-center"]["status"] == "missing"
    assert doc["summary"]["n_ok"] == 0 and doc["summary"]["scores"] is None
    # the static generated view: its masks are empty, so st IoU = 0 wherever take 1 moved, 1 elsewhere
    from vidmill.evaluation.physics_iq_layout import attach_generated, read_real

    real = read_real(root / "physics-IQ-benchmark", 8)
    attach_generated(real, gen)
    vm = score_view(real.scenarios["trimmed-b.mp4"].views["perspective-left"], real, 8, False)
    r1 = read_video(real.scenarios["trimmed-b.mp4"].views["perspective-left"].take1).frames
    m1 = piq.prepare_masks(piq.motion_masks(r1), (16, 12), 40)
    assert vm.spatiotemporal_iou == [1.0 if f.sum() == 0 else 0.0 for f in m1]
    assert vm.spatial_iou == 0.0 and vm.weighted_spatial_iou == 0.0
    small = np.stack([cv2.resize(f, (16, 12)) for f in r1]) / 255.0
    static = np.stack([cv2.resize(f, (16, 12)) for f in read_video(b_left).frames]) / 255.0  # decoded (codec noise)
    assert vm.mse == piq.mse_per_frame(small, static)


def test_tail_task_generates_scores_and_appends_metrics(bench_tree, tmp_path):
    from vidmill.evaluation.physics_iq_layout import read_real
    from vidmill.evaluation.tail import PhysicsIQTail, due, evaluate_checkpoint

    root, ids = bench_tree
    bench = root / "physics-IQ-benchmark"
    real = read_real(bench, 8)
    for sc in real.scenarios.values():  # 3 s conditioning clips next to the testing videos
        for vf in sc.views.values():
            name = vf.take1.name.replace("_testing-videos_", "_conditioning-videos_")
            write_video(bench / "split-videos" / "conditioning" / "8FPS" / name, moving_square_video(24), 8)
    seen = []

    def fake_generate(checkpoint, condition, mode, seconds, fps, out):
        frames = read_video(condition).frames
        seen.append((checkpoint, frames.shape, mode, seconds, fps))
        write_video(out, np.repeat(frames[-1:], int(seconds * fps), axis=0), fps)  # hold the last frame

    run = tmp_path / "run"
    run.mkdir()
    row = evaluate_checkpoint("ckpt/step-10", run, 10, physics_iq=PhysicsIQTail(str(bench), fps=8, mode="v2v"),
                              generate=fake_generate)
    assert len(seen) == 6 and seen[0] == ("ckpt/step-10", (24, 48, 64, 3), "v2v", 5.0, 8.0)
    doc = json.loads((run / "eval" / "step-10" / "physics-iq" / "results.json").read_text())
    assert row["eval/physics_iq/verified"] == doc["summary"]["scores"]["verified"]["score"]
    assert row["eval/physics_iq/status"] == "ok"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 10 and lines[-1]["kind"] == "eval"
    assert due(20, 10) and not due(15, 10) and due(15, 10, final=True) and not due(0, 10)


def test_tail_without_vidmill_generate_reports_not_computed(tmp_path, monkeypatch):
    """A build without training/generate.py (simulated: the import fails): the row says why, with no number."""
    import sys

    from vidmill.evaluation.tail import PhysicsIQTail, evaluate_checkpoint

    monkeypatch.setitem(sys.modules, "vidmill.training.generate", None)  # `import` now raises ImportError
    row = evaluate_checkpoint("ckpt", tmp_path, 5, physics_iq=PhysicsIQTail(str(tmp_path)))
    assert row["eval/physics_iq/status"].startswith("not computed: vidmill generate is not available")
    assert "eval/physics_iq/original" not in row
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == row


def test_streaming_preparation_equals_the_array_path(tmp_path):
    frames = moving_square_video(12, 50, 66)  # odd sizes: the round trip crops masks to even width/height
    size = piq.target_size(frames[0])
    for round_trip in (False, True):
        got = piq.prepare_stream(iter(frames), 8.0, 10, None, round_trip, tmp_path)
        masks = piq.motion_masks(frames)
        masks = piq.mask_round_trip(masks, 8.0, tmp_path) if round_trip else masks
        assert got.size == size == (16, 12) and got.n_read == 12
        assert np.array_equal(got.masks, piq.prepare_masks(masks, size, 10))
        assert np.array_equal(got.frames, piq.prepare_frames(frames, size, 10))


def test_cli_writes_results_json(bench_tree, tmp_path, capsys):
    from vidmill.cli import main

    root, ids = bench_tree
    copy_take1_as_generated(root, ids, tmp_path / "gen")
    out = tmp_path / "results.json"
    assert main(["eval", "physics-iq", "--real", str(root / "physics-IQ-benchmark"), "--generated",
                 str(tmp_path / "gen"), "--out", str(out), "--workers", "1"]) == 0
    doc = json.loads(out.read_text())
    assert doc["fps"] == 8 and [r["status"] for r in doc["rows"]] == ["ok", "ok"]
    assert "verified  100.00" in capsys.readouterr().out
    # generating mode on a folder that is no training run: a clear error (tests/training/test_train_eval.py runs it
    # on a real checkpoint)
    code = main(["eval", "physics-iq", "--real", str(root / "physics-IQ-benchmark"), "--generated",
                 str(tmp_path / "gen"), "--out", str(out), "--checkpoint", str(tmp_path / "ckpt"), "--fps", "8"])
    assert code == 2 and "not a training run" in capsys.readouterr().err


def test_zero_physical_variance_does_not_crash_and_json_stays_strict(tmp_path):
    from vidmill.evaluation.physics_iq_runner import write_results

    s = uniform_scenario(vst=0.0)  # the two real takes never overlap
    scores = all_scores([s])
    assert scores["original"]["score"] == 100.0 and scores["stable"]["components"]["spatiotemporal"] == float("inf")
    doc = json.loads(write_results({"s": scores}, tmp_path / "r.json").read_text())
    assert doc["s"]["stable"]["components"]["spatiotemporal"] is None


def test_vidmill_generator_adapter_drops_the_prefix_frames(tmp_path, monkeypatch):
    """The adapter against `vidmill generate`'s interface (load_run, GenerateRequest, generate(on_frames=...)),
    stubbed here: output frames start with the prefix's latent-aligned reconstruction, then new frames."""
    import sys
    import types
    from dataclasses import dataclass

    from vidmill.evaluation.physics_iq_generate import vidmill_generator

    @dataclass
    class Request:
        prompt: str | None = None
        seconds: float = 1.0
        steps: int | None = None
        image: object = None
        video: object = None

    size = types.SimpleNamespace(fps=8, vae=types.SimpleNamespace(patch=(4, 8, 8)))
    loads, calls = [], []

    def load_run(run, step=None, device="cpu"):
        loads.append((str(run), step))
        return types.SimpleNamespace(size=size)

    def generate(models, request, out, on_frames=None):
        calls.append(request)
        total = round(request.seconds * 8)
        frames = np.stack([np.full((32, 32, 3), 4 * i, np.uint8) for i in range(total)])  # frame i has value 4 i
        for start in range(0, total, 4):
            on_frames(frames[start:start + 4], start)

    fake = types.ModuleType("vidmill.training.generate")
    fake.GenerateRequest, fake.generate, fake.load_run = Request, generate, load_run
    monkeypatch.setitem(sys.modules, "vidmill.training.generate", fake)
    gen = vidmill_generator()
    clip = write_video(tmp_path / "cond.mp4", np.zeros((23, 8, 8, 3), np.uint8), 8)  # 23 frames -> 20 aligned
    gen("RUN/checkpoints/step-7", clip, "v2v", 5.0, 8.0, tmp_path / "v2v.mp4")
    out = read_video(tmp_path / "v2v.mp4").frames
    assert len(out) == 40 and calls[-1].video == clip and calls[-1].seconds == (20 + 40) / 8
    assert abs(int(out[0, 16, 16, 0]) - 80) <= 6 and abs(int(out[-1, 16, 16, 0]) - 236) <= 6  # mp4v tolerance
    gen("RUN/checkpoints/step-7", tmp_path / "switch.jpg", "i2v", 5.0, 8.0, tmp_path / "i2v.mp4")
    assert calls[-1].image == tmp_path / "switch.jpg" and calls[-1].seconds == (4 + 40) / 8
    assert loads == [("RUN", 7)]  # loaded once
    with pytest.raises(ValueError, match="generates at 8 fps"):
        gen("RUN", clip, "v2v", 5.0, 16.0, tmp_path / "x.mp4")


def test_a_corrupt_generated_file_is_an_error_row_not_a_crash(bench_tree, tmp_path):
    from vidmill.evaluation.physics_iq_runner import evaluate_physics_iq

    root, ids = bench_tree
    gen = tmp_path / "gen"
    copy_take1_as_generated(root, ids, gen)
    bad = gen / f"{ids[('trimmed-a.mp4', 'perspective-left')]}_perspective-left_trimmed-a.mp4"
    bad.write_bytes(b"not a video")
    doc = evaluate_physics_iq(root / "physics-IQ-benchmark", gen)
    rows = {r["scenario"]: r for r in doc["rows"]}
    assert rows["trimmed-a.mp4"]["status"] == "error" and rows["trimmed-b.mp4"]["status"] == "ok"
    assert doc["summary"]["n_ok"] == 1 and not doc["summary"]["complete"]
