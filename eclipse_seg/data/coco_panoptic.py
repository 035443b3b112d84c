"""COCO panoptic format: reader (with strict validation), writer and segment statistics.

A dataset is a JSON file (``images``, ``annotations`` with ``segments_info``, ``categories``) plus one
PNG per image whose pixels encode segment ids as R + 256*G + 256**2*B (0 = void). ADE20K panoptic as
prepared by Mask2Former's script, COCO panoptic and the synthetic demo data all use this format.

Every problem a user's files can have ends in :class:`~eclipse_seg.errors.DataError` naming the file
(and, for the JSON, the field path such as ``annotations[3].segments_info[1].category_id``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from eclipse_seg.data.files import atomic_write_bytes, read_image_rgb
from eclipse_seg.data.panoptic_ids import id2rgb, read_panoptic_png
from eclipse_seg.data.panoptic_json import index_panoptic_json, read_panoptic_json
from eclipse_seg.errors import DataError

__all__ = [
    "CocoPanopticDataset",
    "PanopticSample",
    "segments_from_id_map",
    "write_coco_panoptic",
    "write_panoptic_png",
]


# --------------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------------
@dataclass
class PanopticSample:
    """One image with its panoptic ground truth.

    ``masks``/``category_ids``/``segment_ids``/``isthing``/``iscrowd`` are the supervised segments (K of
    them, in ``segments_info`` order, crowd segments included and flagged). ``id_map`` and
    ``segments_info`` are the raw ground truth exactly as in the files, for the evaluator; helpers
    such as :func:`eclipse_seg.scenarios.restrict_to_classes` filter the supervised fields only.
    """

    image: torch.Tensor  # (3, H, W) uint8 RGB
    masks: torch.Tensor  # (K, H, W) bool
    category_ids: torch.Tensor  # (K,) int64, dataset category ids
    segment_ids: torch.Tensor  # (K,) int64
    isthing: torch.Tensor  # (K,) bool
    iscrowd: torch.Tensor  # (K,) bool
    image_id: Any
    file_name: str
    height: int
    width: int
    id_map: np.ndarray = field(repr=False)  # (H, W) int64 raw segment ids, 0 = void
    segments_info: list[dict] = field(repr=False)  # raw segments_info of the JSON

    @property
    def num_segments(self) -> int:
        return int(self.category_ids.numel())


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def write_panoptic_png(path: str | os.PathLike, id_map: np.ndarray) -> None:
    """Write an (H, W) segment-id map as an RGB panoptic PNG (atomically)."""
    ids = np.asarray(id_map)
    if ids.ndim != 2:
        raise DataError(f"{path}: id map must be 2-D (H, W), got shape {ids.shape}")
    try:
        rgb = id2rgb(ids)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from e
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_coco_panoptic(
    out_json: str | os.PathLike,
    png_dir: str | os.PathLike,
    images: list[dict],
    annotations: list[dict],
    categories: list[dict],
) -> None:
    """Write a COCO panoptic JSON (and PNGs) atomically.

    An annotation may carry its segment-id map under ``"_id_map"`` (or ``"id_map"``): an (H, W)
    integer array, written to ``png_dir / annotation["file_name"]`` and left out of the JSON.
    The JSON is validated with the reader's rules before anything is written.
    """
    out_json = Path(out_json)
    png_dir = Path(png_dir)
    json_annotations = []
    id_maps: list[tuple[Path, np.ndarray]] = []
    for ann in annotations:
        ann = dict(ann)
        id_map = ann.pop("_id_map", None)
        alt = ann.pop("id_map", None)
        if id_map is None:
            id_map = alt
        if id_map is not None:
            id_maps.append((png_dir / str(ann.get("file_name", "")), np.asarray(id_map)))
        json_annotations.append(ann)
    doc = {"images": list(images), "annotations": json_annotations, "categories": list(categories)}
    try:
        text = json.dumps(doc, default=_json_default)
    except (TypeError, ValueError) as e:
        raise DataError(f"{out_json}: cannot serialise the panoptic JSON: {e}") from e
    # Validate what we are about to write with the reader's rules (round trip through JSON).
    index_panoptic_json(json.loads(text), out_json)
    for path, ids in id_maps:
        write_panoptic_png(path, ids)
    atomic_write_bytes(out_json, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# segment statistics
# --------------------------------------------------------------------------------------------------
def segments_from_id_map(
    id_map: np.ndarray,
    seg_to_cat: Mapping[int, int],
    iscrowd: int | bool | Mapping[int, int] = 0,
) -> list[dict]:
    """``segments_info`` entries (id, category_id, iscrowd, area, bbox) computed from an id map.

    ``bbox`` is ``[x, y, w, h]`` in the COCO convention (``w = xmax - xmin + 1``). Segments of
    ``seg_to_cat`` with no pixel are left out; ids in the map (other than 0) missing from
    ``seg_to_cat`` raise DataError. Output follows ``seg_to_cat``'s order.
    """
    ids = np.asarray(id_map)
    if ids.ndim != 2:
        raise DataError(f"id map must be 2-D (H, W), got shape {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(ids.shape)
    known = {int(k) for k in seg_to_cat}
    unknown = sorted(int(u) for u in uniq if u != 0 and int(u) not in known)
    if unknown:
        raise DataError(
            f"id map contains segment ids {unknown[:20]} with no category in seg_to_cat"
        )
    # find_objects works on labels 1..n: use position-in-uniq + 1.
    slices = ndimage.find_objects(inverse + 1)
    pos = {int(u): j for j, u in enumerate(uniq)}
    out = []
    for seg_id, cat_id in seg_to_cat.items():
        seg_id = int(seg_id)
        if seg_id == 0:
            raise DataError("segment id 0 is void and cannot have a category")
        j = pos.get(seg_id)
        if j is None:
            continue
        sl = slices[j]
        y0, y1 = sl[0].start, sl[0].stop
        x0, x1 = sl[1].start, sl[1].stop
        crowd = iscrowd.get(seg_id, 0) if isinstance(iscrowd, Mapping) else iscrowd
        out.append(
            {
                "id": seg_id,
                "category_id": int(cat_id),
                "iscrowd": int(bool(crowd)),
                "area": int(counts[j]),
                "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------------
class CocoPanopticDataset:
    """A COCO-panoptic-format dataset: ``dataset[i]`` is a :class:`PanopticSample`.

    Args:
        json_path: the panoptic JSON (parsed and validated once, here).
        png_dir: folder of the panoptic PNGs (``annotations[*].file_name``).
        image_dir: folder of the images (``images[*].file_name``).
        image_ids: optional subset (and order) of image ids; unknown ids raise DataError.
        allow_missing_segments: by default a ``segments_info`` entry whose id has no pixel in the
            PNG is an error; when True such segments are tolerated and left out of ``masks``
            (they stay in the raw ``segments_info``).

    Images of the JSON without an annotation are not part of the dataset. Indices follow the
    order of ``annotations`` (or of ``image_ids`` when given).
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        png_dir: str | os.PathLike,
        image_dir: str | os.PathLike,
        *,
        image_ids: Iterable[Any] | None = None,
        allow_missing_segments: bool = False,
    ):
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir)
        self.image_dir = Path(image_dir)
        self.allow_missing_segments = bool(allow_missing_segments)
        index = index_panoptic_json(read_panoptic_json(self.json_path), self.json_path)
        self.categories: list[dict] = index.categories
        self.category_by_id: dict[int, dict] = index.category_by_id
        entries = [(image, ann) for image, ann, _ in index.entries]
        if image_ids is not None:
            by_id = {img["id"]: (img, ann) for img, ann in entries}
            wanted = list(image_ids)
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise DataError(
                    f"{self.json_path}: image ids {missing[:20]} requested but not annotated in this file"
                )
            entries = [by_id[i] for i in dict.fromkeys(wanted)]
        self._entries: list[tuple[dict, dict]] = entries
        self._index_of: dict[Any, int] = {img["id"]: k for k, (img, _) in enumerate(entries)}
        self.segments_by_image: dict[Any, list[dict]] = {
            img["id"]: ann["segments_info"] for img, ann in entries
        }

    # ---- JSON-only queries -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def image_ids(self) -> list[Any]:
        return [img["id"] for img, _ in self._entries]

    def image_info(self, i: int) -> dict:
        return self._entries[self._check_index(i)][0]

    def annotation(self, i: int) -> dict:
        return self._entries[self._check_index(i)][1]

    def index_of(self, image_id: Any) -> int:
        try:
            return self._index_of[image_id]
        except KeyError:
            raise DataError(
                f"{self.json_path}: image id {image_id!r} is not in this dataset"
            ) from None

    @property
    def thing_ids(self) -> list[int]:
        return [c["id"] for c in self.categories if c["isthing"]]

    @property
    def stuff_ids(self) -> list[int]:
        return [c["id"] for c in self.categories if not c["isthing"]]

    def image_ids_with_any_category(
        self, cat_ids: Iterable[int], *, include_crowd: bool = False
    ) -> list[int]:
        """Indices of the images with at least one segment of one of ``cat_ids`` (JSON only).

        Crowd segments do not count unless ``include_crowd``.
        """
        wanted = {int(c) for c in cat_ids}
        out = []
        for k, (_, ann) in enumerate(self._entries):
            for seg in ann["segments_info"]:
                if seg["category_id"] in wanted and (include_crowd or not seg.get("iscrowd", 0)):
                    out.append(k)
                    break
        return out

    # ---- file loading ----------------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        n = len(self._entries)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dataset index must be an integer, got {type(i).__name__}")
        i = int(i)
        if i < -n or i >= n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return i % n

    def load_image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of entry ``i``; its size is checked against the JSON."""
        img, _ = self._entries[self._check_index(i)]
        path = self.image_dir / img["file_name"]
        arr = read_image_rgb(path, "image")
        h, w = arr.shape[:2]
        if (h, w) != (img["height"], img["width"]):
            raise DataError(
                f"{path}: image size {w}x{h} (WxH) differs from the JSON's "
                f"{img['width']}x{img['height']} for image id {img['id']!r} in {self.json_path}"
            )
        return arr

    def load_id_map(self, i: int) -> np.ndarray:
        """(H, W) int64 segment ids of entry ``i``; size checked against the JSON."""
        img, ann = self._entries[self._check_index(i)]
        path = self.png_dir / ann["file_name"]
        ids = read_panoptic_png(path)
        h, w = ids.shape
        if (h, w) != (img["height"], img["width"]):
            raise DataError(
                f"{path}: panoptic PNG size {w}x{h} (WxH) differs from the JSON's "
                f"{img['width']}x{img['height']} for image id {img['id']!r} in {self.json_path}"
            )
        return ids

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of entry ``i`` from the JSON (no file is read)."""
        img = self.image_info(i)
        return int(img["height"]), int(img["width"])

    def panoptic_inputs(self, i: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """What a training pipeline transforms: the (H, W, 3) uint8 RGB image, the (H, W) int64
        segment-id map and the ``segments_info`` entries with pixels (all of them unless
        ``allow_missing_segments``), checked as ``dataset[i]`` checks them."""
        k = self._check_index(i)
        img, ann = self._entries[k]
        image = self.load_image(k)
        id_map = self.load_id_map(k)
        png_path = self.png_dir / ann["file_name"]
        segs = ann["segments_info"]

        present = np.unique(id_map)
        present_set = {int(v) for v in present if v != 0}
        json_ids = [int(s["id"]) for s in segs]
        extra = sorted(present_set - set(json_ids))
        if extra:
            raise DataError(
                f"{png_path}: segment ids {extra[:20]} in the PNG are not in segments_info of "
                f"image id {img['id']!r} in {self.json_path}"
            )
        absent = [s for s in json_ids if s not in present_set]
        if absent and not self.allow_missing_segments:
            raise DataError(
                f"{self.json_path}: segments_info ids {absent[:20]} of image id {img['id']!r} have "
                f"no pixel in {png_path}"
            )
        return image, id_map, [s for s in segs if int(s["id"]) in present_set]

    def __getitem__(self, i: int) -> PanopticSample:
        k = self._check_index(i)
        img, ann = self._entries[k]
        image, id_map, kept = self.panoptic_inputs(k)
        segs = ann["segments_info"]
        seg_ids = np.array([s["id"] for s in kept], dtype=np.int64)
        masks = id_map[None, :, :] == seg_ids[:, None, None]
        cats = [int(s["category_id"]) for s in kept]
        return PanopticSample(
            image=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(),
            masks=torch.from_numpy(masks),
            category_ids=torch.tensor(cats, dtype=torch.int64),
            segment_ids=torch.from_numpy(seg_ids),
            isthing=torch.tensor(
                [bool(self.category_by_id[c]["isthing"]) for c in cats], dtype=torch.bool
            ),
            iscrowd=torch.tensor([bool(s.get("iscrowd", 0)) for s in kept], dtype=torch.bool),
            image_id=img["id"],
            file_name=img["file_name"],
            height=int(img["height"]),
            width=int(img["width"]),
            id_map=id_map,
            segments_info=segs,
        )

    def __repr__(self) -> str:
        return (
            f"CocoPanopticDataset({str(self.json_path)!r}, {len(self)} images, "
            f"{len(self.categories)} categories)"
        )
