"""The caption stage: kept clips -> per-second captions, with the configured backend.

Frames come from the clip as transcoded (what training will see), sampled at `captions.fps` and scaled
to `captions.short_side`. Results are dicts that curate.py stores one file per clip as they arrive.
An item names its clip file in OUTPUT (`path`); the worker reads it from the Store itself, so the
driver sends paths, not clip bytes (`mp4` holds bytes only where there is no Store: tests, tools).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from vidmill.pipeline.analysis.decode import VideoReader, scaled_to
from vidmill.pipeline.captions.client import CaptionRequest, OpenAIClient, VLLMServer
from vidmill.pipeline.captions.prompt import build_prompt, caption_json, signals_caption
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.outcomes import CAPTION_ERROR
from vidmill.pipeline.output.store import Store
from vidmill.pipeline.records import ClipRecord
from vidmill.pipeline.stage import Stage


@dataclass(frozen=True)
class CaptionItem:
    clip_id: str
    duration_s: float
    mp4: bytes | None = None
    camera_motion: str | None = None
    text_area_max: float | None = None
    path: str | None = None  # the clip file, relative to the stage's Store


class CaptionClips(Stage):
    name = "caption"

    def __init__(self, config: CurateConfig, store: Store | None = None):
        super().__init__(config.ray.caption)
        self.cfg, self.store = config.captions, store
        self.client: OpenAIClient | None = None
        self.server: VLLMServer | None = None
        if self.cfg.backend not in ("signals", "openai", "vllm"):
            raise ValueError(f"unknown caption backend {self.cfg.backend!r}; choose signals, openai or vllm")

    @property
    def captioner(self) -> str:
        return "signals" if self.cfg.backend == "signals" else f"{self.cfg.backend}:{self.cfg.model}"

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.backend == "signals" or self.client is not None:
            return
        base_url = cfg.base_url
        if cfg.backend == "vllm":
            self.server = VLLMServer(cfg.vllm_command, cfg.model, cfg.tensor_parallel, cfg.health_timeout_s)
            self.server.start()
            base_url = self.server.base_url
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens,
                    "repetition_penalty": cfg.repetition_penalty, "min_tokens": cfg.min_tokens}
        self.client = OpenAIClient(base_url, cfg.model or "default", api_key_env=cfg.api_key_env,
                                   concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, retries=cfg.retries,
                                   backoff_s=cfg.backoff_s, sampling=sampling,
                                   on_connection_error=self.server.ensure_running if self.server else None)

    def frames(self, item: CaptionItem) -> list[tuple[float, np.ndarray]]:
        out, next_t = [], 0.0
        mp4 = item.mp4 if item.mp4 is not None else self.store.get(item.path)
        with VideoReader(io.BytesIO(mp4)) as reader:
            probe = reader.probe
            size = scaled_to((probe.display_width, probe.display_height), short_side=self.cfg.short_side)
            for frame in reader.decoded():
                if frame.time_s >= next_t - 1e-6:
                    out.append((frame.time_s, frame.image(size)))
                    next_t += 1.0 / self.cfg.fps
        return out

    def process(self, batch: tuple[CaptionItem, ...]) -> list[dict[str, Any]]:
        if self.cfg.backend == "signals":
            return [self._signals(item) for item in batch]
        self.setup()
        if self.server is not None:
            self.server.ensure_running()
        requests = []
        for item in batch:
            frames = self.frames(item)
            jpegs = [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for _, img in frames]
            requests.append(CaptionRequest(item.clip_id, item.duration_s,
                                           build_prompt(item.duration_s, len(jpegs), self.cfg.fps), jpegs))
        return [{**r.__dict__, "captioner": self.captioner} for r in self.client.run(requests)]

    def _signals(self, item: CaptionItem) -> dict[str, Any]:
        caption = signals_caption(self.frames(item), item.duration_s,
                                  {"camera_motion": item.camera_motion, "text_area_max": item.text_area_max})
        return {"clip_id": item.clip_id, "caption": caption_json(caption), "error": None, "raw": None,
                "tokens_in": 0, "tokens_out": 0, "latency_s": 0.0, "attempts": 1, "repaired": [],
                "captioner": "signals"}

    def __del__(self):
        if self.server is not None:
            self.server.stop()


def apply_caption(clip: ClipRecord, result: dict[str, Any]) -> None:
    """A caption result onto its clip record; a clip without a valid caption is rejected (caption_error)."""
    caption = result.get("caption")
    clip.caption = caption["summary"] if caption else None
    clip.captions_per_second = [s["caption"] for s in caption["seconds"]] if caption else None
    clip.captioner = result.get("captioner")
    clip.caption_tokens_in, clip.caption_tokens_out = result.get("tokens_in"), result.get("tokens_out")
    clip.caption_latency_s = result.get("latency_s")
    clip.caption_error = None if caption else result.get("error")
    clip.caption_raw = None if caption else result.get("raw")
    if not caption:
        clip.reject(CAPTION_ERROR.name)
