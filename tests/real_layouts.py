"""Tiny datasets written in the real on-disk layouts (ADE20K panoptic as Mask2Former's script
leaves it, detectron2's COCO panoptic, ADEChallengeData2016 semantic), for end-to-end tests of the
shipped configs without the real data. Every function returns the data root (ECLIPSE_DATA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from eclipse_seg.data.catalogs import load_catalog, official_order, official_to_json_ids
from eclipse_seg.data.coco_panoptic import segments_from_id_map, write_coco_panoptic

SIZE = (48, 64)  # H, W of every image


def _stripes(values: list[int], seed: int) -> np.ndarray:
    """(H, W) map of vertical stripes of `values`, widths varying with `seed`."""
    h, w = SIZE
    cuts = np.sort(
        np.random.default_rng(seed).choice(np.arange(8, w - 8), len(values) - 1, replace=False)
    )
    out = np.zeros((h, w), dtype=np.int64)
    for v, x0 in zip(values[1:], cuts):
        out[:, x0:] = v
    out[:, : cuts[0]] = values[0]
    return out


def _write_jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _panoptic_split(
    json_path: Path,
    png_dir: Path,
    image_dir: Path,
    categories: list[dict],
    cat_ids: list[int],
    count: int,
    seed: int,
) -> None:
    images, annotations = [], []
    for k in range(count):
        stem = f"{image_dir.name}_{k:06d}"
        ids = _stripes([1, 2, 3], seed + k)
        _write_jpg(image_dir / f"{stem}.jpg", seed + k)
        images.append({"id": stem, "file_name": f"{stem}.jpg", "height": SIZE[0], "width": SIZE[1]})
        annotations.append(
            {
                "image_id": stem,
                "file_name": f"{stem}.png",
                "_id_map": ids,
                "segments_info": segments_from_id_map(ids, dict(zip((1, 2, 3), cat_ids))),
            }
        )
    write_coco_panoptic(json_path, png_dir, images, annotations, categories)


def make_ade20k_panoptic(root: Path, train: int = 4, val: int = 2) -> Path:
    """ADEChallengeData2016/{ade20k_panoptic_{train,val}.json, ade20k_panoptic_{train,val}/,
    images/{training,validation}/}; JSON category ids 0..149; every image holds classes of both
    steps of 100-50 (ADE ids 1, 6 and 120)."""
    base = root / "ADEChallengeData2016"
    cats = [
        {
            "id": c["panoptic_json_id"],
            "name": c["name"],
            "isthing": c["isthing"],
            "color": c["color"],
        }
        for c in load_catalog("ade20k")
    ]
    to_json = official_to_json_ids("ade20k")
    for split, folder, n in (("train", "training", train), ("val", "validation", val)):
        _panoptic_split(
            base / f"ade20k_panoptic_{split}.json",
            base / f"ade20k_panoptic_{split}",
            base / "images" / folder,
            cats,
            [to_json[1], to_json[6], to_json[120]],
            n,
            seed=10 if split == "train" else 20,
        )
    return root


def make_coco_panoptic(root: Path, train: int = 4, val: int = 2) -> Path:
    """coco/{annotations/panoptic_{train,val}2017.json, panoptic_{train,val}2017/,
    {train,val}2017/} with COCO category ids; classes of both steps of 83-50 (order "c")."""
    base = root / "coco"
    cats = [
        {k: c[k] for k in ("id", "name", "isthing", "color", "supercategory")}
        for c in load_catalog("coco")
    ]
    order, to_json = official_order("coco"), official_to_json_ids("coco")
    cat_ids = [to_json[order[0]], to_json[order[1]], to_json[order[100]]]
    for split, n in (("train", train), ("val", val)):
        _panoptic_split(
            base / "annotations" / f"panoptic_{split}2017.json",
            base / f"panoptic_{split}2017",
            base / f"{split}2017",
            cats,
            cat_ids,
            n,
            seed=30 if split == "train" else 40,
        )
    return root


def make_ade20k_semantic(root: Path, train: int = 4, val: int = 2) -> Path:
    """ADEChallengeData2016/{images,annotations}/{training,validation}/: JPEG images, PNG label
    maps of ADE ids (0 = other) 0, 1, 6 and 120."""
    base = root / "ADEChallengeData2016"
    for folder, n, seed in (("training", train, 50), ("validation", val, 60)):
        for k in range(n):
            stem = f"ADE_{folder[:5]}_{k:08d}"
            _write_jpg(base / "images" / folder / f"{stem}.jpg", seed + k)
            label = _stripes([0, 1, 6, 120], seed + k).astype(np.uint8)
            (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(label, mode="L").save(base / "annotations" / folder / f"{stem}.png")
    return root
