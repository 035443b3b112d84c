"""Hungarian matcher and the official ECLIPSE / Mask2Former set criterion.

Official behaviour reproduced (docs/design.md §4):
- matching cost = w_class * (-softmax probability of the target column, over all columns, no-object
  included; softmax even though the loss is sigmoid) + w_mask * point BCE + w_dice * point dice,
  on `num_points` random points shared by all queries and targets of an image;
- class loss: per-element sigmoid BCE against the one-hot target (no-object column for unmatched
  queries) x alpha (5) x (1 - p_t)^gamma (1), averaged over batch, queries and columns, x 50;
- mask losses on `num_points` points per matched mask chosen by importance sampling (oversample x3,
  keep the 75% most uncertain, 25% uniform), normalised by the number of target masks;
- deep supervision: the same losses, with their own matching, on every auxiliary prediction.

Option (off by default, so real configs keep the official criterion): `all_pixels_if_fewer` makes
the matcher and the mask losses use every pixel of the predicted mask map instead of random points
when the map has no more pixels than `num_points` (tiny images: a 16x16 map has 256 pixels, far
fewer than the official 12544 points). The targets are sampled bilinearly at the pixel centres, as
they are at random points; the prediction is read at its own pixels, so no point is drawn twice and
no interpolation or top-k selection runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from eclipse_seg.model.decoder import DecoderOutput, Prediction


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    class_loss: str = (
        "official"  # "official" (alpha x (1-p_t)^gamma BCE x 50) or "focal" (RetinaNet)
    )
    focal_alpha: float = 5.0
    focal_gamma: float = 1.0
    class_loss_scale: float = 50.0
    # every mask pixel instead of random points when the mask map has <= num_points pixels
    all_pixels_if_fewer: bool = False


@dataclass
class Target:
    """One image's supervision: labels (K,) int64 model labels, masks (K, H_pad, W_pad) float/bool."""

    labels: torch.Tensor
    masks: torch.Tensor


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W), coords (N, P, 2) in [0, 1] (x, y) -> (N, C, P), bilinear, align_corners False."""
    return F.grid_sample(x, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)


def pixel_centres(h: int, w: int, device=None) -> torch.Tensor:
    """(1, H*W, 2) centres of the pixels of an (H, W) map in [0, 1] (x, y), row-major: `point_sample`
    at these coordinates reads an (H, W) map's own pixels exactly."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).view(1, h * w, 2)


def uses_all_pixels(pred_masks: torch.Tensor, cfg: LossConfig) -> bool:
    """Whether the loss reads every pixel of `pred_masks` (..., H, W) instead of random points."""
    return cfg.all_pixels_if_fewer and pred_masks.shape[-2] * pred_masks.shape[-1] <= cfg.num_points


def targets_at_pixels(targets: list[Target], h: int, w: int) -> list[torch.Tensor]:
    """Per image, the target masks (T, H*W) sampled at the pixel centres of an (H, W) mask map."""
    out = []
    for t in targets:
        coords = pixel_centres(h, w, t.masks.device)
        out.append(point_sample(t.masks[None].float(), coords)[0])
    return out


