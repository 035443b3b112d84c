"""ResNet in detectron2's layout (stem, res2..res5, stride on the 3x3 conv), FrozenBN by default.

Module names follow detectron2 (`stem.conv1.norm`, `res2.0.shortcut`, `res3.1.conv2.norm`, ...) so an
official Mask2Former / ECLIPSE checkpoint's `backbone.*` keys load without renaming. Widths are
configurable so tests and the demo use a tiny network of the very same structure.

Norms (`norm`): "FrozenBN" (the R50 configs), or trained batch norm "BN" / "SyncBN" (Mask2Former's
R101 semantic config trains SyncBN in step 0; state-dict keys are the same plus
`num_batches_tracked`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.model.backbone.base import Backbone
from eclipse_seg.model.backbone.weights import (
    LoadReport,
    WeightFile,
    as_tensor,
    load_matching,
    open_weight_file,
)
from eclipse_seg.model.layers import (  # noqa: F401  (FrozenBatchNorm2d, Conv2dNorm: public here too)
    NORMS,
    Conv2dNorm,
    FrozenBatchNorm2d,
    c2_msra_fill,
    make_norm,
)

_TORCHVISION_KEY = re.compile(r"^(layer[1-4]\.|bn1\.|conv1\.)")
_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class BasicStem(nn.Module):
    """conv 7x7/2 + norm + ReLU + maxpool 3x3/2: (B,3,H,W) -> (B,C,H/4,W/4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "FrozenBN"):
        super().__init__()
        self.conv1 = Conv2dNorm(
            in_channels,
            out_channels,
            7,
            stride=2,
            padding=3,
            bias=False,
            norm=make_norm(norm, out_channels),
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride here, as in torchvision weights) -> 1x1, residual with projection shortcut
    when shape changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        stride: int,
        num_groups: int = 1,
        norm: str = "FrozenBN",
    ):
        super().__init__()
        self.shortcut = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2dNorm(
                in_channels,
                out_channels,
                1,
                stride=stride,
                bias=False,
                norm=make_norm(norm, out_channels),
            )
        self.conv1 = Conv2dNorm(
            in_channels,
            bottleneck_channels,
            1,
            bias=False,
            norm=make_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2dNorm(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride,
            padding=1,
            groups=num_groups,
            bias=False,
            norm=make_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2dNorm(
            bottleneck_channels, out_channels, 1, bias=False, norm=make_norm(norm, out_channels)
        )
        for conv in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if conv is not None:
                c2_msra_fill(conv)

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
    norm: str = "FrozenBN"  # "FrozenBN", "BN" or "SyncBN" (see the module docstring)
    # ImageNet weights for step 0: a file (relative: under $ECLIPSE_WEIGHTS, else the working
    # directory) or "none" (random initialisation, on purpose)
    weights: str = "none"
    allow_partial_weights: bool = False  # load what fits from a file that lacks keys


class ResNet(Backbone):
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
        if cfg.norm not in NORMS:
            raise ConfigError(
                f"model.backbone.norm: expected one of {', '.join(NORMS)}, got {cfg.norm!r}"
            )
        self.cfg = cfg
        self.stem = BasicStem(3, cfg.stem_out_channels, cfg.norm)
        in_ch, out_ch = cfg.stem_out_channels, cfg.res2_out_channels
        bottleneck = cfg.num_groups * cfg.width_per_group
        self.out_channels: dict[str, int] = {}
        self.stage_names = []
        for idx, n_blocks in enumerate(_BLOCKS[cfg.depth]):
            name = f"res{idx + 2}"
            blocks = [
                BottleneckBlock(
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    bottleneck,
                    stride=(1 if idx == 0 or i > 0 else 2),
                    num_groups=cfg.num_groups,
                    norm=cfg.norm,
                )
                for i in range(n_blocks)
            ]
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.out_channels[name] = out_ch
            in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2
        self.strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        self.freeze()
        self.to(memory_format=torch.channels_last)

    def frozen_modules(self) -> list[nn.Module]:
        """`freeze_at` k: the stem (k >= 1) and res2..res{k} (detectron2's FREEZE_AT)."""
        return ([self.stem] + [getattr(self, n) for n in self.stage_names])[: self.cfg.freeze_at]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def load_weights(self, path: str | Path, *, allow_partial: bool = False) -> LoadReport:
        return load_resnet_weights(self, path, allow_partial=allow_partial)


def _torchvision_to_detectron2(key: str) -> str:
    """Rename a torchvision ResNet key (`layer1.0.bn1.weight`) to detectron2's
    (`res2.0.conv1.norm.weight`), as detectron2's tools/convert-torchvision-to-d2.py does."""
    if key.startswith(("conv1.", "bn1.")):
        return "stem." + key.replace("bn1.", "conv1.norm.")
    if _TORCHVISION_KEY.match(key):
        stage = int(key[5]) + 1
        key = f"res{stage}" + key[6:]
        key = key.replace(".downsample.0.", ".shortcut.").replace(
            ".downsample.1.", ".shortcut.norm."
        )
        for i in (1, 2, 3):
            key = key.replace(f".bn{i}.", f".conv{i}.norm.")
        return key
    return key


def _looks_like_caffe2(keys: list[str]) -> bool:
    """Caffe2 / MSRA blob names (`conv1_w`, `res2_0_branch2a_w`, `res_conv1_bn_s`): no dots."""
    return bool(keys) and sum("." not in k for k in keys) > len(keys) // 2


def resnet_state_from_file(weights: WeightFile) -> dict[str, torch.Tensor]:
    """A weight file's tensors under detectron2 names: torchvision names renamed, `backbone.`
    prefixes dropped, the classifier (`fc.*`, converted: `stem.fc.*`) and BN step counters left out."""
    keys = [str(k) for k in weights.state]
    if weights.author == "Caffe2" or _looks_like_caffe2(keys):
        raise CheckpointError(
            f"{weights.path} holds Caffe2 (MSRA) blob names such as {keys[:3]}: those networks take "
            f"BGR input with their stride in the 1x1 conv, unlike the torchvision ResNets the official "
            f"configs start from (detectron2's ImageNetPretrained/torchvision/R-50.pkl, or "
            f"torchvision's resnet50/resnet101 .pth)"
        )
    state = {}
    for k, v in weights.state.items():
        k = str(k).removeprefix("backbone.")
        if k.startswith(("fc.", "stem.fc.")) or k.endswith("num_batches_tracked"):
            continue
        if _TORCHVISION_KEY.match(k):
            k = _torchvision_to_detectron2(k)
        state[k] = as_tensor(v)
    return state


def load_resnet_weights(
    model: ResNet, path: str | Path, *, allow_partial: bool = False
) -> LoadReport:
    """Load ImageNet weights from a local file: a torchvision `resnet50`/`resnet101` state dict
    (.pth) or a detectron2 pickle (`R-50.pkl`: {"model": {name: ndarray}}, torchvision or detectron2
    names). Missing, unexpected or mis-shaped keys are a CheckpointError that lists them (nothing is
    loaded) unless `allow_partial`. BatchNorm step counters are never taken from the file."""
    weights = open_weight_file(path)
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]
    return load_matching(
        model,
        weights,
        resnet_state_from_file(weights),
        what="ResNet",
        skip=counters,
        allow_partial=allow_partial,
    )
