from pathlib import Path

import pytest
import yaml

from vidmill.pipeline.config import CurateConfig, dump_config, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_configs_file_holds_the_defaults():
    assert yaml.safe_load((ROOT / "configs" / "curate.yaml").read_text()) == CurateConfig().to_dict()
    assert load_config(ROOT / "configs" / "curate.yaml") == CurateConfig()


def test_file_then_set_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("shots: {detector: content}\nspans: {max_s: 15}\n")
    config = load_config(path, ["spans.max_s=12.5", "shots.luma_only=true", "ray.analyze.concurrency=4"])
    assert config.shots.detector == "content"
    assert config.spans.max_s == 12.5 and isinstance(config.spans.max_s, float)
    assert config.shots.luma_only is True and config.ray.analyze.concurrency == 4
    assert load_config(None, ["spans.min_s=3"]).spans.min_s == 3.0
    assert "min_s: 3.0" in dump_config(load_config(None, ["spans.min_s=3"]))


@pytest.mark.parametrize("override, message", [
    ("spans.nope=1", "unknown config key spans.'nope'"),
    ("spans.min_s=abc", "spans.min_s must be a number"),
    ("shots.luma_only=maybe", "must be a boolean"),
    ("justakey", "--set takes key=value"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message.replace("'", ".").replace("(", r"\(")):
        load_config(None, [override])


def test_fingerprint_covers_only_named_sections():
    a, b = CurateConfig(), load_config(None, ["shards.max_samples=5"])
    assert a.fingerprint("shots", "spans") == b.fingerprint("shots", "spans")
    assert a.fingerprint("shards") != b.fingerprint("shards")
