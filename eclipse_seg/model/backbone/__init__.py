from eclipse_seg.model.backbone.resnet import ResNet, ResNetConfig, load_resnet_weights
from eclipse_seg.model.backbone.swin import (
    SWIN_PRESETS,
    SwinConfig,
    SwinTransformer,
    load_swin_weights,
    swin_preset,
)

__all__ = ["SWIN_PRESETS", "ResNet", "ResNetConfig", "SwinConfig", "SwinTransformer",
           "load_resnet_weights", "load_swin_weights", "swin_preset"]
