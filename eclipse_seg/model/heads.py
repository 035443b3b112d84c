"""Prediction heads: the mask-embedding MLP and the per-step class heads.

`IncrementalClassifier.cls[0]` is the single no-object logit, `cls[k]` (k >= 1) scores the classes of
step k-1. Output columns: all step heads in step order, then the no-object column last (official
layout, so official checkpoints and their column indices carry over).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them; keys `layers.<i>`."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def make_class_head(hidden_dim: int, num_outputs: int, deep: bool, bias: bool = True) -> nn.Module:
    """A 3-layer MLP (`deep_cls`) or one linear layer scoring `num_outputs` columns."""
    if deep:
        return MLP(hidden_dim, hidden_dim, num_outputs, 3)
    return nn.Linear(hidden_dim, num_outputs, bias=bias)


class IncrementalClassifier(nn.Module):
    """Concatenates the step heads' logits: (B, Q, hidden) -> (B, Q, C_seen + 1)."""

    def __init__(self, hidden_dim: int, classes_per_step: list[int], deep: bool, bias: bool = True):
        super().__init__()
        self.hidden_dim, self.deep, self.bias = hidden_dim, deep, bias
        self.cls = nn.ModuleList(
            make_class_head(hidden_dim, n, deep, bias) for n in [1] + list(classes_per_step)
        )

    @property
    def classes_per_step(self) -> list[int]:
        return [_out_features(head) for head in self.cls[1:]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.cls[1:]] + [self.cls[0](x)], dim=-1)


def _out_features(head: nn.Module) -> int:
    return head.layers[-1].out_features if isinstance(head, MLP) else head.out_features
