"""One way to turn images into predictions: the model, its scenario, the test settings and the
dataset's categories together. `evaluate`, `predict`, the demo and the Python API all use it, so
what `predict` shows is what `evaluate` scores.

Test protocol (official): each image is resized as detectron2's ``ResizeShortestEdge(min_size,
max_size)`` does (0 = no resize), predicted with the configured thresholds, and the prediction is
resized back to the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eclipse_seg.config import TestConfig
from eclipse_seg.data.transforms import resize_shortest_edge
from eclipse_seg.engine.build import Run, load_run
from eclipse_seg.inference import Thresholds
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import Scenario

__all__ = ["Prediction", "Predictor", "model_input"]


def model_input(image: np.ndarray, min_size: int = 0, max_size: int = 0) -> torch.Tensor:
    """(H, W, 3) uint8 image -> the (3, H', W') uint8 model input after the test-time resize."""
    resized = resize_shortest_edge(image, min_size, max_size)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))


@dataclass
class Prediction:
    """One image's prediction at its original size, in the dataset's category ids.

    ``panoptic``: (H, W) int64 segment ids (0 = void); ``segments``: ``[{"id", "category_id",
    "label", "isthing", "score"}]``; ``labels``: (H, W) int64 model labels (255 = no query owns
    the pixel)."""

    panoptic: np.ndarray
    segments: list[dict]
    labels: np.ndarray
    label_to_category: np.ndarray  # model label -> category id; 255 (unowned) -> 0

    @property
    def semantic(self) -> np.ndarray:
        """(H, W) category id per pixel, 0 where nothing is predicted."""
        return self.label_to_category[self.labels]


class Predictor:
    """Images in, :class:`Prediction` out. ``categories``: the dataset's (id, name, isthing,
    color), for names and colours only; ``model_kind``: "semantic" when the model was trained on
    semantic data (its outputs are also written as label maps)."""

    def __init__(
        self,
        model: Mask2Former,
        scenario: Scenario,
        test: TestConfig | None = None,
        categories: list[dict] | None = None,
        *,
        step: int | None = None,
        model_kind: str = "panoptic",
    ):
        self.model = model
        self.scenario = scenario
        self.test = test or TestConfig()
        self.categories = list(categories or [])
        self.step = step
        self.model_kind = model_kind
        model.thresholds = Thresholds(self.test.object_mask_threshold, self.test.overlap_threshold)
        n = scenario.num_classes
        self.label_to_category = np.zeros(max(256, n + 1), dtype=np.int64)
        self.label_to_category[:n] = scenario.order

    @classmethod
    def from_run(cls, run: Run) -> Predictor:
        kind = "semantic" if run.cfg.data.dataset == "semantic" else "panoptic"
        return cls(
            run.model, run.scenario, run.cfg.test, run.categories, step=run.step, model_kind=kind
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Predictor:
        return cls.from_run(load_run(path, device))

    def __call__(self, images: list[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 RGB images (any sizes) -> one prediction each, at that image's size."""
        inputs = [model_input(im, self.test.min_size, self.test.max_size) for im in images]
        preds = self.model.predict(inputs, output_sizes=[im.shape[:2] for im in images])
        return [self._convert(p) for p in preds]

    def _convert(self, pred: dict) -> Prediction:
        segments = [
            {
                "id": s["id"],
                "category_id": self.scenario.category_of(s["label"]),
                "label": s["label"],
                "isthing": int(s["isthing"]),
                "score": round(s["score"], 4),
            }
            for s in pred["segments_info"]
        ]
        labels = pred["sem_seg"].cpu().numpy().astype(np.int64)
        return Prediction(
            pred["panoptic_seg"].cpu().numpy().astype(np.int64),
            segments,
            labels,
            self.label_to_category,
        )
