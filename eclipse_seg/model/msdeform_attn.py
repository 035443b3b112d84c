"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

Sampling is bilinear `grid_sample` with zero padding and align_corners=False, the same arithmetic as
the CUDA kernel of the official code, so no compiled op is needed. Parameter names match the
official module (`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn_core(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                        sampling_locations: torch.Tensor,
                        attention_weights: torch.Tensor) -> torch.Tensor:
    """value (B, S, M, D) over all levels; sampling_locations (B, Lq, M, L, P, 2) in [0, 1] (x, y);
    attention_weights (B, Lq, M, L, P) -> (B, Lq, M*D)."""
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (B*M, D, Lq)
    return out.view(b, m * d, lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Each query attends to `n_points` sampled locations per head and level around its reference
    point; offsets and weights are predicted from the query."""

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query (B, Lq, C); reference_points (B, Lq, L, 2) in [0, 1]; value (B, S, C)."""
        b, lq, _ = query.shape
        v = self.value_proj(value).view(b, value.shape[1], self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(b, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(b, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(b, lq, self.n_heads, self.n_levels, self.n_points)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype,
                                  device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn_core(v, spatial_shapes, locations, weights)
        return self.output_proj(out)
