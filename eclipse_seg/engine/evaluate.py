"""Evaluation of a model at a continual step (official protocol, DESIGN §2): every validation image,
the full ground truth, the model predicting the classes seen so far; PQ per class, averaged over
old / new / all seen classes (+ things / stuff among the seen ones).

Streaming: each image's PQ statistics are accumulated and its prediction (optionally) written at
once, so memory does not grow with the validation set. Under torchrun every rank evaluates a
disjoint shard and the statistics are gathered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from eclipse_seg.data.coco_panoptic import CocoPanopticDataset, write_panoptic_png
from eclipse_seg.engine import distributed as dist
from eclipse_seg.metrics.panoptic_quality import PanopticEvaluator
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import Scenario, eval_class_groups


def step_groups(scenario: Scenario, step: int, thing_ids: set[int]) -> dict:
    groups = eval_class_groups(scenario, step)
    seen = groups["all"]
    groups["things"] = [c for c in seen if c in thing_ids]
    groups["stuff"] = [c for c in seen if c not in thing_ids]
    return groups


def evaluate_model(model: Mask2Former, dataset: CocoPanopticDataset, scenario: Scenario, step: int,
                   *, batch_size: int = 4, object_mask_threshold: float = 0.0,
                   overlap_threshold: float = 0.0, max_images: int = 0, progress: bool = True,
                   predictions_dir: Path | None = None) -> dict:
    """PQ summary (fractions) with groups old/new/all/things/stuff; None entries on other ranks."""
    evaluator = PanopticEvaluator(dataset.categories)
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    indices = list(range(n))[dist.rank():: dist.world_size()]
    annotations = []
    if predictions_dir is not None:
        (predictions_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(indices), desc=f"evaluate step {step}", leave=False, dynamic_ncols=True,
               disable=not progress or dist.rank() != 0)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start: start + batch_size]
        images = [torch.from_numpy(np.ascontiguousarray(dataset.load_image(i).transpose(2, 0, 1)))
                  for i in chunk]
        preds = model.predict(images, object_mask_threshold=object_mask_threshold,
                              overlap_threshold=overlap_threshold)
        for i, pred in zip(chunk, preds):
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
        bar.update(len(chunk))
    bar.close()
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


def step_result(summary: dict, step: int, scenario: Scenario) -> dict:
    """The results.json entry of one step: PQ in points (0-100)."""
    g = summary["groups"]

    def pts(name):
        return round(100 * g[name]["pq"], 3) if g.get(name, {}).get("n") else None

    seen = set(scenario.seen_classes(step))
    return {
        "step": step,
        "pq_old": pts("old") if step > 0 else None,
        "pq_new": pts("new"),
        "pq_all": pts("all"),
        "pq_things": pts("things"),
        "pq_stuff": pts("stuff"),
        "per_class": {k: round(100 * v["pq"], 3) for k, v in summary["per_class"].items()
                      if int(k) in seen},
    }


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
