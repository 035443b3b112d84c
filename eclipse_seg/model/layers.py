"""Small layers shared by the backbones and the pixel decoder: detectron2's conv-with-norm key layout,
its norm choices (FrozenBN / BN / SyncBN / GN), its two conv initialisations, and the shape record a
backbone reports per output feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eclipse_seg.errors import ConfigError

# `model.backbone.norm` values (detectron2's names)
NORMS = ("FrozenBN", "BN", "SyncBN")


@dataclass(frozen=True)
class FeatureSpec:
    """One backbone output: channels and stride (input pixels per feature pixel)."""

    channels: int
    stride: int


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (buffers, never trained).

    `running_var` starts at 1 - eps so that a fresh layer is the identity (detectron2's choice)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer as x * scale + shift per channel, both (C,)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        scale, shift = self.scale_and_shift()
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-D norm layer by detectron2 name: "FrozenBN" (fixed statistics), "BN" (trained, statistics of
    this process's batch) or "SyncBN" (trained, statistics synchronised over the processes of a
    torchrun job; on a single process it behaves as "BN")."""
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    if kind == "SyncBN":
        return nn.SyncBatchNorm(channels)
    raise ConfigError(f"model.backbone.norm: expected one of {', '.join(NORMS)}, got {kind!r}")


class Conv2dNorm(nn.Conv2d):
    """A conv with its norm as a child named `norm` (detectron2's `Conv2d(norm=...)` key layout).

    A FrozenBatchNorm2d is an affine map per output channel, so it is folded into the conv's weight
    and bias (one pass over the activations instead of three; equal within float rounding)."""

    def __init__(self, *args, norm: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm, FrozenBatchNorm2d):
            scale, shift = self.norm.scale_and_shift()
            bias = shift if self.bias is None else shift + self.bias * scale
            weight = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
            return self._conv_forward(x, weight, bias.to(self.weight.dtype))
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


def c2_msra_fill(conv: nn.Conv2d) -> None:
    """Caffe2's MSRAFill: He-normal weights (fan_out), zero bias (detectron2's ResNet convs)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def c2_xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2's XavierFill: uniform with a = 1 (fan_in), zero bias (Mask2Former's FPN convs)."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def train_keeping_frozen_in_eval(model: nn.Module) -> nn.Module:
    """`model.train()`, then every submodule none of whose parameters is trainable back to eval.

    Frozen parts then behave exactly as at inference: BatchNorm uses (and never updates) its running
    statistics, dropout and drop-path are off. Modules without parameters keep their parent's mode,
    so a dropout directly inside a trainable module still drops. Returns `model`."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
    return model
