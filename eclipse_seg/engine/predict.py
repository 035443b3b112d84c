"""`eclipse-seg predict`: COCO-panoptic PNG + JSON and overlay pictures for image files (and label
PNGs of category ids for a semantic model), inferred as evaluation does: after the config's
test-time resize, predictions at the original size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eclipse_seg.data.coco_panoptic import read_image_rgb, write_panoptic_png
from eclipse_seg.engine.evaluate import model_input, save_overlay, write_label_png
from eclipse_seg.engine.runner import build_datasets, load_model


def predict_files(weights: Path, images: list[Path], out: Path, device: str = "cpu") -> list[dict]:
    """Predict each image; writes `out/panoptic/<stem>.png`, `out/overlays/<stem>.png`,
    `out/predictions.json` (COCO panoptic, category ids of the dataset) and, for semantic data,
    `out/semantic/<stem>.png` (category id per pixel, 0 = no prediction)."""
    model, cfg, scenario, step, _ = load_model(weights, device)
    try:
        categories = build_datasets(cfg)[1].categories
    except Exception:  # noqa: BLE001 - names/colours are cosmetic; the dataset may be elsewhere
        categories = []
    names = {c["id"]: c["name"] for c in categories}
    colors = {c["id"]: c.get("color", [255, 0, 0]) for c in categories}
    to_category = np.zeros(256, dtype=np.int64)  # model label -> category id; 255 (unowned) -> 0
    to_category[: min(scenario.num_classes, 255)] = scenario.order[:255]
    annotations = []
    for path in images:
        rgb = read_image_rgb(path)
        pred = model.predict([model_input(rgb, cfg.test.min_size, cfg.test.max_size)],
                             output_sizes=[rgb.shape[:2]])[0]
        ids = pred["panoptic_seg"].cpu().numpy().astype(np.int64)
        segments = [{"id": s["id"], "category_id": scenario.category_of(s["label"]),
                     "isthing": int(s["isthing"]), "score": round(s["score"], 4)}
                    for s in pred["segments_info"]]
        write_panoptic_png(out / "panoptic" / f"{path.stem}.png", ids)
        if cfg.data.dataset == "semantic":
            write_label_png(out / "semantic" / f"{path.stem}.png",
                            to_category[pred["sem_seg"].cpu().numpy()])
        save_overlay(rgb, ids, segments, names, colors, out / "overlays" / f"{path.stem}.png")
        annotations.append({"file_name": f"{path.stem}.png", "image": str(path),
                            "segments_info": segments})
    (out / "predictions.json").write_text(json.dumps(
        {"annotations": annotations, "categories": categories, "step": step}, indent=1))
    return annotations
