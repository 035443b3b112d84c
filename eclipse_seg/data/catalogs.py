"""Category catalogs shipped with the package: ADE20K-150 panoptic and COCO-133 panoptic.

* ``load_catalog("ade20k")``: 150 entries ``{"id": 1..150, "panoptic_json_id": 0..149, "name",
  "isthing", "color"}`` (names/flags/colours of Mask2Former's ADE20K_150_CATEGORIES). ``id`` is the
  ADEChallengeData2016 semantic-PNG value; the panoptic JSON made by Mask2Former's
  ``prepare_ade20k_pan_seg.py`` uses the 0-based ``panoptic_json_id``.
* ``load_catalog("coco")``: 133 entries ``{"id": COCO id, "contiguous_id": 1..133, "name",
  "isthing", "color", "supercategory"}``, things (contiguous 1..80) then stuff (81..133).
* ``official_order(dataset)``: ADE 1..150; COCO the ECLIPSE order "c" over contiguous ids.
* ``official_to_json_ids(dataset)``: maps the ids of ``official_order`` to the category ids found
  in the dataset's panoptic JSON (ADE: id - 1; COCO: contiguous id -> COCO id).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from eclipse_seg.errors import ConfigError

__all__ = [
    "CATALOG_NAMES",
    "canonical_dataset",
    "load_catalog",
    "official_order",
    "official_to_json_ids",
]

_DIR = Path(__file__).with_name("catalogs")
_FILES = {"ade20k": "ade20k_150.json", "coco": "coco_133.json"}
_ALIASES = {
    "ade20k": "ade20k",
    "ade": "ade20k",
    "ade20k_150": "ade20k",
    "ade20k-150": "ade20k",
    "ade20k_panoptic": "ade20k",
    "coco": "coco",
    "coco_133": "coco",
    "coco-133": "coco",
    "coco_panoptic": "coco",
}
CATALOG_NAMES = tuple(_FILES)


def canonical_dataset(name: str) -> str:
    """'ade20k' or 'coco' for a dataset name or one of its aliases; ConfigError otherwise."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ConfigError(
            f"dataset: unknown catalog {name!r}; expected one of {sorted(set(_ALIASES))}"
        )
    return _ALIASES[key]


@cache
def _load(name: str) -> dict:
    path = _DIR / _FILES[name]
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_catalog(name: str) -> list[dict]:
    """The catalog's categories (a fresh copy), each with at least id, name, isthing, color."""
    return copy.deepcopy(_load(canonical_dataset(name))["categories"])


def official_order(dataset: str) -> list[int]:
    """Official class order: ADE20K 1..150; COCO ECLIPSE order "c" over 1-based contiguous ids."""
    name = canonical_dataset(dataset)
    if name == "ade20k":
        return [c["id"] for c in _load(name)["categories"]]
    return list(_load(name)["official_order"])


def official_to_json_ids(dataset: str) -> dict[int, int]:
    """Map the ids used by :func:`official_order` to the panoptic JSON's category ids."""
    name = canonical_dataset(dataset)
    cats = _load(name)["categories"]
    if name == "ade20k":
        return {c["id"]: c["panoptic_json_id"] for c in cats}
    return {c["contiguous_id"]: c["id"] for c in cats}
