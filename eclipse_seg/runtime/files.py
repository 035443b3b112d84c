"""`eclipse-seg predict --onnx F`: the outputs of `eclipse-seg predict` (COCO-panoptic PNG + JSON,
label PNGs for a semantic model) from an exported ONNX model, without PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from eclipse_seg.data.panoptic_ids import id2rgb
from eclipse_seg.runtime.session import Segmenter, read_image


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def predict_files(
    onnx_path: str | Path, images: list[Path], out: Path, threads: int | None = None
) -> list[dict]:
    """Predict each image; writes `out/panoptic/<stem>.png` (segment ids as RGB),
    `out/predictions.json` (COCO panoptic: dataset category ids, plus the categories) and, for a
    semantic model, `out/semantic/<stem>.png` (category id per pixel, 0 = no prediction)."""
    segmenter = Segmenter(onnx_path, threads=threads)
    meta = segmenter.metadata
    category_of = [c["id"] for c in meta["categories"]]
    to_category = np.zeros(256, dtype=np.int64)  # model label -> category id; 255 (unowned) -> 0
    to_category[: min(len(category_of), 255)] = category_of[:255]
    annotations = []
    for path in images:
        path = Path(path)
        pred = segmenter.predict(read_image(path))
        segments = [
            {
                "id": s["id"],
                "category_id": category_of[s["label"]],
                "isthing": int(s["isthing"]),
                "score": round(s["score"], 4),
            }
            for s in pred["segments_info"]
        ]
        _save_png(out / "panoptic" / f"{path.stem}.png", id2rgb(pred["panoptic_seg"]))
        if meta["task"] == "semantic":
            labels = to_category[pred["sem_seg"]]
            dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
            _save_png(out / "semantic" / f"{path.stem}.png", labels.astype(dtype))
        annotations.append(
            {"file_name": f"{path.stem}.png", "image": str(path), "segments_info": segments}
        )
    out.mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": c["id"], "name": c["name"], "isthing": int(c["isthing"])} for c in meta["categories"]
    ]
    (out / "predictions.json").write_text(
        json.dumps(
            {
                "annotations": annotations,
                "categories": categories,
                "step": meta["scenario"]["step"],
                "model": str(onnx_path),
            },
            indent=1,
        )
    )
    return annotations
