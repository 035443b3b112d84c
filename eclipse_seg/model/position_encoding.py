"""Sine position encoding of Mask2Former (DETR's, normalised to [0, 2pi], no padding mask).

The encoding depends only on the map's size, so it is computed once per (size, dtype, device) and
shared by the pixel decoder and the decoder (a small LRU cache of constant tensors)."""

from __future__ import annotations

import functools
import math

import torch


def sine_position_encoding(
    x: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """(B, C, H, W) feature map -> (B, 2*num_pos_feats, H, W) encoding (y features, then x).

    The result is a read-only broadcast view (batch stride 0) of a cached constant: add it to other
    tensors, never write into it."""
    b, _, h, w = x.shape
    args = (h, w, num_pos_feats, temperature, scale, x.dtype, x.device)
    table = _compute(*args) if torch.compiler.is_compiling() else _cached(*args)
    return table.expand(b, -1, -1, -1)


def _compute(
    h: int,
    w: int,
    num_pos_feats: int,
    temperature: float,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """(1, 2*num_pos_feats, H, W), computed in float32 then cast."""
    eps = 1e-6
    y_embed = (
        torch.arange(1, h + 1, dtype=torch.float32, device=device).view(1, h, 1).expand(1, h, w)
    )
    x_embed = (
        torch.arange(1, w + 1, dtype=torch.float32, device=device).view(1, 1, w).expand(1, h, w)
    )
    y_embed = y_embed / (h + eps) * scale
    x_embed = x_embed / (w + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(dtype)


@functools.lru_cache(maxsize=32)
def _cached(*args) -> torch.Tensor:
    # a constant made outside inference mode and autograd, so training may use what inference cached
    with torch.inference_mode(False), torch.no_grad():
        return _compute(*args)  # channels-last memory: (B, H*W, C) after flatten/transpose
