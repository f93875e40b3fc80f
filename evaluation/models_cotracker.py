"""CoTracker2 point tracking (Karaev et al., "CoTracker: It is Better to Track Together", v2 release), offline mode.

Written for vidmill from the paper and from reading facebookresearch/co-tracker (`cotracker/models/core/cotracker/
cotracker.py` class CoTracker2, `blocks.py`, `model_utils.py`, `embeddings.py`, `predictor.py`) for structure,
parameter names and numerics; nothing is copied. The state-dict layout matches upstream's `cotracker2.pth` (a plain
state dict of `CoTracker2()`), including its `updateformer.virual_tracks` spelling and the two stored buffers
`time_emb` and `pos_emb`. CoTracker's code and weights are licensed CC-BY-NC 4.0: the weights are the user's to
obtain and use under that licence.

Model: a CNN (`fnet`, stride 4, instance norm, four residual stages merged at 1/4 scale) gives per-frame features;
each query point's feature is sampled at its frame; in sliding windows of 8 frames (step 4) an update transformer
(time attention per track; space attention through 64 learned virtual tracks) refines all tracks jointly from the
flow embedding, a 4-level correlation with the track feature, the track feature and the mask/visibility, for
`iters` iterations. VBench's Camera Motion runs `CoTrackerPredictor(video, grid_size=10)`: frames resized to the
model resolution (384 x 512, bilinear, align_corners), a 10 x 10 grid queried at frame 0, 6 iterations, frame-0
tracks overwritten by the query points, rescaled to the video and cast to int (`track_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FLOW_FREQS = 64  # get_2d_embedding(flows, 64): 2 + 2 x 64 values per flow


@dataclass(frozen=True)
class CoTrackerConfig:
    """CoTracker2 hyper-parameters (defaults = the published `cotracker2`: window 8, stride 4)."""

    window_len: int = 8
    stride: int = 4
    latent_dim: int = 128
    hidden_size: int = 384
    num_heads: int = 8
    space_depth: int = 6
    time_depth: int = 6
    num_virtual_tracks: int = 64
    model_resolution: Sequence[int] = (384, 512)
    corr_levels: int = 4
    corr_radius: int = 3
    mlp_ratio: float = 4.0

    @property
    def input_dim(self) -> int:
        """Transformer input: flow embedding + correlations + track feature + (mask, visibility); 456 at full size."""
        return 2 + 2 * FLOW_FREQS + self.corr_levels * (2 * self.corr_radius + 1) ** 2 + self.latent_dim + 2


# Embeddings and sampling ---------------------------------------------------------------------------------------

def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(1, M, dim) sine/cosine embedding (sin half, then cos half), computed in float64, returned as float32."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.double) / (dim / 2.0))
    out = torch.einsum("m,d->md", positions.reshape(-1).double(), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)[None].float()


def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """(1, dim, h, w): the first half embeds x (column), the second half y (row)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float), torch.arange(w, dtype=torch.float), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, xs), sincos_1d(dim // 2, ys)], dim=2)
    return emb.reshape(1, h, w, dim).permute(0, 3, 1, 2)


def flow_embedding(xy: torch.Tensor, freqs: int = FLOW_FREQS) -> torch.Tensor:
    """(B, N, 2) -> (B, N, 2 + 2 freqs): the raw offsets, then interleaved sin/cos of x, then of y."""
    b, n, _ = xy.shape
    div = (torch.arange(0, freqs, 2, dtype=torch.float32) * (1000.0 / freqs)).reshape(1, 1, freqs // 2)
    parts = [xy]
    for coord in (xy[..., 0:1], xy[..., 1:2]):
        pe = torch.zeros(b, n, freqs)
        pe[..., 0::2], pe[..., 1::2] = torch.sin(coord * div), torch.cos(coord * div)
        parts.append(pe)
    return torch.cat(parts, dim=2)


def sample_at(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """grid_sample in pixel coordinates ((x, y) for 4D input, (t, x, y) for 5D), align_corners, border padding."""
    sizes = volume.shape[2:]
    if len(sizes) == 3:
        coords = coords[..., [1, 2, 0]]
    scale = torch.tensor([2 / max(s - 1, 1) for s in reversed(sizes)])
    return F.grid_sample(volume, coords * scale - 1, align_corners=True, padding_mode="border")


def points_on_grid(size: int, extent: Sequence[int]) -> torch.Tensor:
    """(1, size^2, 2) (x, y) points, row-major, covering (H, W) with a margin of W / 64 on every side."""
    h, w = extent
    margin = w / 64
    ys, xs = torch.meshgrid(torch.linspace(margin, h - margin, size), torch.linspace(margin, w - margin, size),
                            indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(1, -1, 2)


# Feature network -------------------------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and ReLU; a strided 1x1 shortcut when downsampling."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1, self.norm2 = nn.InstanceNorm2d(cout), nn.InstanceNorm2d(cout)
        self.downsample = None if stride == 1 else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride),
                                                                 nn.InstanceNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x))))))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class FeatureNet(nn.Module):
    """7x7 stride-2 conv, four residual stages (strides 1, 2, 2, 2), all resized to 1/stride and fused by convs."""

    def __init__(self, out_dim: int, stride: int):
        super().__init__()
        self.stride = stride
        dims = (out_dim // 2, out_dim // 4 * 3, out_dim, out_dim)
        self.conv1 = nn.Conv2d(3, dims[0], 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(dims[0])
        cin = dims[0]
        for i, (dim, s) in enumerate(zip(dims, (1, 2, 2, 2), strict=True), 1):
            self.add_module(f"layer{i}", nn.Sequential(ResidualBlock(cin, dim, s), ResidualBlock(dim, dim)))
            cin = dim
        self.conv2 = nn.Conv2d(sum(dims), 2 * out_dim, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(2 * out_dim)
        self.conv3 = nn.Conv2d(2 * out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = F.relu(self.norm1(self.conv1(x)))
        scales = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            scales.append(x)
        fused = torch.cat([F.interpolate(s, size, mode="bilinear", align_corners=True) for s in scales], dim=1)
        return self.conv3(F.relu(self.norm2(self.conv2(fused))))


class Correlation:
    """Per-window feature pyramid; correlation of each track's feature with it, read in a (2r+1)^2 patch per level."""

    def __init__(self, fmaps: torch.Tensor, levels: int, radius: int):
        b, s, c, h, w = fmaps.shape
        self.radius, self.pyramid = radius, [fmaps]
        for _ in range(levels - 1):
            pooled = F.avg_pool2d(self.pyramid[-1].reshape(b * s, c, *self.pyramid[-1].shape[-2:]), 2, stride=2)
            self.pyramid.append(pooled.reshape(b, s, c, *pooled.shape[-2:]))

    def __call__(self, track_feat: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """track_feat (B, S, N, C), coords (B, S, N, 2) at 1/stride -> (B N, S, levels (2r+1)^2)."""
        b, s, n, c = track_feat.shape
        r = self.radius
        d = torch.linspace(-r, r, 2 * r + 1)
        offsets = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out = []
        for level, fmaps in enumerate(self.pyramid):
            h, w = fmaps.shape[-2:]
            corr = torch.matmul(track_feat, fmaps.view(b, s, c, h * w)).view(b, s, n, h, w)
            corr = corr / torch.sqrt(torch.tensor(c).float())
            points = coords.reshape(b * s * n, 1, 1, 2) / 2 ** level + offsets
            out.append(sample_at(corr.reshape(b * s * n, 1, h, w), points).view(b, s, n, -1))
        return torch.cat(out, dim=-1).permute(0, 2, 1, 3).contiguous().view(b * n, s, -1).float()


# Update transformer ----------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head (cross-)attention with a q projection, a joint k/v projection and an additive bias."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        b, n1, c = x.shape
        h = self.heads
        context = x if context is None else context
        q = self.to_q(x).reshape(b, n1, h, c // h).permute(0, 2, 1, 3)
        k, v = (t.reshape(b, context.shape[1], h, c // h).permute(0, 2, 1, 3) for t in self.to_kv(context).chunk(2, -1))
        sim = (q @ k.transpose(-2, -1)) * self.scale
        if bias is not None:
            sim = sim + bias
        return self.to_out((sim.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n1, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfBlock(nn.Module):
    """Pre-norm self-attention + MLP (norms without affine parameters)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention to a (affine-normed) context + MLP; `mask` (B, N) hides masked tracks."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bias = None
        if mask is not None:
            h = self.cross_attn.heads
            if mask.shape[1] == x.shape[1]:  # upstream's rule: a mask as long as the queries masks query rows
                mask = mask[:, None, :, None].expand(-1, h, -1, context.shape[1])
            else:
                mask = mask[:, None, None].expand(-1, h, x.shape[1], -1)
            bias = (~mask) * -torch.finfo(x.dtype).max
        x = x + self.cross_attn(self.norm1(x), context=self.norm_context(context), bias=bias)
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Time attention along each track; every few layers, space attention via learned virtual tracks."""

    def __init__(self, cfg: CoTrackerConfig):
        super().__init__()
        d, h, m = cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio
        self.num_virtual = cfg.num_virtual_tracks
        self.input_transform = nn.Linear(cfg.input_dim, d)
        self.flow_head = nn.Linear(d, cfg.latent_dim + 2)
        self.virual_tracks = nn.Parameter(torch.randn(1, cfg.num_virtual_tracks, 1, d))  # upstream's spelling
        self.time_blocks = nn.ModuleList(SelfBlock(d, h, m) for _ in range(cfg.time_depth))
        self.space_virtual_blocks = nn.ModuleList(SelfBlock(d, h, m) for _ in range(cfg.space_depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossBlock(d, h, m) for _ in range(cfg.space_depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossBlock(d, h, m) for _ in range(cfg.space_depth))
        if cfg.time_depth < cfg.space_depth:
            raise ValueError("time_depth must be >= space_depth")

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(x)
        b, n_points, t, _ = tokens.shape
        tokens = torch.cat([tokens, self.virual_tracks.repeat(b, 1, t, 1)], dim=1)
        n = tokens.shape[1]
        every = len(self.time_blocks) // len(self.space_virtual_blocks)
        j = 0
        for i, block in enumerate(self.time_blocks):
            tokens = block(tokens.contiguous().view(b * n, t, -1)).view(b, n, t, -1)
            if i % every == 0:
                space = tokens.permute(0, 2, 1, 3).contiguous().view(b * t, n, -1)
                points, virtual = space[:, :n_points], space[:, n_points:]
                virtual = self.space_virtual2point_blocks[j](virtual, points, mask=mask)
                virtual = self.space_virtual_blocks[j](virtual)
                points = self.space_point2virtual_blocks[j](points, virtual, mask=mask)
                tokens = torch.cat([points, virtual], dim=1).view(b, t, n, -1).permute(0, 2, 1, 3)
                j += 1
        return self.flow_head(tokens[:, :n_points])


# CoTracker2 -------------------------------------------------------------------------------------------------------

class CoTracker2(nn.Module):
    """Video (B, T, 3, H, W) in [0, 255] at the model resolution + queries (B, N, 3) (t, x, y) -> tracks, visibility."""

    def __init__(self, cfg: CoTrackerConfig | None = None):
        super().__init__()
        cfg = cfg or CoTrackerConfig()
        self.cfg = cfg
        self.fnet = FeatureNet(cfg.latent_dim, cfg.stride)
        self.updateformer = UpdateFormer(cfg)
        window = torch.linspace(0, cfg.window_len - 1, cfg.window_len)
        self.register_buffer("time_emb", sincos_1d(cfg.input_dim, window))
        h, w = cfg.model_resolution
        self.register_buffer("pos_emb", sincos_2d(cfg.input_dim, h // cfg.stride, w // cfg.stride))
        self.norm = nn.GroupNorm(1, cfg.latent_dim)
        self.track_feat_updater = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(cfg.latent_dim, 1))

    def forward_window(self, fmaps, coords, track_feat, vis, track_mask, attention_mask, iters: int):
        """One window: `iters` joint updates of coords (B, S, N, 2) and track features (B, S, N, C)."""
        b, s, n, _ = track_mask.shape
        c = self.cfg.latent_dim
        mask_vis = torch.cat([track_mask, vis], dim=-1).permute(0, 2, 1, 3).reshape(b * n, s, 2)
        corr = Correlation(fmaps, self.cfg.corr_levels, self.cfg.corr_radius)
        pos = sample_at(self.pos_emb.repeat(b, 1, 1, 1), coords[:, 0].unsqueeze(2))  # B E N 1
        pos = pos.permute(0, 2, 1, 3).reshape(b * n, self.cfg.input_dim).unsqueeze(1)
        for _ in range(iters):
            flows = (coords - coords[:, 0:1]).permute(0, 2, 1, 3).reshape(b * n, s, 2)
            feats = track_feat.permute(0, 2, 1, 3).reshape(b * n, s, c)
            x = torch.cat([flow_embedding(flows), corr(track_feat, coords), feats, mask_vis], dim=2)
            x = (x + pos + self.time_emb).view(b, n, s, -1)
            delta = self.updateformer(x, attention_mask.reshape(b * s, n))
            coords = coords + delta[..., :2].permute(0, 2, 1, 3)
            feats = feats.reshape(b * n * s, c)
            feats = self.track_feat_updater(self.norm(delta[..., 2:].reshape(b * n * s, c))) + feats
            track_feat = feats.reshape(b, n, s, c).permute(0, 2, 1, 3)
        return coords * self.cfg.stride, self.vis_predictor(track_feat).reshape(b, s, n)

    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4):
        b, t, ch, h, w = video.shape
        n = queries.shape[1]
        s, stride = self.cfg.window_len, self.cfg.stride
        step = s // 2
        video = 2 * (video / 255.0) - 1.0
        frames_q, coords_q = queries[:, :, 0].long(), queries[..., 1:] / stride
        coords_out, vis_out = torch.zeros(b, t, n, 2), torch.zeros(b, t, n)
        pad = (s - t % s) % s  # repeat the last frame so that whole windows fit
        video = video.reshape(b, 1, t, ch * h * w)
        video = torch.cat([video, video[:, :, -1:].repeat(1, 1, pad, 1)], dim=2)
        fmaps = self.fnet(video.reshape(-1, ch, h, w)).reshape(b, -1, self.cfg.latent_dim, h // stride, w // stride)
        where = torch.cat([frames_q[:, None, :, None], coords_q[:, None]], dim=-1)  # (t, x, y) per query
        track_feat = sample_at(fmaps.permute(0, 2, 1, 3, 4), where.unsqueeze(3))  # B C 1 N 1
        track_feat = track_feat.permute(0, 2, 3, 1, 4).reshape(b, 1, n, -1).repeat(1, s, 1, 1)
        coords_init = coords_q.reshape(b, 1, n, 2).expand(b, s, n, 2).float()
        vis_init = torch.ones(b, s, n, 1) * 10
        num_windows = (t - s + step - 1) // step + 1
        for ind in range(0, step * num_windows, step):
            overlap = s - step
            if ind > 0:  # tracks queried before the overlap continue from the previous window's estimate
                carry = (frames_q < ind + overlap)[:, None, :, None]
                prev = F.pad(coords_out[:, ind:ind + overlap] / stride, (0, 0, 0, 0, 0, step), "replicate")
                prev_vis = F.pad(vis_out[:, ind:ind + overlap, :, None].clone(), (0, 0, 0, 0, 0, step), "replicate")
                coords_init = torch.where(carry.expand_as(coords_init), prev, coords_init)
                vis_init = torch.where(carry.expand_as(vis_init), prev_vis, vis_init)
            attention_mask = (frames_q < ind + s).reshape(b, 1, n).repeat(1, s, 1)
            track_mask = (frames_q[:, None, :, None] <= torch.arange(ind, ind + s)[None, :, None, None]).contiguous()
            if ind > 0:
                track_mask[:, :overlap] = False
            feat = attention_mask.unsqueeze(-1) * track_feat
            coords, vis = self.forward_window(fmaps[:, ind:ind + s], coords_init, feat, vis_init, track_mask,
                                              attention_mask, iters)
            keep = min(t - ind, s)
            coords_out[:, ind:ind + s], vis_out[:, ind:ind + s] = coords[:, :keep], vis[:, :keep]
        return coords_out, torch.sigmoid(vis_out)


def track_grid(model: CoTracker2, frames: np.ndarray, grid: int = 10, iters: int = 6) -> np.ndarray:
    """CoTrackerPredictor(video, grid_size=grid) as VBench calls it: uint8 RGB (T, H, W, 3) -> int tracks (T, N, 2)."""
    t, h, w, _ = frames.shape
    mh, mw = model.cfg.model_resolution
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    video = F.interpolate(video, (mh, mw), mode="bilinear", align_corners=True).reshape(1, t, 3, mh, mw)
    points = points_on_grid(grid, (mh, mw))
    queries = torch.cat([torch.zeros_like(points[:, :, :1]), points], dim=2)
    with torch.no_grad():
        tracks, _ = model(video, queries, iters=iters)
    tracks[0, 0] = points[0]  # query points overwrite the frame-0 predictions (upstream predictor)
    tracks = tracks * tracks.new_tensor([(w - 1) / (mw - 1), (h - 1) / (mh - 1)])
    return tracks[0].long().numpy()


def tracker(model: CoTracker2, grid: int = 10) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Camera Motion's probe: frames -> int (grid, grid, 2) (x, y) tracks of the first and the last frame."""
    def first_last(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tracks = track_grid(model, frames, grid)
        return tracks[0].reshape(grid, grid, 2), tracks[-1].reshape(grid, grid, 2)
    return first_last
