"""Flow matching with noise rising chunk by chunk (MAGI-1), loss on the noisy chunks only.

t = 0 is noise, t = 1 is clean: x_t = (1 - t) x0 + t x1, target v = x1 - x0 (training/schedule.py).

Noise levels of one sample (chunks 0..n-1), following the reference's inferred construction:
- the newest chunk k is the sample's last chunk with probability `last_chunk_prob`, otherwise uniform over
  the earlier ones (chunks after k are not fed: at inference a chunk not yet started is not in the pass);
- u0 ~ U[0, 1/W) (steady state of the pipelined sampler, W chunks in flight), or with probability
  `tail_prob` u0 ~ U[1/W, 1) (the end of a video, where no younger chunk exists);
- chunk j gets u_j = min(1, u0 + (k - j) / W); t_j = (u^2/3) / (1 - 2/3 u^2), the sampler's shifted grid;
- chunks with u_j = 1 are clean context: the clean latent at `clean_t` with the null caption (exactly how
  the sampler writes a finished chunk's keys/values), no loss.
So every t-vector of the staggered sampler (steps divisible by W, in_flight = W) lies in the support.

Guidance terms (reference: u, cp, ct): per sample, with probability `context_dropout` every noisy chunk
becomes its own sample with the null caption (own chunk only, null text: `u`); otherwise with probability
`caption_dropout` the captions are dropped (previous chunks, null text: `cp`); otherwise as is (`ct`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vidmill.model.attention import TokenLayout
from vidmill.model.dit import Packed, pack, patchify
from vidmill.model.sizes import DiTConfig
from vidmill.training.config import FlowMatchingConfig
from vidmill.training.data.sample import LatentSample, PackedBatch
from vidmill.training.metrics import attention_pairs


def shift(u: torch.Tensor) -> torch.Tensor:
    """The sampler's time shift (training/schedule.py time_grid): u -> (u^2/3) / (1 - 2/3 u^2)."""
    u = u.double()
    return ((u**2 / 3) / (1 - (2 / 3) * u**2)).float()


def pad_packed(p: Packed, n: int) -> Packed:
    """Append n padding tokens (sample id -1: they see only themselves, in one extra uncaptioned group)."""
    if n <= 0:
        return p
    dev = p.x.device
    group = len(p.group_t)
    minus = torch.full((n,), -1, dtype=torch.long, device=dev)
    zeros = torch.zeros(n, dtype=torch.long, device=dev)
    return replace(
        p, x=torch.cat([p.x, p.x.new_zeros(n, p.x.shape[1])]),
        layout=TokenLayout(torch.cat([p.layout.sample_id, minus]), torch.cat([p.layout.chunk_id, zeros])),
        pos=torch.cat([p.pos, p.pos.new_zeros(n, 3)]),
        group_index=torch.cat([p.group_index, torch.full((n,), group, dtype=torch.long, device=dev)]),
        group_layout=p.group_layout.cat(TokenLayout(minus[:1], zeros[:1])),
        group_t=torch.cat([p.group_t, p.group_t.new_zeros(1)]),
        group_caption=torch.cat([p.group_caption, torch.zeros(1, dtype=torch.bool, device=dev)]))


@dataclass
class NoiseLevels:
    newest: int  # k: chunks 0..k are fed
    u: torch.Tensor  # [k + 1] float64; 1.0 = clean context
    t: torch.Tensor  # [k + 1] float32; clean chunks at clean_t
    noisy: torch.Tensor  # [k + 1] bool


