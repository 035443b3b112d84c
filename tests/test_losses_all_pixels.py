"""The `all_pixels_if_fewer` option of the criterion: every pixel of a small mask map instead of
random points, checked against an independent dense computation; off by default."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from eclipse_seg.losses import (
    LossConfig,
    SetCriterion,
    Target,
    hungarian_match,
    mask_losses,
    pixel_centres,
    uses_all_pixels,
)
from eclipse_seg.model.decoder import DecoderOutput, Prediction


def _targets_at(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(T, H', W') target masks -> (T, h*w) read at the centres of an (h, w) map, by hand: the
    bilinear weights of the 2x2 high-resolution pixels around each centre (align_corners False)."""
    t, hh, ww = masks.shape
    out = torch.zeros(t, h, w, dtype=torch.float64)
    for i, j in itertools.product(range(h), range(w)):
        y = (i + 0.5) * hh / h - 0.5
        x = (j + 0.5) * ww / w - 0.5
        y0, x0 = math.floor(y), math.floor(x)
        fy, fx = y - y0, x - x0
        for dy, dx, wgt in (
            (0, 0, (1 - fy) * (1 - fx)),
            (0, 1, (1 - fy) * fx),
            (1, 0, fy * (1 - fx)),
            (1, 1, fy * fx),
        ):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < hh and 0 <= xx < ww:
                out[:, i, j] += wgt * masks[:, yy, xx].double()
    return out.flatten(1)


def test_pixel_centres_read_a_map_exactly():
    x = torch.randn(2, 3, 5, 7)
    coords = pixel_centres(5, 7).expand(2, -1, -1)
    sampled = F.grid_sample(x, 2 * coords.unsqueeze(2) - 1, align_corners=False).squeeze(3)
    assert torch.allclose(sampled, x.flatten(2), atol=1e-6)


def test_option_is_off_by_default_and_needs_a_small_map():
    masks = torch.zeros(1, 4, 16, 16)  # 256 pixels
    assert not uses_all_pixels(masks, LossConfig())
    assert uses_all_pixels(masks, LossConfig(num_points=256, all_pixels_if_fewer=True))
    assert not uses_all_pixels(masks, LossConfig(num_points=255, all_pixels_if_fewer=True))


def test_mask_losses_on_every_pixel_match_a_dense_computation():
    g = torch.Generator().manual_seed(0)
    cfg = LossConfig(num_points=12544, all_pixels_if_fewer=True)
    pred = torch.randn(2, 4, 6, 6, generator=g) * 2
    targets = [
        Target(torch.tensor([0, 1]), (torch.rand(2, 24, 24, generator=g) > 0.5).float()),
        Target(torch.tensor([2]), (torch.rand(1, 24, 24, generator=g) > 0.3).float()),
    ]
    indices = [(torch.tensor([3, 1]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    dense = [_targets_at(t.masks, 6, 6) for t in targets]
    bce = dice = 0.0
    for b, (qs, ts) in enumerate(indices):
        for q, t in zip(qs.tolist(), ts.tolist()):
            logit, label = pred[b, q].double().flatten(), dense[b][t]
            bce += F.binary_cross_entropy_with_logits(logit, label).item()
            p = logit.sigmoid()
            dice += 1 - ((2 * (p * label).sum() + 1) / (p.sum() + label.sum() + 1)).item()
    target_pixels = [d.float() for d in dense]
    got_bce, got_dice = mask_losses(pred, targets, indices, 3.0, cfg, target_pixels)
    assert got_bce.item() == pytest.approx(bce / 3.0, rel=1e-5)
    assert got_dice.item() == pytest.approx(dice / 3.0, rel=1e-5)


def test_matcher_on_every_pixel_is_the_cheapest_assignment():
    g = torch.Generator().manual_seed(1)
    cfg = LossConfig(num_points=64, class_weight=2.0, all_pixels_if_fewer=True)
    q, t, c = 5, 3, 4
    logits = torch.randn(1, q, c + 1, generator=g)
    masks = torch.randn(1, q, 8, 8, generator=g) * 3
    target = Target(
        torch.randint(0, c, (t,), generator=g), (torch.rand(t, 32, 32, generator=g) > 0.5).float()
    )
    dense = _targets_at(target.masks, 8, 8)
    ((rows, cols),) = hungarian_match(Prediction(logits, masks), [target], cfg, [dense.float()])
    prob = logits[0].double().softmax(-1)
    s = masks[0].double().flatten(1).sigmoid()
    cost = torch.zeros(q, t, dtype=torch.float64)
    for i, j in itertools.product(range(q), range(t)):
        bce = -(dense[j] * s[i].log() + (1 - dense[j]) * (1 - s[i]).log()).mean()
        d = 1 - (2 * (s[i] * dense[j]).sum() + 1) / (s[i].sum() + dense[j].sum() + 1)
        cost[i, j] = (
            -cfg.class_weight * prob[i, target.labels[j]]
            + cfg.mask_weight * bce
            + cfg.dice_weight * d
        )
    best = min(
        itertools.permutations(range(q), t), key=lambda p: sum(cost[p[j], j] for j in range(t))
    )
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(zip(best, range(t)))


def test_criterion_uses_every_pixel_and_draws_no_random_point():
    """With the option on and a small map the loss is a function of the inputs alone (no random
    points): two calls under different seeds agree exactly, and they differ from the sampled loss."""
    g = torch.Generator().manual_seed(2)
    preds = [
        Prediction(torch.randn(1, 4, 3, generator=g), torch.randn(1, 4, 4, 4, generator=g))
        for _ in range(2)
    ]
    out = DecoderOutput(preds[0].pred_logits, preds[0].pred_masks, preds[1:])
    targets = [Target(torch.tensor([0, 1]), (torch.rand(2, 16, 16, generator=g) > 0.5).float())]
    dense = SetCriterion(LossConfig(num_points=32, all_pixels_if_fewer=True))
    torch.manual_seed(0)
    a, _ = dense(out, targets)
    torch.manual_seed(1)
    b, _ = dense(out, targets)
    assert a.item() == b.item()
    torch.manual_seed(0)
    sampled, _ = SetCriterion(LossConfig(num_points=32))(out, targets)
    assert sampled.item() != a.item()
