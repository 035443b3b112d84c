"""Mask2Former's MSDeformAttn pixel decoder: a deformable-attention encoder over res3..res5, then one
FPN step to res2 and the 1x1 `mask_features` projection.

Key names follow the official module (`input_proj.<i>.{0,1}`, `transformer.level_embed`,
`transformer.encoder.layers.<j>.{self_attn,norm1,linear1,linear2,norm2}`, `adapter_1`, `layer_1`,
`mask_features`), with `input_proj[0]` for the coarsest level (res5), as in the official code.

Everything that depends only on the input size (position encodings, reference points) is computed
once per size and cached; the deformable attention runs its gather path unless `set_fast(False)`
selects the grid_sample reference.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
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


@dataclass
class PixelDecoderOutput:
    """What the pixel decoder hands to the transformer decoder.

    mask_features: (B, mask_dim, H/4, W/4), dotted with each query's mask embedding into its mask.
    multi_scale_features: the encoded res5, res4, res3 maps, (B, conv_dim, H/32, W/32),
        (B, conv_dim, H/16, W/16), (B, conv_dim, H/8, W/8): coarsest first, the order in which the
        decoder's layers cycle through them."""

    mask_features: torch.Tensor
    multi_scale_features: list[torch.Tensor]

    def float(self) -> PixelDecoderOutput:
        """Both outputs in float32 (after a reduced-precision trunk)."""
        return PixelDecoderOutput(
            self.mask_features.float(), [f.float() for f in self.multi_scale_features]
        )

    def __iter__(self) -> Iterator:
        """Unpacks as `mask_features, multi_scale_features` (for code written against a tuple)."""
        return iter((self.mask_features, self.multi_scale_features))


class DeformableEncoderLayer(nn.Module):
    """Post-norm: x + MSDeformAttn(x + pos) -> LN -> x + FFN(x) -> LN.

    Without autograd, the fast path (`self_attn.use_gather`) runs the layer in chunks of queries
    (single-threaded: their intermediates stay in cache) and adds each bias and residual to an
    output before an in-place matmul accumulates into it. Equal within float rounding."""

    query_chunk = 1024  # queries (all images together) per chunk of the chunked path, one thread

    def __init__(self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        scratch: dict | None = None,
    ) -> torch.Tensor:
        """src (B, S, C), pos (B or 1, S, C), reference_points (B or 1, S, L, 2) -> (B, S, C).
        `scratch`: a dict shared by the layers of one pass; the chunked path keeps its value table
        there for the next layer to overwrite (its zero border is allocated once per pass)."""
        if self.self_attn.use_gather and not torch.is_grad_enabled():
            return self._forward_chunked(src, pos, reference_points, spatial_shapes, scratch)
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))

    def _forward_chunked(
        self, src, pos, reference_points, spatial_shapes, scratch=None
    ) -> torch.Tensor:
        """In float32 (the pixel decoder runs with autocast off)."""
        b, s, _ = src.shape
        attn = self.self_attn
        scratch = {} if scratch is None else scratch
        # every chunk reads all of it; the previous layer's table (done with) lends its border
        table = attn.value_table(src, spatial_shapes, out=scratch.get("table"))
        scratch["table"] = table
        key = ("reference_pixels", attn.n_heads, attn.n_points)  # the same for every layer
        if key not in scratch:
            scratch[key] = attn.reference_pixels(reference_points, spatial_shapes)
        ref = scratch[key]
        out = torch.empty_like(src)
        # chunks help a single thread's caches; with more threads each chunk's many small ops
        # multiply the synchronisation of parallel regions (much slower on a loaded machine)
        step = max(1, self.query_chunk // b) if torch.get_num_threads() == 1 else s
        for q0 in range(0, s, step):
            x = src[:, q0 : q0 + step]
            sampled = attn.sample_table(
                x + pos[:, q0 : q0 + step], ref[:, q0 : q0 + step], table, spatial_shapes
            )
            out[:, q0 : q0 + step] = self._fused_rest(x, sampled).view(x.shape)
        return out

    def _fused_rest(self, x: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """The layer after the sampling, each bias and residual added before an in-place matmul
        accumulates into it: no bias broadcast copy, no separate residual pass."""
        n, c = x.shape[0] * x.shape[1], x.shape[2]
        proj = self.self_attn.output_proj
        y = torch.add(x, proj.bias).view(n, c).addmm_(sampled.view(n, c), proj.weight.t())
        y = self.norm1(y)
        hidden = F.linear(y, self.linear1.weight).add_(self.linear1.bias).relu_()
        return self.norm2(torch.add(y, self.linear2.bias).addmm_(hidden, self.linear2.weight.t()))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class DeformableEncoder(nn.Module):
    def __init__(self, cfg: PixelDecoderConfig, n_levels: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(
                cfg.conv_dim, cfg.ffn_dim, n_levels, cfg.num_heads, cfg.num_points
            )
            for _ in range(cfg.num_layers)
        )


class DeformableTransformer(nn.Module):
    """Holds `level_embed` and `encoder`, mirroring the official `transformer` submodule."""

    def __init__(self, cfg: PixelDecoderConfig, n_levels: int):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, cfg.conv_dim))
        nn.init.normal_(self.level_embed)
        self.encoder = DeformableEncoder(cfg, n_levels)

    def forward(self, srcs: list[torch.Tensor]) -> list[torch.Tensor]:
        """srcs: per level (B, C, H_l, W_l), coarsest first -> encoded maps, same shapes."""
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # (B, S, C)
        num_pos_feats = self.level_embed.shape[1] // 2
        lvl_pos = torch.cat(
            [
                sine_position_encoding(s[:1], num_pos_feats).flatten(2).transpose(1, 2)
                + self.level_embed[i].view(1, 1, -1)
                for i, s in enumerate(srcs)
            ],
            1,
        )
        ref = reference_points(tuple(shapes), flat.dtype, flat.device)
        out, scratch = flat, {}
        for layer in self.encoder.layers:
            out = layer(out, lvl_pos, ref, shapes, scratch)
        return token_maps(out, shapes)


