"""Chunk-wise autoregressive sampling with a KV cache, pipelined denoising and per-chunk guidance.

Chunk j starts denoising `steps // in_flight` ticks after chunk j - 1, so up to `in_flight` chunks are
denoised together, older ones cleaner. A finished chunk is run once more at t = 0.9999 with a null
caption and its keys/values enter the cache; it is yielded at once (streaming). Chunks see at most
`window` previous chunks, and the cache forgets older ones, so peak memory does not grow with length.
I2V / V2V: prefix latent frames are clean: whole prefix chunks go straight to the cache, and a chunk
that holds part of the prefix has those frames overwritten with it at every step.
Grids are MAGI-1's (training/schedule.py); 12 steps is the distilled "8,16,16" grid. A shortcut-distilled
model (`step_conditioning`) gets each step's size in u as conditioning (clean and cached chunks: the
grid's first step, as MAGI's prefix and clean-chunk passes do) and usually runs without guidance passes
(guidance distilled in).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vidmill.model.dit import DiT, KVCache, pack, unpack
from vidmill.training.schedule import guidance_weights, guide, time_grid, u_steps


@dataclass
class SamplerConfig:
    steps: int = 8
    in_flight: int = 4
    window: int = 4
    w_prev: float = 1.5
    w_text: float = 7.5
    guidance_until: float = 0.3
    cache_t: float = 0.9999
    use_cache: bool = True  # False: recompute every visible finished chunk at each forward (the baseline)
    shortcut_mode: str = "8,16,16"  # the 12-step grid's step pattern per stage
    step_conditioning: bool = False  # a shortcut-distilled model: pass each step's size in u
    guidance: bool = True  # False: one pass per step (a model with guidance distilled in)


@dataclass
class _Chunk:
    index: int
    x: torch.Tensor  # [C, F, H, W]
    caption: torch.Tensor | None
    start_tick: int
    prefix_frames: int = 0  # leading frames fixed to the prefix


class ChunkSampler:
    def __init__(self, dit: DiT, config: SamplerConfig):
        self.dit, self.config = dit, config
        self.cfg = dit.cfg
        self.grid = time_grid(config.steps, config.shortcut_mode)
        self.du = u_steps(config.steps, config.shortcut_mode)
        self.device = next(dit.parameters()).device
        self.peak_state_bytes = 0
        self.forwards = 0

    @torch.no_grad()
    def generate(self, n_chunks: int, latent_hw: tuple[int, int], captions: list[torch.Tensor | None] | None = None,
                 prefix: torch.Tensor | None = None, generator: torch.Generator | None = None
                 ) -> Iterator[torch.Tensor]:
        """Yield each chunk's clean latent [C, chunk_frames, H, W] as soon as it is finished."""
        cfg, sc = self.cfg, self.config
        frames = cfg.chunk_frames
        captions = captions or [None] * n_chunks
        cache = KVCache(cfg.depth)
        finished: list[tuple[int, torch.Tensor]] = []  # (index, latent) kept for the no-cache baseline
        prefix_len = 0 if prefix is None else prefix.shape[1]
        first = prefix_len // frames  # chunks fully inside the prefix are never denoised
        for j in range(first):
            latent = prefix[:, j * frames:(j + 1) * frames]
            self._finish(j, latent, cache, finished)
            yield latent
        stride = max(1, sc.steps // sc.in_flight)
        tick, active, next_index = 0, [], first
        while next_index < n_chunks or active:
            while next_index < n_chunks and (next_index - first) * stride <= tick:
                active.append(self._new_chunk(next_index, tick, latent_hw, captions, prefix, generator))
                next_index += 1
            self._step(active, tick, cache, finished, prefix)
            tick += 1
            while active and tick - active[0].start_tick >= sc.steps:
                done = active.pop(0)
                self._finish(done.index, done.x, cache, finished)
                yield done.x

    def _new_chunk(self, j: int, tick: int, latent_hw: tuple[int, int], captions, prefix, generator) -> _Chunk:
        """Noise for chunk j, made only when it starts, so nothing is held for chunks not begun."""
        frames = self.cfg.chunk_frames
        x = torch.randn(self.cfg.latent_channels, frames, *latent_hw, generator=generator).to(self.device)
        fixed = 0 if prefix is None else max(0, min(frames, prefix.shape[1] - j * frames))
        if fixed:
            x[:, :fixed] = prefix[:, j * frames:j * frames + fixed]
        return _Chunk(j, x, captions[j] if j < len(captions) else None, tick, fixed)

    def _pack(self, chunks: list[_Chunk], tick: int, finished, null_text: bool = False):
        """Active chunks as one sample (plus, without a cache, the visible finished chunks before them)."""
        ts = [self.grid[tick - c.start_tick] for c in chunks]
        steps = [self.du[tick - c.start_tick] for c in chunks]
        latents = [c.x for c in chunks]
        caps = [None if null_text else c.caption for c in chunks]
        offset = chunks[0].index * self.cfg.chunk_frames
        extra = 0
        if not self.config.use_cache:
            visible = [(i, x) for i, x in finished if i >= chunks[0].index - self.config.window]
            extra = len(visible)
            latents = [x for _, x in visible] + latents
            ts = [torch.tensor(self.config.cache_t)] * extra + ts
            steps = [self.du[0]] * extra + steps
            caps = [None] * extra + caps
            offset = visible[0][0] * self.cfg.chunk_frames if visible else offset
        p = pack([torch.cat(latents, dim=1)], [torch.stack([torch.as_tensor(t) for t in ts])], [caps], self.cfg,
                 [offset])
        return p, extra * self.cfg.chunk_frames, torch.stack(steps)

    def _step_size(self, steps: torch.Tensor) -> torch.Tensor | None:
        return steps.to(self.device) if self.config.step_conditioning else None

    def _velocity(self, chunks, tick, cache, finished, null_text=False, isolate=False):
        p, skip, steps = self._pack(chunks, tick, finished, null_text)
        self.forwards += 1
        out = self.dit(p, cache=cache if self.config.use_cache else None, window=self.config.window,
                       isolate=isolate, null_text=null_text, step_size=self._step_size(steps))
        return unpack(out, p, self.cfg)[0][:, skip:]

    def _step(self, active: list[_Chunk], tick: int, cache: KVCache, finished, prefix) -> None:
        sc, frames = self.config, self.cfg.chunk_frames
        ts = [float(self.grid[tick - c.start_tick]) for c in active]
        text = self._velocity(active, tick, cache, finished)
        if sc.guidance and any(guidance_weights(t, sc.w_prev, sc.w_text, sc.guidance_until) != (1.0, 0.0)
                               for t in ts):
            prev = self._velocity(active, tick, cache, finished, null_text=True)
            uncond = self._velocity(active, tick, cache, finished, null_text=True, isolate=True)
        else:
            prev = uncond = text
        for i, (chunk, t) in enumerate(zip(active, ts, strict=True)):
            w_prev, w_text = guidance_weights(t, sc.w_prev, sc.w_text, sc.guidance_until)
            part = slice(i * frames, (i + 1) * frames)
            v = text[:, part] if prev is text else guide(uncond[:, part], prev[:, part], text[:, part], w_prev, w_text)
            step = tick - chunk.start_tick
            chunk.x = chunk.x + v * float(self.grid[step + 1] - self.grid[step])
            if chunk.prefix_frames:
                start = chunk.index * frames
                chunk.x[:, :chunk.prefix_frames] = prefix[:, start:start + chunk.prefix_frames]
        self._track(cache, active, finished)

    def _finish(self, index: int, latent: torch.Tensor, cache: KVCache, finished) -> None:
        sc = self.config
        if sc.use_cache:
            p = pack([latent], [torch.tensor([sc.cache_t])], [[None]], self.cfg, [index * self.cfg.chunk_frames])
            self.forwards += 1
            self.dit(p, cache=cache, record=True, window=sc.window, step_size=self._step_size(self.du[:1]))
            cache.drop_chunks_before(index + 1 - sc.window)
        else:
            finished.append((index, latent))
            del finished[:-sc.window]

    def _track(self, cache: KVCache, active: list[_Chunk], finished) -> None:
        held = cache.nbytes + sum(c.x.numel() * c.x.element_size() for c in active)
        held += sum(x.numel() * x.element_size() for _, x in finished)
        self.peak_state_bytes = max(self.peak_state_bytes, held)
