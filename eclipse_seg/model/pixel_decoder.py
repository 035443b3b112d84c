"""Mask2Former's MSDeformAttn pixel decoder: a deformable-attention encoder over res3..res5, then one
FPN step to res2 and the 1x1 `mask_features` projection.

Key names follow the official module (`input_proj.<i>.{0,1}`, `transformer.level_embed`,
`transformer.encoder.layers.<j>.{self_attn,norm1,linear1,linear2,norm2}`, `adapter_1`, `layer_1`,
`mask_features`), with `input_proj[0]` for the coarsest level (res5), as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eclipse_seg.model.layers import Conv2dNorm, c2_xavier_fill
from eclipse_seg.model.msdeform_attn import MSDeformAttn
from eclipse_seg.model.position_encoding import sine_position_encoding


@dataclass
class PixelDecoderConfig:
    conv_dim: int = 256
    mask_dim: int = 256
    num_layers: int = 6  # deformable encoder layers
    num_heads: int = 8  # the official code passes the decoder's head count
    num_points: int = 4
    ffn_dim: int = 1024
    num_groups: int = 32  # GroupNorm groups


class DeformableEncoderLayer(nn.Module):
    """Post-norm: x + MSDeformAttn(x + pos) -> LN -> x + FFN(x) -> LN."""

    def __init__(self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DeformableEncoder(nn.Module):
    def __init__(self, cfg: PixelDecoderConfig, n_levels: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(cfg.conv_dim, cfg.ffn_dim, n_levels, cfg.num_heads, cfg.num_points)
            for _ in range(cfg.num_layers)
        )


class DeformableTransformer(nn.Module):
    """Holds `level_embed` and `encoder`, mirroring the official `transformer` submodule."""

    def __init__(self, cfg: PixelDecoderConfig, n_levels: int):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, cfg.conv_dim))
        nn.init.normal_(self.level_embed)
        self.encoder = DeformableEncoder(cfg, n_levels)

    def forward(self, srcs: list[torch.Tensor], pos: list[torch.Tensor]) -> list[torch.Tensor]:
        """srcs/pos: per level (B, C, H_l, W_l), coarsest first -> encoded maps, same shapes."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        lvl_pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1) for i, p in enumerate(pos)], 1
        )
        refs = []
        for h, w in shapes:  # pixel centres, normalised; no padding mask so valid ratios are 1
            ys = torch.linspace(0.5, h - 0.5, h, dtype=flat.dtype, device=flat.device) / h
            xs = torch.linspace(0.5, w - 0.5, w, dtype=flat.dtype, device=flat.device) / w
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        ref = torch.cat(refs, 0)[None, :, None, :].expand(flat.shape[0], -1, len(shapes), -1)
        out = flat
        for layer in self.encoder.layers:
            out = layer(out, lvl_pos, ref, shapes)
        b, c = out.shape[0], out.shape[2]
        maps = out.split([h * w for h, w in shapes], dim=1)
        return [m.transpose(1, 2).reshape(b, c, h, w) for m, (h, w) in zip(maps, shapes)]


class MSDeformAttnPixelDecoder(nn.Module):
    """features {"res2".."res5"} -> (mask_features (B, mask_dim, H/4, W/4),
    multi-scale features [res5, res4, res3] each (B, conv_dim, ., .))."""

    def __init__(self, in_channels: dict[str, int], cfg: PixelDecoderConfig):
        super().__init__()
        self.transformer_in_features = ["res3", "res4", "res5"]
        self.input_proj = nn.ModuleList()
        for name in reversed(self.transformer_in_features):
            proj = nn.Sequential(nn.Conv2d(in_channels[name], cfg.conv_dim, kernel_size=1),
                                 nn.GroupNorm(cfg.num_groups, cfg.conv_dim))
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
            self.input_proj.append(proj)
        self.transformer = DeformableTransformer(cfg, n_levels=3)
        self.conv_dim = cfg.conv_dim
        self.mask_features = nn.Conv2d(cfg.conv_dim, cfg.mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)
        self.adapter_1 = Conv2dNorm(in_channels["res2"], cfg.conv_dim, 1, bias=False,
                                    norm=nn.GroupNorm(cfg.num_groups, cfg.conv_dim))
        self.layer_1 = Conv2dNorm(cfg.conv_dim, cfg.conv_dim, 3, padding=1, bias=False,
                                  norm=nn.GroupNorm(cfg.num_groups, cfg.conv_dim))
        c2_xavier_fill(self.adapter_1)
        c2_xavier_fill(self.layer_1)

    def forward(self, features: dict[str, torch.Tensor]):
        """Always in float32, even inside an autocast region (official: the deformable attention
        does not support half precision, so the whole pixel decoder runs with autocast off)."""
        features = {k: v.float() for k, v in features.items()}
        device_type = features["res2"].device.type
        if device_type not in ("cuda", "cpu"):  # no autocast there to switch off
            return self._forward_fp32(features)
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_fp32(features)

    def _forward_fp32(self, features: dict[str, torch.Tensor]):
        names = list(reversed(self.transformer_in_features))  # res5, res4, res3
        srcs = [proj(features[n]) for proj, n in zip(self.input_proj, names)]
        pos = [sine_position_encoding(s, self.conv_dim // 2) for s in srcs]
        multi_scale = self.transformer(srcs, pos)
        lateral = self.adapter_1(features["res2"])
        fpn = lateral + F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear",
                                      align_corners=False)
        fpn = F.relu(self.layer_1(fpn))
        return self.mask_features(fpn), multi_scale
