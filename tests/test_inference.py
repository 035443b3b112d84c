"""Panoptic / semantic post-processing on hand-made logits and masks."""

import pytest
import torch
import torch.nn.functional as F

from eclipse_seg.inference import IGNORE_LABEL, pixel_owners, postprocess, resize_mask_logits

BIG = 12.0  # mask logit: sigmoid ~ 1 (or ~ 0 for -BIG)
NEG = -20.0  # class logit that never wins


def run(logits, masks, thing, **kw):
    """Masks at output resolution: padded = image = output size, so no resizing happens."""
    size = tuple(masks.shape[-2:])
    return postprocess(
        torch.tensor(logits, dtype=torch.float32),
        masks,
        size,
        size,
        size,
        torch.tensor(thing),
        **kw,
    )


def rows(*r):
    """Mask logits (Q, 1, W) from rows of values."""
    return torch.tensor(r, dtype=torch.float32)[:, None, :]


def test_keep_rule_no_object_and_strict_threshold():
    thr = torch.sigmoid(torch.tensor(1.0)).item()
    logits = [
        [0.0, NEG, 3.0],  # best column is no-object -> dropped
        [1.0, NEG, NEG],  # score == threshold exactly -> dropped (strict)
        [NEG, 1.01, NEG],  # score just above -> kept
    ]
    masks = rows([BIG] * 4, [BIG, BIG, -BIG, -BIG], [-BIG, -BIG, BIG, BIG])
    out = run(logits, masks, [False, False], object_mask_threshold=thr)
    assert [s["label"] for s in out["segments_info"]] == [1]
    assert out["panoptic_seg"].tolist() == [[0, 0, 1, 1]]
    # with the official threshold 0 the query with score sigmoid(1) is kept too
    out = run(logits, masks, [False, False])
    assert [s["label"] for s in out["segments_info"]] == [0, 1]
    assert out["panoptic_seg"].tolist() == [[1, 1, 2, 2]]
    assert out["segments_info"][1]["score"] == pytest.approx(
        torch.sigmoid(torch.tensor(1.01)).item()
    )


def test_nothing_kept():
    out = run([[NEG, NEG, 2.0]], rows([BIG, BIG]), [True, False])
    assert out["segments_info"] == []
    assert (out["panoptic_seg"] == 0).all() and out["panoptic_seg"].dtype == torch.int32
    assert (out["sem_seg"] == IGNORE_LABEL).all()


def test_pixel_ownership_ties_and_confidence():
    # two thing queries of class 0 with the same score; pixel 0: both prob ~1 (tie -> first query);
    # pixel 1: q1 more confident; pixel 2: owner's prob exactly 0.5 -> assigned; pixel 3: < 0.5 -> void
    logits = [[2.0, NEG, NEG], [2.0, NEG, NEG]]
    masks = rows([BIG, 1.0, -BIG, -BIG], [BIG, 3.0, 0.0, -0.1])
    out = run(logits, masks, [True, False])
    assert out["panoptic_seg"].tolist() == [[1, 2, 2, 0]]
    assert out["sem_seg"].tolist() == [[0, 0, 0, IGNORE_LABEL]]
    assert [
        (s["id"], s["label"], s["category_id"], s["isthing"]) for s in out["segments_info"]
    ] == [(1, 0, 1, True), (2, 0, 1, True)]


@pytest.mark.parametrize("k", [1, 2, 7])
def test_pixel_owners_loop_equals_the_vectorised_argmax(k):
    """The CPU loop over queries gives the argmax of score * prob (first query on ties) and the
    confident areas, exactly as the (K, H, W) form the GPU uses."""
    g = torch.Generator().manual_seed(k)
    probs = torch.rand(k, 33, 17, generator=g)
    probs[:, :4] = 0.5  # ties between queries, and probabilities exactly at the threshold
    probs[-1, 4:8] = probs[0, 4:8]
    scores = torch.rand(k, generator=g)
    scores[-1] = scores[0]
    owner, conf = pixel_owners(probs, scores)
    assert torch.equal(owner, (scores.view(-1, 1, 1) * probs).argmax(0))
    assert torch.equal(conf, (probs >= 0.5).flatten(1).sum(1))
    flat, _ = pixel_owners(torch.full((k, 3, 3), 0.7), torch.full((k,), 0.9))
    assert flat.eq(0).all()  # a tie goes to the first query


