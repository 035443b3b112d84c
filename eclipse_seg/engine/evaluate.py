"""Evaluation of a model at a continual step (official protocol): every validation image, the full
ground truth, the model predicting the classes seen so far; PQ (panoptic data) or IoU (semantic
data) per class, averaged over old / new / all seen classes (+ things / stuff for PQ).

Predictions come from a :class:`~eclipse_seg.engine.predictor.Predictor` (test-time resize and
thresholds of the config, predictions at the original size) and are scored against the original
ground truth. Streaming: each image's statistics are accumulated and its prediction (optionally)
written at once, so memory does not grow with the validation set. Under torchrun every rank
evaluates a disjoint shard and the statistics are gathered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eclipse_seg.data.coco_panoptic import write_panoptic_png
from eclipse_seg.data.semantic import SemanticAsPanoptic
from eclipse_seg.engine import distributed as dist
from eclipse_seg.engine.build import Dataset, thing_ids_of
from eclipse_seg.engine.predictor import Prediction, Predictor
from eclipse_seg.engine.visualize import write_label_png
from eclipse_seg.metrics.miou import SemanticEvaluator
from eclipse_seg.metrics.panoptic_quality import PanopticEvaluator
from eclipse_seg.scenarios import eval_class_groups, step_class_groups


def _predictions(
    predictor: Predictor, dataset, step: int, *, batch_size: int, max_images: int, progress: bool
) -> Iterator[tuple[int, Prediction]]:
    """(index, prediction at the original image size) for this rank's shard of the images."""
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    indices = list(range(n))[dist.rank() :: dist.world_size()]
    bar = tqdm(
        total=len(indices),
        desc=f"evaluate step {step}",
        leave=False,
        dynamic_ncols=True,
        disable=not progress or dist.rank() != 0,
    )
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        yield from zip(chunk, predictor([dataset.load_image(i) for i in chunk]))
        bar.update(len(chunk))
    bar.close()


def evaluate_model(
    predictor: Predictor,
    dataset: Dataset,
    step: int,
    *,
    max_images: int = 0,
    progress: bool = True,
    predictions_dir: Path | None = None,
) -> dict:
    """PQ summary (fractions) with groups old/new/all/things/stuff, or for semantic data the mIoU
    summary of :func:`evaluate_semantic`; {} on ranks other than 0. Test settings (resize,
    thresholds, batch size, the mIoU convention) are the predictor's."""
    options = {
        "batch_size": predictor.test.batch_size,
        "max_images": max_images,
        "progress": progress,
    }
    if isinstance(dataset, SemanticAsPanoptic):
        return evaluate_semantic(
            predictor, dataset, step, predictions_dir=predictions_dir, **options
        )
    scenario = predictor.scenario
    evaluator = PanopticEvaluator(dataset.categories)
    annotations = []
    if predictions_dir is not None:
        (predictions_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    for i, pred in _predictions(predictor, dataset, step, **options):
        ann = dataset.annotation(i)
        pred_ids = pred.panoptic
        segments = [{k: s[k] for k in ("id", "category_id", "isthing")} for s in pred.segments]
        evaluator.add(
            dataset.load_id_map(i),
            ann["segments_info"],
            pred_ids,
            segments,
            where=str(ann.get("file_name", i)),
        )
        if predictions_dir is not None:
            write_panoptic_png(predictions_dir / "panoptic" / ann["file_name"], pred_ids)
            annotations.append(
                {
                    "image_id": ann["image_id"],
                    "file_name": ann["file_name"],
                    "segments_info": segments,
                }
            )
    states = dist.gather_objects((evaluator.stat.to_state(), annotations, evaluator.num_images))
    if dist.rank() != 0:
        return {}
    total = PanopticEvaluator(dataset.categories)
    for state, _, _ in states:
        total.merge(state)
    if predictions_dir is not None:
        anns = sorted((a for _, part, _ in states for a in part), key=lambda a: str(a["image_id"]))
        (predictions_dir / "predictions.json").write_text(
            json.dumps({"annotations": anns, "categories": dataset.categories})
        )
    summary = total.summarize(step_class_groups(scenario, step, thing_ids_of(dataset.categories)))
    summary["num_images"] = sum(count for _, _, count in states)  # over all ranks
    return summary


def evaluate_semantic(
    predictor: Predictor,
    dataset: SemanticAsPanoptic,
    step: int,
    *,
    predictions_dir: Path | None = None,
    **options,
) -> dict:
    """mIoU summary ``{"metric": "miou", "groups": {old/new/all: {"miou", "n"}}, "per_class":
    {category id: IoU or None}, "num_images"}`` (fractions) from the model's ``sem_seg``.

    One confusion matrix over the dataset's classes plus a background column that no group holds:
    pixels no query owns are predicted background, and with ``unlabeled_as_background`` (official
    ECLIPSE evaluator) the "other" pixels are background ground truth, so predicting a class there
    is a false positive; otherwise they are ignored (``test.unlabeled_as_background``). Unseen
    classes keep their ground truth: a seen class predicted on them is a false positive either way."""
    scenario = predictor.scenario
    unlabeled_as_background = predictor.test.unlabeled_as_background
    num = len(dataset.categories)
    background = num
    evaluator = SemanticEvaluator(num + 1, ignore_index=-1)
    to_index = np.full(max(256, scenario.num_classes), background, dtype=np.int64)  # 255: unowned
    to_index[: scenario.num_classes] = np.asarray(scenario.order, dtype=np.int64) - 1
    if predictions_dir is not None:
        (predictions_dir / "semantic").mkdir(parents=True, exist_ok=True)
    count = 0
    for i, pred in _predictions(predictor, dataset, step, **options):
        gt = dataset.load_label(i, unlabeled=background if unlabeled_as_background else None)
        gt = np.where(gt == dataset.reader.ignore_index, -1, gt)
        index = to_index[pred.labels]
        evaluator.add(gt, index, where=str(dataset.reader.label_path(i)))
        count += 1
        if predictions_dir is not None:
            write_label_png(
                predictions_dir / "semantic" / dataset.reader.label_path(i).name,
                np.where(index == background, 0, index + 1),
            )
    states = dist.gather_objects((evaluator.to_state(), count))
    if dist.rank() != 0:
        return {}
    total = SemanticEvaluator(num + 1, ignore_index=-1)
    for state, _ in states:
        total.merge(state)
    groups = {name: [c - 1 for c in ids] for name, ids in eval_class_groups(scenario, step).items()}
    s = total.summarize(groups)
    return {
        "metric": "miou",
        "groups": s["groups"],
        "num_images": sum(n for _, n in states),
        "per_class": {str(c + 1): s["per_class"][str(c)] for c in range(num)},
    }
