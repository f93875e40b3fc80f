"""The block-causal MAGI-1 DiT: plain nn.Modules, no data or distributed code.

Inputs are packed: every sample's latent is patchified (1, 2, 2) into tokens and all samples are
concatenated into one sequence (`pack`), each token tagged with its sample and chunk. Attention is
full inside a chunk and causal across chunks (model/attention.py). Each block has one pre-LayerNorm
feeding self-attention and text cross-attention in parallel; their outputs are concatenated and
projected; residuals are `x + PostNorm(gate * branch)` (sandwich norm) with per-chunk softcap gates
`tanh(Linear(SiLU(c)))`, c = timestep embedding + caption-presence embedding (+ step-size embedding
for shortcut distillation). QK-norm (LayerNorm over the head dim, float32) comes before 3D RoPE; GQA.
Chunks without a caption attend to a learned null-text token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidmill.model.attention import TokenLayout, block_causal_attention
from vidmill.model.rope import RoPE3D, positions
from vidmill.model.sizes import DiTConfig


def sinusoidal(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class TimestepEmbedder(nn.Module):
    """sinusoidal(t * 1000, 256) -> MLP."""

    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(t * 1000, self.freq_dim))


@dataclass
class Packed:
    """One packed sequence of latent tokens from one or more samples."""

    x: torch.Tensor  # [N, C*pt*ph*pw]
    layout: TokenLayout  # per token
    pos: torch.Tensor  # [N, 3] rope positions
    group_index: torch.Tensor  # [N] -> index of the token's (sample, chunk) group
    group_layout: TokenLayout  # [G]
    group_t: torch.Tensor  # [G] noise level: 0 noise, 1 clean
    group_caption: torch.Tensor  # [G] bool: the chunk has a caption
    text: torch.Tensor  # [M, text_dim] caption features of all captioned groups
    text_layout: TokenLayout  # [M]
    shapes: list[tuple[int, int, int]]  # per sample (T, H, W) of the latent


def patchify(latent: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    c, t, h, w = latent.shape
    pt, ph, pw = patch
    x = latent.reshape(c, t // pt, pt, h // ph, ph, w // pw, pw)
    return x.permute(1, 3, 5, 0, 2, 4, 6).reshape((t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(tokens: torch.Tensor, shape: tuple[int, int, int], channels: int,
               patch: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = shape
    pt, ph, pw = patch
    x = tokens.reshape(t // pt, h // ph, w // pw, channels, pt, ph, pw)
    return x.permute(3, 0, 4, 1, 5, 2, 6).reshape(channels, t, h, w)


def pack(latents: list[torch.Tensor], t: list[torch.Tensor], captions: list[list[torch.Tensor | None]],
         cfg: DiTConfig, frame_offsets: list[int] | None = None) -> Packed:
    """latents[i] [C, T, H, W]; t[i] [n_chunks] per chunk; captions[i][j] [L, text_dim] or None.

    Chunk j of sample i covers latent frames [j * chunk_frames, (j + 1) * chunk_frames) counted from
    `frame_offsets[i]` (the frames already in a KV cache), so chunk ids and time positions are absolute.
    """
    frame_offsets = frame_offsets or [0] * len(latents)
    xs, sids, cids, poss, gidx, g_s, g_c, g_t, g_cap, texts, t_s, t_c, shapes = ([] for _ in range(13))
    for i, latent in enumerate(latents):
        _, frames, h, w = latent.shape
        pt, ph, pw = cfg.patch
        frame_ids = torch.arange(frame_offsets[i], frame_offsets[i] + frames, pt)
        chunk_of_frame = frame_ids // cfg.chunk_frames
        first_chunk = int(chunk_of_frame[0])
        tokens_per_frame = (h // ph) * (w // pw)
        chunk = chunk_of_frame.repeat_interleave(tokens_per_frame)
        xs.append(patchify(latent, cfg.patch))
        poss.append(positions(frame_ids, h // ph, w // pw, cfg.rope_grid))
        sids.append(torch.full_like(chunk, i))
        cids.append(chunk)
        for j, chunk_id in enumerate(range(first_chunk, int(chunk_of_frame[-1]) + 1)):
            g_s.append(i)
            g_c.append(chunk_id)
            g_t.append(t[i][j])
            caption = captions[i][j] if j < len(captions[i]) else None
            g_cap.append(caption is not None)
            if caption is not None:
                texts.append(caption)
                t_s.append(torch.full((len(caption),), i))
                t_c.append(torch.full((len(caption),), chunk_id))
        gidx.append(chunk - first_chunk + (len(g_s) - (int(chunk_of_frame[-1]) + 1 - first_chunk)))
        shapes.append((frames, h, w))
    device = latents[0].device
    text = torch.cat(texts) if texts else torch.zeros(0, cfg.text_dim, device=device)
    empty = torch.zeros(0, dtype=torch.long)
    return Packed(
        x=torch.cat(xs), layout=TokenLayout(torch.cat(sids).to(device), torch.cat(cids).to(device)),
        pos=torch.cat(poss).to(device), group_index=torch.cat(gidx).to(device),
        group_layout=TokenLayout(torch.tensor(g_s, device=device), torch.tensor(g_c, device=device)),
        group_t=torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in g_t]).to(device),
        group_caption=torch.tensor(g_cap, device=device), text=text.to(device),
        text_layout=TokenLayout(torch.cat(t_s).to(device) if t_s else empty.to(device),
                                torch.cat(t_c).to(device) if t_c else empty.to(device)),
        shapes=shapes)


def unpack(tokens: torch.Tensor, packed: Packed, cfg: DiTConfig) -> list[torch.Tensor]:
    out, start = [], 0
    for shape in packed.shapes:
        n = (shape[0] // cfg.patch[0]) * (shape[1] // cfg.patch[1]) * (shape[2] // cfg.patch[2])
        out.append(unpatchify(tokens[start:start + n], shape, cfg.latent_channels, cfg.patch))
        start += n
    return out


class KVCache:
    """Self-attention keys (after QK-norm and RoPE) and values of finished chunks, per layer."""

    def __init__(self, depth: int):
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth
        self.layout: TokenLayout | None = None

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k[layer] = k if self.k[layer] is None else torch.cat([self.k[layer], k], dim=1)
        self.v[layer] = v if self.v[layer] is None else torch.cat([self.v[layer], v], dim=1)

    def drop_chunks_before(self, chunk: int) -> None:
        """Forget chunks that no query can see any more (bounded window): memory stays constant."""
        if self.layout is None:
            return
        keep = self.layout.chunk_id >= chunk
        self.layout = TokenLayout(self.layout.sample_id[keep], self.layout.chunk_id[keep])
        self.k = [k[:, keep] if k is not None else None for k in self.k]
        self.v = [v[:, keep] if v is not None else None for v in self.v]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)


class MLP(nn.Module):
    def __init__(self, hidden: int, ffn: int, activation: str):
        super().__init__()
        self.swiglu = activation == "swiglu"
        self.fc1 = nn.Linear(hidden, 2 * ffn if self.swiglu else ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            a, b = self.fc1(x).chunk(2, dim=-1)
            return self.fc2(F.silu(a) * b)
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HeadNorm(nn.LayerNorm):
    """LayerNorm over the head dimension, computed in float32 (QK-norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        hd, heads, groups = cfg.head_dim, cfg.heads, cfg.kv_groups
        self.pre_norm = nn.LayerNorm(cfg.hidden)
        self.q = nn.Linear(cfg.hidden, heads * hd, bias=False)
        self.kv = nn.Linear(cfg.hidden, 2 * groups * hd, bias=False)
        self.q_norm, self.k_norm = HeadNorm(hd), HeadNorm(hd)
        self.cross_q = nn.Linear(cfg.hidden, heads * hd, bias=False)
        self.cross_kv = nn.Linear(cfg.hidden, 2 * groups * hd, bias=False)
        self.cross_q_norm, self.cross_k_norm = HeadNorm(hd), HeadNorm(hd)
        self.proj = nn.Linear(2 * heads * hd, cfg.hidden)
        self.attn_post_norm = nn.LayerNorm(cfg.hidden)
        self.mlp_pre_norm = nn.LayerNorm(cfg.hidden)
        self.mlp = MLP(cfg.hidden, cfg.ffn, cfg.activation)
        self.mlp_post_norm = nn.LayerNorm(cfg.hidden)
        self.gates = nn.Linear(cfg.cond_dim, 2 * cfg.hidden)

    def heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(x.shape[0], n, self.cfg.head_dim).transpose(0, 1)  # [n, N, hd]

    def forward(self, x, cond, p: Packed, rope: RoPE3D, text, text_layout, layer: int,
                cache: KVCache | None, record: bool, backend: str, window: int | None, isolate: bool):
        cfg = self.cfg
        gate_attn, gate_mlp = torch.tanh(self.gates(F.silu(cond))).chunk(2, dim=-1)
        gate_attn, gate_mlp = gate_attn[p.group_index], gate_mlp[p.group_index]
        h = self.pre_norm(x)
        q = rope(self.q_norm(self.heads(self.q(h), cfg.heads)), p.pos)
        k, v = self.kv(h).chunk(2, dim=-1)
        k = rope(self.k_norm(self.heads(k, cfg.kv_groups)), p.pos)
        v = self.heads(v, cfg.kv_groups)
        keys, values, k_layout = k, v, p.layout
        if cache is not None and cache.layout is not None and not isolate:
            keys, values = torch.cat([cache.k[layer], k], 1), torch.cat([cache.v[layer], v], 1)
            k_layout = cache.layout.cat(p.layout)
        if record:
            cache.extend(layer, k, v)
        self_out = block_causal_attention(q, keys, values, p.layout, k_layout, backend, window, isolate)
        cq = self.cross_q_norm(self.heads(self.cross_q(h), cfg.heads))
        ck, cv = self.cross_kv(text).chunk(2, dim=-1)
        ck, cv = self.cross_k_norm(self.heads(ck, cfg.kv_groups)), self.heads(cv, cfg.kv_groups)
        # a token reads its own chunk's caption: same sample and same chunk
        cross_mask = (p.layout.sample_id[:, None] == text_layout.sample_id[None]) & \
            (p.layout.chunk_id[:, None] == text_layout.chunk_id[None])
        cross_out = F.scaled_dot_product_attention(cq[None], ck[None], cv[None], attn_mask=cross_mask[None, None],
                                                   enable_gqa=cfg.kv_groups != cfg.heads)[0]
        merged = torch.cat([self_out, cross_out], dim=0).transpose(0, 1).reshape(x.shape[0], -1)
        x = x + self.attn_post_norm(gate_attn * self.proj(merged))
        return x + self.mlp_post_norm(gate_mlp * self.mlp(self.mlp_pre_norm(x)))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        token_dim = cfg.latent_channels * math.prod(cfg.patch)
        self.x_embed = nn.Linear(token_dim, cfg.hidden)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.hidden)
        self.null_text = nn.Parameter(torch.zeros(1, cfg.hidden))
        self.t_embed = TimestepEmbedder(cfg.cond_dim)
        self.caption_embed = nn.Embedding(2, cfg.cond_dim)
        self.step_embed = TimestepEmbedder(cfg.cond_dim)  # shortcut distillation: 1 / (2 * step size)
        self.rope = RoPE3D(cfg.head_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(cfg.hidden)
        self.final = nn.Linear(cfg.hidden, token_dim)
        self.backend = "sdpa"
        with torch.no_grad():  # a base model is unaffected by the step embedding until distilled
            self.step_embed.mlp[-1].weight.zero_()
            self.step_embed.mlp[-1].bias.zero_()

    def forward(self, p: Packed, cache: KVCache | None = None, record: bool = False, window: int | None = None,
                isolate: bool = False, null_text: bool = False, step_size: torch.Tensor | None = None):
        """Velocity for every token of `p` ([N, C*pt*ph*pw]).

        cache: attend to the finished chunks it holds; record: append this pass's keys/values to it;
        window: how many previous chunks a chunk may see; isolate: each chunk sees only itself (the
        unconditional guidance pass); null_text: treat every chunk as uncaptioned.
        """
        cond = self.t_embed(p.group_t)
        has_caption = p.group_caption & (not null_text)
        cond = cond + self.caption_embed(has_caption.long())
        if step_size is not None:
            cond = cond + self.step_embed(1.0 / (2.0 * step_size) / 1000)
        text, text_layout = self._text_tokens(p, has_caption)
        x = self.x_embed(p.x)
        for i, block in enumerate(self.blocks):
            x = block(x, cond, p, self.rope, text, text_layout, i, cache, record, self.backend, window, isolate)
        if record:
            cache.layout = p.layout if cache.layout is None else cache.layout.cat(p.layout)
        return self.final(self.final_norm(x))

    def _text_tokens(self, p: Packed, has_caption: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        parts, layouts = [], []
        if p.text.numel() and has_caption.any():
            parts.append(self.text_proj(p.text))
            layouts.append(p.text_layout)
        uncaptioned = ~has_caption
        if uncaptioned.any():
            parts.append(self.null_text.expand(int(uncaptioned.sum()), -1))
            layouts.append(TokenLayout(p.group_layout.sample_id[uncaptioned], p.group_layout.chunk_id[uncaptioned]))
        layout = layouts[0]
        for other in layouts[1:]:
            layout = layout.cat(other)
        return torch.cat(parts), layout