def test_owner_uses_score_times_prob():
    # q0: lower score but higher prob; q1: higher score, lower prob. score * prob decides.
    s0, s1 = 0.6, 0.9
    logit = lambda p: torch.logit(torch.tensor(p)).item()
    logits = [[logit(s0), NEG, NEG], [NEG, logit(s1), NEG]]
    # pixel 0: 0.6 * 0.99 = 0.594 < 0.9 * 0.7 = 0.63 -> q1; pixel 1: 0.6 * 0.99 > 0.9 * 0.6 = 0.54 -> q0
    masks = rows([logit(0.99), logit(0.99)], [logit(0.7), logit(0.6)])
    out = run(logits, masks, [False, False])
    assert out["panoptic_seg"].tolist() == [[2, 1]]
    assert out["sem_seg"].tolist() == [[1, 0]]


def test_overlap_threshold_drop():
    # q0 is confident on 4 pixels but owns only 2 of them (q1, higher score, owns the rest)
    logits = [[1.0, NEG, NEG], [NEG, 3.0, NEG]]
    masks = rows([BIG, BIG, BIG, BIG, -BIG], [-BIG, -BIG, BIG, BIG, BIG])
    out = run(
        logits, masks, [False, False], overlap_threshold=0.5
    )  # 2 / 4 == 0.5 -> kept (strict <)
    assert out["panoptic_seg"].tolist() == [[1, 1, 2, 2, 2]]
    out = run(logits, masks, [False, False], overlap_threshold=0.6)  # 0.5 < 0.6 -> dropped
    assert out["panoptic_seg"].tolist() == [[0, 0, 1, 1, 1]]
    assert [(s["id"], s["label"]) for s in out["segments_info"]] == [(1, 1)]
    assert out["sem_seg"].tolist() == [[IGNORE_LABEL, IGNORE_LABEL, 1, 1, 1]]


def test_query_with_no_owned_area_dropped_and_ids_consecutive():
    # q1 is entirely hidden behind q0 (owns nothing): ids stay consecutive 1, 2
    logits = [[3.0, NEG, NEG], [2.0, NEG, NEG], [NEG, 2.0, NEG]]
    masks = rows([BIG, BIG, -BIG], [BIG, BIG, -BIG], [-BIG, -BIG, BIG])
    out = run(logits, masks, [True, True])
    assert out["panoptic_seg"].tolist() == [[1, 1, 2]]
    assert [(s["id"], s["label"], s["category_id"]) for s in out["segments_info"]] == [
        (1, 0, 1),
        (2, 1, 2),
    ]


def test_stuff_merges_things_stay_separate():
    # classes: 0 thing, 1 stuff, 2 stuff. Queries in order: stuff 1, thing 0, stuff 1, thing 0, stuff 2
    logits = [
        [NEG, 2.0, NEG, NEG],
        [2.5, NEG, NEG, NEG],
        [NEG, 1.5, NEG, NEG],
        [2.2, NEG, NEG, NEG],
        [NEG, NEG, 2.0, NEG],
    ]
    n = 5
    masks = torch.full((5, 1, n), -BIG)
    for q in range(5):
        masks[q, 0, q] = BIG  # query q covers pixel q only
    out = run(logits, masks, [True, False, False])
    assert out["panoptic_seg"].tolist() == [[1, 2, 1, 3, 4]]
    info = [(s["id"], s["label"], s["category_id"], s["isthing"]) for s in out["segments_info"]]
    assert info == [(1, 1, 2, False), (2, 0, 1, True), (3, 0, 1, True), (4, 2, 3, False)]
    assert out["sem_seg"].tolist() == [[1, 0, 1, 0, 2]]
    # the merged segment keeps the score of its first query
    assert out["segments_info"][0]["score"] == pytest.approx(
        torch.sigmoid(torch.tensor(2.0)).item()
    )