class FlowMatching:
    name = "flow_matching"

    def __init__(self, dit: DiTConfig, config: FlowMatchingConfig, last_chunk_prob: float = 0.5,
                 pad_to_budget: bool = False):
        """pad_to_budget: feed padding tokens up to the batch's budget (kernel block sizes; the padded baseline)."""
        self.dit, self.config, self.last_chunk_prob = dit, config, last_chunk_prob
        self.pad_to_budget = pad_to_budget
        self.device = torch.device("cpu")

    def attach(self, trainer) -> None:
        self.device = trainer.device

    def noise_levels(self, n_chunks: int, rng: torch.Generator) -> NoiseLevels:
        c = self.config
        w = c.window_chunks
        draws = torch.rand(4, generator=rng, dtype=torch.float64)
        k = n_chunks - 1 if n_chunks == 1 or draws[0] < self.last_chunk_prob else int(draws[1] * (n_chunks - 1))
        u0 = 1 / w + draws[3] * (1 - 1 / w) if draws[2] < c.tail_prob else draws[3] / w
        u = (u0 + (k - torch.arange(k + 1, dtype=torch.float64)) / w).clamp(max=1.0)
        noisy = u < 1.0
        t = torch.where(noisy, shift(u), torch.tensor(c.clean_t, dtype=torch.float32))
        return NoiseLevels(k, u, t, noisy)

    def build(self, samples: list[LatentSample], rng: torch.Generator, budget: int = 0):
        """(packed input, target tokens, per-token loss mask, metrics) for one micro-batch."""
        c, cf = self.config, self.dit.chunk_frames
        latents, ts, caps, offsets, targets, group_noisy = [], [], [], [], [], []
        n_drop_ctx = n_drop_cap = 0
        for s in samples:
            levels = self.noise_levels(s.n_chunks, rng)
            mode = torch.rand(2, generator=rng)
            x1 = s.latent[:, :(levels.newest + 1) * cf].float()
            x0 = torch.randn(x1.shape, generator=rng)
            t_frames = levels.t.repeat_interleave(cf)[None, :, None, None]
            noisy_frames = levels.noisy.repeat_interleave(cf)[None, :, None, None]
            xt = torch.where(noisy_frames, (1 - t_frames) * x0 + t_frames * x1, x1)
            target = x1 - x0
            captions = list(s.captions[:levels.newest + 1])
            if mode[0] < c.context_dropout:  # `u`: each noisy chunk alone, null caption
                n_drop_ctx += 1
                for j in levels.noisy.nonzero()[:, 0].tolist():
                    part = slice(j * cf, (j + 1) * cf)
                    latents.append(xt[:, part])
                    ts.append(levels.t[j:j + 1])
                    caps.append([None])
                    offsets.append((s.first_chunk + j) * cf)
                    targets.append(target[:, part])
                    group_noisy.append(True)
                continue
            if mode[1] < c.caption_dropout:  # `cp`: context kept, null caption
                n_drop_cap += 1
                captions = [None] * len(captions)
            captions = [None if not levels.noisy[j] else cap for j, cap in enumerate(captions)]
            latents.append(xt)
            ts.append(levels.t)
            caps.append(captions)
            offsets.append(s.first_chunk * cf)
            targets.append(target)
            group_noisy.extend(levels.noisy.tolist())
        packed = pack([x.to(self.device) for x in latents], ts, caps, self.dit, offsets)
        target = torch.cat([patchify(x, self.dit.patch) for x in targets]).to(self.device)
        real = len(packed.layout)
        if budget > real:
            packed = pad_packed(packed, budget - real)
            target = torch.cat([target, target.new_zeros(budget - real, target.shape[1])])
            group_noisy.append(False)
        mask = torch.tensor(group_noisy, device=self.device)[packed.group_index]
        metrics = {"tokens": float(real), "noisy_tokens": float(mask.sum()),
                   "attention_pairs": float(attention_pairs(packed.layout, c.attention_window)),
                   "context_dropout": n_drop_ctx / max(1, len(samples)),
                   "caption_dropout": n_drop_cap / max(1, len(samples))}
        return packed, target, mask, metrics

    def loss(self, model: torch.nn.Module, batch: PackedBatch, step: int,
             rng: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        packed, target, mask, metrics = self.build(batch.samples, rng, batch.budget if self.pad_to_budget else 0)
        pred = model(packed, window=self.config.attention_window).float()
        weight = mask.float()[:, None]
        loss = ((pred - target) ** 2 * weight).sum() / (weight.sum() * target.shape[1]).clamp(min=1)
        metrics["padding"] = 1.0 - batch.tokens / batch.budget if batch.budget else 0.0
        return loss, metrics
