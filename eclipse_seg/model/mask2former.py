"""Mask2Former: backbone -> pixel decoder -> masked-attention decoder, with official key names
(`backbone.*`, `sem_seg_head.pixel_decoder.*`, `sem_seg_head.predictor.*`).

Input: a list of (3, H, W) RGB tensors in 0..255 (uint8 or float). They are normalised, zero-padded
bottom/right to the batch maximum and then to a multiple of 32; no padding mask is used anywhere
(official behaviour), so an image's output depends on how much padding it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from eclipse_seg.errors import ConfigError
from eclipse_seg.inference import Thresholds, postprocess
from eclipse_seg.model.backbone.resnet import ResNet, ResNetConfig
from eclipse_seg.model.backbone.swin import SwinConfig, SwinTransformer, WindowAttention
from eclipse_seg.model.decoder import DecoderConfig, DecoderOutput, MaskedAttentionDecoder
from eclipse_seg.model.pixel_decoder import (
    MSDeformAttnPixelDecoder,
    PixelDecoderConfig,
    PixelDecoderOutput,
)

PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)
SIZE_DIVISIBILITY = 32


@dataclass
class ModelConfig:
    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    backbone_type: str = "resnet"  # "resnet" (uses `backbone`) or "swin" (uses `swin`)
    swin: SwinConfig = field(default_factory=SwinConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    base_classes: int = 0  # classes of step 0; 0 = set from the scenario when the model is built


class SemSegHead(nn.Module):
    """Container mirroring the official `sem_seg_head` (pixel_decoder + predictor)."""

    def __init__(self, pixel_decoder: nn.Module, predictor: nn.Module):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor


class Mask2Former(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.backbone_type == "resnet":
            self.backbone = ResNet(cfg.backbone)
        elif cfg.backbone_type == "swin":
            self.backbone = SwinTransformer(cfg.swin)
        else:
            raise ConfigError(
                f"model.backbone_type must be 'resnet' or 'swin', got {cfg.backbone_type!r}"
            )
        if cfg.base_classes <= 0:
            raise ConfigError(
                f"model.base_classes must be positive to build a model, got "
                f"{cfg.base_classes} (the engine sets it from the scenario)"
            )
        pixel_decoder = MSDeformAttnPixelDecoder(self.backbone.out_channels, cfg.pixel_decoder)
        predictor = MaskedAttentionDecoder(
            cfg.pixel_decoder.conv_dim, cfg.pixel_decoder.mask_dim, cfg.decoder, cfg.base_classes
        )
        self.sem_seg_head = SemSegHead(pixel_decoder, predictor)
        self.register_buffer(
            "pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)
        # Thing flags per model label (0-based), used by panoptic post-processing.
        self.register_buffer("thing_mask", torch.zeros(cfg.base_classes, dtype=torch.bool))
        # `predict`'s thresholds unless given per call (set from the config's `test` section).
        self.thresholds = Thresholds()

    @property
    def decoder(self) -> MaskedAttentionDecoder:
        return self.sem_seg_head.predictor

    @property
    def num_classes(self) -> int:
        return sum(self.decoder.class_embed.classes_per_step)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def set_fast_attention(self, enabled: bool | None = True) -> Mask2Former:
        """Attention through F.scaled_dot_product_attention (True: faster, equal within float
        rounding) or the explicit, bitwise-reproducible path (False). For the decoder, None (its
        default) = fused when the decoder is in eval mode, explicit when it trains; Swin's window
        attention is explicit unless True."""
        from eclipse_seg.model.decoder import Attention

        for m in self.modules():
            if isinstance(m, Attention):
                m.use_sdpa = enabled if enabled is None else bool(enabled)
            elif isinstance(m, WindowAttention):
                m.use_sdpa = bool(enabled)
        return self

    def set_fast_pixel_decoder(self, enabled: bool = True) -> Mask2Former:
        """Pixel decoder deformable attention by the gather path (the default: faster, equal within
        float rounding) or, when disabled, by the explicit grid_sample reference."""
        self.sem_seg_head.pixel_decoder.set_fast(enabled)
        return self

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """List of (3, H, W) 0..255 -> normalised, zero-padded batch (B, 3, H_pad, W_pad)."""
        h = max(int(im.shape[-2]) for im in images)
        w = max(int(im.shape[-1]) for im in images)
        h = (h + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY * SIZE_DIVISIBILITY
        w = (w + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY * SIZE_DIVISIBILITY
        batch = torch.zeros(len(images), 3, h, w, device=self.device)
        for i, im in enumerate(images):
            x = (im.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
            batch[i, :, : im.shape[-2], : im.shape[-1]] = x
        return batch

    def features(self, batch: torch.Tensor) -> PixelDecoderOutput:
        """The trunk (backbone + pixel decoder), frozen at prompt-tuning steps."""
        feats = self.backbone(batch)
        return self.sem_seg_head.pixel_decoder(feats)

    def forward(
        self,
        images: list[torch.Tensor] | torch.Tensor,
        groups: tuple[int, ...] | None = None,
        aux: str = "all",
        manipulate: bool | None = None,
    ) -> DecoderOutput:
        """`images`: list of (3, H, W) RGB 0..255, or an already preprocessed batch.
        Returns pred_logits (B, Q, C+1; no-object last; after logit manipulation in eval mode) and
        pred_masks (B, Q, H_pad/4, W_pad/4)."""
        batch = images if isinstance(images, torch.Tensor) else self.preprocess(images)
        trunk = self.features(batch)
        return self.decoder(
            trunk.multi_scale_features,
            trunk.mask_features,
            groups=groups,
            aux=aux,
            manipulate=manipulate,
        )

    @torch.inference_mode()
    def predict(
        self,
        images: list[torch.Tensor],
        output_sizes: list[tuple[int, int] | None] | None = None,
        **thresholds,
    ) -> list[dict]:
        """Panoptic and semantic predictions, one dict per image (see `inference.postprocess`).
        `output_sizes[i]` None (or no list) = the image's own size; `thresholds` override
        `self.thresholds` (object_mask_threshold, overlap_threshold)."""
        settings = {**vars(self.thresholds), **thresholds}
        was_training = self.training
        self.eval()
        try:
            out = self(images)
            sizes = [tuple(im.shape[-2:]) for im in images]
            wanted = output_sizes or [None] * len(images)
            padded = (out.pred_masks.shape[-2] * 4, out.pred_masks.shape[-1] * 4)
            return [
                postprocess(
                    out.pred_logits[i],
                    out.pred_masks[i],
                    padded,
                    sizes[i],
                    tuple(wanted[i] or sizes[i]),
                    self.thing_mask,
                    **settings,
                )
                for i in range(len(images))
            ]
        finally:
            self.train(was_training)
