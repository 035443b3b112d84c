"""Panoptic and semantic post-processing in NumPy: the rules of `eclipse_seg.inference`, step for
step, for the torch-free runtime.

Rules (official Mask2Former / ECLIPSE, sigmoid scores): a query is kept if its best column
(no-object included) is not no-object and its score > `object_mask_threshold`; its mask logits are
upsampled to the padded input size, cropped to the image and resized to the output size (bilinear,
align_corners False); each pixel goes to the kept query with the highest score * mask probability
and is assigned only where that probability >= 0.5; a query whose owned area is empty or below
`overlap_threshold` of its own >= 0.5 area is dropped; stuff queries of an already placed class
join that segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eclipse_seg.panoptic_segments import place_segments

IGNORE_LABEL = 255


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Float32 logistic function 1 / (1 + exp(-x)) (one temporary)."""
    y = np.negative(np.asarray(x, dtype=np.float32))
    np.exp(y, out=y)
    y += np.float32(1.0)
    return np.reciprocal(y, out=y)


def _linear_weights(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weight of i1 of every output position, as PyTorch's bilinear
    kernel computes them (align_corners False: src = (dst + 0.5) * in/out - 0.5 in float32 with
    one rounding, as its fused multiply-add; clamped at 0)."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    src = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)  # truncation = floor for src >= 0
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)


def _interpolate(x: np.ndarray, rows, cols) -> np.ndarray:
    """Bilinear interpolation of (N, h, w) at the given (i0, i1, weight) rows and columns: width
    first, then height, as PyTorch's kernel; in-place steps keep the temporaries few."""
    c0, c1, lw = cols
    t = np.take(x, c0, axis=-1)
    t *= np.float32(1.0) - lw
    u = np.take(x, c1, axis=-1)
    u *= lw
    t += u
    r0, r1, lh = rows
    out = np.take(t, r0, axis=-2)
    out *= (np.float32(1.0) - lh)[:, None]
    v = np.take(t, r1, axis=-2)
    v *= lh[:, None]
    out += v
    return out


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) float32 -> (N, H, W): F.interpolate(mode="bilinear", align_corners=False) without
    antialiasing."""
    x = np.asarray(x, dtype=np.float32)
    out_h, out_w = int(size[0]), int(size[1])
    if (out_h, out_w) == x.shape[-2:]:
        return x.copy()
    return _interpolate(x, _linear_weights(out_h, x.shape[-2]), _linear_weights(out_w, x.shape[-1]))


def resize_mask_logits(
    masks: np.ndarray,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> np.ndarray:
    """(Q, h, w) mask logits at 1/4 of the padded input -> (Q, H_out, W_out): upsampled to the
    padded size (only the image's rows and columns are computed: the crop), then resized to the
    output size."""
    masks = np.asarray(masks, dtype=np.float32)
    rows = tuple(a[: image_size[0]] for a in _linear_weights(padded_size[0], masks.shape[-2]))
    cols = tuple(a[: image_size[1]] for a in _linear_weights(padded_size[1], masks.shape[-1]))
    x = _interpolate(masks, rows, cols)
    if tuple(output_size) != tuple(image_size):
        x = resize_bilinear(x, output_size)
    return x


def _assign_pixels(masks, scores, padded_size, image_size, output_size, chunk: int = 16):
    """Over the kept queries' masks (K, h, w) and scores (K,), a chunk of queries at a time (memory
    O(chunk * H * W) instead of O(K * H * W)): each pixel's owner (argmax of score * probability,
    the first on ties, as torch.argmax), the owner's probability, and each query's number of
    pixels with probability >= 0.5."""
    h, w = int(output_size[0]), int(output_size[1])
    k = len(scores)
    best = np.full((h, w), -1.0, dtype=np.float32)
    owner = np.zeros((h, w), dtype=np.int64)
    owner_prob = np.zeros((h, w), dtype=np.float32)
    conf_area = np.zeros(k, dtype=np.int64)
    for start in range(0, k, chunk):
        probs = sigmoid(
            resize_mask_logits(masks[start : start + chunk], padded_size, image_size, output_size)
        )
        n = len(probs)
        conf_area[start : start + n] = (probs >= 0.5).reshape(n, -1).sum(1)
        weighted = scores[start : start + n, None, None] * probs
        idx = weighted.argmax(0)
        top = np.take_along_axis(weighted, idx[None], 0)[0]
        better = top > best  # strict: an earlier query keeps a tie
        best = np.where(better, top, best)
        owner = np.where(better, idx + start, owner)
        owner_prob = np.where(better, np.take_along_axis(probs, idx[None], 0)[0], owner_prob)
    return owner, owner_prob, conf_area


def postprocess(
    logits: np.ndarray,
    masks: np.ndarray,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    thing_flags: Sequence[bool],
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.0,
) -> dict:
    """One image: logits (Q, C+1), masks (Q, h, w) -> {"panoptic_seg" (H, W) int32 (0 = void),
    "segments_info" [{"id", "category_id" (= label + 1), "label", "isthing", "score"}],
    "sem_seg" (H, W) int64 of 0-based labels, 255 where no query owns the pixel} — the dict of
    `Mask2Former.predict`, as NumPy arrays."""
    logits = np.asarray(logits, dtype=np.float32)
    num_classes = logits.shape[-1] - 1
    probs_cls = sigmoid(logits)
    labels = probs_cls.argmax(-1)
    scores = np.take_along_axis(probs_cls, labels[:, None], -1)[:, 0]
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    h, w = int(output_size[0]), int(output_size[1])
    panoptic = np.zeros((h, w), dtype=np.int32)
    sem = np.full((h, w), IGNORE_LABEL, dtype=np.int64)
    segments: list[dict] = []
    if not keep.any():
        return {"panoptic_seg": panoptic, "segments_info": segments, "sem_seg": sem}
    kept_idx = np.flatnonzero(keep)
    cur_scores, cur_labels = scores[kept_idx], labels[kept_idx]
    owner, owner_prob, conf_area = _assign_pixels(
        np.asarray(masks)[kept_idx], cur_scores, padded_size, image_size, output_size
    )
    assigned = owner_prob >= 0.5
    k = len(kept_idx)
    owned_area = np.bincount(owner.ravel(), minlength=k)
    area = np.bincount(owner[assigned], minlength=k)
    segments, seg_of_query = place_segments(
        owned_area.tolist(),
        conf_area.tolist(),
        area.tolist(),
        cur_labels.tolist(),
        cur_scores.tolist(),
        list(thing_flags),
        overlap_threshold,
    )
    seg_ids = np.asarray(seg_of_query, dtype=np.int32)[owner]
    placed = assigned & (seg_ids > 0)
    panoptic = np.where(placed, seg_ids, panoptic).astype(np.int32)
    sem = np.where(placed, cur_labels[owner], sem).astype(np.int64)
    return {"panoptic_seg": panoptic, "segments_info": segments, "sem_seg": sem}
