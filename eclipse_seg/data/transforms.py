"""Training augmentation (Mask2Former recipe, parameterised): random short-side resize, random crop,
horizontal flip, mild colour jitter. Plain torch; every random draw comes from the `rng` passed in, so
a run is reproducible and resumable from (seed, step, iteration) alone."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def augment(image: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator, *, base_size: int,
            min_scale: float, max_scale: float, crop_size: int, flip: bool, color_jitter: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """image (3, H, W) uint8, masks (K, H, W) bool -> augmented image, masks, and the indices of the
    segments that survived the crop (non-empty)."""
    h, w = image.shape[-2:]
    scale = rng.uniform(min_scale, max_scale) * base_size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
    if masks.shape[0]:
        masks = F.interpolate(masks[None].float(), size=(nh, nw), mode="nearest")[0] > 0.5
    else:
        masks = masks.new_zeros((0, nh, nw))
    ch, cw = min(crop_size, nh), min(crop_size, nw)
    y0 = int(rng.integers(0, nh - ch + 1))
    x0 = int(rng.integers(0, nw - cw + 1))
    img = img[:, y0 : y0 + ch, x0 : x0 + cw]
    masks = masks[:, y0 : y0 + ch, x0 : x0 + cw]
    if flip and rng.random() < 0.5:
        img, masks = img.flip(-1), masks.flip(-1)
    if color_jitter:
        brightness = rng.uniform(-16, 16)
        contrast = rng.uniform(0.85, 1.15)
        mean = img.mean()
        img = (img - mean) * contrast + mean + brightness
    keep = masks.flatten(1).any(1).nonzero().squeeze(1)
    return img.clamp(0, 255).round().to(torch.uint8), masks[keep], keep
