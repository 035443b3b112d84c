"""Where post-processing decisions are too close to call: two implementations (eager PyTorch and
the exported graph + NumPy post-processing) may disagree only there.

A decision is "within `tol`" when the quantities it compares differ by less than `tol` in logit
space (mask and class logits, log of score * probability), the scale on which the two
implementations' outputs differ (about 1e-5)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from eclipse_seg.inference import resize_mask_logits


def near_decisions(
    logits: torch.Tensor,
    masks: torch.Tensor,
    padded: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    object_mask_threshold: float,
    overlap_threshold: float,
    tol: float = 1e-4,
) -> tuple[np.ndarray, list[int]]:
    """From one image's eager outputs (logits (Q, C+1), masks (Q, h, w)): the (H, W) pixels whose
    owner or >= 0.5 test is within `tol`, and the queries whose keep / label / area / overlap
    decision is within `tol` or could flip with those pixels."""
    logits = logits.double()
    top = logits.topk(2, -1).values
    best, labels = logits.max(-1)
    cut = (
        math.log(object_mask_threshold / (1 - object_mask_threshold))
        if object_mask_threshold > 0
        else -math.inf
    )
    could_keep = best > cut - tol
    near_queries = set((((top[:, 0] - top[:, 1]) < tol) & could_keep).nonzero().flatten().tolist())
    near_queries |= set(((best - cut).abs() < tol).nonzero().flatten().tolist())
    scores = best.sigmoid()
    kept = ((labels != logits.shape[-1] - 1) & (scores > object_mask_threshold)).nonzero().flatten()
    if len(kept) == 0:
        return np.zeros(output_size, dtype=bool), sorted(near_queries)
    mask_logits = resize_mask_logits(masks[kept], padded, image_size, output_size).double()
    weighted = scores[kept].log().view(-1, 1, 1) + F.logsigmoid(mask_logits)
    owner = weighted.argmax(0)
    owner_near = torch.zeros(output_size, dtype=torch.bool)
    runner_up = owner
    if len(kept) > 1:
        two = weighted.topk(2, 0)
        owner_near = (two.values[0] - two.values[1]) < tol
        runner_up = two.indices[1]
    owner_logit = mask_logits.gather(0, owner[None])[0]
    assign_near = owner_near | (owner_logit.abs() < tol)
    conf_near = mask_logits.abs() < tol  # (K, H, W)
    for k, q in enumerate(kept.tolist()):
        mine = owner == k
        owned = int(mine.sum())
        conf = int((mask_logits[k] >= 0).sum())
        area = int((mine & (owner_logit >= 0)).sum())
        # pixels that could join or leave query k's counts
        d_owned = int((owner_near & (mine | (runner_up == k))).sum())
        d_area = d_owned + int((mine & (owner_logit.abs() < tol)).sum())
        d_conf = int(conf_near[k].sum())
        survives = min(owned, conf, area) > 0 and owned / conf >= overlap_threshold
        if survives:  # could it be dropped?
            flips = (
                min(owned - d_owned, conf - d_conf, area - d_area) <= 0
                or (owned - d_owned) / (conf + d_conf) < overlap_threshold + tol
            )
        else:  # could it survive?
            flips = (
                min(owned + d_owned, conf + d_conf, area + d_area) > 0
                and (owned + d_owned) / max(conf - d_conf, 1) >= overlap_threshold - tol
            )
        if flips:
            near_queries.add(q)
    return (assign_near | conf_near.any(0)).numpy(), sorted(near_queries)


def assert_same_prediction(ref: dict, got: dict, near_pixels: np.ndarray) -> None:
    """Segments (ids, labels, thing flags, scores within 1e-4) and the panoptic / semantic maps
    equal outside `near_pixels`."""
    ref_segments = [{**s, "score": None} for s in ref["segments_info"]]
    got_segments = [{**s, "score": None} for s in got["segments_info"]]
    assert ref_segments == got_segments
    for a, b in zip(ref["segments_info"], got["segments_info"]):
        assert abs(a["score"] - b["score"]) <= 1e-4
    for key in ("panoptic_seg", "sem_seg"):
        want = np.asarray(ref[key].cpu() if hasattr(ref[key], "cpu") else ref[key])
        have = np.asarray(got[key])
        assert want.shape == have.shape and want.dtype == have.dtype, key
        assert np.array_equal(want[~near_pixels], have[~near_pixels]), key
