"""Semantic segmentation data: an image folder and a label-PNG folder paired by file stem.

The default settings fit ADEChallengeData2016 (``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png``): label value 0 = "other" -> ``ignore_index``, values
1..150 -> classes 0..149 (``label_offset=-1``). Any value outside that range is an error naming the
file and the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclipse_seg.data.coco_panoptic import _PIL_ERRORS, read_image_rgb
from eclipse_seg.errors import DataError

__all__ = ["SemanticSample", "SemanticDataset"]

_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


@dataclass
class SemanticSample:
    image: torch.Tensor  # (3, H, W) uint8 RGB
    label: torch.Tensor  # (H, W) int64, class index or ignore_index
    file_name: str  # image file name (relative to image_dir)


class SemanticDataset:
    """Pairs ``image_dir/<stem><image_ext>`` with ``label_dir/<stem><label_ext>``.

    Label mapping: a raw value equal to ``ignore_index`` stays ignored; otherwise
    ``v + label_offset`` must lie in ``[0, num_classes)`` (class) or be negative (ignored, e.g. ADE's
    0 = other with offset -1); anything else is a DataError.
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
        images = {p.stem: p.name for p in self.image_dir.iterdir()
                  if p.is_file() and p.name.endswith(image_ext)}
        labels = {p.stem: p.name for p in self.label_dir.iterdir()
                  if p.is_file() and p.name.endswith(label_ext)}
        if not images:
            raise DataError(f"{self.image_dir}: no '*{image_ext}' image files")
        no_label = sorted(set(images) - set(labels))
        if no_label:
            raise DataError(
                f"{self.label_dir}: no label '<stem>{label_ext}' for {len(no_label)} image(s), e.g. "
                f"{[s + label_ext for s in no_label[:5]]}"
            )
        no_image = sorted(set(labels) - set(images))
        if no_image:
            raise DataError(
                f"{self.image_dir}: no image '<stem>{image_ext}' for {len(no_image)} label(s), e.g. "
                f"{[images.get(s, s + image_ext) for s in no_image[:5]]}"
            )
        self.stems: list[str] = sorted(images)
        self._images = images
        self._labels = labels
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
        except _PIL_ERRORS as e:
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
        return self._lut[raw]

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
