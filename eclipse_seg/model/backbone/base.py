"""What every backbone offers the rest of the model (detectron2's `Backbone` interface, without its
registry): the channels and stride of each output, freezing its first stages, and loading
pretrained weights."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from eclipse_seg.model.backbone.weights import LoadReport
from eclipse_seg.model.layers import FeatureSpec


class Backbone(nn.Module):
    """(B, 3, H, W) -> {"res2": stride 4, ..., "res5": stride 32} feature maps.

    Subclasses fill `out_channels` and `strides` (dicts keyed like the outputs), list their frozen
    submodules in `frozen_modules()` and read weight files in `load_weights`. Frozen submodules have
    no trainable parameter and stay in eval mode whatever `train()` is called with."""

    out_channels: dict[str, int]
    strides: dict[str, int]

    def output_shape(self) -> dict[str, FeatureSpec]:
        """Channels and stride per output feature, in output order."""
        return {
            name: FeatureSpec(self.out_channels[name], self.strides[name])
            for name in self.out_channels
        }

    def frozen_modules(self) -> list[nn.Module]:
        """The submodules the backbone's own freezing setting keeps fixed."""
        return []

    def freeze(self) -> Backbone:
        """Apply the backbone's freezing setting: no gradient and eval mode for `frozen_modules()`.
        Idempotent; call again after making every parameter trainable."""
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def load_weights(self, path: str | Path, *, allow_partial: bool = False) -> LoadReport:
        """Load ImageNet weights from a file; see the subclass for the layouts it accepts."""
        raise NotImplementedError
