"""Motion Smoothness with the hand-written AMT-S (evaluation/models_amt.py).

- The full-size architecture has exactly the state-dict layout of upstream's `amt-s.pth` (key names and shapes from
  vbench 0.1.5's AMT-S `Model()`, stored in data/amt_s_keys.json) and loads such a checkpoint strictly through
  the config and the one local-weights loader.
- A tiny random AMT of the same code, saved to a file and loaded through the config, runs the dimension end to end.
- Hand-checked: odd frames against the interpolation of their even neighbours, x255 truncation to uint8,
  replicate padding to multiples of 16 split as upstream's InputPadder, and missing weights reported, not scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidmill.evaluation import vbench_i2v as vb
from vidmill.evaluation.config import load_eval_config
from vidmill.evaluation.models_amt import AMT, AMTConfig, interpolator, pad_amounts
from vidmill.evaluation.video_io import bgr_to_rgb, read_video, write_video

UPSTREAM_KEYS = json.loads((Path(__file__).parent / "data" / "amt_s_keys.json").read_text())["keys"]
TINY = {"channels": [4, 6, 8, 10], "skip_channels": 4, "corr_encoder_dims": [8, 16, 24], "corr_feature_dim": 8,
        "hidden_dim": 8, "flow_dim": 4, "corr_dim": 8, "fc_dim": 8}


def test_full_size_layout_is_upstreams_and_loads_strictly(tmp_path):
    from vidmill.evaluation.vbench_models import build_amt

    model = AMT()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == UPSTREAM_KEYS
    assert sum(v.numel() for v in model.state_dict().values()) == 2_990_543  # AMT-S: ~3.0 M parameters
    torch.manual_seed(0)
    state = {k: torch.randn(shape) for k, shape in UPSTREAM_KEYS.items()}
    torch.save({"state_dict": state, "epoch": 300}, tmp_path / "amt-s.pth")  # upstream's checkpoint wrapper
    built = build_amt(load_eval_config(None, [f"vbench.weights.amt_s={tmp_path / 'amt-s.pth'}"]))
    assert all(torch.equal(built.state_dict()[k], v) for k, v in state.items())
    # a checkpoint of another size does not fit: a clear error, never a silently partial model
    torch.save({"state_dict": AMT(AMTConfig(**TINY)).state_dict()}, tmp_path / "tiny.pth")
    with pytest.raises((ValueError, RuntimeError)):
        build_amt(load_eval_config(None, [f"vbench.weights.amt_s={tmp_path / 'tiny.pth'}"]))


class Constant(torch.nn.Module):
    """Returns a fixed function of the (padded) inputs, to check what `interpolator` does around the model."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, a, b, embt):
        assert embt.item() == 0.5 and a.shape[-2] % 16 == 0 and a.shape[-1] % 16 == 0
        return self.fn(a, b)


def test_interpolator_pads_truncates_and_unpads():
    assert pad_amounts(100, 70) == [5, 5, 6, 6] and pad_amounts(96, 33) == [7, 8, 0, 0]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    assert np.array_equal(interpolator(Constant(lambda x, y: x))(a, b), a)  # padding removed exactly
    # 127.9 / 255 -> x255 = 127.9 (float32) -> truncated to 127, not rounded to 128; clipped to [0, 255]
    out = interpolator(Constant(lambda x, y: torch.full_like(x, 127.9 / 255)))(a, b)
    assert out.dtype == np.uint8 and out.shape == a.shape and np.all(out == 127)
    assert np.all(interpolator(Constant(lambda x, y: torch.full_like(x, 2.0)))(a, b) == 255)


def test_odd_frames_against_interpolated_even_neighbours():
    frames = np.stack([np.full((2, 2, 3), 10 * i, np.uint8) for i in range(6)])  # 6 frames: odd 5 has no pair
    pairs = []

    def record(a, b):
        pairs.append((int(a[0, 0, 0]), int(b[0, 0, 0])))
        return np.full_like(a, int(a[0, 0, 0]) + 13)  # prediction = left neighbour + 13: off by 3 from 10 i

    score = vb.motion_smoothness(frames, record)
    assert pairs == [(0, 20), (20, 40)]  # frames 0-2 and 2-4 predict frames 1 and 3
    assert score == pytest.approx((255 - 3) / 255)


def tiny_checkpoint(root: Path) -> tuple[AMT, dict]:
    torch.manual_seed(0)
    model = AMT(AMTConfig(**TINY)).eval()
    torch.save({"state_dict": model.state_dict()}, root / "amt-tiny.pth")
    (root / "amt-tiny.json").write_text(json.dumps(TINY))
    return model, load_eval_config(None, [f"vbench.weights.amt_s={root / 'amt-tiny.pth'}",
                                          f"vbench.arch.amt_s={root / 'amt-tiny.json'}"])


def test_motion_smoothness_end_to_end_with_a_tiny_amt(tmp_path):
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    model, config = tiny_checkpoint(tmp_path)
    frames = np.zeros((5, 120, 136, 3), np.uint8)  # padded to 128 x 144: 4 correlation levels need >= 128 px
    frames[..., 1] = np.linspace(0, 200, 136, dtype=np.uint8)[None, None]
    for i in range(5):
        frames[i, 40:80, 10 + 8 * i:50 + 8 * i] = 255
    write_video(tmp_path / "v" / "box.mp4", frames, 8.0)
    probes = build_probes(config)
    assert probes.interpolate is not None and "interpolate" not in probes.reasons
    doc = evaluate_vbench(tmp_path / "v", None, probes, dimensions=("motion_smoothness",))
    entry = doc["dimensions"]["motion_smoothness"]
    assert entry["status"] == "ok" and entry["n_videos"] == 1

    # by hand with the in-memory model: pad, one pass at t = 0.5, truncate, compare odd frames 1 and 3
    rgb = bgr_to_rgb(read_video(tmp_path / "v" / "box.mp4").frames)
    diffs = []
    for i in (1, 3):
        x0, x1 = (torch.nn.functional.pad(torch.from_numpy(rgb[j]).permute(2, 0, 1)[None] / 255.0, [4, 4, 4, 4],
                                          mode="replicate") for j in (i - 1, i + 1))
        with torch.no_grad():
            mid = model(x0, x1, torch.full((1, 1, 1, 1), 0.5))[0, :, 4:124, 4:140]
        mid = (mid * 255).permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)
        diffs.append(np.abs(mid.astype(int) - rgb[i]).mean())
    assert entry["score"] == pytest.approx((255 - np.mean(diffs)) / 255, abs=1e-9)
    assert 0.0 < entry["score"] < 1.0


def test_missing_amt_weights_are_not_computed(tmp_path):
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    write_video(tmp_path / "v" / "x.mp4", np.zeros((3, 16, 16, 3), np.uint8), 8.0)
    probes = build_probes(load_eval_config())
    doc = evaluate_vbench(tmp_path / "v", None, probes, dimensions=("motion_smoothness",))
    assert probes.interpolate is None
    assert doc["dimensions"]["motion_smoothness"]["status"] == (
        "not computed: no weights (vbench.weights.amt_s is not set)")
    assert doc["dimensions"]["motion_smoothness"]["score"] is None
