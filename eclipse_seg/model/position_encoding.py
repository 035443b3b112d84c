"""Sine position encoding of Mask2Former (DETR's, normalised to [0, 2pi], no padding mask)."""

from __future__ import annotations

import math

import torch


def sine_position_encoding(x: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0,
                           scale: float = 2 * math.pi) -> torch.Tensor:
    """(B, C, H, W) feature map -> (B, 2*num_pos_feats, H, W) encoding (y features, then x)."""
    b, _, h, w = x.shape
    eps = 1e-6
    y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device).view(1, h, 1).expand(b, h, w)
    x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device).view(1, 1, w).expand(b, h, w)
    y_embed = y_embed / (h + eps) * scale
    x_embed = x_embed / (w + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)
