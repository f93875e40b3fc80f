"""Curation config: dataclasses hold the defaults; YAML files and `--set key=value` override them.

configs/curate.yaml is these defaults written out (`vidmill config`); a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidmill.pipeline.checks import ConfigError


@dataclass
class SourceConfig:
    extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".mpg", ".flv"]
    )
    recursive: bool = True
    storage_options: dict = field(default_factory=dict)  # passed to fsspec (e.g. endpoint_url, anon)


@dataclass
class DecodeConfig:
    threads: int = 0  # 0: let FFmpeg pick; decoding uses frame + slice threads
    tap_fps: float = 2.0  # frame taps for the scoring stages
    tap_short_side: int = 256
    segment_s: float = 300.0  # inputs longer than 1.5x this are analysed in ranges by several actors; 0: off
    input_timeout_s: float = 600.0  # a hung or runaway decode becomes an error row ...
    timeout_s_per_gb: float = 600.0  # ... after input_timeout_s plus this per GB of input (long videos)

    def input_deadline_s(self, size_bytes: int) -> float:
        return self.input_timeout_s + self.timeout_s_per_gb * size_bytes / 1e9


@dataclass
class ShotConfig:
    detector: str = "adaptive"  # adaptive | content
    min_scene_len: int = 15  # frames
    adaptive_threshold: float = 2.0
    min_content_val: float = 10.0
    window_width: int = 2
    content_threshold: float = 27.0
    luma_only: bool = False
    frame_scaling: str = "exact"  # exact: frames as PySceneDetect prepares them, same cuts; fast: swscale (opt-in)


@dataclass
class SpanConfig:
    min_s: float = 2.0
    max_s: float = 10.0
    trim_s: float = 0.25
    min_short_side: int = 256


@dataclass
class TranscodeConfig:
    fps: float = 24.0
    short_side: int = 480  # never upscales
    codec: str = "libx264"
    crf: int = 23
    preset: str = "veryfast"
    clips_per_task: int = 8
    audio: str = "drop"  # drop (video-only clips) | aac (the span's audio re-encoded, sample-accurate)


@dataclass
class ShardConfig:
    max_bytes: int = 500 * 1024 * 1024
    max_samples: int = 1000


@dataclass
class OutputConfig:
    # passed to fsspec for OUTPUT (e.g. endpoint_url, client_kwargs); workers get the same. Secrets belong in
    # the environment (AWS_ACCESS_KEY_ID, ...): config values are copied into run.json.
    storage_options: dict = field(default_factory=dict)


@dataclass
class QualityScoring:
    enabled: bool = True


@dataclass
class MotionScoring:
    enabled: bool = True
    method: str = "dis"  # dis (OpenCV DIS optical flow) | farneback
    dis_preset: str = "ultrafast"  # ultrafast | fast | medium
    short_side: int = 256  # flow is computed on the 2 fps taps at this size
    pyramid_levels: int = 4  # farneback only


@dataclass
class OcrScoring:
    enabled: bool = True
    backend: str = "rapidocr"  # rapidocr (PP-OCR ONNX models shipped in the package) | paddleocr
    model_dir: str = ""  # paddleocr: local directory holding det/ and rec/ model dirs
    fps: float = 1.0
    det_limit_side: int = 256  # detection short side; the taps are tap_short_side, so no upscaling
    det_box_thresh: float = 0.6
    min_chars: int = 2  # a box is text when it reads at least this many letters/digits ...
    min_confidence: float = 0.6  # ... with this recognition confidence
    persist_iou: float = 0.9
    unchanged_max: float = 0.001  # a frame this little changed (pixel fraction) since the last read keeps its boxes
    detail_short_side: int = 720  # small text: likely taps are also kept at this short side (<= source); 0: off
    detail_line_min: float = 0.02  # text-line likelihood at tap resolution that sends a tap to detail OCR
    detail_read_max: int = 4  # detail copies: new boxes recognised per frame (the rest take their majority verdict)


@dataclass
class AestheticScoring:
    enabled: bool = True
    clip_arch: str = "ViT-L-14"  # an open_clip model name, or a local JSON architecture config
    clip_weights: str = ""  # local open_clip checkpoint; empty: not_scored
    head_weights: str = ""  # local LAION aesthetic MLP state dict (768-1024-128-64-16-1)
    device: str = "auto"  # auto: cuda when present


class _WithFilterSections:
    """A config group (scoring, thresholds) that also holds a section per registered filter outside this
    file: set as attributes (`config.scoring.<name>`), added to to_dict, given in YAML like any section."""

    group = ""

    def __post_init__(self) -> None:
        for name, cls in filter_sections(type(self)).items():
            setattr(self, name, cls())


def filter_sections(cls: type) -> dict[str, type]:
    group = getattr(cls, "group", "")
    if not group:
        return {}
    from vidmill.pipeline.scoring.registry import config_sections

    return config_sections(group, {f.name for f in dataclasses.fields(cls)})


@dataclass
class ScoringConfig(_WithFilterSections):
    group = "scoring"
    quality: QualityScoring = field(default_factory=QualityScoring)
    motion: MotionScoring = field(default_factory=MotionScoring)
    ocr: OcrScoring = field(default_factory=OcrScoring)
    aesthetic: AestheticScoring = field(default_factory=AestheticScoring)
    clips_per_task: int = 4  # small batches let every scorer actor work on one long input at once
    cascade: bool = False  # OCR + aesthetic skip clips that quality / motion already reject (docs/cascade.md)


@dataclass
class Thresholds(_WithFilterSections):
    """Only these decide `kept`; changing them and re-running recomputes no score."""

    group = "thresholds"

    sharpness_min: float = 10.0
    brightness_min: float = 0.06
    brightness_max: float = 0.94
    colourfulness_min: float = 0.0
    motion_min: float = 0.0002  # mean flow / diagonal per 0.5 s; below: too static (calibrated on samples)
    motion_max: float = 0.08  # above is too shaky / too fast
    text_area_max: float = 0.05  # largest text-area ratio in any sampled frame
    text_persistent_area_max: float = 0.02  # overlays, logos, watermarks
    aesthetic_min: float = 4.5  # applied only when aesthetic is scored
    dedup: bool = True
    phash_distance_max: int = 10  # bits out of 64, each of the key frames
    lsh_bands: int = 8
    clip_cosine_min: float = 0.98


@dataclass
class CaptionConfig:
    enabled: bool = True
    backend: str = "signals"  # signals (no model) | openai (any OpenAI-compatible endpoint) | vllm (own servers)
    fps: float = 2.0  # frames per second sent to the model
    short_side: int = 336
    model: str = ""  # vllm: local model path; openai: the served model name
    base_url: str = "http://127.0.0.1:8000"  # openai backend
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    concurrency: int = 32
    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0
    temperature: float = 0.1
    top_p: float = 0.001
    repetition_penalty: float = 1.05
    max_tokens: int = 512
    min_tokens: int = 16
    vllm_command: list[str] = field(default_factory=lambda: [
        "vllm", "serve", "{model}", "--port", "{port}", "--host", "127.0.0.1", "--tensor-parallel-size", "{tp}",
        "--limit-mm-per-prompt", '{"image": 32}'])
    tensor_parallel: int = 1
    health_timeout_s: float = 900.0
    clips_per_task: int = 64

    def fingerprint(self) -> str:
        from vidmill.pipeline.captions.prompt import PROMPT

        keys = (self.backend, self.model, self.fps, self.short_side, self.temperature, self.top_p,
                self.repetition_penalty, self.max_tokens, self.min_tokens, PROMPT)
        return json.dumps(keys)


@dataclass
class StageResources:
    """What one actor of a stage reserves. Reservations are for placement only (real CPU use is not
    capped); the defaults add up to under 2 CPUs, so the default config fits a 2-core machine."""

    num_cpus: float = 0.25
    num_gpus: float = 0.0
    concurrency: int = 2


@dataclass
class RayConfig:
    analyze: StageResources = field(default_factory=StageResources)
    transcode: StageResources = field(default_factory=StageResources)
    quality: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.125, concurrency=1))
    motion: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.125, concurrency=1))
    ocr: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.25, concurrency=2))
    aesthetic: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.125, concurrency=1))
    dedup: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.125, concurrency=2))
    caption: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.25, concurrency=2))


@dataclass
class CurateConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    spans: SpanConfig = field(default_factory=SpanConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for group in ("scoring", "thresholds"):
            value = getattr(self, group)
            for name in filter_sections(type(value)):
                data[group][name] = dataclasses.asdict(getattr(value, name))
        return data

    def fingerprint(self, *sections: str) -> str:
        """Stable text of the named sections: work done under another fingerprint is redone.

        A setting added after outputs were first written is left out while it holds the value that
        reproduces the earlier behaviour (LEGACY), so work made before it existed resumes under that
        behaviour, and is redone under the new default.
        """
        data = self.to_dict()
        for key, (value, with_it) in LEGACY.items():
            section, *path = key.split(".")
            node = data[section]
            for part in path[:-1]:
                node = node[part]
            if node.get(path[-1]) == value:
                for dropped in (key, *with_it):
                    node.pop(dropped.rsplit(".", 1)[-1], None)
        return json.dumps({name: data[name] for name in sections}, sort_keys=True)


# setting -> (the value that reproduces the behaviour before it existed, settings that only matter with it)
LEGACY: dict[str, tuple[Any, tuple[str, ...]]] = {
    "transcode.audio": ("drop", ()),
    "shots.frame_scaling": ("fast", ()),
    "scoring.cascade": (False, ()),
    "scoring.ocr.detail_short_side": (0, ("scoring.ocr.detail_line_min", "scoring.ocr.detail_read_max")),
}


def _build(cls: type, values: dict[str, Any], where: str, found: list[str]) -> Any:
    """The dataclass `cls` from a mapping; unknown keys and wrong shapes go to `found`, not raised."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    sections = filter_sections(cls)
    kwargs, extra = {}, {}
    for key, value in values.items():
        if key in sections and key not in known:
            if not isinstance(value, dict):
                found.append(f"{where}{key} must be a mapping of settings, got {value!r}")
                continue
            extra[key] = _build(sections[key], value, f"{where}{key}.", found)
            continue
        if key not in known:
            found.append(f"unknown config key {where}{key!r}; known in {where.rstrip('.') or 'the top level'}: "
                         f"{', '.join(sorted([*known, *sections]))}")
            continue
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING \
            else known[key].default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                found.append(f"{where}{key} must be a mapping of settings, got {value!r}")
                continue
            kwargs[key] = _build(type(default), value, f"{where}{key}.", found)
        else:
            kwargs[key] = float(value) if isinstance(default, float) and type(value) is int else value
    built = cls(**kwargs)
    for key, section in extra.items():
        setattr(built, key, section)
    return built


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError([f"--set {dotted}: {part} is not a section"])
        node = child
    node[last] = value


def _yaml(text: str, where: str) -> Any:
    """YAML parsed, or one line with the position of the error."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{where}{position}: invalid YAML: {problem}"]) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CurateConfig:
    """Defaults, then the YAML file, then `key=value` overrides (values parsed as YAML), all checked.

    Raises ConfigError listing every problem (unknown keys, types, ranges, choices) at once.
    """
    from vidmill.pipeline.checks import problems

    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
        data = _yaml(text, str(path)) or {}
        if not isinstance(data, dict):
            raise ConfigError([f"{path}: a config file must hold a mapping of sections"])
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"--set takes key=value, got {item!r}"])
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), _yaml(raw, f"--set {key.strip()}"))
    found: list[str] = []
    config = _build(CurateConfig, data, "", found)
    found += problems(config)
    if found:
        raise ConfigError(found)
    return config


def dump_config(config: CurateConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
