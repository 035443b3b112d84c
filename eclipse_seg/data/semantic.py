"""Semantic segmentation data: an image folder and a label-PNG folder paired by file stem.

The default settings fit ADEChallengeData2016 (``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png``): label value 0 = "other" -> ``ignore_index``, values
1..150 -> classes 0..149 (``label_offset=-1``). Any value outside that range is an error naming the
file and the value.

:class:`SemanticAsPanoptic` shows such a dataset as panoptic data (one segment per class present,
category id = class index + 1 = ADE's PNG value), so the scenario, overlap-mode and training code
serve both kinds of data unchanged.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclipse_seg.data.catalogs import load_catalog
from eclipse_seg.data.coco_panoptic import PanopticSample
from eclipse_seg.data.files import PIL_ERRORS, read_image_rgb
from eclipse_seg.errors import ConfigError, DataError

__all__ = [
    "SemanticAsPanoptic",
    "SemanticDataset",
    "SemanticSample",
    "pair_files",
    "semantic_categories",
]

_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


@dataclass
class SemanticSample:
    image: torch.Tensor  # (3, H, W) uint8 RGB
    label: torch.Tensor  # (H, W) int64, class index or ignore_index
    file_name: str  # image file name (relative to image_dir)


def pair_files(
    image_dir: Path, label_dir: Path, image_ext: str = ".jpg", label_ext: str = ".png"
) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """``({stem: (image name, label name)}, images without a label, labels without an image)``
    (file names); the folders must exist."""

    def names(folder: Path, ext: str) -> dict[str, str]:
        return {p.stem: p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(ext)}

    images, labels = names(image_dir, image_ext), names(label_dir, label_ext)
    pairs = {s: (images[s], labels[s]) for s in sorted(set(images) & set(labels))}
    return (
        pairs,
        [images[s] for s in sorted(set(images) - set(labels))],
        [labels[s] for s in sorted(set(labels) - set(images))],
    )


class SemanticDataset:
    """Pairs ``image_dir/<stem><image_ext>`` with ``label_dir/<stem><label_ext>``.

    Label mapping: a raw value equal to ``ignore_index`` stays ignored; otherwise
    ``v + label_offset`` must lie in ``[0, num_classes)`` (class) or be negative (ignored, e.g. ADE's
    0 = other with offset -1); anything else is a DataError.

    ``skip_unpaired``: leave out images without a label and labels without an image instead of
    raising (``check-data`` reports them itself and still decodes the pairs).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        label_dir: str | os.PathLike,
        *,
        ignore_index: int = 255,
        label_offset: int = -1,
        image_ext: str = ".jpg",
        label_ext: str = ".png",
        num_classes: int = 150,
        skip_unpaired: bool = False,
    ):
        self.image_dir = Path(image_dir)
        self.label_dir = Path(label_dir)
        self.ignore_index = int(ignore_index)
        self.label_offset = int(label_offset)
        self.num_classes = int(num_classes)
        if self.num_classes <= 0:
            raise DataError(f"num_classes must be positive, got {num_classes}")
        if 0 <= self.ignore_index < self.num_classes:
            raise DataError(
                f"ignore_index {ignore_index} collides with a class index in [0, {num_classes})"
            )
        for d, what in ((self.image_dir, "image"), (self.label_dir, "label")):
            if not d.is_dir():
                raise DataError(f"{d}: {what} folder not found")
        pairs, no_label, no_image = pair_files(self.image_dir, self.label_dir, image_ext, label_ext)
        if not pairs and not no_label:
            raise DataError(f"{self.image_dir}: no '*{image_ext}' image files")
        if no_label and not skip_unpaired:
            raise DataError(
                f"{self.label_dir}: no label '<stem>{label_ext}' for {len(no_label)} image(s), e.g. "
                f"{[Path(n).stem + label_ext for n in no_label[:5]]}"
            )
        if no_image and not skip_unpaired:
            raise DataError(
                f"{self.image_dir}: no image '<stem>{image_ext}' for {len(no_image)} label(s), e.g. "
                f"{[Path(n).stem + image_ext for n in no_image[:5]]}"
            )
        self.stems: list[str] = list(pairs)
        self._images = {stem: names[0] for stem, names in pairs.items()}
        self._labels = {stem: names[1] for stem, names in pairs.items()}
        # raw value -> mapped label lookup table (values of 8- or 16-bit PNGs)
        raw = np.arange(65536, dtype=np.int64)
        mapped = raw + self.label_offset
        self._valid = (raw == self.ignore_index) | (mapped < self.num_classes)
        mapped = np.where((raw == self.ignore_index) | (mapped < 0), self.ignore_index, mapped)
        self._lut = mapped

    def __len__(self) -> int:
        return len(self.stems)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self._images[self.stems[i]]

    def label_path(self, i: int) -> Path:
        return self.label_dir / self._labels[self.stems[i]]

    def load_label(self, i: int) -> np.ndarray:
        """(H, W) int64 mapped labels of entry ``i``."""
        return self.to_labels(self.load_raw(i))

    def to_labels(self, raw: np.ndarray) -> np.ndarray:
        """Raw PNG values (as checked by :meth:`load_raw`) -> class indices / ``ignore_index``."""
        return self._lut[raw]

    def unlabeled(self, raw: np.ndarray) -> np.ndarray:
        """(H, W) bool: pixels whose raw value maps below 0 (ADE's 0 = "other"), as opposed to the
        ``ignore_index`` value; the official ECLIPSE evaluator counts them as background."""
        return (raw != self.ignore_index) & (raw + self.label_offset < 0)

    def load_raw(self, i: int) -> np.ndarray:
        """(H, W) int64 raw PNG values of entry ``i``, checked against the label mapping."""
        path = self.label_path(i)
        if not path.is_file():
            raise DataError(f"{path}: label file not found")
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in _LABEL_MODES:
                    raise DataError(
                        f"{path}: label PNG must be single-channel (L, P or I), got mode {im.mode}"
                    )
                raw = np.asarray(im).astype(np.int64)
        except PIL_ERRORS as e:
            raise DataError(f"{path}: cannot decode label PNG (corrupt or truncated?): {e}") from e
        if raw.size:
            lo, hi = int(raw.min()), int(raw.max())
            if lo < 0 or hi >= len(self._lut):
                bad = lo if lo < 0 else hi
                raise DataError(f"{path}: label value {bad} out of range")
            bad_vals = np.unique(raw[~self._valid[raw]])
            if bad_vals.size:
                raise DataError(
                    f"{path}: label values {bad_vals[:10].tolist()} out of range: with offset "
                    f"{self.label_offset} classes are raw values "
                    f"{max(0, -self.label_offset)}..{self.num_classes - 1 - self.label_offset} "
                    f"(ignore: {self.ignore_index})"
                )
        return raw

    def __getitem__(self, i: int) -> SemanticSample:
        n = len(self.stems)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        i %= n
        image = read_image_rgb(self.image_path(i), "image")
        label = self.load_label(i)
        if image.shape[:2] != label.shape:
            raise DataError(
                f"{self.label_path(i)}: label size {label.shape[1]}x{label.shape[0]} (WxH) differs "
                f"from image {self.image_path(i)} size {image.shape[1]}x{image.shape[0]}"
            )
        return SemanticSample(
            image=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(),
            label=torch.from_numpy(label),
            file_name=self._images[self.stems[i]],
        )