def test_resize_crop_then_resize():
    # mask logits at 1/4 of a padded 16x16 input; the image is 12x10; output asked at 24x20
    g = torch.Generator().manual_seed(0)
    masks = torch.randn(2, 4, 4, generator=g) * 4
    masks[:, 3, :] = 30.0  # the bottom row is mostly padding: large logits that the crop removes
    masks[:, :, 3] = 30.0
    padded, image, output = (16, 16), (12, 10), (24, 20)
    got = resize_mask_logits(masks, padded, image, output)
    up = F.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)
    exp = F.interpolate(up[:, :, :12, :10], size=output, mode="bilinear", align_corners=False)[0]
    assert got.shape == (2, 24, 20)
    assert torch.allclose(got, exp, atol=1e-5)
    no_crop = F.interpolate(masks[None], size=output, mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(got, no_crop, atol=1e-2)
    # same size: no resize, only the crop
    assert torch.allclose(resize_mask_logits(masks, padded, image, image), up[0, :, :12, :10])

    # postprocess with one kept query follows the same resized probabilities
    logits = torch.tensor([[2.0, NEG, NEG], [NEG, NEG, 2.0]])
    out = postprocess(logits, masks, padded, image, output, torch.tensor([True, False]))
    assert out["panoptic_seg"].shape == output and out["sem_seg"].shape == output
    confident = exp[0].sigmoid() >= 0.5
    assert torch.equal(out["panoptic_seg"] == 1, confident)
    assert torch.equal(out["sem_seg"] == 0, confident)
    assert (out["sem_seg"][~confident] == IGNORE_LABEL).all()


def _rules_one_query_at_a_time(logits, masks, thing_mask, overlap_threshold):
    """The post-processing rules written as a plain loop over kept queries (docs/design.md §4)."""
    num_classes = logits.shape[-1] - 1
    scores, labels = logits.sigmoid().max(-1)
    kept = [q for q in range(len(labels)) if labels[q] != num_classes and scores[q] > 0]
    probs = masks[kept].sigmoid()
    owner = (scores[kept].view(-1, 1, 1) * probs).argmax(0)
    panoptic = torch.zeros(masks.shape[-2:], dtype=torch.int32)
    segments, stuff = [], {}
    for k, q in enumerate(kept):
        label = int(labels[q])
        owned, confident = owner == k, probs[k] >= 0.5
        mask = owned & confident
        if owned.sum() == 0 or confident.sum() == 0 or mask.sum() == 0:
            continue
        if owned.sum() / confident.sum() < overlap_threshold:
            continue
        if not thing_mask[label] and label in stuff:
            panoptic[mask] = stuff[label]
            continue
        segments.append(len(segments) + 1)
        if not thing_mask[label]:
            stuff[label] = segments[-1]
        panoptic[mask] = segments[-1]
    return panoptic, len(segments)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_rules_written_query_by_query(seed):
    g = torch.Generator().manual_seed(seed)
    q, c, h, w = 8, 6, 24, 20
    logits = torch.randn(q, c + 1, generator=g) * 2
    blobs = torch.randn(1, q, 3, 3, generator=g) * 6  # smooth masks: regions, not noise
    masks = F.interpolate(blobs, size=(h, w), mode="bilinear", align_corners=False)[0]
    thing_mask = torch.tensor([True, False, True, False, False, True])
    overlap = [0.0, 0.3, 0.6][seed % 3]
    out = postprocess(logits, masks, (h, w), (h, w), (h, w), thing_mask, overlap_threshold=overlap)
    expected, n = _rules_one_query_at_a_time(logits, masks, thing_mask, overlap)
    assert torch.equal(out["panoptic_seg"], expected)
    assert len(out["segments_info"]) == n > 0
