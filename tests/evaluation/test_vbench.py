"""VBench I2V: formulas on features of known cosines, published normalisation and weights, tiny random networks of
the real architectures (timm ViT for DINO, open_clip CLIP, torchvision RAFT) loaded through the config and the
one local-weights loader.

Deviation checked here and documented in docs/eval.md: a dimension without weights is `not computed` and the totals
renormalise over the dimensions present (upstream scores a missing dimension 0).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vidmill.evaluation import vbench_i2v as vb
from vidmill.evaluation.config import load_eval_config
from vidmill.evaluation.video_io import write_video


def unit(angle_deg: float, dim: int = 4) -> torch.Tensor:
    v = torch.zeros(dim)
    v[0], v[1] = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return v


def test_i2v_consistency_with_known_cosines():
    image = unit(0)
    frames = torch.stack([unit(0), unit(60), unit(60), unit(180)]) * 3.0  # scale: features are L2-normalised
    # conformity to image: 1, .5, .5, -1 -> max 1; consecutive: cos60 = .5, 1, cos120 = -.5 -> clamped 0
    expected = 0.4 * 1.0 + 0.3 * np.mean([0.5, 1.0, 0.0]) + 0.3 * 0.0
    assert vb.i2v_consistency(image, frames) == pytest.approx(expected, abs=1e-6)


def test_frame_consistency_is_frame_weighted():
    f = torch.stack([unit(0), unit(60), unit(90)])
    total, count = vb.frame_consistency(f)
    # i=1: (cos60 + cos60)/2 = .5; i=2: (cos30 + cos90)/2 = .4330
    assert count == 2 and total == pytest.approx(0.5 + math.cos(math.radians(30)) / 2, abs=1e-6)


def test_normalisation_weights_and_totals():
    assert vb.normalise("motion_smoothness", 0.9975) == pytest.approx(1.0)
    assert vb.normalise("i2v_subject", 0.1462) == 0.0
    assert vb.normalise("background_consistency", 0.2615 + 0.7385 / 2) == pytest.approx(0.5)
    full = {d: vb.NORMALISATION[d][1] for d in vb.DIMENSIONS}
    t = vb.totals(full)
    assert t["quality"]["score"] == pytest.approx(1.0) and t["i2v"]["score"] == pytest.approx(1.0)
    # quality by hand: weights 1, 1, 1, .5, 1, 1 over 5.5; i2v: .1, 1, 1 over 2.1
    scores = {"subject_consistency": 0.9, "background_consistency": 0.9, "motion_smoothness": 0.98,
              "dynamic_degree": 0.6, "aesthetic_quality": 0.6, "imaging_quality": 0.7,
              "camera_motion": 0.5, "i2v_subject": 0.95, "i2v_background": 0.96}
    q = ((0.9 - 0.1462) / 0.8538 + (0.9 - 0.2615) / 0.7385 + (0.98 - 0.706) / (0.9975 - 0.706)
         + 0.5 * 0.6 + 0.6 + 0.7) / 5.5
    i = (0.1 * 0.5 + (0.95 - 0.1462) / 0.8538 + (0.96 - 0.2615) / 0.7385) / 2.1
    t = vb.totals(scores)
    assert t["quality"]["score"] == pytest.approx(q) and t["i2v"]["score"] == pytest.approx(i)
    assert t["total"]["score"] == pytest.approx((q + i) / 2) and t["total"]["complete"]
    partial = dict(scores, imaging_quality=None, camera_motion=None)
    t = vb.totals(partial)
    assert t["quality"]["missing"] == ["imaging_quality"] and "imaging_quality" not in t["quality"]["includes"]
    assert t["quality"]["score"] == pytest.approx((q * 5.5 - 0.7) / 4.5)
    assert not t["total"]["complete"] and t["total"]["missing"] == ["imaging_quality", "camera_motion"]


def test_dynamic_degree_rules():
    assert [vb.sample_interval(f) for f in (8, 12, 20, 24, 30, 4)] == [1, 2, 2, 3, 4, 1]  # round half to even
    flow = np.zeros((2, 10, 20))
    flow[0].flat[:10] = 3.0  # 10 of 200 px move by 5 (3-4-5) -> top int(200 * .05) = 10 values
    flow[1].flat[:10] = 4.0
    assert vb.top5_flow_magnitude(flow) == pytest.approx(5.0)
    # 256 px short side: thres 6.0, strictly greater; N = 10 sampled -> round(2.5) = 2 pairs needed
    assert not vb.is_dynamic([6.0, 6.0, 7.0], 10, 256)
    assert vb.is_dynamic([6.0, 6.1, 7.0], 10, 256)
    assert not vb.is_dynamic([7.0, 0.0, 0.0], 10, 256)


def grid_tracks(dx=0.0, dy=0.0, zoom=0.0):
    ys, xs = np.meshgrid(np.linspace(10, 90, vb.GRID), np.linspace(10, 90, vb.GRID), indexing="ij")
    first = np.stack([xs, ys], -1)
    # zoom about grid point (5, 5): the edge mid points used upstream are row/column 5 of the 10 x 10 grid
    last = first + np.array([dx, dy]) + zoom * (first - first[5, 5])
    return first.astype(int), last.astype(int)


def test_camera_motion_rules():
    assert vb.classify_camera(*grid_tracks(dx=-5), 100) == ["pan_right"]  # content moves left: camera pans right
    assert vb.classify_camera(*grid_tracks(dy=5), 100) == ["tilt_up"]
    assert vb.classify_camera(*grid_tracks(zoom=0.2), 100) == ["zoom_in"]
    assert vb.classify_camera(*grid_tracks(zoom=-0.2), 100) == ["zoom_out"]
    assert vb.classify_camera(*grid_tracks(dx=0.4), 100) == ["static"]  # not > 0.005 * 100
    assert vb.camera_type("a boat, camera pans left-0.mp4") == "pan_left" and vb.camera_type("x.mp4") is None


def test_motion_smoothness_formula():
    frames = np.stack([np.full((4, 4, 3), 10 * i, np.uint8) for i in range(7)])
    mean = lambda a, b: ((a.astype(np.float32) + b) / 2).astype(np.uint8)  # noqa: E731
    assert vb.motion_smoothness(frames, mean) == 1.0
    off = lambda a, b: np.clip(mean(a, b).astype(int) + 51, 0, 255).astype(np.uint8)  # noqa: E731
    assert vb.motion_smoothness(frames, off) == pytest.approx((255 - 51) / 255)
    assert vb.longer_side_size(720, 1280) == (288, 512) and vb.longer_side_size(300, 400) == (300, 400)


# Tiny random networks of the real architectures, saved to local files and loaded through the config --------------

TINY_DINO = {"img_size": 224, "patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2}
TINY_CLIP = {"embed_dim": 768,
             "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
             "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer
    from torchvision.models.optical_flow import raft_small

    root = tmp_path_factory.mktemp("vbench-weights")
    torch.manual_seed(0)
    (root / "dino.json").write_text(json.dumps(TINY_DINO))
    dino = VisionTransformer(**TINY_DINO, num_classes=0).eval()
    save_file(dino.state_dict(), str(root / "dino.safetensors"))
    out = {"dino": dino}
    for name in ("tiny-clip-b32", "tiny-clip-l14"):
        (root / f"{name}.json").write_text(json.dumps(TINY_CLIP))
        open_clip.add_model_config(str(root / f"{name}.json"))
        model = open_clip.create_model(name, pretrained=None)
        torch.save(model.state_dict(), root / f"{name}.pt")
        out[name] = model.eval()
    head = torch.nn.Linear(768, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0] = 2.0
        head.bias.fill_(3.0)
    torch.save(head.state_dict(), root / "laion.pt")
    raft = raft_small(weights=None).eval()
    torch.save(raft.state_dict(), root / "raft.pt")
    out["raft"] = raft
    out["config"] = load_eval_config(None, [
        f"vbench.weights.dino_vitb16={root / 'dino.safetensors'}", f"vbench.arch.dino_vitb16={root / 'dino.json'}",
        f"vbench.weights.clip_vitb32={root / 'tiny-clip-b32.pt'}",
        f"vbench.arch.clip_vitb32={root / 'tiny-clip-b32.json'}",
        f"vbench.weights.clip_vitl14={root / 'tiny-clip-l14.pt'}",
        f"vbench.arch.clip_vitl14={root / 'tiny-clip-l14.json'}",
        f"vbench.weights.laion_head={root / 'laion.pt'}", f"vbench.weights.raft={root / 'raft.pt'}",
        "vbench.arch.raft=raft_small", "vbench.weights.amt_s=/nonexistent/amt-s.pth"])
    return out


def test_dino_forward_matches_timm_on_square_input_and_interpolates_on_others(tiny_weights):
    from vidmill.evaluation.vbench_models import build_dino, dino_forward, dino_pos_embed

    model = build_dino(tiny_weights["config"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = dino_forward(model, x)
        ref = tiny_weights["dino"].forward_features(x)[:, 0]
    assert torch.allclose(ours, ref, atol=1e-5)
    pos = dino_pos_embed(model.pos_embed, 224, 320, 16)
    assert pos.shape == (1, 1 + 14 * 20, 16)
    assert torch.equal(pos[:, 0], model.pos_embed[:, 0])
    with torch.no_grad():
        assert dino_forward(model, torch.randn(1, 3, 224, 320)).shape == (1, 16)


def test_loader_rejects_weights_of_another_shape(tiny_weights, tmp_path):
    from vidmill.evaluation.vbench_models import build_dino

    torch.save({"cls_token": torch.zeros(1, 1, 8)}, tmp_path / "bad.pt")
    config = load_eval_config(None, [f"vbench.weights.dino_vitb16={tmp_path / 'bad.pt'}",
                                     f"vbench.arch.dino_vitb16={tiny_weights['config']['vbench']['arch']['dino_vitb16']}"])
    with pytest.raises((ValueError, RuntimeError)):
        build_dino(config)


def moving_video(path, t=3, h=128, w=160, speed=12, fps=8.0):  # RAFT needs >= 128 px
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 2] = np.linspace(0, 200, w, dtype=np.uint8)[None, None]
    for i in range(t):
        frames[i, 40:80, 5 + speed * i:45 + speed * i] = 255
    write_video(path, frames, fps)
    return frames


@pytest.fixture(scope="module")
def vbench_run(tiny_weights, tmp_path_factory):
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    root = tmp_path_factory.mktemp("vbench-videos")
    videos, images = root / "videos", root / "images"
    images.mkdir()
    moving_video(videos / "a boat, camera pans left-0.mp4", t=2)  # one RAFT pair: RAFT dominates the test time
    first = moving_video(videos / "still-0.mp4", speed=0)
    import cv2

    cv2.imwrite(str(images / "still-0.png"), first[0])
    probes = build_probes(tiny_weights["config"])
    return evaluate_vbench(videos, images, probes), probes, videos, images


def test_vbench_end_to_end_with_tiny_real_architectures(vbench_run, tiny_weights):
    from vidmill.evaluation import vbench_models as vm
    from vidmill.evaluation.video_io import bgr_to_rgb, read_video

    doc, probes, videos, images = vbench_run
    dims = doc["dimensions"]
    for d in ("subject_consistency", "background_consistency", "dynamic_degree", "aesthetic_quality", "i2v_subject"):
        assert dims[d]["status"] == "ok", (d, dims[d])
    assert dims["i2v_subject"]["n_videos"] == 1  # only `still` has a conditioning image
    assert dims["i2v_background"]["status"] == "not computed: no weights (vbench.weights.dreamsim is not set)"
    assert dims["motion_smoothness"]["status"].startswith("not computed: no weights (vbench.weights.amt_s: ")
    assert dims["imaging_quality"]["score"] is None and dims["camera_motion"]["score"] is None
    t = doc["totals"]
    assert t["quality"]["includes"] == ["subject_consistency", "background_consistency", "dynamic_degree",
                                        "aesthetic_quality"]
    assert t["i2v"]["includes"] == ["i2v_subject"] and not t["total"]["complete"]
    # aesthetic by hand: head = 2 e[0] + 3 on normalised CLIP-L features, / 10, mean over frames then videos
    per_video = []
    for path in sorted(videos.glob("*.mp4")):
        frames = bgr_to_rgb(read_video(path).frames)
        x = vm.clip_transform(vm.to_tensor(frames))
        with torch.no_grad():
            e = tiny_weights["tiny-clip-l14"].encode_image(x)
        e = e / e.norm(dim=-1, keepdim=True)
        per_video.append(float(((2 * e[:, 0] + 3) / 10).mean()))
        if path.name.startswith("still"):
            # subject consistency by hand through timm's own forward on the same DINO weights
            xd = vm.dino_frames_transform(vm.to_tensor(frames))
            assert xd.shape[-2:] == (224, 280)
            with torch.no_grad():
                f = vm.dino_forward(tiny_weights["dino"], xd)
            s, c = vb.frame_consistency(f)
            row = next(r for r in doc["rows"] if r["video"] == path.name)
            assert row["dimensions"]["subject_consistency"] == pytest.approx(s / c, abs=1e-6)
    assert dims["aesthetic_quality"]["score"] == pytest.approx(np.mean(per_video), abs=1e-6)


def test_dynamic_degree_through_torchvision_raft_matches_direct_call(vbench_run, tiny_weights):
    from vidmill.evaluation import vbench_models as vm
    from vidmill.evaluation.video_io import bgr_to_rgb, read_video

    doc, probes, videos, _ = vbench_run
    path = videos / "a boat, camera pans left-0.mp4"
    frames = bgr_to_rgb(read_video(path).frames)  # 8 fps -> every frame
    t = vm.to_tensor(frames).float()
    scores = []
    for i in range(len(t) - 1):
        with torch.no_grad():
            flow = tiny_weights["raft"](2 * (t[i:i + 1] / 255) - 1, 2 * (t[i + 1:i + 2] / 255) - 1,
                                        num_flow_updates=20)[-1][0].numpy()
        scores.append(vb.top5_flow_magnitude(flow))
    row = next(r for r in doc["rows"] if r["video"] == path.name)
    assert row["dimensions"]["dynamic_degree"] == float(vb.is_dynamic(scores, len(frames), 128))


def test_missing_weights_report_reasons_never_numbers(tmp_path):
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    moving_video(tmp_path / "v" / "x.mp4", t=5)
    doc = evaluate_vbench(tmp_path / "v", None, build_probes(load_eval_config()))
    for d, entry in doc["dimensions"].items():
        assert entry["score"] is None and entry["status"].startswith("not computed: no weights"), d
    assert doc["totals"]["total"]["score"] is None and doc["totals"]["total"]["includes"] == []


def test_cli_vbench_without_weights(tmp_path, capsys):
    from vidmill.cli import main

    moving_video(tmp_path / "v" / "x.mp4")
    out = tmp_path / "r.json"
    assert main(["eval", "vbench", "--videos", str(tmp_path / "v"), "--out", str(out),
                 "--set", "vbench.weights.raft=/missing/raft.pth"]) == 0
    doc = json.loads(out.read_text())
    assert doc["dimensions"]["dynamic_degree"]["status"] == (
        "not computed: no weights (vbench.weights.raft: /missing/raft.pth not found)")
    assert "total" in capsys.readouterr().out
    assert main(["eval", "vbench", "--videos", str(tmp_path / "v"), "--out", str(out),
                 "--set", "vbench.nope=1"]) == 2  # unknown key: a clear error


def test_callable_dimensions_through_the_runner(tmp_path):
    """The DreamSim, AMT-S, MUSIQ and CoTracker2 formulas run on plugged-in callables of known output (the real
    architectures are tested in test_dreamsim.py, test_musiq.py, test_amt.py, test_cotracker.py)."""
    import cv2

    from vidmill.evaluation.vbench_models import Probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    videos, images = tmp_path / "v", tmp_path / "i"
    images.mkdir()
    frames = moving_video(videos / "boat, camera pans left.mp4", t=5)
    cv2.imwrite(str(images / "boat, camera pans left.png"), frames[0][..., ::-1])
    moving_video(videos / "plain.mp4", t=5)
    probes = Probes(
        dreamsim=lambda x: torch.ones(len(x), 8),  # identical embeddings: cos 1 everywhere -> 0.4 + 0.3 + 0.3
        interpolate=lambda a, b: ((a.astype(np.float32) + b) / 2).astype(np.uint8),
        musiq=lambda x: torch.tensor(40.0 + x.shape[-1] / 100),  # records the resized width: 160 -> 41.6
        tracker=lambda f: grid_tracks(dx=8),  # content moves right: camera pans left
        reasons={})
    doc = evaluate_vbench(videos, images, probes, dimensions=("i2v_background", "motion_smoothness",
                                                               "imaging_quality", "camera_motion"))
    d = doc["dimensions"]
    assert d["i2v_background"]["score"] == pytest.approx(1.0) and d["i2v_background"]["n_videos"] == 1
    assert d["imaging_quality"]["score"] == pytest.approx(0.416)
    assert d["camera_motion"]["score"] == 1.0 and d["camera_motion"]["n_videos"] == 1
    expected = []
    for name in ("boat, camera pans left.mp4", "plain.mp4"):
        from vidmill.evaluation.video_io import bgr_to_rgb, read_video

        f = bgr_to_rgb(read_video(videos / name).frames)
        expected.append(vb.motion_smoothness(f, probes.interpolate))
    assert d["motion_smoothness"]["score"] == pytest.approx(np.mean(expected))
    plain = next(r for r in doc["rows"] if r["video"] == "plain.mp4")
    assert plain["dimensions"]["camera_motion"] == "skipped: no camera prompt in the file name"
