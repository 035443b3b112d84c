"""ResNet in detectron2's layout (FrozenBN, stem, res2..res5, stride on the 3x3 conv).

Module names follow detectron2 (`stem.conv1.norm`, `res2.0.shortcut`, `res3.1.conv2.norm`, ...) so an
official Mask2Former / ECLIPSE checkpoint's `backbone.*` keys load without renaming. Widths are
configurable so tests and the demo use a tiny network of the very same structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eclipse_seg.errors import CheckpointError
from eclipse_seg.model.backbone.weights import read_weight_file

_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (buffers, never trained)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The map as x * scale + shift, both (C,)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, bias = self.scale_and_shift()
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + bias.view(1, -1, 1, 1).to(x.dtype)


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
            w = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
            return self._conv_forward(x, w, bias.to(self.weight.dtype))
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


def _c2_msra_fill(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class BasicStem(nn.Module):
    """conv 7x7/2 + FrozenBN + ReLU + maxpool 3x3/2: (B,3,H,W) -> (B,C,H/4,W/4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = Conv2dNorm(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                                norm=FrozenBatchNorm2d(out_channels))
        _c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride here, as in torchvision weights) -> 1x1, residual with projection shortcut
    when shape changes."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int,
                 num_groups: int = 1):
        super().__init__()
        self.shortcut = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False,
                                       norm=FrozenBatchNorm2d(out_channels))
        self.conv1 = Conv2dNorm(in_channels, bottleneck_channels, 1, bias=False,
                                norm=FrozenBatchNorm2d(bottleneck_channels))
        self.conv2 = Conv2dNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride,
                                padding=1, groups=num_groups, bias=False,
                                norm=FrozenBatchNorm2d(bottleneck_channels))
        self.conv3 = Conv2dNorm(bottleneck_channels, out_channels, 1, bias=False,
                                norm=FrozenBatchNorm2d(out_channels))
        for conv in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if conv is not None:
                _c2_msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


@dataclass
class ResNetConfig:
    """depth 50/101 with detectron2 widths by default; shrink the widths for a tiny model."""

    depth: int = 50
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    num_groups: int = 1
    width_per_group: int = 64
    freeze_at: int = 0  # 0: train all convs; 1: freeze the stem; k: stem and res2..res{k}


class ResNet(nn.Module):
    """Outputs {"res2": stride 4, "res3": 8, "res4": 16, "res5": 32}.

    Runs in channels-last memory (weights stored so, the input converted): oneDNN's convolutions
    work on that layout without reordering their operands, and the outputs (B, C, H, W) are
    channels-last tensors."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        if cfg.depth not in _BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS)}, got {cfg.depth}")
        if cfg.depth == 18:
            raise ValueError("ResNet-18 uses basic blocks, which this layout does not provide")
        self.stem = BasicStem(3, cfg.stem_out_channels)
        in_ch, out_ch = cfg.stem_out_channels, cfg.res2_out_channels
        bottleneck = cfg.num_groups * cfg.width_per_group
        self.out_channels: dict[str, int] = {}
        self.stage_names = []
        for idx, n_blocks in enumerate(_BLOCKS[cfg.depth]):
            name = f"res{idx + 2}"
            blocks = [
                BottleneckBlock(in_ch if i == 0 else out_ch, out_ch, bottleneck,
                                stride=(1 if idx == 0 or i > 0 else 2), num_groups=cfg.num_groups)
                for i in range(n_blocks)
            ]
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.out_channels[name] = out_ch
            in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2
        self.strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        self._freeze(cfg.freeze_at)
        self.to(memory_format=torch.channels_last)

    def _freeze(self, freeze_at: int) -> None:
        modules = [self.stem] + [getattr(self, n) for n in self.stage_names]
        for module in modules[:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def _torchvision_to_detectron2(key: str) -> str:
    """Rename a torchvision ResNet key (`layer1.0.bn1.weight`) to detectron2's (`res2.0.conv1.norm.weight`)."""
    if key.startswith("conv1.") or key.startswith("bn1."):
        return "stem." + key.replace("bn1.", "conv1.norm.")
    if key.startswith("layer"):
        stage = int(key[5]) + 1
        key = f"res{stage}" + key[6:]
        key = key.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        for i in (1, 2, 3):
            key = key.replace(f".bn{i}.", f".conv{i}.norm.")
        return key
    return key


def load_resnet_weights(model: ResNet, path: str | Path) -> None:
    """Load ImageNet weights from a local file: a torchvision `resnet50` state dict (.pth) or a
    detectron2 pickle (`R-50.pkl`: {"model": {name: ndarray}}). Missing or unexpected keys are an
    error that lists them."""
    path = Path(path)
    raw = read_weight_file(path)
    state = {}
    for k, v in raw.items():
        k = k.removeprefix("backbone.")
        # torchvision's classifier; the official converted R-50.pkl names it `stem.fc.*`
        if k.startswith(("fc.", "stem.fc.")) or k.endswith("num_batches_tracked"):
            continue
        k = _torchvision_to_detectron2(k) if (k.startswith(("layer", "bn1", "conv1."))) else k
        state[k] = torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not fit this ResNet: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected keys "
            f"{unexpected[:10]} ({len(unexpected)}), shape mismatches {wrong[:10]}"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
