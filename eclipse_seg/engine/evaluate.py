"""Evaluation of a model at a continual step (official protocol, DESIGN §2): every validation image,
the full ground truth, the model predicting the classes seen so far; PQ (panoptic data) or IoU
(semantic data) per class, averaged over old / new / all seen classes (+ things / stuff for PQ).

Images are resized as detectron2 does at test time (``test.min_size`` / ``test.max_size``) and the
predictions come back at the original size, where they are scored against the original ground truth.
Streaming: each image's statistics are accumulated and its prediction (optionally) written at
once, so memory does not grow with the validation set. Under torchrun every rank evaluates a
disjoint shard and the statistics are gathered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from eclipse_seg.data.coco_panoptic import CocoPanopticDataset, write_panoptic_png
from eclipse_seg.data.semantic import SemanticAsPanoptic
from eclipse_seg.data.transforms import resize_shortest_edge
from eclipse_seg.engine import distributed as dist
from eclipse_seg.metrics.miou import SemanticEvaluator
from eclipse_seg.metrics.panoptic_quality import PanopticEvaluator
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import Scenario, eval_class_groups


def step_groups(scenario: Scenario, step: int, thing_ids: set[int]) -> dict:
    groups = eval_class_groups(scenario, step)
    seen = groups["all"]
    groups["things"] = [c for c in seen if c in thing_ids]
    groups["stuff"] = [c for c in seen if c not in thing_ids]
    return groups


def model_input(image: np.ndarray, min_size: int = 0, max_size: int = 0) -> torch.Tensor:
    """(H, W, 3) uint8 image -> the (3, H', W') uint8 model input after the test-time resize."""
    resized = resize_shortest_edge(image, min_size, max_size)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))


def _predictions(model: Mask2Former, dataset, step: int, *, batch_size: int, max_images: int,
                 progress: bool, min_size: int, max_size: int, **thresholds) -> Iterator[tuple[int, dict]]:
    """(index, prediction at the original image size) for this rank's shard of the images."""
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    indices = list(range(n))[dist.rank():: dist.world_size()]
    bar = tqdm(total=len(indices), desc=f"evaluate step {step}", leave=False, dynamic_ncols=True,
               disable=not progress or dist.rank() != 0)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start: start + batch_size]
        originals = [dataset.load_image(i) for i in chunk]
        preds = model.predict([model_input(im, min_size, max_size) for im in originals],
                              output_sizes=[im.shape[:2] for im in originals], **thresholds)
        yield from zip(chunk, preds)
        bar.update(len(chunk))
    bar.close()


