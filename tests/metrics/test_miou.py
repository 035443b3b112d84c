"""SemanticEvaluator: hand-computed confusion matrix, ignore index, groups, merging."""

import json

import numpy as np
import pytest
import torch

from eclipse_seg.errors import DataError
from eclipse_seg.metrics.miou import SemanticEvaluator

# rows = gt, columns = pred; (1, 2) is ignored whatever is predicted there.
GT = np.array([[0, 0, 1, 2], [1, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 3], [1, 0, 200, 7]])
# kept pairs (gt, pred): (0,0) (0,1) (1,1) (2,3) (1,1) (2,0)
# conf: row0 [1,1,0,0]; row1 [0,2,0,0]; row2 [1,0,0,1]; row3 [0,0,0,0]
# IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 0/(2+0-0) = 0, class 3: no gt -> excluded


def test_hand_computed_confusion_matrix():
    ev = SemanticEvaluator(4)
    ev.add(GT, PRED)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(ev.conf, expected)
    r = ev.summarize()
    assert r["per_class"] == {
        "0": pytest.approx(1 / 3),
        "1": pytest.approx(2 / 3),
        "2": 0.0,
        "3": None,
    }
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["pixel_acc"] == pytest.approx(3 / 6)
    assert r["groups"] == {}
    json.dumps(r)  # JSON-able


def test_ignore_index_pixels_do_not_count():
    ev = SemanticEvaluator(4, ignore_index=255)
    ev.add(GT, PRED)
    ev2 = SemanticEvaluator(4, ignore_index=255)
    keep = GT != 255
    ev2.add(GT[keep], PRED[keep])
    np.testing.assert_array_equal(ev.conf, ev2.conf)
    # a custom ignore index
    ev3 = SemanticEvaluator(3, ignore_index=0)
    ev3.add(np.array([0, 0, 1, 2]), np.array([9, 1, 1, 1]))
    assert ev3.conf.sum() == 2
    r = ev3.summarize()
    assert r["per_class"]["0"] is None
    assert r["miou"] == pytest.approx((1 / 2 + 0) / 2)


def test_groups_average_classes_with_gt():
    ev = SemanticEvaluator(4)
    ev.add(GT, PRED)
    r = ev.summarize({"old": [0, 1], "new": [2, 3], "none": [3, 99]})
    assert r["groups"]["old"] == {"miou": pytest.approx(0.5), "n": 2}
    assert r["groups"]["new"] == {"miou": 0.0, "n": 1}
    assert r["groups"]["none"] == {"miou": 0.0, "n": 0}


def test_merge_state_and_tensors():
    ev = SemanticEvaluator(4)
    ev.add(GT, PRED)
    ev.add(GT[::-1], PRED[::-1])
    a, b = SemanticEvaluator(4), SemanticEvaluator(4)
    a.add(torch.from_numpy(GT), torch.from_numpy(PRED))
    b.add(GT[::-1].copy(), PRED[::-1].copy())
    a.merge(SemanticEvaluator.from_state(json.loads(json.dumps(b.to_state()))))
    np.testing.assert_array_equal(a.conf, ev.conf)
    assert a.summarize() == ev.summarize()


def test_bad_input_raises():
    ev = SemanticEvaluator(4)
    with pytest.raises(DataError, match="img7"):
        ev.add(np.zeros((2, 2), int), np.zeros((2, 3), int), where="img7")
    with pytest.raises(DataError, match="gt label 5"):
        ev.add(np.array([5]), np.array([0]))
    with pytest.raises(DataError, match="predicted label -1"):
        ev.add(np.array([1]), np.array([-1]))
    with pytest.raises(DataError, match="dtype"):
        ev.add(np.array([1.0]), np.array([1]))
