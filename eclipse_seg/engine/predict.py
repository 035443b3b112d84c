"""`eclipse-seg predict`: COCO-panoptic PNG + JSON and overlay pictures for image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from eclipse_seg.data.coco_panoptic import read_image_rgb, write_panoptic_png
from eclipse_seg.engine.evaluate import save_overlay
from eclipse_seg.engine.runner import build_datasets, load_model


def predict_files(weights: Path, images: list[Path], out: Path, device: str = "cpu") -> list[dict]:
    """Predict each image; writes `out/panoptic/<stem>.png`, `out/overlays/<stem>.png` and
    `out/predictions.json` (COCO panoptic, category ids of the dataset)."""
    model, cfg, scenario, step, _ = load_model(weights, device)
    try:
        categories = build_datasets(cfg)[1].categories
    except Exception:  # noqa: BLE001 - names/colours are cosmetic; the dataset may be elsewhere
        categories = []
    names = {c["id"]: c["name"] for c in categories}
    colors = {c["id"]: c.get("color", [255, 0, 0]) for c in categories}
    annotations = []
    for path in images:
        rgb = read_image_rgb(path)
        pred = model.predict([torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))])[0]
        ids = pred["panoptic_seg"].cpu().numpy().astype(np.int64)
        segments = [{"id": s["id"], "category_id": scenario.category_of(s["label"]),
                     "isthing": int(s["isthing"]), "score": round(s["score"], 4)}
                    for s in pred["segments_info"]]
        write_panoptic_png(out / "panoptic" / f"{path.stem}.png", ids)
        save_overlay(rgb, ids, segments, names, colors, out / "overlays" / f"{path.stem}.png")
        annotations.append({"file_name": f"{path.stem}.png", "image": str(path),
                            "segments_info": segments})
    (out / "predictions.json").write_text(json.dumps(
        {"annotations": annotations, "categories": categories, "step": step}, indent=1))
    return annotations
