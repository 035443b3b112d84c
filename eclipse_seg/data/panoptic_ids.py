"""COCO panoptic segment-id <-> RGB encoding: id = R + 256*G + 256**2*B (0 = void)."""

from __future__ import annotations

import numpy as np

MAX_ID = 256**3 - 1


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB array -> (H, W) int64 segment ids."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"rgb2id expects an (H, W, 3) array, got shape {arr.shape}")
    arr = arr.astype(np.int64)
    return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids in [0, 256**3) -> (H, W, 3) uint8 RGB array."""
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"id2rgb expects an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > MAX_ID):
        raise ValueError(f"segment ids must lie in [0, {MAX_ID}], got [{arr.min()}, {arr.max()}]")
    out = np.empty(arr.shape + (3,), dtype=np.uint8)
    out[..., 0] = arr % 256
    out[..., 1] = (arr // 256) % 256
    out[..., 2] = arr // 65536
    return out


def rgb2id_scalar(rgb) -> int:
    """(R, G, B) -> segment id."""
    r, g, b = (int(v) for v in rgb)
    for v in (r, g, b):
        if not 0 <= v <= 255:
            raise ValueError(f"colour components must lie in [0, 255], got {tuple(rgb)}")
    return r + 256 * g + 65536 * b


def id2rgb_scalar(segment_id: int) -> tuple[int, int, int]:
    """Segment id -> (R, G, B)."""
    i = int(segment_id)
    if not 0 <= i <= MAX_ID:
        raise ValueError(f"segment id must lie in [0, {MAX_ID}], got {segment_id}")
    return (i % 256, (i // 256) % 256, i // 65536)
