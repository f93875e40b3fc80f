"""MUSIQ (Imaging Quality): a tiny random pyiqa MUSIQ (the real class at width 32, 2 layers) saved to a local
file and built through the config; checked against upstream's own construction
(`MUSIQ(pretrained_model_path=...)`, `training = False`), the long-side-512 resize without antialias, per-frame
scores averaged per video, the aggregate / 100, and the `not computed` reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pyiqa.archs.musiq_arch")

from vidmill.evaluation.config import load_eval_config  # noqa: E402
from vidmill.evaluation.video_io import write_video  # noqa: E402

TINY = {"hidden_size": 32, "mlp_dim": 64, "num_heads": 2, "num_layers": 2, "num_class": 1}


@pytest.fixture(scope="module")
def tiny_musiq(tmp_path_factory):
    from pyiqa.archs.musiq_arch import MUSIQ

    root = tmp_path_factory.mktemp("musiq")
    torch.manual_seed(0)
    model = MUSIQ(**TINY, pretrained=False)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)
        model.head.bias.fill_(50.0)  # SPAQ's MOS scale is ~0-100: keep the tiny net's scores in range
    path = root / "musiq_spaq_ckpt-358bb6af.pth"
    torch.save(model.state_dict(), path)
    (root / "tiny.json").write_text(json.dumps(TINY))
    config = load_eval_config(None, [f"vbench.weights.musiq={path}", f"vbench.arch.musiq={root / 'tiny.json'}"])
    return {"path": path, "config": config}


def upstream_musiq(path: Path):
    """VBench's construction: MUSIQ(pretrained_model_path=...) (pyiqa's own loader), then `training = False`."""
    from pyiqa.archs.musiq_arch import MUSIQ

    model = MUSIQ(pretrained_model_path=str(path), **TINY)
    model.training = False
    return model


def test_built_model_matches_upstreams_construction(tiny_musiq):
    from vidmill.evaluation.models_musiq import build_musiq, musiq_score_fn

    score = musiq_score_fn(build_musiq(tiny_musiq["config"]))
    reference = upstream_musiq(tiny_musiq["path"])
    torch.manual_seed(1)
    for shape in ((1, 3, 90, 512), (1, 3, 64, 96)):  # beyond both fixed scales (224, 384), and below them
        x = torch.rand(shape)
        with torch.no_grad():
            expected = reference(x)
        assert float(score(x)) == pytest.approx(float(expected), abs=1e-5)
    a, b = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96) * 0.2
    assert float(score(a)) != pytest.approx(float(score(b)), abs=1e-4)  # the network responds to its input


def test_spaq_architecture_is_pyiqas_default_with_one_output():
    from pyiqa.archs.musiq_arch import MUSIQ

    from vidmill.evaluation.models_musiq import musiq_kwargs

    kwargs = musiq_kwargs(load_eval_config())
    with torch.device("meta"):
        ours = MUSIQ(**kwargs, pretrained=False)
    assert ours.head.out_features == 1 and len(ours.transformer_encoder.transformer) == 14
    assert ours.embedding.out_features == 384 and ours.data_preprocess_opts["longer_side_lengths"] == [224, 384]
    with pytest.raises(ValueError, match="vbench.arch.musiq"):
        musiq_kwargs(load_eval_config(None, ["vbench.arch.musiq=musiq_koniq"]))


def gradient_video(path: Path, t: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(t * h + w)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    frames = np.stack([np.clip(base + rng.normal(0, 20, base.shape), 0, 255) for _ in range(t)]).astype(np.uint8)
    write_video(path, frames, 8.0)
    return frames


def test_imaging_quality_end_to_end_with_the_long_side_rule(tiny_musiq, tmp_path):
    from torchvision.transforms import functional as TF

    from vidmill.evaluation import vbench_i2v as vb
    from vidmill.evaluation import vbench_models as vm
    from vidmill.evaluation.vbench_runner import evaluate_vbench
    from vidmill.evaluation.video_io import bgr_to_rgb, read_video

    videos = tmp_path / "videos"
    gradient_video(videos / "wide.mp4", 3, 96, 544)  # long side 544 > 512: scaled to (90, 512), int truncation
    gradient_video(videos / "small.mp4", 2, 64, 96)  # long side <= 512: kept as is
    assert vb.longer_side_size(96, 544) == (90, 512) and vb.longer_side_size(64, 96) == (64, 96)
    probes = vm.build_probes(tiny_musiq["config"])
    assert probes.musiq is not None and "musiq" not in probes.reasons
    docs = [evaluate_vbench(videos, None, probes, dimensions=("imaging_quality",)) for _ in range(2)]
    entry = docs[0]["dimensions"]["imaging_quality"]
    assert entry["status"] == "ok" and entry["n_videos"] == 2 and 0.0 <= entry["score"] <= 1.0
    assert docs[1]["dimensions"]["imaging_quality"]["score"] == entry["score"]  # deterministic on re-run
    reference = upstream_musiq(tiny_musiq["path"])
    rows = {r["video"]: r["dimensions"]["imaging_quality"] for r in docs[0]["rows"]}
    per_video = []
    for name, size in (("small.mp4", (64, 96)), ("wide.mp4", (90, 512))):
        frames = vm.to_tensor(bgr_to_rgb(read_video(videos / name).frames))
        x = TF.resize(frames, list(size), antialias=False).float() / 255.0
        with torch.no_grad():
            value = float(np.mean([float(reference(x[i:i + 1])) for i in range(len(x))]))
        assert rows[name] == pytest.approx(value, abs=1e-4)  # per video: the 0-100 scale
        per_video.append(value)
        if name == "wide.mp4":
            with torch.no_grad():
                unresized, resized = float(reference(frames[:1].float() / 255.0)), float(reference(x[:1]))
            assert abs(unresized - resized) > 1e-4  # the resize happened
    assert entry["score"] == pytest.approx(np.mean(per_video) / 100.0, abs=1e-6)


def test_missing_musiq_weights_give_the_reason(tmp_path):
    from vidmill.evaluation.models_musiq import build_musiq
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench
    from vidmill.evaluation.weights import WeightsMissing

    with pytest.raises(WeightsMissing, match=r"^not computed: no weights \(vbench.weights.musiq is not set\)$"):
        build_musiq(load_eval_config())
    gradient_video(tmp_path / "v" / "x.mp4", 2, 32, 48)
    config = load_eval_config(None, [f"vbench.weights.musiq={tmp_path / 'musiq.pth'}"])
    doc = evaluate_vbench(tmp_path / "v", None, build_probes(config), dimensions=("imaging_quality",))
    assert doc["dimensions"]["imaging_quality"] == {
        "status": f"not computed: no weights (vbench.weights.musiq: {tmp_path / 'musiq.pth'} not found)",
        "score": None}
    assert doc["totals"]["quality"]["score"] is None


def test_checkpoint_of_another_shape_is_an_error(tiny_musiq):
    from vidmill.evaluation.models_musiq import build_musiq

    config = load_eval_config(None, [f"vbench.weights.musiq={tiny_musiq['path']}"])  # tiny file, full-size arch
    with pytest.raises((ValueError, RuntimeError)):
        build_musiq(config)


def test_cli_imaging_quality_from_set_keys(tiny_musiq, tmp_path):
    from vidmill.cli import main

    gradient_video(tmp_path / "v" / "x.mp4", 2, 48, 64)
    out = tmp_path / "r.json"
    arch = tiny_musiq["config"]["vbench"]["arch"]["musiq"]
    assert main(["eval", "vbench", "--videos", str(tmp_path / "v"), "--out", str(out),
                 "--set", f"vbench.weights.musiq={tiny_musiq['path']}", "--set", f"vbench.arch.musiq={arch}"]) == 0
    doc = json.loads(out.read_text())
    assert doc["dimensions"]["imaging_quality"]["status"] == "ok"
    assert doc["totals"]["quality"]["includes"] == ["imaging_quality"]
    assert doc["dimensions"]["i2v_background"]["status"] == (
        "not computed: no weights (vbench.weights.dreamsim is not set)")


def test_without_pyiqa_the_reason_says_so(tiny_musiq, monkeypatch):
    import sys

    from vidmill.evaluation.models_musiq import build_musiq
    from vidmill.evaluation.weights import WeightsMissing

    monkeypatch.setitem(sys.modules, "pyiqa.archs.musiq_arch", None)  # as if pyiqa were not installed
    with pytest.raises(WeightsMissing, match=r"^not computed: model not available \(pyiqa's MUSIQ does not import"):
        build_musiq(tiny_musiq["config"])
