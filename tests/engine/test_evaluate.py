"""Evaluation: semantic mIoU old / new / all on a hand-made case (official background rule and the
ignore alternative), and the test-time protocol (resized input, prediction at the original size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eclipse_seg.config import TestConfig
from eclipse_seg.data.semantic import SemanticAsPanoptic, SemanticDataset, semantic_categories
from eclipse_seg.engine.evaluate import evaluate_model
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.results import format_results_table, step_result
from eclipse_seg.scenarios import Scenario

# PNG values (0 = other): classes 1, 2 at step 0, class 3 at step 1, class 4 not seen yet
GT = [[1, 1, 2, 0], [3, 4, 2, 0]]
# model labels (0 -> class 1, 1 -> class 2, 2 -> class 3), 255 = no query owns the pixel
PRED = [[0, 255, 1, 0], [2, 0, 1, 1]]


class FixedModel:
    """Stands in for Mask2Former: records its inputs, answers PRED at the requested size."""

    def __init__(self):
        self.calls = []

    def predict(self, images, output_sizes=None, **thresholds):
        self.calls.append(([tuple(im.shape) for im in images], output_sizes))
        return [
            {
                "sem_seg": torch.tensor(PRED),
                "panoptic_seg": torch.zeros(2, 4, dtype=torch.int32),
                "segments_info": [],
            }
            for _ in images
        ]


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    Image.new("RGB", (4, 2), (90, 20, 200)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(np.array(GT, np.uint8), mode="L").save(tmp_path / "ann" / "a.png")
    reader = SemanticDataset(tmp_path / "img", tmp_path / "ann", num_classes=4)
    return SemanticAsPanoptic(reader, semantic_categories("", 4))


SCENARIO = Scenario("2,1,1", (1, 2, 3, 4), (2, 1, 1))


@pytest.mark.parametrize(
    "background, ious",
    [
        # class 1: 1 hit of 2 gt pixels, predicted also on an "other" pixel and on class 4's pixel
        (True, {"1": 1 / 4, "2": 2 / 3, "3": 1.0}),
        (False, {"1": 1 / 3, "2": 1.0, "3": 1.0}),  # "other" pixels ignored
    ],
)
def test_miou_old_new_all_by_hand(dataset, background, ious):
    predictor = Predictor(FixedModel(), SCENARIO, TestConfig(unlabeled_as_background=background))
    summary = evaluate_model(predictor, dataset, 1, progress=False)
    row = step_result(summary, 1, SCENARIO)
    assert row["per_class"] == {k: round(100 * v, 3) for k, v in ious.items()}
    assert row["miou_old"] == pytest.approx(100 * (ious["1"] + ious["2"]) / 2, abs=1e-3)
    assert row["miou_new"] == pytest.approx(100.0)
    assert row["miou_all"] == pytest.approx(100 * sum(ious.values()) / 3, abs=1e-3)
    assert "pq_all" not in row and summary["num_images"] == 1
    table = format_results_table(
        {
            "scenario": "2,1,1",
            "classes_per_step": [2, 1, 1],
            "methods": {"eclipse": {"steps": [row]}},
        }
    )
    assert "mIoU old" in table and f"{row['miou_all']:.2f}" in table


def test_input_resized_prediction_at_original_size(dataset):
    model = FixedModel()
    evaluate_model(
        Predictor(model, SCENARIO, TestConfig(min_size=4, max_size=6)), dataset, 1, progress=False
    )
    # 2x4 image: short side 4 -> 4x8, capped to 6 on the long side -> 3x6
    assert model.calls == [([(3, 3, 6)], [(2, 4)])]
