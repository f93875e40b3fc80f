"""AMT-S frame interpolation (Li et al., CVPR 2023, "AMT: All-Pairs Multi-Field Transforms"), small variant.

Written for vidmill from the paper's description and the module layout of the MIT-licensed reference code
(vbench 0.1.5 `third_party/amt`, read for structure, parameter names and numerics, not copied), so that the
upstream checkpoint `amt-s.pth` (`{"state_dict": ...}`) loads strictly. Pieces:

- a context encoder: a 4-level pyramid of (stride-2 conv + PReLU, conv + PReLU) on each input frame;
- a correlation encoder (RAFT's small encoder: 7x7 stride-2 conv, three bottleneck stages, instance norm) whose
  1/8-scale features give an all-pairs correlation volume, pooled into 4 levels and read bidirectionally;
- a coarse-to-fine decoder: at 1/16 an initial decoder predicts both flows to time t and a feature, refined at
  1/8, 1/4 and 1/2 by update blocks that look the correlation up along the scaled flows; the last decoder
  predicts `num_flows` flow pairs, blending masks and residuals, and a small conv block merges the candidates.

`interpolator(model)` is VBench's Motion Smoothness call: frames /255, replicate-padded to multiples of 16,
embt 0.5, one pass, output clamped to [0, 1], x255 and truncated to uint8, padding removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD_MULTIPLE = 16  # VBench on the CPU: scale 1, padding int(16 / scale)


@dataclass(frozen=True)
class AMTConfig:
    """AMT-S hyper-parameters (defaults = the published small model, cfgs/AMT-S.yaml)."""

    channels: Sequence[int] = (20, 32, 44, 56)
    skip_channels: int = 20
    num_flows: int = 3
    corr_radius: int = 3
    corr_levels: int = 4
    corr_encoder_dims: Sequence[int] = field(default=(32, 64, 96))
    corr_feature_dim: int = 84
    hidden_dim: int = 76
    flow_dim: int = 20
    corr_dim: int = 64
    fc_dim: int = 68


def upsample(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at pixel + flow (bilinear, border padding, align_corners=True)."""
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, dtype=image.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.linspace(-1.0, 1.0, h, dtype=image.dtype).view(1, h, 1).expand(b, h, w)
    grid = torch.stack([xs + flow[:, 0] / ((w - 1.0) / 2.0), ys + flow[:, 1] / ((h - 1.0) / 2.0)], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def pixel_grid(batch: int, h: int, w: int) -> torch.Tensor:
    """(B, 2, h, w) pixel coordinates, x first."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(batch, 1, 1, 1)


def conv_prelu(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.PReLU(cout))


# Correlation encoder (RAFT "small" encoder with instance norm) ----------------------------------------------------

class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convs with instance norm and ReLU, plus a (strided 1x1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = cout // 4
        self.conv1 = nn.Conv2d(cin, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(mid, cout, 1)
        self.norm1, self.norm2, self.norm3 = nn.InstanceNorm2d(mid), nn.InstanceNorm2d(mid), nn.InstanceNorm2d(cout)
        self.downsample = None if stride == 1 else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride),
                                                                 nn.InstanceNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class CorrelationEncoder(nn.Module):
    """Frames -> 1/8-scale features (upstream `feat_encoder`)."""

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, dims[0], 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(dims[0])
        stages, cin = [], dims[0]
        for dim, stride in zip(dims, (1, 2, 2), strict=True):
            stages.append(nn.Sequential(Bottleneck(cin, dim, stride), Bottleneck(dim, dim)))
            cin = dim
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(cin, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class BidirectionalCorrelation:
    """All-pairs correlation of two feature maps, average-pooled into levels, read around points in both ways."""

    def __init__(self, f0: torch.Tensor, f1: torch.Tensor, levels: int, radius: int):
        b, c, h, w = f0.shape
        corr = torch.matmul(f0.view(b, c, h * w).transpose(1, 2), f1.view(b, c, h * w)) / torch.sqrt(
            torch.tensor(c).float())
        corr = corr.view(b, h, w, 1, h, w)
        forward = corr.reshape(b * h * w, 1, h, w)  # for each pixel of f0: its match map over f1
        backward = corr.permute(0, 4, 5, 3, 1, 2).reshape(b * h * w, 1, h, w)
        self.radius, self.pyramids = radius, ([forward], [backward])
        for _ in range(levels - 1):
            for pyramid in self.pyramids:
                pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))

    def _lookup(self, pyramid: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        b, _, h, w = coords.shape
        r = self.radius
        d = torch.linspace(-r, r, 2 * r + 1)
        offsets = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for level, volume in enumerate(pyramid):
            points = centres / 2 ** level + offsets  # (x, y) points; offsets run dy-major as upstream
            vh, vw = volume.shape[-2:]
            grid = torch.cat([2 * points[..., :1] / (vw - 1) - 1, 2 * points[..., 1:] / (vh - 1) - 1], dim=-1)
            out.append(F.grid_sample(volume, grid, align_corners=True).view(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()

    def __call__(self, coords0: torch.Tensor, coords1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._lookup(self.pyramids[0], coords0), self._lookup(self.pyramids[1], coords1)


# Decoders and update blocks ----------------------------------------------------------------------------------------

class SideResBlock(nn.Module):
    """Residual block whose last `side` channels get their own extra convs between the full-width ones."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        if side >= channels:
            raise ValueError(f"side channels {side} must be fewer than {channels}")
        self.side = side
        self.conv1 = conv_prelu(channels, channels)
        self.conv2 = conv_prelu(side, side)
        self.conv3 = conv_prelu(channels, channels)
        self.conv4 = conv_prelu(side, side)
        self.conv5 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu = nn.PReLU(channels)

    def _side(self, x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        return torch.cat([x[:, :-self.side], conv(x[:, -self.side:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._side(self.conv3(self._side(self.conv1(x), self.conv2)), self.conv4)
        return self.prelu(x + self.conv5(y))


def decoder_block(cin: int, mid: int, side: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_prelu(cin, mid), SideResBlock(mid, side), nn.ConvTranspose2d(mid, cout, 4, 2, 1))


class InitialDecoder(nn.Module):
    """1/16 features of both frames + the time step -> flows to t (at 1/8) and the intermediate feature."""

    def __init__(self, cin: int, cout: int, side: int):
        super().__init__()
        self.convblock = decoder_block(2 * cin + 1, 2 * cin, side, cout + 4)

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, embt: torch.Tensor):
        t = embt.repeat(1, 1, *f0.shape[2:])
        out = self.convblock(torch.cat([f0, f1, t], dim=1))
        return out[:, 0:2], out[:, 2:4], out[:, 4:]


class RefineDecoder(nn.Module):
    """Warp both frames' features with the current flows, predict residual flows (x2 upsampled) and the feature."""

    def __init__(self, cin: int, cout: int, side: int):
        super().__init__()
        self.convblock = decoder_block(3 * cin + 4, 3 * cin, side, cout + 4)

    def forward(self, ft: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor, flow1: torch.Tensor):
        out = self.convblock(torch.cat([ft, backward_warp(f0, flow0), backward_warp(f1, flow1), flow0, flow1], 1))
        return out[:, 0:2] + 2.0 * upsample(flow0, 2.0), out[:, 2:4] + 2.0 * upsample(flow1, 2.0), out[:, 4:]


class MultiFieldDecoder(nn.Module):
    """Last decoder: `n` flow pairs at full scale, their blending masks (sigmoid) and image residuals."""

    def __init__(self, cin: int, side: int, n: int):
        super().__init__()
        self.n = n
        self.convblock = decoder_block(3 * cin + 4, 3 * cin, side, 8 * n)

    def forward(self, ft: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor, flow1: torch.Tensor):
        n = self.n
        out = self.convblock(torch.cat([ft, backward_warp(f0, flow0), backward_warp(f1, flow1), flow0, flow1], 1))
        d0, d1, mask, residual = torch.split(out, [2 * n, 2 * n, n, 3 * n], dim=1)
        flow0 = d0 + 2.0 * upsample(flow0, 2.0).repeat(1, n, 1, 1)
        flow1 = d1 + 2.0 * upsample(flow1, 2.0).repeat(1, n, 1, 1)
        return flow0, flow1, torch.sigmoid(mask), residual


class UpdateBlock(nn.Module):
    """Correlation + flow encoding -> residual feature and flow updates, computed at the correlation's 1/8 scale."""

    def __init__(self, cdim: int, cfg: AMTConfig, scale: int | None):
        super().__init__()
        planes = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        h = cfg.hidden_dim
        self.scale = scale
        self.convc1 = nn.Conv2d(2 * planes, cfg.corr_dim, 1)
        self.convf1 = nn.Conv2d(4, 2 * cfg.flow_dim, 7, padding=3)
        self.convf2 = nn.Conv2d(2 * cfg.flow_dim, cfg.flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(cfg.corr_dim + cfg.flow_dim, cfg.fc_dim, 3, padding=1)
        lrelu = nn.LeakyReLU(0.1)
        self.gru = nn.Sequential(nn.Conv2d(cfg.fc_dim + 4 + cdim, h, 3, padding=1), lrelu,
                                 nn.Conv2d(h, h, 3, padding=1))
        self.feat_head = nn.Sequential(nn.Conv2d(h, h, 3, padding=1), lrelu, nn.Conv2d(h, cdim, 3, padding=1))
        self.flow_head = nn.Sequential(nn.Conv2d(h, h, 3, padding=1), lrelu, nn.Conv2d(h, 4, 3, padding=1))

    def forward(self, feature: torch.Tensor, flow: torch.Tensor, corr: torch.Tensor):
        lrelu = lambda x: F.leaky_relu(x, 0.1)  # noqa: E731
        if self.scale is not None:
            feature = upsample(feature, 1 / self.scale)
        motion = torch.cat([lrelu(self.convc1(corr)), lrelu(self.convf2(lrelu(self.convf1(flow))))], dim=1)
        out = self.gru(torch.cat([lrelu(self.conv(motion)), flow, feature], dim=1))
        d_feature, d_flow = self.feat_head(out), self.flow_head(out)
        if self.scale is not None:
            d_feature, d_flow = upsample(d_feature, self.scale), self.scale * upsample(d_flow, self.scale)
        return d_feature, d_flow


class ContextPyramid(nn.Module):
    """Four stride-2 levels of (conv + PReLU, conv + PReLU) (upstream `encoder`, modules `pyramid1..4`)."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.levels = len(channels)
        cin = 3
        for i, ch in enumerate(channels, 1):
            self.add_module(f"pyramid{i}", nn.Sequential(conv_prelu(cin, ch, 3, 2, 1), conv_prelu(ch, ch)))
            cin = ch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(1, self.levels + 1):
            x = getattr(self, f"pyramid{i}")(x)
            out.append(x)
        return out


class AMT(nn.Module):
    """AMT-S: two frames in [0, 1] (B, 3, H, W), H and W multiples of 16, and embt (B, 1, 1, 1) -> frame at t."""

    def __init__(self, cfg: AMTConfig | None = None):
        super().__init__()
        cfg = cfg or AMTConfig()
        c, s, n = list(cfg.channels), cfg.skip_channels, cfg.num_flows
        self.cfg = cfg
        self.feat_encoder = CorrelationEncoder(cfg.corr_encoder_dims, cfg.corr_feature_dim)
        self.encoder = ContextPyramid(c)
        self.decoder4 = InitialDecoder(c[3], c[2], s)
        self.decoder3 = RefineDecoder(c[2], c[1], s)
        self.decoder2 = RefineDecoder(c[1], c[0], s)
        self.decoder1 = MultiFieldDecoder(c[0], s, n)
        self.update4 = UpdateBlock(c[2], cfg, None)
        self.update3 = UpdateBlock(c[1], cfg, 2)
        self.update2 = UpdateBlock(c[0], cfg, 4)
        self.comb_block = nn.Sequential(nn.Conv2d(3 * n, 6 * n, 3, 1, 1), nn.PReLU(6 * n), nn.Conv2d(6 * n, 3, 3, 1, 1))

    @staticmethod
    def _lookup(corr: BidirectionalCorrelation, grid: torch.Tensor, flow0: torch.Tensor, flow1: torch.Tensor,
                embt: torch.Tensor, down: int):
        """Scale the flows to t into flows 0 -> 1 and 1 -> 0 (linear motion) and read the correlation there."""
        if down != 1:
            flow0, flow1 = upsample(flow0, 1 / down) / down, upsample(flow1, 1 / down) / down
        c0, c1 = corr(grid + flow1 * (1.0 / embt), grid + flow0 * (1.0 / (1.0 - embt)))
        return torch.cat([c0, c1], dim=1), torch.cat([flow0, flow1], dim=1)

    def _refine(self, update: UpdateBlock, corr, grid, flow0, flow1, ft, embt, down: int):
        c, flow = self._lookup(corr, grid, flow0, flow1, embt, down)
        d_ft, d_flow = update(ft, flow, c)
        return flow0 + d_flow[:, :2], flow1 + d_flow[:, 2:], ft + d_ft

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor) -> torch.Tensor:
        mean = torch.cat([img0, img1], 2).mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
        img0, img1 = img0 - mean, img1 - mean
        b, _, h, w = img0.shape
        grid = pixel_grid(b, h // 8, w // 8)
        fmap0, fmap1 = self.feat_encoder(torch.cat([img0, img1])).split(b)
        corr = BidirectionalCorrelation(fmap0, fmap1, self.cfg.corr_levels, self.cfg.corr_radius)
        f0, f1 = self.encoder(img0), self.encoder(img1)

        flow0, flow1, ft = self.decoder4(f0[3], f1[3], embt)
        flow0, flow1, ft = self._refine(self.update4, corr, grid, flow0, flow1, ft, embt, 1)
        flow0, flow1, ft = self.decoder3(ft, f0[2], f1[2], flow0, flow1)
        flow0, flow1, ft = self._refine(self.update3, corr, grid, flow0, flow1, ft, embt, 2)
        flow0, flow1, ft = self.decoder2(ft, f0[1], f1[1], flow0, flow1)
        flow0, flow1, ft = self._refine(self.update2, corr, grid, flow0, flow1, ft, embt, 4)
        flow0, flow1, mask, residual = self.decoder1(ft, f0[0], f1[0], flow0, flow1)
        return self.merge(img0, img1, flow0, flow1, mask, residual, mean).clamp(0, 1)

    def merge(self, img0, img1, flow0, flow1, mask, residual, mean) -> torch.Tensor:
        """Warp both frames with each of the n flow pairs, blend by mask, add residual and mean; average + comb."""
        n = self.cfg.num_flows
        b, _, h, w = img0.shape
        rep = lambda x: x.unsqueeze(1).expand(b, n, *x.shape[1:]).reshape(b * n, *x.shape[1:])  # noqa: E731
        warped0 = backward_warp(rep(img0), flow0.reshape(b * n, 2, h, w))
        warped1 = backward_warp(rep(img1), flow1.reshape(b * n, 2, h, w))
        m = mask.reshape(b * n, 1, h, w)
        frames = m * warped0 + (1 - m) * warped1 + rep(mean) + residual.reshape(b * n, 3, h, w)
        frames = frames.reshape(b, n, 3, h, w)
        return frames.mean(1) + self.comb_block(frames.reshape(b, 3 * n, h, w))


def pad_amounts(h: int, w: int, multiple: int = PAD_MULTIPLE) -> list[int]:
    """Replicate padding (left, right, top, bottom) up to multiples of `multiple`, split as upstream's InputPadder."""
    ph, pw = (-h) % multiple, (-w) % multiple
    return [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]


def interpolator(model: AMT) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """uint8 RGB (H, W, 3) pair -> the uint8 middle frame (embt 0.5, one pass, truncated as upstream)."""
    embt = torch.tensor(0.5).float().view(1, 1, 1, 1)

    def middle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        pad = pad_amounts(h, w)
        x0, x1 = (F.pad(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None] / 255.0, pad,
                        mode="replicate") for f in (a, b))
        with torch.no_grad():
            out = model(x0, x1, embt)[0, :, pad[2]:pad[2] + h, pad[0]:pad[0] + w]
        return (out * 255.0).permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)
    return middle