def semantic_categories(catalog: str, num_classes: int = 0) -> list[dict]:
    """Categories of a semantic dataset, ``id`` = class index + 1: the catalog's (ADE20K ids 1..150
    = its PNG values, COCO contiguous ids 1..133: the ids of ``official_order``), else
    ``num_classes`` unnamed stuff classes."""
    if catalog:
        cats = sorted(
            ({**c, "id": c.get("contiguous_id", c["id"])} for c in load_catalog(catalog)),
            key=lambda c: c["id"],
        )
        if num_classes and num_classes != len(cats):
            raise ConfigError(
                f"data.num_classes={num_classes} but catalog {catalog!r} has "
                f"{len(cats)} classes; set 0 to use the catalog's"
            )
        return cats
    if num_classes <= 0:
        raise ConfigError(
            "a semantic dataset needs data.catalog (e.g. ade20k) or data.num_classes > 0"
        )
    return [{"id": i + 1, "name": f"class {i}", "isthing": 0} for i in range(num_classes)]


class SemanticAsPanoptic:
    """A :class:`SemanticDataset` seen as panoptic data: every class present in a label map is one
    segment (segment id = category id = class index + 1); ignored pixels belong to no segment.

    Offers what training and evaluation read from a ``CocoPanopticDataset``: ``categories``,
    ``category_by_id``, ``dataset[i]`` (a :class:`PanopticSample`), ``load_image`` and
    ``image_ids_with_any_category``. The classes of every image (overlap mode selects images by
    them) are read from all label PNGs on first use, once per process (about a minute for
    ADE20K's 20k training maps).
    """

    def __init__(self, reader: SemanticDataset, categories: list[dict]):
        if len(categories) != reader.num_classes:
            raise DataError(
                f"{reader.label_dir}: {len(categories)} categories for "
                f"{reader.num_classes} label classes"
            )
        self.reader = reader
        self.categories = categories
        self.category_by_id = {c["id"]: c for c in categories}
        self._present: list[np.ndarray] | None = None
        self._sizes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.reader)

    def load_image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of entry ``i``."""
        return read_image_rgb(self.reader.image_path(i), "image")

    def load_label(self, i: int, unlabeled: int | None = None) -> np.ndarray:
        """(H, W) int64 class indices, ``reader.ignore_index`` where ignored; pixels of the
        unlabeled value (ADE's 0 = "other") get ``unlabeled`` when it is given."""
        raw = self.reader.load_raw(i)
        labels = self.reader.to_labels(raw)
        if unlabeled is not None:
            labels = np.where(self.reader.unlabeled(raw), unlabeled, labels)
        return labels

    def semantic_inputs(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """What a training pipeline transforms: the (H, W, 3) uint8 RGB image and the (H, W) int64
        class indices (``reader.ignore_index`` = no class), sizes checked against each other."""
        sample = self.reader[i]
        return np.ascontiguousarray(sample.image.permute(1, 2, 0).numpy()), sample.label.numpy()

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` from its file header (read once for all images, then cached)."""
        if self._sizes is None:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self._sizes = list(pool.map(self._read_size, range(len(self))))
        return self._sizes[i]

    def _read_size(self, i: int) -> tuple[int, int]:
        path = self.reader.image_path(i)
        try:
            with Image.open(path) as im:
                w, h = im.size
        except FileNotFoundError as e:
            raise DataError(f"{path}: image file not found") from e
        except PIL_ERRORS as e:
            raise DataError(f"{path}: cannot decode image (corrupt or truncated?): {e}") from e
        return h, w

    def present_categories(self) -> list[np.ndarray]:
        """Per image, the category ids with at least one pixel (read once, then cached)."""
        if self._present is None:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self._present = list(pool.map(self._categories_in, range(len(self))))
        return self._present

    def _categories_in(self, i: int) -> np.ndarray:
        present = np.unique(self.reader.load_label(i))
        return present[present != self.reader.ignore_index] + 1

    def image_ids_with_any_category(self, cat_ids, *, include_crowd: bool = False) -> list[int]:
        """Indices of the images with a pixel of one of ``cat_ids`` (semantic data has no crowd)."""
        wanted = np.array(sorted({int(c) for c in cat_ids}), dtype=np.int64)
        return [
            k for k, cats in enumerate(self.present_categories()) if np.isin(cats, wanted).any()
        ]

    def __getitem__(self, i: int) -> PanopticSample:
        sample = self.reader[i]
        label = sample.label.numpy()
        classes = np.unique(label)
        classes = classes[classes != self.reader.ignore_index]
        ids = classes + 1
        masks = label[None] == classes[:, None, None]
        cats = ids.tolist()
        return PanopticSample(
            image=sample.image,
            masks=torch.from_numpy(masks),
            category_ids=torch.from_numpy(ids),
            segment_ids=torch.from_numpy(ids.copy()),
            isthing=torch.tensor(
                [bool(self.category_by_id[c].get("isthing")) for c in cats], dtype=torch.bool
            ),
            iscrowd=torch.zeros(len(cats), dtype=torch.bool),
            image_id=Path(sample.file_name).stem,
            file_name=sample.file_name,
            height=label.shape[0],
            width=label.shape[1],
            id_map=np.where(label == self.reader.ignore_index, 0, label + 1),
            segments_info=[
                {"id": c, "category_id": c, "iscrowd": 0, "area": int(m.sum())}
                for c, m in zip(cats, masks)
            ],
        )

    def __repr__(self) -> str:
        return (
            f"SemanticAsPanoptic({str(self.reader.image_dir)!r}, {len(self)} images, "
            f"{len(self.categories)} categories)"
        )
