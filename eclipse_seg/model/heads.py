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


def stack_heads(heads: list[nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor | None]] | None:
    """Per layer, the (K, out, in) weights and (K, 1, out) biases of K heads of one shape (MLPs or
    linear layers); None when fewer than two or the shapes differ. Many groups' small heads then run
    as one batched matmul per layer instead of K calls each (a GPU runs out of launches first)."""
    if len(heads) < 2:
        return None
    layers = [list(h.layers) if isinstance(h, MLP) else [h] for h in heads]
    shapes = {tuple((lin.weight.shape, lin.bias is None) for lin in ls) for ls in layers}
    if len(shapes) != 1:
        return None
    stacked = []
    for i in range(len(layers[0])):
        weight = torch.stack([ls[i].weight for ls in layers])
        bias = (
            None
            if layers[0][i].bias is None
            else torch.stack([ls[i].bias for ls in layers])[:, None]
        )
        stacked.append((weight, bias))
    return stacked


def run_stacked(
    stacked: list[tuple[torch.Tensor, torch.Tensor | None]], x: torch.Tensor
) -> torch.Tensor:
    """x (K, N, in) -> (K, N, out) through K stacked heads (ReLU between layers, as MLP)."""
    for i, (weight, bias) in enumerate(stacked):
        x = (
            x @ weight.transpose(1, 2)
            if bias is None
            else torch.baddbmm(bias, x, weight.transpose(1, 2))
        )
        if i < len(stacked) - 1:
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

    def stacked_step_heads(self):
        """The heads of steps >= 1 stacked (see `stack_heads`); the base head cls[1] and the
        no-object head always run alone, so the base model's logits never depend on later steps."""
        return stack_heads(list(self.cls[2:]))

    def forward(self, x: torch.Tensor, stacked=None) -> torch.Tensor:
        """x (B, Q, hidden); `stacked`: `stacked_step_heads()`, computed once per decoder pass."""
        if stacked is None:
            return torch.cat([head(x) for head in self.cls[1:]] + [self.cls[0](x)], dim=-1)
        b, q, c = x.shape
        k = len(self.cls) - 2
        steps = run_stacked(stacked, x.reshape(1, b * q, c).expand(k, -1, -1))  # (K, BQ, n)
        steps = steps.permute(1, 0, 2).reshape(b, q, -1)  # columns in step order
        return torch.cat([self.cls[1](x), steps, self.cls[0](x)], dim=-1)


def _out_features(head: nn.Module) -> int:
    return head.layers[-1].out_features if isinstance(head, MLP) else head.out_features
