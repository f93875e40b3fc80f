"""What the loader hands the trainer: latent samples packed into fixed token budgets.

The contract between the data side (training/data/) and the objectives (training/objectives/):
an objective receives one `PackedBatch` per rank per step and builds the model's packed input from
its samples with `vidmill.model.dit.pack` (choosing each chunk's noise level itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LatentSample:
    """One training sample: whole chunks of one clip's latent (a long clip may be split at chunk edges)."""

    key: str  # unique in the epoch: clip_id, plus "@<first_chunk>" when the clip was split
    latent: torch.Tensor  # [C, T, H, W] float32, scaled latent; T is a multiple of the DiT's chunk_frames
    captions: list[torch.Tensor | None]  # one per chunk: caption token features [L, text_dim], or None
    first_chunk: int = 0  # index of this sample's first chunk within the clip

    @property
    def n_chunks(self) -> int:
        return len(self.captions)


@dataclass
class PackedBatch:
    """One rank's samples for one step, packed into a token budget."""

    samples: list[LatentSample]
    tokens: int  # real latent tokens (after patchify) in the pack
    budget: int  # token budget the pack was filled to (tokens + padding)
    attention_cost: int  # visible (query, key) token pairs under the block-causal mask
    stats: dict[str, float] = field(default_factory=dict)  # loader metrics for this step (padding %, ...)
