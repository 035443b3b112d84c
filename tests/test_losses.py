"""Matcher and set criterion against brute force and hand computation."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from eclipse_seg.losses import (
    LossConfig,
    SetCriterion,
    Target,
    class_loss,
    hungarian_match,
    mask_losses,
    pairwise_dice,
    pairwise_sigmoid_ce,
)
from eclipse_seg.model.decoder import DecoderOutput, Prediction


@pytest.fixture
def interior_points(monkeypatch):
    """Random points drawn in [0.25, 0.75]^2 only: away from the border, where `grid_sample`'s
    zero padding would blend a constant mask with zeros, so constant masks sample constant."""
    real = torch.rand

    def rand(*size, **kw):
        return 0.25 + 0.5 * real(*size, **kw)

    monkeypatch.setattr(torch, "rand", rand)


def brute_force(cost: torch.Tensor):
    """cost (Q, T), Q >= T -> (total, sorted [(query, target)]) of the cheapest injective map."""
    q, t = cost.shape
    best = None
    for perm in itertools.permutations(range(q), t):
        total = sum(float(cost[perm[j], j]) for j in range(t))
        if best is None or total < best[0] - 1e-12:
            best = (total, sorted(zip(perm, range(t))))
    return best


def explicit_cost(logits, pm, tm, labels, cfg):
    """Independent cost matrix with loops: logits (Q, C+1), pm (Q, P) logits, tm (T, P)."""
    prob = logits.softmax(-1)
    q, p = pm.shape
    cost = torch.zeros(q, tm.shape[0], dtype=torch.float64)
    for i in range(q):
        for j in range(tm.shape[0]):
            s = pm[i].double().sigmoid()
            t = tm[j].double()
            bce = -(t * torch.log(s) + (1 - t) * torch.log(1 - s)).mean()
            dice = 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
            cost[i, j] = (
                cfg.class_weight * -prob[i, labels[j]]
                + cfg.mask_weight * bce
                + cfg.dice_weight * dice
            )
    return cost


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_constant_masks_vs_brute_force(seed, interior_points):
    """Masks constant over space make the cost independent of the sampled points."""
    g = torch.Generator().manual_seed(seed)
    q, t, c = 5, 3, 4
    cfg = LossConfig(num_points=16)
    logits = torch.randn(1, q, c + 1, generator=g) * 2
    mask_vals = torch.randn(q, generator=g) * 2
    pred = Prediction(logits, mask_vals.view(1, q, 1, 1).expand(1, q, 4, 4).clone())
    tgt_vals = torch.rand(t, generator=g)
    labels = torch.randint(0, c, (t,), generator=g)
    target = Target(labels, tgt_vals.view(t, 1, 1).expand(t, 16, 16).clone())
    ((rows, cols),) = hungarian_match(pred, [target], cfg)
    n = cfg.num_points  # the dice's +1 smoothing depends on the number of points
    cost = explicit_cost(
        logits[0].double(),
        mask_vals.view(q, 1).expand(q, n),
        tgt_vals.view(t, 1).expand(t, n),
        labels,
        cfg,
    )
    total, pairs = brute_force(cost)
    got = sorted(zip(rows.tolist(), cols.tolist()))
    assert len(got) == t
    assert sum(float(cost[i, j]) for i, j in got) == pytest.approx(total, abs=1e-9)
    assert got == pairs


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_spatial_masks_vs_brute_force(seed):
    """Spatially varying masks: replay the matcher's point draw (one torch.rand per image) and build
    the cost matrix independently."""
    g = torch.Generator().manual_seed(100 + seed)
    b, q, t, c = 2, 5, 3, 3
    cfg = LossConfig(num_points=64, class_weight=2.0)
    logits = torch.randn(b, q, c + 1, generator=g)
    masks = torch.randn(b, q, 6, 6, generator=g) * 3
    targets = [
        Target(
            torch.randint(0, c, (t,), generator=g),
            (torch.rand(t, 24, 24, generator=g) > 0.5).float(),
        )
        for _ in range(b)
    ]
    torch.manual_seed(seed)
    result = hungarian_match(Prediction(logits, masks), targets, cfg)
    torch.manual_seed(seed)
    for bi, tgt in enumerate(targets):
        coords = torch.rand(1, cfg.num_points, 2)
        grid = (2 * coords - 1).unsqueeze(2)  # (1, P, 1, 2)
        pm = F.grid_sample(masks[bi][:, None], grid.expand(q, -1, -1, -1), align_corners=False)[
            :, 0, :, 0
        ]
        tm = F.grid_sample(tgt.masks[:, None], grid.expand(t, -1, -1, -1), align_corners=False)[
            :, 0, :, 0
        ]
        cost = explicit_cost(logits[bi].double(), pm, tm, tgt.labels, cfg)
        total, pairs = brute_force(cost)
        rows, cols = result[bi]
        got = sorted(zip(rows.tolist(), cols.tolist()))
        assert sum(float(cost[i, j]) for i, j in got) == pytest.approx(total, abs=1e-6)
        assert got == pairs


def test_hungarian_empty_target():
    pred = Prediction(torch.randn(1, 3, 4), torch.randn(1, 3, 4, 4))
    ((rows, cols),) = hungarian_match(
        pred,
        [Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 16, 16))],
        LossConfig(num_points=8),
    )
    assert rows.numel() == 0 and cols.numel() == 0


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_class_loss_hand_checked():
    # 1 image, 2 queries, columns: class 0, class 1, no-object
    x = [[2.0, -1.0, 0.5], [-0.5, 1.0, 3.0]]
    target = [0, 2]  # query 0 -> class 0, query 1 -> no-object
    total = 0.0
    for qi in range(2):
        for col in range(3):
            p = _sig(x[qi][col])
            t = 1.0 if target[qi] == col else 0.0
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            p_t = p if t else 1 - p
            total += 5 * (1 - p_t) * bce
    expected = 50 * total / 6
    got = class_loss(torch.tensor([x]), torch.tensor([target]), LossConfig())
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the focal option is RetinaNet's (alpha 0.25, gamma 2) and differs from the official one
    focal = class_loss(torch.tensor([x]), torch.tensor([target]), LossConfig(class_loss="focal"))
    exp_focal = 0.0
    for qi in range(2):
        for col in range(3):
            p = _sig(x[qi][col])
            t = 1.0 if target[qi] == col else 0.0
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            p_t = p if t else 1 - p
            exp_focal += (0.25 if t else 0.75) * (1 - p_t) ** 2 * bce
    assert focal.item() == pytest.approx(50 * exp_focal / 6, rel=1e-6)
    assert abs(focal.item() - got.item()) > 1e-3


def test_pairwise_costs_vs_loops():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 7, generator=g, dtype=torch.float64) * 2
    targets = (torch.rand(3, 7, generator=g) > 0.4).double()
    ce, dice = pairwise_sigmoid_ce(inputs, targets), pairwise_dice(inputs, targets)
    assert ce.shape == dice.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            s = [_sig(v) for v in inputs[i].tolist()]
            t = targets[j].tolist()
            bce = (
                sum(-(tk * math.log(sk) + (1 - tk) * math.log(1 - sk)) for sk, tk in zip(s, t)) / 7
            )
            d = 1 - (2 * sum(sk * tk for sk, tk in zip(s, t)) + 1) / (sum(s) + sum(t) + 1)
            assert ce[i, j].item() == pytest.approx(bce, rel=1e-9)
            assert dice[i, j].item() == pytest.approx(d, rel=1e-9)


def test_mask_losses_normalised_by_num_masks(interior_points):
    """Constant masks make point sampling irrelevant: per-mask BCE and dice are closed-form."""
    cfg = LossConfig(num_points=50)
    pred = (
        torch.tensor([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
        .view(2, 3, 1, 1)
        .expand(2, 3, 4, 4)
        .clone()
    )
    targets = [
        Target(
            torch.tensor([0, 1]), torch.tensor([1.0, 0.0]).view(2, 1, 1).expand(2, 16, 16).clone()
        ),
        Target(torch.tensor([2]), torch.ones(1, 16, 16)),
    ]
    indices = [(torch.tensor([2, 0]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))]
    pairs = [(0.5, 1.0), (1.0, 0.0), (2.0, 1.0)]  # (logit, target) of the matched pairs
    exp_bce = exp_dice = 0.0
    for logit, t in pairs:
        p = _sig(logit)
        exp_bce += -(t * math.log(p) + (1 - t) * math.log(1 - p))
        n = cfg.num_points
        exp_dice += 1 - (2 * p * t * n + 1) / (p * n + t * n + 1)
    for num_masks in (3.0, 7.5):
        torch.manual_seed(0)
        bce, dice = mask_losses(pred, targets, indices, num_masks, cfg)
        assert bce.item() == pytest.approx(exp_bce / num_masks, rel=1e-5)
        assert dice.item() == pytest.approx(exp_dice / num_masks, rel=1e-5)


def test_mask_losses_no_match_is_zero_with_grad():
    pred = torch.randn(1, 3, 4, 4, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.int64)
    bce, dice = mask_losses(
        pred,
        [Target(empty, torch.zeros(0, 16, 16))],
        [(empty, empty)],
        1.0,
        LossConfig(num_points=8),
    )
    assert bce.item() == 0.0 and dice.item() == 0.0
    (bce + dice).backward()
    assert pred.grad is not None


def test_set_criterion_terms_and_total():
    g = torch.Generator().manual_seed(0)

    def pred():
        return Prediction(torch.randn(1, 4, 3, generator=g), torch.randn(1, 4, 4, 4, generator=g))

    final, aux = pred(), [pred(), pred()]
    out = DecoderOutput(final.pred_logits, final.pred_masks, aux)
    targets = [Target(torch.tensor([0, 1]), (torch.rand(2, 16, 16, generator=g) > 0.5).float())]
    cfg = LossConfig(num_points=32, class_weight=2.0)
    torch.manual_seed(0)
    total, terms = SetCriterion(cfg)(out, targets)
    assert set(terms) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    expected = sum(
        w * terms[f"loss_{k}{s}"]
        for k, w in (("ce", 2.0), ("mask", 5.0), ("dice", 5.0))
        for s in ("", "_0", "_1")
    )
    assert total.item() == pytest.approx(expected, rel=1e-5)
    # unmatched queries are trained towards no-object: the class term matches class_loss on the
    # matched target classes
    torch.manual_seed(0)
    ((rows, cols),) = hungarian_match(final, targets, cfg)
    tc = torch.full((1, 4), 2)
    tc[0, rows] = targets[0].labels[cols]
    assert terms["loss_ce"] == pytest.approx(
        class_loss(final.pred_logits, tc, cfg).item(), rel=1e-6
    )
