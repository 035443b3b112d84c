"""The self-describing metadata of an exported model (schema: `eclipse_seg.runtime.metadata`)."""

from __future__ import annotations

import json
from typing import Any

from eclipse_seg import __version__
from eclipse_seg.config import Config
from eclipse_seg.data.paths import data_path
from eclipse_seg.export.graph import MIN_DYNAMIC_SIDE
from eclipse_seg.model.mask2former import SIZE_DIVISIBILITY, Mask2Former
from eclipse_seg.runtime.metadata import FORMAT, INPUT_NAME, MASK_STRIDE, check_metadata
from eclipse_seg.scenarios import Scenario


def category_names(cfg: Config) -> dict[int, str]:
    """Dataset category id -> name, from what the config names without reading the dataset: the
    synthetic classes, the ADE20K / COCO catalog (ids as the dataset's files use them), else the
    validation JSON's categories when that file is here; {} when none is known."""
    d = cfg.data
    if d.dataset == "synthetic":
        from eclipse_seg.data.synthetic import SYNTHETIC_CATEGORIES

        return {c["id"]: c["name"] for c in SYNTHETIC_CATEGORIES}
    if d.catalog:
        from eclipse_seg.data.catalogs import load_catalog

        cats = load_catalog(d.catalog)
        if d.dataset == "semantic":  # label PNG values: the catalog ids
            return {c["id"]: c["name"] for c in cats}
        return {c.get("panoptic_json_id", c["id"]): c["name"] for c in cats}
    path = data_path(d.root, d.val_json)
    if d.dataset != "semantic" and path.is_file():
        try:
            return {
                int(c["id"]): str(c["name"]) for c in json.loads(path.read_text())["categories"]
            }
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # names are cosmetic; check-data reports broken JSONs
    return {}


def group_deltas(model: Mask2Former) -> list[float]:
    """The delta each query group uses: the configured list padded with its last value or cut to
    the number of groups (the decoder's rule)."""
    d = [float(v) for v in model.decoder.deltas.flatten().tolist()] or [0.0]
    n = model.decoder.num_groups
    return (d + [d[-1]] * n)[:n]


def deploy_metadata(
    model: Mask2Former,
    cfg: Config,
    scenario: Scenario,
    step: int,
    method: str,
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Metadata of `model` (after `step` of `scenario`, trained with `method`) exported for
    `image_size` (None = any size)."""
    dec = model.decoder
    classes = dec.class_embed.classes_per_step
    names = category_names(cfg)
    flags = model.thing_mask.tolist()
    categories = []
    for label in range(sum(classes)):
        cid = int(scenario.order[label])
        categories.append(
            {
                "label": label,
                "id": cid,
                "name": names.get(cid, f"class {cid}"),
                "isthing": bool(flags[label]) if label < len(flags) else False,
            }
        )
    h, w = image_size if image_size is not None else (None, None)
    metadata = {
        "format": FORMAT,
        "eclipse_seg_version": __version__,
        "task": "semantic" if cfg.data.dataset == "semantic" else "panoptic",
        "scenario": {"name": scenario.name, "step": int(step), "method": method},
        "classes_per_step": [int(c) for c in classes],
        "query_groups": [dec.group_size(g) for g in range(dec.num_groups)],
        "deltas": group_deltas(model),
        "categories": categories,
        "test": {
            "object_mask_threshold": float(cfg.test.object_mask_threshold),
            "overlap_threshold": float(cfg.test.overlap_threshold),
            "min_size": int(cfg.test.min_size),
            "max_size": int(cfg.test.max_size),
        },
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": "RGB",
            "value_range": [0, 255],
            "batch": None,
            "height": h,
            "width": w,
            "min_side": 1 if image_size is not None else MIN_DYNAMIC_SIDE,
            "pixel_mean": model.pixel_mean.flatten().tolist(),
            "pixel_std": model.pixel_std.flatten().tolist(),
            "size_divisibility": SIZE_DIVISIBILITY,
            "note": "normalised and zero-padded bottom/right to the size divisibility "
            "inside the graph; one image size per batch",
        },
        "outputs": {
            "pred_logits": "(B, Q, C+1) class logits, no-object last, after logit manipulation",
            "pred_masks": "(B, Q, H_pad/4, W_pad/4) mask logits",
        },
        "mask_stride": MASK_STRIDE,
        "backbone": cfg.model.backbone_type,
    }
    check_metadata(metadata, "metadata being written")
    return metadata
