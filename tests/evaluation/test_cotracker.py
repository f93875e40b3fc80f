"""Camera Motion with the hand-written CoTracker2 (evaluation/models_cotracker.py).

- The full-size model has upstream's `cotracker2.pth` layout: key names written out here from reading
  facebookresearch/co-tracker (CoTracker2, EfficientUpdateFormer, BasicEncoder), shapes from its constructor
  arguments, and such a state dict loads strictly.
- A tiny random CoTracker2 of the same code, saved and loaded through the config, runs the dimension end to end.
- Hand-checked: the 10 x 10 query grid (margin W / 64), frame-0 tracks overwritten by the queries, rescaling to the
  video and int truncation, and the direction rules on synthetic tracks; missing weights are reported, not scored.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vidmill.evaluation import vbench_i2v as vb
from vidmill.evaluation.config import load_eval_config
from vidmill.evaluation.models_cotracker import CoTracker2, CoTrackerConfig, points_on_grid, track_grid
from vidmill.evaluation.video_io import bgr_to_rgb, read_video, write_video

TINY = {"latent_dim": 16, "hidden_size": 32, "num_heads": 2, "space_depth": 1, "time_depth": 1,
        "num_virtual_tracks": 4, "model_resolution": [64, 64]}


def upstream_layout() -> dict[str, tuple]:
    """cotracker2.pth's keys and shapes for CoTracker2(window_len=8, stride=4), from upstream's constructors."""
    keys: dict[str, tuple] = {"time_emb": (1, 8, 456), "pos_emb": (1, 456, 96, 128), "norm.weight": (128,),
                              "norm.bias": (128,), "track_feat_updater.0.weight": (128, 128),
                              "track_feat_updater.0.bias": (128,), "vis_predictor.0.weight": (1, 128),
                              "vis_predictor.0.bias": (1,)}

    def conv(name, cout, cin, k):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def linear(name, cout, cin):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin), (cout,)

    conv("fnet.conv1", 64, 3, 7)
    cin = 64
    for i, (dim, stride) in enumerate(((64, 1), (96, 2), (128, 2), (128, 2)), 1):
        for j in (0, 1):
            conv(f"fnet.layer{i}.{j}.conv1", dim, cin if j == 0 else dim, 3)
            conv(f"fnet.layer{i}.{j}.conv2", dim, dim, 3)
        if stride == 2:
            conv(f"fnet.layer{i}.0.downsample.0", dim, cin, 1)
        cin = dim
    conv("fnet.conv2", 256, 416, 3)
    conv("fnet.conv3", 128, 256, 1)
    u = "updateformer"
    linear(f"{u}.input_transform", 384, 456)
    linear(f"{u}.flow_head", 130, 384)
    keys[f"{u}.virual_tracks"] = (1, 64, 1, 384)

    def block(name, attn):
        linear(f"{name}.{attn}.to_q", 384, 384)
        linear(f"{name}.{attn}.to_kv", 768, 384)
        linear(f"{name}.{attn}.to_out", 384, 384)
        linear(f"{name}.mlp.fc1", 1536, 384)
        linear(f"{name}.mlp.fc2", 384, 1536)

    for i in range(6):
        block(f"{u}.time_blocks.{i}", "attn")
        block(f"{u}.space_virtual_blocks.{i}", "attn")
        for cross in ("space_point2virtual_blocks", "space_virtual2point_blocks"):
            block(f"{u}.{cross}.{i}", "cross_attn")
            keys[f"{u}.{cross}.{i}.norm_context.weight"] = keys[f"{u}.{cross}.{i}.norm_context.bias"] = (384,)
    return keys


def test_full_size_layout_is_upstreams_and_loads_strictly():
    model = CoTracker2()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == upstream_layout()
    torch.manual_seed(0)
    state = {k: torch.randn(shape) for k, shape in upstream_layout().items()}
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.updateformer.virual_tracks, state["updateformer.virual_tracks"])


def test_query_grid_first_frame_tracks_and_int_cast():
    grid = points_on_grid(10, (384, 512))[0]
    assert grid.shape == (100, 2)
    assert grid[0].tolist() == [8.0, 8.0] and grid[99].tolist() == pytest.approx([504.0, 376.0])
    assert grid[1, 0].item() == pytest.approx(8 + 496 / 9) and grid[10, 1].item() == pytest.approx(8 + 368 / 9)
    torch.manual_seed(0)
    model = CoTracker2(CoTrackerConfig(**TINY)).eval()
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 56, 3), dtype=np.uint8)
    tracks = track_grid(model, frames)
    assert tracks.shape == (3, 100, 2) and tracks.dtype == np.int64
    # frame 0 = the query grid on the 64 x 64 model input (margin 1), scaled by (W-1)/63, (H-1)/63, truncated
    for idx in (0, 1, 9, 10, 55, 99):
        row, col = divmod(idx, 10)
        x, y = 1 + col * 62 / 9, 1 + row * 62 / 9
        assert tracks[0, idx].tolist() == [math.trunc(x * 55 / 63), math.trunc(y * 47 / 63)]


def test_direction_rules_on_synthetic_tracks():
    ys, xs = np.meshgrid(np.linspace(10, 230, vb.GRID), np.linspace(10, 310, vb.GRID), indexing="ij")
    first = np.stack([xs, ys], -1).astype(int)
    # min(H, W) = 240 -> threshold 1.2 px, strictly greater
    assert vb.classify_camera(first, first + [2, 0], 240) == ["pan_left"]  # content moves right
    assert vb.classify_camera(first, first + [0, -2], 240) == ["tilt_down"]  # content moves up
    assert vb.classify_camera(first, first + [1, 0], 240) == ["static"]  # 1 px is not > 1.2
    assert vb.classify_camera(first, first + [-2, 2], 240) == ["pan_right", "tilt_up"]
    # top edge moves up and bottom edge down, left/right edges still: zoom in from top/down alone
    last = first.copy()
    last[0, :, 1] -= 3
    last[vb.GRID - 1, :, 1] += 3
    assert vb.classify_camera(first, last, 240) == ["zoom_in"]


@pytest.fixture(scope="module")
def tiny_cotracker(tmp_path_factory):
    root = tmp_path_factory.mktemp("cotracker")
    torch.manual_seed(0)
    model = CoTracker2(CoTrackerConfig(**TINY)).eval()
    torch.save(model.state_dict(), root / "cotracker-tiny.pth")
    (root / "cotracker-tiny.json").write_text(json.dumps(TINY))
    config = load_eval_config(None, [f"vbench.weights.cotracker2={root / 'cotracker-tiny.pth'}",
                                     f"vbench.arch.cotracker2={root / 'cotracker-tiny.json'}"])
    return model, config, root


def test_camera_motion_end_to_end_with_a_tiny_cotracker(tiny_cotracker):
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    model, config, root = tiny_cotracker
    frames = np.zeros((10, 48, 64, 3), np.uint8)  # 10 frames: two sliding windows (0-7, 4-11)
    for i in range(10):
        frames[i, 10:30, 5 + 3 * i:25 + 3 * i] = (255, 128, 0)
    videos = root / "v"
    write_video(videos / "a dog, camera pans left-0.mp4", frames, 8.0)
    write_video(videos / "no prompt.mp4", frames, 8.0)
    probes = build_probes(config)
    assert probes.tracker is not None and "tracker" not in probes.reasons
    doc = evaluate_vbench(videos, None, probes, dimensions=("camera_motion",))
    entry = doc["dimensions"]["camera_motion"]
    assert entry["status"] == "ok" and entry["n_videos"] == 1
    rgb = bgr_to_rgb(read_video(videos / "a dog, camera pans left-0.mp4").frames)
    tracks = track_grid(model, rgb)  # the in-memory model, not the file: same weights, same answer
    expected = "pan_left" in vb.classify_camera(tracks[0].reshape(10, 10, 2), tracks[-1].reshape(10, 10, 2), 48)
    assert entry["score"] == float(expected)
    row = next(r for r in doc["rows"] if r["video"] == "no prompt.mp4")
    assert row["dimensions"]["camera_motion"] == "skipped: no camera prompt in the file name"


def test_missing_or_mismatched_cotracker_weights(tmp_path, tiny_cotracker):
    from vidmill.evaluation.vbench_models import build_cotracker, build_probes

    probes = build_probes(load_eval_config(None, [f"vbench.weights.cotracker2={tmp_path / 'cotracker2.pth'}"]))
    assert probes.tracker is None
    missing = tmp_path / "cotracker2.pth"
    assert probes.reasons["tracker"] == f"not computed: no weights (vbench.weights.cotracker2: {missing} not found)"
    _, _, root = tiny_cotracker  # tiny weights into the full-size architecture: a clear error
    with pytest.raises((ValueError, RuntimeError)):
        build_cotracker(load_eval_config(None, [f"vbench.weights.cotracker2={root / 'cotracker-tiny.pth'}"]))
