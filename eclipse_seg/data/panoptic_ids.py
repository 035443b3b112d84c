"""COCO panoptic segment ids: the RGB encoding id = R + 256*G + 256**2*B (0 = void) and the one
rule for reading a panoptic PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from eclipse_seg.data.files import PIL_ERRORS, is_file
from eclipse_seg.errors import DataError

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


def read_panoptic_png(path: str | os.PathLike, *, panopticapi: bool = False) -> np.ndarray:
    """An (H, W) int64 segment-id map from a panoptic PNG; any failure is a DataError naming it.

    RGB and RGBA files use R + 256 G + 256^2 B. Single-channel files are where the two users of
    this rule differ, on purpose:
    - the dataset reader (default) converts a palette (P) image to its RGB colours and rejects
      L / I images: ground truth written by COCO's and ADE20K's tools is RGB;
    - the PQ evaluator (``panopticapi=True``) reads every single-channel image (L, I, P) as the ids
      themselves, as panopticapi does (``np.array(Image.open(f), dtype=np.uint32)``), so predictions
      saved that way score as they would there.
    """
    path = Path(path)
    if not is_file(path):
        raise DataError(f"{path}: panoptic PNG file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if not panopticapi and im.mode in ("P", "RGBA"):
                im = im.convert("RGB")
            if not panopticapi and im.mode != "RGB":
                raise DataError(
                    f"{path}: panoptic PNG must be RGB (id = R + 256*G + 256^2*B), "
                    f"got mode {im.mode}"
                )
            arr = np.asarray(im)
    except PIL_ERRORS as e:
        raise DataError(f"{path}: cannot decode panoptic PNG (corrupt or truncated?): {e}") from e
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return rgb2id(arr[..., :3])
    if arr.ndim == 2 and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        ids = arr.astype(np.int64)
        if ids.size and ids.min() < 0:
            raise DataError(f"{path}: single-channel panoptic PNG holds negative values")
        return ids
    raise DataError(
        f"{path}: unsupported panoptic PNG layout (array shape {arr.shape}, dtype {arr.dtype})"
    )