def token_maps(tokens: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """(B, S, C) tokens of all levels -> per level (B, C, H_l, W_l) channels-last views (no copy).

    With one image the views get the strides of a channels-last tensor of their own size (the
    batch stride of a size-1 dimension means nothing, but kernels such as bilinear upsampling only
    take their channels-last path on exact channels-last strides: ~10x faster)."""
    b, c = tokens.shape[0], tokens.shape[2]
    maps = tokens.split([h * w for h, w in shapes], dim=1)
    out = [m.transpose(1, 2).reshape(b, c, h, w) for m, (h, w) in zip(maps, shapes)]
    if b == 1:
        out = [m.as_strided(m.shape, (c * h * w, 1, w * c, c)) for m, (h, w) in zip(out, shapes)]
    return out


def reference_points(
    shapes: tuple[tuple[int, int], ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1]: (1, S, L, 2) (x, y), the same point for
    each level since there is no padding mask (valid ratios 1). Cached per size (a constant)."""
    if torch.compiler.is_compiling():
        return _reference_points(shapes, dtype, device)
    return _cached_reference_points(shapes, dtype, device)


def _reference_points(shapes, dtype, device) -> torch.Tensor:
    refs = []
    for h, w in shapes:
        ys = torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=device) / h
        xs = torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=device) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    return torch.cat(refs, 0)[None, :, None, :].expand(-1, -1, len(shapes), -1)


@functools.lru_cache(maxsize=32)
def _cached_reference_points(shapes, dtype, device) -> torch.Tensor:
    # made outside inference mode and autograd, so training may use what inference cached
    with torch.inference_mode(False), torch.no_grad():
        return _reference_points(shapes, dtype, device)


class MSDeformAttnPixelDecoder(nn.Module):
    """features {"res2".."res5"} (B, C_in, H/s, W/s) -> PixelDecoderOutput."""

    def __init__(self, in_channels: dict[str, int], cfg: PixelDecoderConfig):
        super().__init__()
        self.transformer_in_features = ["res3", "res4", "res5"]
        self.input_proj = nn.ModuleList()
        for name in reversed(self.transformer_in_features):
            proj = nn.Sequential(
                nn.Conv2d(in_channels[name], cfg.conv_dim, kernel_size=1),
                nn.GroupNorm(cfg.num_groups, cfg.conv_dim),
            )
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
            self.input_proj.append(proj)
        self.transformer = DeformableTransformer(cfg, n_levels=3)
        self.conv_dim = cfg.conv_dim
        self.mask_features = nn.Conv2d(cfg.conv_dim, cfg.mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)
        self.adapter_1 = Conv2dNorm(
            in_channels["res2"],
            cfg.conv_dim,
            1,
            bias=False,
            norm=nn.GroupNorm(cfg.num_groups, cfg.conv_dim),
        )
        self.layer_1 = Conv2dNorm(
            cfg.conv_dim,
            cfg.conv_dim,
            3,
            padding=1,
            bias=False,
            norm=nn.GroupNorm(cfg.num_groups, cfg.conv_dim),
        )
        c2_xavier_fill(self.adapter_1)
        c2_xavier_fill(self.layer_1)
        # channels-last convolutions, like the ResNet's: the FPN step at 1/4 resolution is ~20%
        # faster (batch 2, 640x640), and the encoded maps already are channels-last views
        self.to(memory_format=torch.channels_last)
        self.fast = True

    def set_fast(self, enabled: bool = True) -> MSDeformAttnPixelDecoder:
        """The fast path (default; equal within float rounding): deformable attention by gathers,
        fused encoder layers without autograd, `mask_features` outside inference mode as one
        batched matmul that writes NCHW. Disabled: the explicit reference (grid_sample per level,
        unfused layers, nn.Conv2d)."""
        self.fast = bool(enabled)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.use_gather = self.fast
        return self

    def forward(self, features: dict[str, torch.Tensor]) -> PixelDecoderOutput:
        """Always in float32, even inside an autocast region (official: the deformable attention
        does not support half precision, so the whole pixel decoder runs with autocast off)."""
        features = {k: v.float() for k, v in features.items()}
        device_type = features["res2"].device.type
        if device_type not in ("cuda", "cpu"):  # no autocast there to switch off
            return self._forward_fp32(features)
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_fp32(features)

    def _forward_fp32(self, features: dict[str, torch.Tensor]) -> PixelDecoderOutput:
        names = list(reversed(self.transformer_in_features))  # res5, res4, res3
        srcs = [proj(_channels_last(features[n])) for proj, n in zip(self.input_proj, names)]
        multi_scale = self.transformer(srcs)
        lateral = self.adapter_1(_channels_last(features["res2"]))
        # on channels-last input (exact strides, see token_maps) bilinear upsampling takes its
        # channels-last kernel and returns channels-last output, as the lateral and layer_1 are
        up = F.interpolate(
            multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        # in place into the upsampled map (its backward needs neither input nor output kept)
        fpn = F.relu_(self.layer_1(up.add_(lateral)))
        if self.fast and not torch.is_inference_mode_enabled():
            # outside inference mode the features may meet autograd (step 0, or a prompt step's
            # frozen trunk under no_grad): contiguous (NCHW) for the decoder's einsum, whose
            # backward gives the bits the runs of docs/demo.md were measured with
            return PixelDecoderOutput(conv1x1_to_contiguous(fpn, self.mask_features), multi_scale)
        # channels-last (the conv's own output): in inference mode the decoder's mask products
        # read their pixels as a view (decoder.query_masks)
        return PixelDecoderOutput(self.mask_features(fpn), multi_scale)


def conv1x1_to_contiguous(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv of channels-last x (B, C_in, H, W) written as one batched matmul whose result is
    contiguous (B, C_out, H, W): no layout copy after the conv."""
    b, c, h, w = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view for channels-last x
    weight = conv.weight.reshape(1, -1, c).expand(b, -1, -1)
    bias = conv.bias.view(1, -1, 1) if conv.bias is not None else x.new_zeros(1, 1, 1)
    return torch.baddbmm(bias, weight, tokens.transpose(1, 2)).view(b, -1, h, w)
