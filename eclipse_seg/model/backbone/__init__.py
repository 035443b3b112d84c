from eclipse_seg.model.backbone.resnet import ResNet, ResNetConfig, load_resnet_weights

__all__ = ["ResNet", "ResNetConfig", "load_resnet_weights"]
