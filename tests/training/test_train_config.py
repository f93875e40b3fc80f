"""Training configs: size names, YAML overrides, round trip through RUN/config.yaml, clear errors."""

from __future__ import annotations

import pytest
import torch
import yaml

from vidmill.training.config import RunConfig, from_dict, load_config


@pytest.mark.parametrize("name", ["tiny", "small", "4.5B", "24B"])
def test_every_size_round_trips_through_config_yaml(name, tmp_path):
    config = load_config(name)
    config.save(tmp_path / "config.yaml")
    again = from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == config and again.size.dit == config.size.dit


def test_yaml_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"size": "small", "dit": {"depth": 2}, "train": {"lr": 1e-3, "betas": [0.8, 0.9]},
                                    "objective": {"caption_dropout": 0.2}}))
    config = load_config(path)
    assert isinstance(config, RunConfig) and config.size.dit.depth == 2 and config.size.dit.hidden == 512
    assert config.train.lr == 1e-3 and config.train.betas == (0.8, 0.9) and config.objective.caption_dropout == 0.2
    path.write_text(yaml.safe_dump({"size": "tiny", "train": {"learning_rate": 1}}))
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown model size"):
        load_config("7B")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_published_sizes_build_on_meta_and_pick_fsdp():
    """The 4.5B and 24B DiTs build (on the meta device) at their sizes; `parallel: auto` shards them."""
    from vidmill.model.dit import DiT
    from vidmill.training.parallelize import DistInfo, resolve_mode

    for name, low, high in (("4.5B", 4.0e9, 5.5e9), ("24B", 20e9, 28e9)):
        with torch.device("meta"):
            dit = DiT(load_config(name).size.dit)
        n = sum(p.numel() for p in dit.parameters())
        assert low < n < high, (name, n)
        assert resolve_mode("auto", DistInfo(world_size=8), n) == "fsdp"
    assert resolve_mode("auto", DistInfo(world_size=8), 10**6) == "ddp"
    assert resolve_mode("fsdp", DistInfo(), 10**10) == "none"
