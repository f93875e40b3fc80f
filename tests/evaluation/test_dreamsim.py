"""DreamSim (I2V-Background): a tiny random ensemble of the real architectures (the `dreamsim` package's DINO
VisionTransformer, its CLIP/OpenCLIP-as-DINO loaders, LoRA adapters written by peft), saved in upstream's cache_dir
layout and built through vidmill's offline loader from the config.

Tiny: the package's `vit_base` (ViT-B, 86M parameters, hard-coded in its loaders) is swapped for the same
VisionTransformer constructor at width 32 (12 blocks: the ensemble reads DINO's block 11). Everything else is the
production path. The embedding is checked against a hand computation that merges the LoRA deltas itself.
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dreamsim")
pytest.importorskip("peft")

from dreamsim.feature_extraction.vision_transformer import vit_base as package_vit_base  # noqa: E402  (before patches)

from vidmill.evaluation.config import load_eval_config  # noqa: E402
from vidmill.evaluation.video_io import write_video  # noqa: E402

WIDTH, PROJ, RANK, ALPHA = 32, 8, 4, 8
HEAD_KEYS = ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
             "last_layer.weight")


def tiny_vit_base(patch_size=16, **kwargs):
    from dreamsim.feature_extraction.vision_transformer import VisionTransformer
    from torch import nn

    return VisionTransformer(patch_size=patch_size, embed_dim=WIDTH, depth=12, num_heads=2, mlp_ratio=4,
                             qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


def randomise(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.2)
    return module


@pytest.fixture(scope="module")
def tiny_dreamsim(tmp_path_factory):
    """The folder layout of upstream's cache_dir, with tiny random weights. The package's vit_base stays tiny
    for the whole module (the patch is undone at teardown)."""
    from dreamsim.config import dreamsim_args
    from dreamsim.feature_extraction import load_clip_as_dino, load_open_clip_as_dino, vision_transformer
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from vidmill.evaluation.models_dreamsim import HUB_DINO, offline_dreamsim

    root = tmp_path_factory.mktemp("dreamsim")
    (root / "checkpoints").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for module in (vision_transformer, load_clip_as_dino, load_open_clip_as_dino):
            mp.setattr(module, "vit_base", tiny_vit_base)
        torch.manual_seed(0)
        torch.save(randomise(tiny_vit_base(16, num_classes=0)).state_dict(), root / HUB_DINO)
        torch.save({"student": {f"module.head.{k}": torch.randn(4, 4) for k in HEAD_KEYS}},
                   root / "dino_vitb16_pretrain.pth")
        for name in ("clip_vitb16_pretrain.pth.tar", "open_clip_vitb16_pretrain.pth.tar"):
            vit = tiny_vit_base(16)
            vit.pos_drop = nn.LayerNorm(WIDTH)  # the converted CLIP's ln_pre, as the package expects
            state = randomise(vit).state_dict() | {"proj": torch.randn(WIDTH, PROJ)}
            torch.save({"state_dict": state}, root / name)
        with offline_dreamsim(root / HUB_DINO), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated")
            base = PerceptualModel(**dreamsim_args["model_config"]["ensemble"], device="cpu", load_dir=str(root),
                                   normalize_embeds=True)
        lora = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                                               target_modules=["qkv"]))
        with torch.no_grad():
            for name, p in lora.named_parameters():
                if "lora_B" in name:  # peft starts B at zero (a no-op adapter): make it count
                    p.normal_(0.0, 0.1)
        lora.save_pretrained(str(root / "ensemble_lora"))
        config = load_eval_config(None, [f"vbench.weights.dreamsim={root}"])
        yield {"root": root, "config": config}


def reference_embed(root: Path, x: torch.Tensor) -> torch.Tensor:
    """The ensemble by hand: LoRA deltas merged into qkv, DINO block-11 CLS, CLIP/OpenCLIP embeddings @ proj,
    concatenated, minus the row mean, over the row norm (dreamsim's normalize_embedding)."""
    from dreamsim.feature_extraction.load_clip_as_dino import load_clip_as_dino
    from dreamsim.feature_extraction.load_open_clip_as_dino import load_open_clip_as_dino
    from safetensors.torch import load_file

    from vidmill.evaluation.models_dreamsim import HUB_DINO
    from vidmill.evaluation.vbench_models import CLIP_NORM, IMAGENET, _normalize

    adapters = load_file(str(root / "ensemble_lora" / "adapter_model.safetensors"))
    dino = tiny_vit_base(16, num_classes=0)
    dino.load_state_dict(torch.load(root / HUB_DINO, weights_only=True))
    clip, clip_proj = load_clip_as_dino(16, str(root))
    open_clip, open_proj = load_open_clip_as_dino(16, str(root))
    for index, vit in enumerate((dino, clip, open_clip)):
        for block in range(12):
            prefix = f"base_model.model.extractor_list.{index}.model.blocks.{block}.attn.qkv"
            delta = adapters[f"{prefix}.lora_B.weight"] @ adapters[f"{prefix}.lora_A.weight"]
            with torch.no_grad():
                vit.blocks[block].attn.qkv.weight += ALPHA / RANK * delta
    with torch.no_grad():
        tokens = dino.prepare_tokens(_normalize(x, IMAGENET))
        for block in dino.blocks:
            tokens = block(tokens)
        feats = torch.cat([tokens[:, 0], clip(_normalize(x, CLIP_NORM)) @ clip_proj,
                           open_clip(_normalize(x, CLIP_NORM)) @ open_proj], dim=-1)
    feats = feats - feats.mean(dim=1, keepdim=True)
    return feats / feats.norm(dim=1, keepdim=True)


def test_embedding_is_the_lora_ensemble_of_upstream(tiny_dreamsim):
    from vidmill.evaluation.models_dreamsim import build_dreamsim, dreamsim_embed_fn

    model = build_dreamsim(tiny_dreamsim["config"])
    embed = dreamsim_embed_fn(model)
    torch.manual_seed(1)
    x = torch.rand(3, 3, 224, 224)
    out = embed(x)
    assert out.shape == (3, WIDTH + 2 * PROJ)
    assert torch.allclose(out, reference_embed(tiny_dreamsim["root"], x), atol=1e-5)
    assert torch.allclose(embed(x[:1]), out[:1], atol=1e-5)  # upstream embeds one frame at a time
    with model.disable_adapter(), torch.no_grad():
        assert not torch.allclose(model.embed(x), out, atol=1e-3)  # the adapters were loaded and matter


def test_missing_files_are_reported_never_downloaded(tiny_dreamsim, tmp_path, monkeypatch):
    import shutil

    from vidmill.evaluation.models_dreamsim import build_dreamsim
    from vidmill.evaluation.weights import WeightsMissing

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load", no_network)
    with pytest.raises(WeightsMissing, match=r"^not computed: no weights \(vbench.weights.dreamsim is not set\)$"):
        build_dreamsim(load_eval_config())
    partial_dir = tmp_path / "cache"
    shutil.copytree(tiny_dreamsim["root"], partial_dir)
    shutil.rmtree(partial_dir / "ensemble_lora")
    config = load_eval_config(None, [f"vbench.weights.dreamsim={partial_dir}"])
    with pytest.raises(WeightsMissing, match="lacks ensemble_lora/adapter_config.json, ensemble_lora/adapter_model"):
        build_dreamsim(config)
    shutil.copytree(tiny_dreamsim["root"] / "ensemble_lora", partial_dir / "ensemble_lora")
    (partial_dir / "checkpoints" / "dino_vitbase16_pretrain.pth").unlink()
    with pytest.raises(WeightsMissing, match="checkpoints/dino_vitbase16_pretrain.pth not found"):
        build_dreamsim(config)
    # the DINO backbone may come from vbench.weights.dino_vitb16 instead (the same official file)
    backbone = tiny_dreamsim["root"] / "checkpoints" / "dino_vitbase16_pretrain.pth"
    fallback = load_eval_config(None, [f"vbench.weights.dreamsim={partial_dir}",
                                       f"vbench.weights.dino_vitb16={backbone}"])
    assert build_dreamsim(fallback) is not None


@pytest.mark.filterwarnings("ignore:Unexpected keyword arguments")
def test_upstream_zip_format_bin_adapter_and_older_config(tiny_dreamsim, tmp_path):
    """The published zip may carry adapter_model.bin and an adapter_config.json from an older peft."""
    import shutil

    from safetensors.torch import load_file

    from vidmill.evaluation.models_dreamsim import build_dreamsim, dreamsim_embed_fn

    root = tmp_path / "zip"
    shutil.copytree(tiny_dreamsim["root"], root)
    lora = root / "ensemble_lora"
    torch.save(load_file(str(lora / "adapter_model.safetensors")), lora / "adapter_model.bin")
    (lora / "adapter_model.safetensors").unlink()
    cfg = json.loads((lora / "adapter_config.json").read_text())
    keep = ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "target_modules", "fan_in_fan_out",
            "inference_mode", "init_lora_weights", "modules_to_save", "base_model_name_or_path", "task_type")
    old_keys = {"enable_lora": None, "merge_weights": False}  # fields of early peft releases, ignored by newer ones
    (lora / "adapter_config.json").write_text(json.dumps({k: cfg[k] for k in keep if k in cfg} | old_keys))
    x = torch.rand(2, 3, 224, 224)
    model = build_dreamsim(load_eval_config(None, [f"vbench.weights.dreamsim={root}"]))
    assert torch.allclose(dreamsim_embed_fn(model)(x), reference_embed(tiny_dreamsim["root"], x), atol=1e-5)


