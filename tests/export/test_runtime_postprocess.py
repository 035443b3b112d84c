"""The NumPy post-processing of the runtime against `eclipse_seg.inference` (same inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity import assert_same_prediction, near_decisions

from eclipse_seg.data.transforms import shortest_edge_size as torch_side_rule
from eclipse_seg.inference import postprocess as torch_postprocess
from eclipse_seg.runtime.postprocess import postprocess, resize_bilinear
from eclipse_seg.runtime.session import shortest_edge_size


@pytest.mark.parametrize(
    "src,dst",
    [
        ((5, 7), (20, 28)),
        ((16, 24), (64, 96)),
        ((20, 28), (75, 50)),
        ((64, 96), (61, 90)),
        ((13, 9), (13, 9)),
        ((8, 8), (3, 40)),
    ],
)
def test_resize_bilinear_equals_torch(src, dst):
    x = torch.randn(3, *src, generator=torch.Generator().manual_seed(0)) * 5
    want = F.interpolate(x[None], size=dst, mode="bilinear", align_corners=False)[0]
    got = resize_bilinear(x.numpy(), dst)
    assert got.shape == (3, *dst) and got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), atol=2e-6, rtol=0)


def _case(seed: int, q: int = 12, c: int = 7, padded=(64, 96)):
    """Random logits and masks where a few queries are confident, as a trained model's are."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(q, c + 1, generator=g) * 3
    masks = torch.randn(q, padded[0] // 4, padded[1] // 4, generator=g) * 4
    masks[: q // 2] += 3 * torch.randn(q // 2, 1, 1, generator=g)
    things = torch.rand(c, generator=g) > 0.5
    return logits, masks, things


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "sizes",
    [
        ((64, 96), (61, 90), (61, 90)),  # crop only
        ((64, 96), (50, 70), (100, 140)),  # crop, then resize up
        ((32, 64), (32, 50), (20, 31)),
    ],
)  # crop, then resize down
@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (0.4, 0.8)])
def test_postprocess_equals_inference(seed, sizes, thresholds):
    padded, image_size, output_size = sizes
    logits, masks, things = _case(seed, padded=padded)
    ref = torch_postprocess(logits, masks, padded, image_size, output_size, things, *thresholds)
    got = postprocess(
        logits.numpy(), masks.numpy(), padded, image_size, output_size, things.tolist(), *thresholds
    )
    near, _ = near_decisions(logits, masks, padded, image_size, output_size, *thresholds)
    assert near.mean() < 0.05  # float32 rounding may differ only on near-ties
    assert_same_prediction(ref, got, near)
    assert got["panoptic_seg"].shape == tuple(output_size)


def test_postprocess_merges_stuff_and_keeps_things_apart():
    """Two queries of one stuff class make one segment; two of one thing class make two."""
    logits = torch.full((4, 4), -8.0)
    logits[0, 0] = logits[1, 0] = 4.0  # class 0: stuff
    logits[2, 1] = logits[3, 1] = 4.0  # class 1: thing
    masks = torch.full((4, 8, 8), -9.0)
    masks[0, :4, :4] = masks[1, :4, 4:] = masks[2, 4:, :4] = masks[3, 4:, 4:] = 9.0
    things = torch.tensor([False, True, False])
    got = postprocess(logits.numpy(), masks.numpy(), (32, 32), (32, 32), (32, 32), things.tolist())
    ref = torch_postprocess(logits, masks, (32, 32), (32, 32), (32, 32), things)
    assert [(s["id"], s["label"], s["isthing"]) for s in got["segments_info"]] == [
        (1, 0, False),
        (2, 1, True),
        (3, 1, True),
    ]
    ids, counts = np.unique(got["panoptic_seg"], return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist()))
    assert area[1] > 400 and area[2] > 200 and area[3] > 200  # stuff: both halves of the top
    assert_same_prediction(ref, got, np.zeros((32, 32), dtype=bool))


def test_postprocess_nothing_kept():
    logits = torch.full((3, 4), -5.0)
    logits[:, -1] = 5.0  # every query says no-object
    got = postprocess(
        logits.numpy(), np.zeros((3, 4, 4), np.float32), (16, 16), (16, 16), (10, 12), [False] * 3
    )
    assert got["segments_info"] == [] and not got["panoptic_seg"].any()
    assert got["panoptic_seg"].shape == (10, 12) and (got["sem_seg"] == 255).all()


def test_shortest_edge_rule_equals_the_data_pipeline():
    for h in (17, 64, 333, 480, 1000):
        for w in (17, 96, 500, 640, 2000):
            for short, cap in ((0, 0), (512, 0), (640, 2560), (800, 1333), (256, 300)):
                assert shortest_edge_size(h, w, short, cap) == torch_side_rule(h, w, short, cap)


def test_postprocess_many_queries_and_exact_ties():
    """More queries than one chunk of the streaming pixel assignment, with an identical copy of a
    query in a later chunk and in the same chunk: the first of tied queries owns the pixels (as
    torch.argmax), so the copies get no segment."""
    q = 40
    logits = torch.full((q, q + 1), -5.0)
    logits[torch.arange(q), torch.arange(q)] = torch.linspace(3.0, 5.0, q)  # query k: class k
    masks = torch.full((q, 8, q), -8.0)
    masks[torch.arange(q), :, torch.arange(q)] = 8.0  # query k: column k
    for first, copy in ((3, 30), (18, 20)):  # across chunks (0 | 1), within chunk 1
        logits[copy], masks[copy] = logits[first], masks[first]
    things = torch.ones(q, dtype=torch.bool)
    size = (32, 4 * q)
    ref = torch_postprocess(logits, masks, size, size, size, things)
    got = postprocess(logits.numpy(), masks.numpy(), size, size, size, things.tolist())
    labels = [s["label"] for s in got["segments_info"]]
    assert labels == [k for k in range(q) if k not in (20, 30)] and labels.count(3) == 1
    assert_same_prediction(ref, got, np.zeros(size, dtype=bool))
