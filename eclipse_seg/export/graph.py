"""The inference graph that gets exported, and the checks of what can be exported.

`InferenceGraph` is the whole of `Mask2Former.forward` from raw pixels: normalisation, zero
padding bottom/right to a multiple of 32 (after normalising, as `Mask2Former.preprocess`), backbone,
pixel decoder, the masked-attention decoder with every query group (block-diagonal self-attention)
and the logit manipulation of eval mode. Post-processing stays outside: its output size depends on
the data (how many segments), so it runs in NumPy (`eclipse_seg.runtime`) or `model.predict`.

What the graph fixes, and why:
* the query groups (every group of the checkpoint, in order): their prompts, heads and the
  block-diagonal self-attention mask are constants of the graph; a model after another step is
  another export;
* the classes and the logit-manipulation deltas (constants too); the test thresholds are not in
  the graph: they belong to the post-processing and travel in the metadata;
* with a Swin backbone, the image size: every Swin stage pads its map to a multiple of the window
  size and builds its shifted-window mask from that size in Python, so the graph depends on it.
The batch size is dynamic; so is the image size (sides >= `MIN_DYNAMIC_SIDE`) with a ResNet backbone.
Images of one batch share one size (pad them yourself; padding changes the outputs slightly, as
in eager PyTorch, since Mask2Former uses no padding mask).

Two spots of the pixel decoder turn feature-map sizes into Python numbers, which `torch.export`
would have to specialise (fix) to the tracing example: the reference points through
`torch.linspace(.., h)` and the level sizes through `torch.tensor([[w, h]])`. `export_friendly`
swaps in forwards with the same arithmetic built from `arange` and tensor ops (bitwise equal, a
test checks it), on the traced copy of the model only. Once `model/pixel_decoder.py` and
`model/msdeform_attn.py` compute them that way themselves, it can go.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from eclipse_seg.errors import ConfigError
from eclipse_seg.model.backbone.swin import WindowAttention
from eclipse_seg.model.decoder import Attention
from eclipse_seg.model.mask2former import SIZE_DIVISIBILITY, Mask2Former
from eclipse_seg.model.msdeform_attn import MSDeformAttn, ms_deform_attn_core
from eclipse_seg.model.pixel_decoder import DeformableTransformer, MSDeformAttnPixelDecoder
from eclipse_seg.model.position_encoding import sine_position_encoding

# Smallest side of a dynamic-size graph: tracing assumes the stride-32 map has at least 2 rows and
# columns (a 1-pixel side would broadcast differently), i.e. a padded side of 64.
MIN_DYNAMIC_SIDE = 33
MIN_OPSET = 18  # the exporter's operator library starts at 18 (GridSample itself needs 16)


class InferenceGraph(nn.Module):
    """images (B, 3, H, W) float32 RGB 0..255 -> (pred_logits (B, Q, C+1), no-object last, after
    logit manipulation; pred_masks (B, Q, H_pad/4, W_pad/4) mask logits)."""

    def __init__(self, model: Mask2Former):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        h, w = x.shape[-2:]
        # written as multiples of 32 (not "-h % 32"): simpler symbolic sizes downstream, which
        # makes tracing and torch.export.load several times faster
        s = SIZE_DIVISIBILITY
        x = F.pad(x, (0, (w + s - 1) // s * s - w, 0, (h + s - 1) // s * s - h))
        out = self.model(x, aux="first")
        return out.pred_logits, out.pred_masks


def check_exportable(
    model: Mask2Former, image_size: tuple[int, int] | None, opset: int | None = None
) -> None:
    """ConfigError naming the option that cannot be exported and why (before any tracing)."""
    if image_size is None and model.cfg.backbone_type == "swin":
        raise ConfigError(
            "model.backbone_type=swin cannot be exported with a dynamic image size: every Swin "
            "stage pads its feature map to a multiple of the window size and builds the "
            "shifted-window attention mask from the padded size in Python, so the graph depends "
            "on the size. Export at a fixed size instead (--height H --width W)"
        )
    if image_size is not None:
        h, w = image_size
        if h < 1 or w < 1:
            raise ConfigError(f"--height/--width must be positive, got {h}x{w}")
    if opset is not None and opset < MIN_OPSET:
        raise ConfigError(
            f"--opset {opset} is too old: the deformable attention of the pixel decoder samples "
            f"with grid_sample (ONNX GridSample, opset >= 16) and the exporter's operator library "
            f"starts at opset {MIN_OPSET}; use --opset {MIN_OPSET} or newer (default 20)"
        )


def _msdeform_forward(self: MSDeformAttn, query, reference_points, value, spatial_shapes):
    """MSDeformAttn.forward with the level sizes as tensor arithmetic (same values)."""
    b, lq, _ = query.shape
    v = self.value_proj(value).view(b, value.shape[1], self.n_heads, -1)
    offsets = self.sampling_offsets(query).view(
        b, lq, self.n_heads, self.n_levels, self.n_points, 2
    )
    weights = self.attention_weights(query).view(b, lq, self.n_heads, self.n_levels * self.n_points)
    weights = weights.softmax(-1).view(b, lq, self.n_heads, self.n_levels, self.n_points)
    one = torch.ones((), dtype=query.dtype, device=query.device)
    normalizer = torch.stack([torch.stack([one * w, one * h]) for h, w in spatial_shapes])
    locations = (
        reference_points[:, :, None, :, None, :]
        + offsets / normalizer[None, None, None, :, None, :]
    )
    return self.output_proj(ms_deform_attn_core(v, spatial_shapes, locations, weights))


def _deformable_transformer_forward(self: DeformableTransformer, srcs):
    """DeformableTransformer.forward with pixel-centre reference points from `arange`
    ((i + 0.5) / h: the values linspace(0.5, h - 0.5, h) / h gives, bitwise) instead of the
    size-keyed cache."""
    shapes = [tuple(s.shape[-2:]) for s in srcs]
    flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    num_pos_feats = self.level_embed.shape[1] // 2
    lvl_pos = torch.cat(
        [
            sine_position_encoding(s[:1], num_pos_feats).flatten(2).transpose(1, 2)
            + self.level_embed[i].view(1, 1, -1)
            for i, s in enumerate(srcs)
        ],
        1,
    )
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=flat.dtype, device=flat.device) + 0.5) / h
        xs = (torch.arange(w, dtype=flat.dtype, device=flat.device) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    ref = torch.cat(refs, 0)[None, :, None, :].expand(flat.shape[0], -1, len(shapes), -1)
    out = flat
    for layer in self.encoder.layers:
        out = layer(out, lvl_pos, ref, shapes)
    b, c = out.shape[0], out.shape[2]
    maps = out.split([h * w for h, w in shapes], dim=1)
    return [m.transpose(1, 2).reshape(b, c, h, w) for m, (h, w) in zip(maps, shapes)]


_EXPORT_FORWARDS = {
    MSDeformAttn: _msdeform_forward,
    DeformableTransformer: _deformable_transformer_forward,
}


@contextmanager
def export_friendly(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the pixel decoder modules of `model` run the export-friendly forwards."""
    patched = []
    for module in model.modules():
        forward = _EXPORT_FORWARDS.get(type(module))
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            patched.append(module)
    try:
        yield model
    finally:
        for module in patched:
            del module.forward


def export_copy(model: Mask2Former) -> Mask2Former:
    """A CPU float32 copy in eval mode with the explicit attention path (SDPA off): what gets
    traced. The caller's model is left as it was."""
    clone = copy.deepcopy(model).to("cpu", torch.float32).eval()
    for m in clone.modules():
        if isinstance(m, (Attention, WindowAttention)):
            m.use_sdpa = False
        if isinstance(m, MSDeformAttnPixelDecoder):
            m.set_fast(False)  # the explicit reference path: grid_sample, which ONNX has
        if hasattr(m, "invalidate_cache"):
            m.invalidate_cache()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
