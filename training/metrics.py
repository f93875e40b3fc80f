"""Step metrics: block-causal attention cost, FLOPs and MFU, and the RUN/metrics.jsonl + TensorBoard writer.

FLOPs of one training step (forward + backward = 3x forward):
- dense: 6 * tokens * (DiT parameters) (every parameter is used once per token in a matmul; the per-chunk
  conditioning MLPs are counted per token too, a slight over-count);
- self-attention: 12 * depth * heads * head_dim * pairs, where `pairs` is the number of visible
  (query, key) token pairs under the block-causal (windowed) mask: the lower block triangle, not N^2;
- text cross-attention is not counted (caption tokens are few).
MFU = FLOPs / (seconds * peak) with the peak bf16 dense rate of the GPU (H100/H200 989 TFLOP/s); on the
CPU MFU is not reported (null).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidmill.model.attention import TokenLayout
from vidmill.model.sizes import DiTConfig

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "H20": 148e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}


def attention_pairs(layout: TokenLayout, window: int | None = None) -> int:
    """Visible (query, key) pairs of a packed sequence under the block-causal mask (padding sees itself)."""
    ids = torch.stack([layout.sample_id, layout.chunk_id], 1)
    groups, counts = torch.unique(ids, dim=0, return_counts=True)
    total = 0
    per_sample: dict[int, dict[int, int]] = {}
    for (sample, chunk), count in zip(groups.tolist(), counts.tolist(), strict=True):
        if sample < 0:
            total += count
            continue
        per_sample.setdefault(sample, {})[chunk] = count
    for chunks in per_sample.values():
        for chunk, count in chunks.items():
            low = -(10**9) if window is None else chunk - window
            total += count * sum(c for j, c in chunks.items() if low <= j <= chunk)
    return total


def step_flops(cfg: DiTConfig, parameters: int, tokens: float, pairs: float) -> float:
    return 6.0 * tokens * parameters + 12.0 * cfg.depth * cfg.heads * cfg.head_dim * pairs


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


class MetricsWriter:
    """One JSON line per step in RUN/metrics.jsonl and the same scalars as TensorBoard events (rank 0 only)."""

    def __init__(self, run_dir: Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # drop lines a killed run wrote after its last checkpoint
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if _step_of(ln) is not None and _step_of(ln) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.file = open(self.path, "a")  # noqa: SIM115 (kept open for the run)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:  # tensorboard missing: jsonl still written
            self.tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self.tb.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict]:
    """RUN/metrics.jsonl rows; kind="train": step rows only, "eval": evaluation rows (evaluation/tail.py)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return rows if kind is None else [r for r in rows if r.get("kind", "train") == kind]
