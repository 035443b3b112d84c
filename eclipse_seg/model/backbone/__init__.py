from eclipse_seg.model.backbone.base import Backbone
from eclipse_seg.model.backbone.resnet import ResNet, ResNetConfig, load_resnet_weights
from eclipse_seg.model.backbone.swin import (
    SWIN_PRESETS,
    SwinConfig,
    SwinTransformer,
    load_swin_weights,
    swin_preset,
)
from eclipse_seg.model.backbone.weights import (
    WEIGHTS_ENV,
    LoadReport,
    WeightsLookup,
    find_weights,
    read_weight_file,
)

__all__ = [
    "SWIN_PRESETS",
    "WEIGHTS_ENV",
    "Backbone",
    "LoadReport",
    "ResNet",
    "ResNetConfig",
    "SwinConfig",
    "SwinTransformer",
    "WeightsLookup",
    "find_weights",
    "load_resnet_weights",
    "load_swin_weights",
    "read_weight_file",
    "swin_preset",
]
