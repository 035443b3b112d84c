"""A tiny Mask2Former overfits one synthetic image: the whole training path learns."""

import numpy as np
import pytest
import torch

from eclipse_seg.data.synthetic import SyntheticSpec, generate_image
from eclipse_seg.losses import LossConfig, SetCriterion, Target
from eclipse_seg.model.backbone.resnet import ResNetConfig
from eclipse_seg.model.decoder import DecoderConfig
from eclipse_seg.model.mask2former import Mask2Former, ModelConfig
from eclipse_seg.model.pixel_decoder import PixelDecoderConfig


def tiny_cfg(num_classes: int) -> ModelConfig:
    return ModelConfig(
        backbone=ResNetConfig(
            depth=50, stem_out_channels=8, res2_out_channels=16, width_per_group=4
        ),
        pixel_decoder=PixelDecoderConfig(
            conv_dim=32, mask_dim=32, num_layers=1, num_heads=4, ffn_dim=64, num_groups=8
        ),
        decoder=DecoderConfig(hidden_dim=32, num_heads=4, ffn_dim=64, num_layers=3, num_queries=8),
        base_classes=num_classes,
    )


def sample():
    image, ids, seg_to_cat = generate_image(np.random.default_rng(0), SyntheticSpec())
    segs = sorted(seg_to_cat)
    labels = torch.tensor([seg_to_cat[s] - 1 for s in segs], dtype=torch.int64)  # 0-based labels
    masks = torch.zeros(len(segs), 64, 64)  # padded size (64 is already a multiple of 32)
    for k, s in enumerate(segs):
        masks[k, : ids.shape[0], : ids.shape[1]] = torch.from_numpy(ids == s).float()
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), Target(labels, masks)


@pytest.mark.parametrize("seed", [0])  # seeds 0-4 all reach 0.41-0.53 of the first loss
def test_tiny_model_overfits_one_image(seed):
    image, target = sample()
    assert target.labels.numel() >= 2 and target.masks.sum(0).max() == 1  # non-overlapping segments
    torch.manual_seed(seed)
    model = Mask2Former(tiny_cfg(12)).train()
    criterion = SetCriterion(LossConfig(num_points=256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        out = model([image])
        assert out.pred_masks.shape == (1, 8, 16, 16)
        assert len(out.aux_outputs) == 3
        loss, terms = criterion(out, [target])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
