"""Panoptic and semantic post-processing of Mask2Former / ECLIPSE predictions (sigmoid scores).

Official rules (docs/design.md §4): a query is kept if its best column (no-object included) is not
no-object and its score > `object_mask_threshold`; each pixel goes to the kept query with the
highest score * mask probability and is assigned only where that mask probability >= 0.5; a query
whose owned area is empty or below `overlap_threshold` of its own >= 0.5 area is dropped; stuff
queries of an already placed class join that segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eclipse_seg.panoptic_segments import place_segments

IGNORE_LABEL = 255


@dataclass
class Thresholds:
    """The post-processing thresholds a model is used with (official defaults 0.0 / 0.0); a model
    carries its config's, so `model.predict` gives what evaluation scores."""

    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.0


def resize_mask_logits(
    masks: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> torch.Tensor:
    """(Q, h, w) mask logits at 1/4 of the padded input -> (Q, H_out, W_out): upsample to the padded
    size, crop the image, resize to the output size (bilinear, align_corners False)."""
    x = F.interpolate(masks[None].float(), size=padded_size, mode="bilinear", align_corners=False)
    x = x[:, :, : image_size[0], : image_size[1]]
    if tuple(output_size) != tuple(image_size):
        x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
    return x[0]


def pixel_owners(probs: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """probs (K, H, W), scores (K,) -> (owner (H, W): argmax over k of scores[k] * probs[k], the
    first k on ties; confident area (K,): pixels with probs[k] >= 0.5).

    On CPU a loop over queries is ~2x faster than the (K, H, W) product and its argmax over the
    outer dimension (every pass stays in cache; measured at 100 queries, 512x512) and gives the
    same result: the same products, compared in order with a strict >. On GPU the vectorised form
    is one kernel each."""
    if probs.device.type != "cpu" or len(probs) == 0:
        owner = (scores.view(-1, 1, 1) * probs).argmax(0)
        return owner, (probs >= 0.5).flatten(1).sum(1)
    best = probs[0] * scores[0]
    owner = torch.zeros(best.shape, dtype=torch.int64)
    conf_area = torch.empty(len(probs), dtype=torch.int64)
    value, better = torch.empty_like(best), torch.empty(best.shape, dtype=torch.bool)
    for k in range(len(probs)):
        if k:
            torch.mul(probs[k], scores[k], out=value)
            torch.gt(value, best, out=better)
            torch.maximum(best, value, out=best)
            owner.masked_fill_(better, k)
        conf_area[k] = torch.count_nonzero(probs[k] >= 0.5)
    return owner, conf_area


def postprocess(
    logits: torch.Tensor,
    masks: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    thing_mask: torch.Tensor,
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.0,
) -> dict:
    """One image: logits (Q, C+1), masks (Q, h, w) -> {"panoptic_seg" (H, W) int32 (0 = void),
    "segments_info" [{"id", "category_id" (= label + 1, official), "label", "isthing", "score"}],
    "sem_seg" (H, W) int64 of 0-based labels, 255 where no query owns the pixel}."""
    num_classes = logits.shape[-1] - 1
    scores, labels = logits.float().sigmoid().max(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    h, w = output_size
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=logits.device)
    sem = torch.full((h, w), IGNORE_LABEL, dtype=torch.int64, device=logits.device)
    segments: list[dict] = []
    if not keep.any():
        return {"panoptic_seg": panoptic, "segments_info": segments, "sem_seg": sem}
    kept_idx = keep.nonzero().squeeze(1)
    probs = resize_mask_logits(masks[kept_idx], padded_size, image_size, output_size).sigmoid_()
    cur_scores, cur_labels = scores[kept_idx], labels[kept_idx]
    owner, conf_area = pixel_owners(probs, cur_scores)
    # query k's segment is {owner == k} & {probs[k] >= 0.5}: a pixel joins it iff its owner is
    # confident there. All areas in three reductions, one transfer (no per-query device syncs).
    assigned = probs.gather(0, owner[None])[0] >= 0.5
    k = len(kept_idx)
    owned_area = torch.bincount(owner.flatten(), minlength=k)
    area = torch.bincount(owner[assigned], minlength=k)
    owned, confident, assigned_area, cur = torch.stack(
        [owned_area, conf_area, area, cur_labels]
    ).tolist()
    segments, seg_of_query = place_segments(
        owned,
        confident,
        assigned_area,
        cur,
        cur_scores.tolist(),
        thing_mask.tolist(),
        overlap_threshold,
    )
    seg_ids = torch.tensor(seg_of_query, dtype=torch.int32, device=logits.device)[owner]
    placed = assigned & (seg_ids > 0)
    panoptic = torch.where(placed, seg_ids, panoptic)
    sem = torch.where(placed, cur_labels[owner], sem)
    return {"panoptic_seg": panoptic, "segments_info": segments, "sem_seg": sem}