def evaluate_model(model: Mask2Former, dataset: CocoPanopticDataset | SemanticAsPanoptic,
                   scenario: Scenario, step: int, *, batch_size: int = 4,
                   object_mask_threshold: float = 0.0, overlap_threshold: float = 0.0,
                   max_images: int = 0, progress: bool = True, predictions_dir: Path | None = None,
                   min_size: int = 0, max_size: int = 0, unlabeled_as_background: bool = True) -> dict:
    """PQ summary (fractions) with groups old/new/all/things/stuff, or for semantic data the mIoU
    summary of :func:`evaluate_semantic`; {} on ranks other than 0."""
    options = {"batch_size": batch_size, "max_images": max_images, "progress": progress,
               "min_size": min_size, "max_size": max_size,
               "object_mask_threshold": object_mask_threshold,
               "overlap_threshold": overlap_threshold}
    if isinstance(dataset, SemanticAsPanoptic):
        return evaluate_semantic(model, dataset, scenario, step, predictions_dir=predictions_dir,
                                 unlabeled_as_background=unlabeled_as_background, **options)
    evaluator = PanopticEvaluator(dataset.categories)
    annotations = []
    if predictions_dir is not None:
        (predictions_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    for i, pred in _predictions(model, dataset, step, **options):
        ann = dataset.annotation(i)
        pred_ids = pred["panoptic_seg"].cpu().numpy().astype(np.int64)
        segments = [{"id": s["id"], "category_id": scenario.category_of(s["label"]),
                     "isthing": int(s["isthing"])} for s in pred["segments_info"]]
        evaluator.add(dataset.load_id_map(i), ann["segments_info"], pred_ids, segments,
                      where=str(ann.get("file_name", i)))
        if predictions_dir is not None:
            write_panoptic_png(predictions_dir / "panoptic" / ann["file_name"], pred_ids)
            annotations.append({"image_id": ann["image_id"], "file_name": ann["file_name"],
                                "segments_info": segments})
    states = dist.gather_objects((evaluator.stat.to_state(), annotations, evaluator.num_images))
    if dist.rank() != 0:
        return {}
    total = PanopticEvaluator(dataset.categories)
    for state, _, _ in states:
        total.merge(state)
    if predictions_dir is not None:
        anns = sorted((a for _, part, _ in states for a in part), key=lambda a: str(a["image_id"]))
        (predictions_dir / "predictions.json").write_text(json.dumps(
            {"annotations": anns, "categories": dataset.categories}))
    thing_ids = {c["id"] for c in dataset.categories if c.get("isthing")}
    summary = total.summarize(step_groups(scenario, step, thing_ids))
    summary["num_images"] = sum(count for _, _, count in states)  # over all ranks
    return summary


def evaluate_semantic(model: Mask2Former, dataset: SemanticAsPanoptic, scenario: Scenario, step: int,
                      *, unlabeled_as_background: bool = True, predictions_dir: Path | None = None,
                      **options) -> dict:
    """mIoU summary ``{"metric": "miou", "groups": {old/new/all: {"miou", "n"}}, "per_class":
    {category id: IoU or None}, "num_images"}`` (fractions) from the model's ``sem_seg``.

    One confusion matrix over the dataset's classes plus a background column that no group holds:
    pixels no query owns are predicted background, and with ``unlabeled_as_background`` (official
    ECLIPSE evaluator) the "other" pixels are background ground truth, so predicting a class there
    is a false positive; otherwise they are ignored. Unseen classes keep their ground truth: a seen
    class predicted on them is a false positive either way."""
    num = len(dataset.categories)
    background = num
    evaluator = SemanticEvaluator(num + 1, ignore_index=-1)
    to_index = np.full(max(256, scenario.num_classes), background, dtype=np.int64)  # 255: unowned
    to_index[: scenario.num_classes] = np.asarray(scenario.order, dtype=np.int64) - 1
    if predictions_dir is not None:
        (predictions_dir / "semantic").mkdir(parents=True, exist_ok=True)
    count = 0
    for i, pred in _predictions(model, dataset, step, **options):
        gt = dataset.load_label(i, unlabeled=background if unlabeled_as_background else None)
        gt = np.where(gt == dataset.reader.ignore_index, -1, gt)
        index = to_index[pred["sem_seg"].cpu().numpy()]
        evaluator.add(gt, index, where=str(dataset.reader.label_path(i)))
        count += 1
        if predictions_dir is not None:
            write_label_png(predictions_dir / "semantic" / dataset.reader.label_path(i).name,
                            np.where(index == background, 0, index + 1))
    states = dist.gather_objects((evaluator.to_state(), count))
    if dist.rank() != 0:
        return {}
    total = SemanticEvaluator(num + 1, ignore_index=-1)
    for state, _ in states:
        total.merge(state)
    groups = {name: [c - 1 for c in ids] for name, ids in eval_class_groups(scenario, step).items()}
    s = total.summarize(groups)
    return {"metric": "miou", "groups": s["groups"], "num_images": sum(n for _, n in states),
            "per_class": {str(c + 1): s["per_class"][str(c)] for c in range(num)}}


def write_label_png(path: Path, category_ids: np.ndarray) -> None:
    """(H, W) category ids (0 = none) as a single-channel PNG, 8-bit when they fit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if category_ids.max(initial=0) < 256:
        Image.fromarray(category_ids.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(category_ids.astype(np.uint16)).save(path)


def step_result(summary: dict, step: int, scenario: Scenario) -> dict:
    """The results.json entry of one step in points (0-100): PQ (``pq_*``, things / stuff) or, for
    a semantic summary, mIoU (``miou_*``)."""
    g = summary["groups"]
    metric = summary.get("metric", "pq")

    def pts(name):
        return round(100 * g[name][metric], 3) if g.get(name, {}).get("n") else None

    seen = set(scenario.seen_classes(step))
    row = {"step": step, f"{metric}_old": pts("old") if step > 0 else None,
           f"{metric}_new": pts("new"), f"{metric}_all": pts("all")}
    if metric == "pq":
        row.update(pq_things=pts("things"), pq_stuff=pts("stuff"))
    row["per_class"] = {k: _class_points(v, metric) for k, v in summary["per_class"].items()
                        if int(k) in seen}
    return row


def _class_points(value, metric: str) -> float | None:
    """A class's PQ (its statistics dict) or IoU (None: no ground-truth pixel) in points."""
    value = value["pq"] if metric == "pq" else value
    return None if value is None else round(100 * value, 3)


def save_overlay(image: np.ndarray, panoptic: np.ndarray, segments: list[dict],
                 names: dict[int, str], colors: dict[int, list[int]], path: Path) -> None:
    """Blend category colours over the image and write each segment's category name."""
    from PIL import ImageDraw

    overlay = image.astype(np.float32).copy()
    draw_items = []
    for s in segments:
        m = panoptic == s["id"]
        if not m.any():
            continue
        colour = np.array(colors.get(s["category_id"], [255, 0, 0]), np.float32)
        if s.get("isthing"):  # jitter thing colours so adjacent instances differ
            colour = np.clip(colour + (s["id"] * 37 % 60 - 30), 0, 255)
        overlay[m] = 0.45 * overlay[m] + 0.55 * colour
        ys, xs = np.nonzero(m)
        draw_items.append((int(xs.mean()), int(ys.mean()), names.get(s["category_id"], "?")))
    scale = max(1, 256 // max(image.shape[:2]))
    pic = Image.fromarray(overlay.astype(np.uint8)).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(pic)
    for x, y, text in draw_items:
        draw.text((x * scale - 3 * len(text), y * scale - 5), text, fill=(255, 255, 255),
                  stroke_width=1, stroke_fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    pic.save(path)