def test_dreamsim_preprocessing_is_a_square_bicubic_resize_to_unit_range():
    from vidmill.evaluation.vbench_models import dreamsim_transform, to_tensor

    frames = np.zeros((2, 60, 200, 3), np.uint8)
    frames[:, :, 100:] = 255  # right half white: a square resize keeps the halves, a centre crop would not
    x = dreamsim_transform(to_tensor(frames))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert float(x[..., :100].max()) <= 0.01 and float(x[..., 124:].min()) >= 0.99
    assert float(x.min()) >= -0.1 and float(x.max()) <= 1.1  # bicubic overshoots slightly; no normalisation


def still_video(path: Path, t: int = 4, h: int = 64, w: int = 96) -> np.ndarray:
    """A bright square drifting one pixel per frame over a gradient (BGR, as written)."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 1] = np.linspace(0, 180, w, dtype=np.uint8)[None, None]
    for i in range(t):
        frames[i, 20:44, 10 + i:34 + i] = 240
    write_video(path, frames, 8.0)
    return frames


def test_i2v_background_end_to_end_through_the_runner(tiny_dreamsim, tmp_path):
    import cv2

    from vidmill.evaluation import vbench_i2v as vb
    from vidmill.evaluation import vbench_models as vm
    from vidmill.evaluation.vbench_runner import _image_for, evaluate_vbench
    from vidmill.evaluation.video_io import bgr_to_rgb, read_video

    videos, images = tmp_path / "videos", tmp_path / "images"
    images.mkdir()
    first = still_video(videos / "drift.mp4")
    cv2.imwrite(str(images / "drift.png"), first[0])
    still_video(videos / "no-image.mp4")
    probes = vm.build_probes(tiny_dreamsim["config"])
    assert probes.dreamsim is not None and "dreamsim" not in probes.reasons
    docs = [evaluate_vbench(videos, images, probes, dimensions=("i2v_background",)) for _ in range(2)]
    entry = docs[0]["dimensions"]["i2v_background"]
    assert entry["status"] == "ok" and entry["n_videos"] == 1 and 0.0 <= entry["score"] <= 1.0
    assert docs[1]["dimensions"]["i2v_background"]["score"] == entry["score"]  # deterministic on re-run
    rows = {r["video"]: r["dimensions"]["i2v_background"] for r in docs[0]["rows"]}
    assert rows["no-image.mp4"].startswith("skipped: no conditioning image")
    # by hand: upstream's loop, one frame at a time, features L2-normalised, cosines clamped at 0
    frames = bgr_to_rgb(read_video(videos / "drift.mp4").frames)
    with torch.no_grad():
        img = probes.dreamsim(vm.dreamsim_image_transform(_image_for(videos / "drift.mp4", images)))
        feats = torch.cat([probes.dreamsim(f[None]) for f in vm.dreamsim_transform(vm.to_tensor(frames))])
    assert rows["drift.mp4"] == pytest.approx(vb.i2v_consistency(img[0], feats), abs=1e-6)
    assert docs[0]["totals"]["i2v"]["includes"] == ["i2v_background"]


def test_runner_reports_the_reason_without_dreamsim_weights(tmp_path):
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    still_video(tmp_path / "v" / "x.mp4")
    config = load_eval_config(None, [f"vbench.weights.dreamsim={tmp_path / 'nothing'}"])
    doc = evaluate_vbench(tmp_path / "v", None, build_probes(config), dimensions=("i2v_background",))
    assert doc["dimensions"]["i2v_background"] == {
        "status": f"not computed: no weights (vbench.weights.dreamsim: {tmp_path / 'nothing'} not found)",
        "score": None}


def test_one_dino_file_fits_both_dreamsim_and_subject_consistency():
    """DreamSim's DINO is torch.hub's `vit_base(patch_size=16, num_classes=0)`; VBench's DINO (vbench_models) is timm's
    ViT-B/16 loading the same `dino_vitbase16_pretrain.pth`: same keys and shapes, so either config key can serve."""
    import timm

    hub = package_vit_base(patch_size=16, num_classes=0).state_dict()  # DINO's init reads .item(): not on meta
    with torch.device("meta"):
        ours = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).state_dict()
    assert {k: v.shape for k, v in hub.items()} == {k: v.shape for k, v in ours.items()}


def test_without_the_dreamsim_package_the_reason_says_so(tiny_dreamsim, monkeypatch):
    import sys

    from vidmill.evaluation.models_dreamsim import build_dreamsim
    from vidmill.evaluation.weights import WeightsMissing

    monkeypatch.setitem(sys.modules, "dreamsim", None)  # as if the package were not installed
    with pytest.raises(WeightsMissing, match=r"^not computed: model not available \(the dreamsim package"):
        build_dreamsim(tiny_dreamsim["config"])
