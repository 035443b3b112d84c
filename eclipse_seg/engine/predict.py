"""`eclipse-seg predict`: COCO-panoptic PNGs + `predictions.json` (which `evaluate-panoptic`
accepts as is), overlay pictures with category names, and for a semantic model label PNGs of
category ids; predicted exactly as `evaluate` predicts (the checkpoint's test settings).

Inputs are checked before anything is written: a bad file among good ones leaves the output folder
as it was. Category names and colours come from the checkpoint, never from the dataset files.
"""

from __future__ import annotations

import json
from pathlib import Path

from eclipse_seg.data.coco_panoptic import write_panoptic_png
from eclipse_seg.data.files import atomic_write_bytes, expand_images, read_image_rgb
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.visualize import save_overlay, write_label_png

__all__ = ["predict_files"]


def predict_files(
    weights: Path,
    images: list[Path],
    out: Path,
    device: str = "cpu",
    predictor: Predictor | None = None,
) -> list[dict]:
    """Predict each image; writes `out/panoptic/<stem>.png`, `out/overlays/<stem>.png`,
    `out/predictions.json` (COCO panoptic: `image_id` = file stem, the checkpoint's categories)
    and, for semantic data, `out/semantic/<stem>.png` (category id per pixel, 0 = none)."""
    paths = expand_images([Path(p) for p in images])
    pictures = [read_image_rgb(p) for p in paths]  # every input decodes before anything is written
    predictor = predictor or Predictor.from_checkpoint(weights, device)
    categories = predictor.categories
    names = {c["id"]: c["name"] for c in categories}
    colors = {c["id"]: c.get("color", [255, 0, 0]) for c in categories}
    semantic = predictor.model_kind == "semantic"
    annotations, images_json = [], []
    for path, rgb in zip(paths, pictures):
        pred = predictor([rgb])[0]
        segments = [
            {k: s[k] for k in ("id", "category_id", "isthing", "score")} for s in pred.segments
        ]
        write_panoptic_png(out / "panoptic" / f"{path.stem}.png", pred.panoptic)
        if semantic:
            write_label_png(out / "semantic" / f"{path.stem}.png", pred.semantic)
        save_overlay(
            rgb, pred.panoptic, segments, names, colors, out / "overlays" / f"{path.stem}.png"
        )
        images_json.append(
            {"id": path.stem, "file_name": path.name, "height": rgb.shape[0], "width": rgb.shape[1]}
        )
        annotations.append(
            {
                "image_id": path.stem,
                "file_name": f"{path.stem}.png",
                "image": str(path),
                "segments_info": segments,
            }
        )
    doc = {
        "images": images_json,
        "annotations": annotations,
        "categories": categories,
        "step": predictor.step,
    }
    atomic_write_bytes(out / "predictions.json", json.dumps(doc, indent=1).encode())
    return annotations
