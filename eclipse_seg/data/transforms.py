"""Image transforms. Training augmentation (Mask2Former recipe, parameterised): random short-side
resize, random crop, horizontal flip, mild colour jitter; plain torch, every random draw from the
`rng` passed in, so a run is reproducible and resumable from (seed, step, iteration) alone. Test-time
resize: detectron2's ResizeShortestEdge, reproduced exactly so evaluation sees the official inputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def augment(
    image: torch.Tensor,
    masks: torch.Tensor,
    rng: np.random.Generator,
    *,
    base_size: int,
    min_scale: float,
    max_scale: float,
    crop_size: int,
    flip: bool,
    color_jitter: bool,
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


def shortest_edge_size(h: int, w: int, short: int, max_size: int = 0) -> tuple[int, int]:
    """(new_h, new_w) of detectron2's ``ResizeShortestEdge.get_output_shape``: the short side to
    ``short``, then both sides scaled down so the long side is at most ``max_size`` (0 = no cap),
    each rounded as ``int(x + 0.5)``. ``short`` 0 = the size unchanged."""
    if short <= 0:
        return h, w
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max_size > 0 and max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_shortest_edge(image: np.ndarray, short: int, max_size: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 -> resized (H', W', 3) uint8 as detectron2's ``ResizeTransform`` resizes uint8
    images at test time (Pillow, bilinear); unchanged when the size is."""
    h, w = image.shape[:2]
    new_h, new_w = shortest_edge_size(h, w, short, max_size)
    if (new_h, new_w) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