def uncertain_point_coords(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """logits (N, 1, H, W) -> (N, num_points, 2): the most uncertain (|logit| smallest) of an
    oversampled random set, plus uniform random points."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, coords).abs()[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(coords, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(n, num_random, 2, device=logits.device)], 1)
    return chosen


def pairwise_sigmoid_ce(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (Q, P) logits, targets (T, P) in {0,1} -> (Q, T) mean BCE over points."""
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / inputs.shape[1]


def pairwise_dice(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (Q, P) logits, targets (T, P) -> (Q, T) dice loss with +1 smoothing."""
    p = inputs.sigmoid()
    numerator = 2 * p @ targets.T
    denominator = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(
    pred: Prediction,
    targets: list[Target],
    cfg: LossConfig,
    target_pixels: list[torch.Tensor] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image, (query indices, target indices) of the minimum-cost assignment. The predicted
    masks of all images are point-sampled in one call (each image has its own random points).
    `target_pixels`: `targets_at_pixels` of the mask map's size to cost every pixel instead."""
    b = pred.pred_masks.shape[0]
    if target_pixels is None:
        coords = torch.rand(b, cfg.num_points, 2, device=pred.pred_masks.device)
        pred_points = point_sample(pred.pred_masks.float(), coords)  # (B, Q, P)
    else:
        pred_points = pred.pred_masks.float().flatten(2)  # (B, Q, H*W)
    probs = pred.pred_logits.float().softmax(-1)
    costs = []
    for i, tgt in enumerate(targets):
        if tgt.labels.numel() == 0:
            costs.append(None)
            continue
        pm = pred_points[i]
        if target_pixels is None:
            tm = point_sample(tgt.masks[None].to(pm.dtype), coords[i : i + 1])[0]  # (T, P)
        else:
            tm = target_pixels[i]
        costs.append(
            cfg.mask_weight * pairwise_sigmoid_ce(pm, tm)
            - cfg.class_weight * probs[i][:, tgt.labels]
            + cfg.dice_weight * pairwise_dice(pm, tm)
        )
    # one device-to-host copy for the whole batch (a GPU would otherwise sync once per image)
    present = [c for c in costs if c is not None]
    flat = torch.cat([c.flatten() for c in present]).cpu().numpy() if present else None
    out, start = [], 0
    for cost in costs:
        if cost is None:
            empty = torch.zeros(0, dtype=torch.int64)
            out.append((empty, empty))
            continue
        n = cost.numel()
        rows, cols = linear_sum_assignment(flat[start : start + n].reshape(cost.shape))
        start += n
        out.append(
            (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
        )
    return out


def class_loss(logits: torch.Tensor, target_classes: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """logits (B, Q, C+1), target_classes (B, Q) column index (C = no-object)."""
    onehot = F.one_hot(target_classes, logits.shape[-1]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p = logits.sigmoid()
    p_t = p * onehot + (1 - p) * (1 - onehot)
    if cfg.class_loss == "focal":  # RetinaNet focal loss with alpha-balancing, as an option
        alpha_t = 0.25 * onehot + 0.75 * (1 - onehot)
        return (alpha_t * (1 - p_t) ** 2 * bce).mean() * cfg.class_loss_scale
    return (cfg.focal_alpha * (1 - p_t) ** cfg.focal_gamma * bce).mean() * cfg.class_loss_scale


def mask_losses(
    pred_masks: torch.Tensor,
    targets: list[Target],
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    num_masks: float,
    cfg: LossConfig,
    target_pixels: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-sampled BCE and dice over matched (query, target) pairs, summed / num_masks.
    `target_pixels`: `targets_at_pixels` of the mask map's size to use every pixel instead."""
    src = torch.cat([pred_masks[b, q] for b, (q, _) in enumerate(indices)])
    if src.shape[0] == 0:
        zero = pred_masks.sum() * 0.0
        return zero, zero
    if target_pixels is not None:
        logits = src.float().flatten(1)  # (M, H*W)
        labels = torch.cat([tp[j] for tp, (_, j) in zip(target_pixels, indices)])
    else:
        tgt = torch.cat([t.masks[j] for t, (_, j) in zip(targets, indices)]).to(src.dtype)
        src, tgt = src[:, None], tgt[:, None]
        with torch.no_grad():
            coords = uncertain_point_coords(
                src.float(), cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio
            )
            labels = point_sample(tgt.float(), coords)[:, 0]
        logits = point_sample(src.float(), coords)[:, 0]
    bce = (
        F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum()
        / num_masks
    )
    p = logits.sigmoid()
    dice = 1 - (2 * (p * labels).sum(-1) + 1) / (p.sum(-1) + labels.sum(-1) + 1)
    return bce, dice.sum() / num_masks


class SetCriterion:
    """Loss of a DecoderOutput against per-image targets; returns the weighted total and the terms."""

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def single(
        self,
        pred: Prediction,
        targets: list[Target],
        num_masks: float,
        target_pixels: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        indices = hungarian_match(pred, targets, self.cfg, target_pixels)
        logits = pred.pred_logits.float()
        target_classes = torch.full(
            logits.shape[:2], logits.shape[-1] - 1, dtype=torch.int64, device=logits.device
        )
        for b, (q, j) in enumerate(indices):
            target_classes[b, q.to(logits.device)] = targets[b].labels[j].to(logits.device)
        loss_ce = class_loss(logits, target_classes, self.cfg)
        loss_mask, loss_dice = mask_losses(
            pred.pred_masks, targets, indices, num_masks, self.cfg, target_pixels
        )
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}

    def __call__(
        self, output: DecoderOutput, targets: list[Target], num_masks: float | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`num_masks`: the normaliser; by default the number of target masks in the batch (the
        distributed loop passes the all-reduced mean), clamped to >= 1."""
        if num_masks is None:
            num_masks = float(sum(int(t.labels.numel()) for t in targets))
        num_masks = max(num_masks, 1.0)
        weights = {
            "loss_ce": self.cfg.class_weight,
            "loss_mask": self.cfg.mask_weight,
            "loss_dice": self.cfg.dice_weight,
        }
        preds = [Prediction(output.pred_logits, output.pred_masks)] + list(output.aux_outputs)
        target_pixels = None  # sampled once: every prediction's mask map has the same size
        if uses_all_pixels(output.pred_masks, self.cfg):
            target_pixels = targets_at_pixels(targets, *output.pred_masks.shape[-2:])
        total = 0.0
        terms: dict[str, float] = {}
        for i, pred in enumerate(preds):
            losses = self.single(pred, targets, num_masks, target_pixels)
            suffix = "" if i == 0 else f"_{i - 1}"
            for k, v in losses.items():
                total = total + weights[k] * v
                terms[k + suffix] = float(v.detach())
        return total, terms


def targets_to_device(targets: list[Target], device) -> list[Target]:
    return [Target(t.labels.to(device), t.masks.to(device)) for t in targets]
