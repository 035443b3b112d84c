"""The official training data pipelines: what Mask2Former's training mappers do to one image and its
ground truth, per dataset, as a draw (:func:`draw_record`) and a pure apply (:func:`apply_record`
and the ``transform_*`` functions).

Steps, in this order (detectron2's ``ResizeShortestEdge``, ``RandomCrop``, ColorAugSSD,
``RandomFlip``, then the mapper's padding):

1. resize: the short side drawn from a list, both sides scaled down when the long side would exceed
   ``max_size``, sizes rounded as ``int(x + 0.5)``. Images: Pillow bilinear on uint8. Panoptic PNGs
   (RGB-encoded ids): Pillow nearest. Semantic label maps: torch ``nearest`` on the float map (the
   official mapper reads them as float64). The two nearest rules pick different source pixels on
   about 1 % of a label map; each target follows its own rule, as officially.
2. crop: a ``crop x crop`` window (clipped to the image), its corner uniform over the valid range.
3. ColorAugSSD (ADE20K only; :mod:`eclipse_seg.data.color_aug`), on the cropped image.
4. horizontal flip, probability 1/2.
5. padding (ADE20K only) at the bottom and right to exactly ``crop x crop``: the image with 128 (before
   normalisation), panoptic ids with 0 (void), semantic labels with 255 (ignore).

Targets: panoptic, one mask per non-crowd segment of the annotation, in annotation order, computed
*after* the transforms, so a segment cropped away entirely is an empty mask that still counts as a
target; semantic, one mask per class present in the transformed map (ignore excluded).

The random draws come from the numpy Generator given (the official code draws from Python's
``random`` and numpy's global state: replaying recorded draws is what makes samples comparable).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from eclipse_seg.data.color_aug import (
    ColorAugRecord,
    apply_color_aug,
    draw_color_aug,
    require_opencv,
)
from eclipse_seg.data.panoptic_ids import id2rgb, rgb2id
from eclipse_seg.data.transforms import shortest_edge_size
from eclipse_seg.errors import ConfigError, DataError

__all__ = [
    "OFFICIAL_PIPELINES",
    "AugmentRecord",
    "PipelineSpec",
    "TrainingPipeline",
    "TrainingSample",
    "apply_record",
    "draw_record",
    "official_short_sides",
    "panoptic_training_sample",
    "pipeline_spec",
    "semantic_training_sample",
    "transform_image",
    "transform_label_map",
    "transform_panoptic_png",
]

IMAGE_PAD_VALUE = 128  # the mapper pads uint8 images with 128 before normalisation
VOID_ID = 0  # panoptic segment id of unlabelled pixels
IGNORE_LABEL = 255


def official_short_sides(base: int) -> tuple[int, ...]:
    """Mask2Former's ADE20K short-side choices: ``int(x * 0.1 * base)`` for x = 5..20, i.e. 0.5 to
    2.0 times ``base`` in steps of 0.1 (written as the official config computes them)."""
    return tuple(int(x * 0.1 * base) for x in range(5, 21))


@dataclass(frozen=True)
class PipelineSpec:
    """One dataset's training mapper: what is drawn and applied, and which targets it builds."""

    name: str
    targets: str  # "panoptic" (segments of a panoptic PNG) or "semantic" (classes of a label map)
    short_sides: tuple[int, ...]  # short-side choices (uniform)
    max_size: int  # cap on the long side after resizing
    crop_size: int  # square crop side; 0 = no crop
    pad_size: int  # pad to exactly pad_size x pad_size; 0 = no padding (the model pads the batch)
    color_aug: bool  # ColorAugSSD
    flip: bool  # horizontal flip with probability 1/2

    def describe(self) -> str:
        """One line for logs and --dry-run."""
        sides = self.short_sides
        short = (
            f"{{{sides[0]}, {sides[1]}, ..., {sides[-1]}}} ({len(sides)} values)"
            if len(sides) > 3
            else "{" + ", ".join(map(str, sides)) + "}"
        )
        parts = [f"short side from {short}, long side <= {self.max_size}"]
        parts.append(
            f"random crop {self.crop_size}x{self.crop_size}" if self.crop_size else "no crop"
        )
        parts.append("ColorAugSSD" if self.color_aug else "no colour augmentation")
        parts.append("horizontal flip p 1/2" if self.flip else "no flip")
        pad = self.pad_size
        parts.append(
            f"padded to {pad}x{pad} (image 128, {'void' if self.targets == 'panoptic' else '255'})"
            if pad
            else "batch padded to a multiple of 32"
        )
        return f"{self.name}: " + "; ".join(parts) + "; batches grouped by aspect ratio"


# Facts of Mask2Former's configs (Base-ADE20K-{Panoptic,Semantic}Segmentation.yaml; the COCO panoptic
# configs ECLIPSE trains with use the panoptic mapper with detectron2's default INPUT settings).
OFFICIAL_PIPELINES: dict[str, PipelineSpec] = {
    "ade20k_panoptic": PipelineSpec(
        "ade20k_panoptic",
        "panoptic",
        official_short_sides(640),
        2560,
        crop_size=640,
        pad_size=640,
        color_aug=True,
        flip=True,
    ),
    "ade20k_semantic": PipelineSpec(
        "ade20k_semantic",
        "semantic",
        official_short_sides(512),
        2048,
        crop_size=512,
        pad_size=512,
        color_aug=True,
        flip=True,
    ),
    "coco_panoptic": PipelineSpec(
        "coco_panoptic",
        "panoptic",
        (800,),
        1333,
        crop_size=0,
        pad_size=0,
        color_aug=False,
        flip=True,
    ),
}


def pipeline_spec(
    name: str,
    *,
    short_sides: list[int] | tuple[int, ...] = (),
    max_size: int = 0,
    crop_size: int = 0,
    flip: bool = True,
) -> PipelineSpec:
    """The official pipeline ``name`` with overrides (``()`` / 0 keep the official value). A crop-size
    override also sets the padding size of a pipeline that pads (ADE20K)."""
    if name not in OFFICIAL_PIPELINES:
        raise ConfigError(
            f"data.pipeline: no official pipeline {name!r} (expected one of "
            f"{', '.join(OFFICIAL_PIPELINES)})"
        )
    spec = OFFICIAL_PIPELINES[name]
    if any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in short_sides):
        raise ConfigError(
            f"data.train_short_sides: expected positive integers, got {list(short_sides)}"
        )
    for key, value in (("data.train_max_size", max_size), ("data.train_crop_size", crop_size)):
        if value < 0:
            raise ConfigError(
                f"config key '{key}': expected 0 (the official value) or a positive "
                f"size, got {value}"
            )
    crop = crop_size or spec.crop_size
    return replace(
        spec,
        short_sides=tuple(short_sides) or spec.short_sides,
        max_size=max_size or spec.max_size,
        crop_size=crop,
        pad_size=crop if spec.pad_size else 0,
        flip=flip,
    )


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentRecord:
    """Every random outcome of one training sample (and the sizes they imply), enough to replay it.

    ``crop`` is ``(y0, x0, h, w)`` in the resized image; ``pad_size`` 0 = no padding.
    """

    input_size: tuple[int, int]  # (H, W) of the image the record was drawn for
    short_side: int
    resized_size: tuple[int, int]  # (H, W) after ResizeShortestEdge
    crop: tuple[int, int, int, int] | None
    color: ColorAugRecord | None
    flip: bool
    pad_size: int

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) after resize and crop, before padding."""
        return self.crop[2:] if self.crop else self.resized_size

    def to_dict(self) -> dict:
        """Plain JSON-able values (lists for tuples)."""
        return {
            "input_size": list(self.input_size),
            "short_side": self.short_side,
            "resized_size": list(self.resized_size),
            "crop": None if self.crop is None else list(self.crop),
            "color": None if self.color is None else self.color.to_dict(),
            "flip": self.flip,
            "pad_size": self.pad_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> AugmentRecord:
        try:
            return cls(
                input_size=_pair(d["input_size"]),
                short_side=int(d["short_side"]),
                resized_size=_pair(d["resized_size"]),
                crop=None if d["crop"] is None else tuple(int(v) for v in d["crop"]),
                color=None if d["color"] is None else ColorAugRecord.from_dict(d["color"]),
                flip=bool(d["flip"]),
                pad_size=int(d["pad_size"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"not an augmentation record ({type(e).__name__}: {e}): {d!r}") from e


def _pair(v) -> tuple[int, int]:
    a, b = v
    return int(a), int(b)


def draw_record(
    spec: PipelineSpec, input_size: tuple[int, int], rng: np.random.Generator
) -> AugmentRecord:
    """Draw the random choices of ``spec`` for an image of ``input_size`` (H, W)."""
    h, w = input_size
    short = int(spec.short_sides[int(rng.integers(len(spec.short_sides)))])
    rh, rw = shortest_edge_size(h, w, short, spec.max_size)
    crop = None
    if spec.crop_size:
        ch, cw = min(spec.crop_size, rh), min(spec.crop_size, rw)
        y0 = int(rng.integers(rh - ch + 1))
        x0 = int(rng.integers(rw - cw + 1))
        crop = (y0, x0, ch, cw)
    color = draw_color_aug(rng) if spec.color_aug else None
    flip = bool(spec.flip and rng.random() < 0.5)
    return AugmentRecord((int(h), int(w)), short, (rh, rw), crop, color, flip, spec.pad_size)


# --------------------------------------------------------------------------------------------------
# pure transforms (numpy (H, W[, C]) in, numpy out; padding is separate)
# --------------------------------------------------------------------------------------------------
def _check(record: AugmentRecord, shape: tuple[int, ...], what: str) -> None:
    if tuple(shape[:2]) != tuple(record.input_size):
        raise DataError(
            f"{what} of size {shape[1]}x{shape[0]} (WxH) does not fit an augmentation "
            f"record drawn for {record.input_size[1]}x{record.input_size[0]}"
        )
    if record.crop is not None:
        y0, x0, ch, cw = record.crop
        rh, rw = record.resized_size
        if not (0 <= y0 and 0 <= x0 and 0 < ch and 0 < cw and y0 + ch <= rh and x0 + cw <= rw):
            raise DataError(
                f"augmentation record: crop {record.crop} (y0, x0, h, w) is not inside "
                f"the resized image {rw}x{rh} (WxH)"
            )


def _crop(arr: np.ndarray, record: AugmentRecord) -> np.ndarray:
    if record.crop is not None:
        y0, x0, ch, cw = record.crop
        arr = arr[y0 : y0 + ch, x0 : x0 + cw]
    return arr


def _flip(arr: np.ndarray, record: AugmentRecord) -> np.ndarray:
    """Horizontal flip when recorded; always a fresh writable contiguous array."""
    return np.array(arr[:, ::-1] if record.flip else arr, order="C")


def _pil_resize(arr: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), resample))


def transform_image(image: np.ndarray, record: AugmentRecord) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w, 3) uint8: Pillow-bilinear resize, crop, ColorAugSSD, flip."""
    _check(record, image.shape, "image")
    out = _crop(_pil_resize(image, record.resized_size, Image.BILINEAR), record)
    if record.color is not None:
        out = apply_color_aug(out, record.color)
    return _flip(out, record)


def transform_panoptic_png(rgb: np.ndarray, record: AugmentRecord) -> np.ndarray:
    """(H, W, 3) uint8 RGB-encoded panoptic PNG -> (h, w, 3): Pillow-nearest resize, crop, flip."""
    _check(record, rgb.shape, "panoptic PNG")
    return _flip(_crop(_pil_resize(rgb, record.resized_size, Image.NEAREST), record), record)


def transform_label_map(label: np.ndarray, record: AugmentRecord) -> np.ndarray:
    """(H, W) label map -> (h, w) int64: torch ``nearest`` on the map as float64, crop, flip."""
    _check(record, label.shape, "label map")
    x = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float64))[None, None]
    x = F.interpolate(x, size=record.resized_size, mode="nearest")[0, 0].numpy()
    return _flip(_crop(x, record), record).astype(np.int64)


def _pad(t: torch.Tensor, size: int, value: int) -> torch.Tensor:
    """Pad the last two dims at the bottom/right to exactly size x size (0 = unchanged)."""
    if not size:
        return t
    h, w = t.shape[-2:]
    if h > size or w > size:
        raise DataError(f"cannot pad a {w}x{h} (WxH) sample to {size}x{size}: it is larger")
    return F.pad(t, (0, size - w, 0, size - h), value=value)


def apply_record(image: np.ndarray, record: AugmentRecord) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, h, w) uint8 tensor: transformed and padded with 128."""
    out = torch.from_numpy(transform_image(image, record)).permute(2, 0, 1).contiguous()
    return _pad(out, record.pad_size, IMAGE_PAD_VALUE)


# --------------------------------------------------------------------------------------------------
# training samples
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainingSample:
    """One augmented training image and its targets (all at the padded size (H, W))."""

    image: torch.Tensor  # (3, H, W) uint8 RGB, 0..255, padding 128
    masks: torch.Tensor  # (K, H, W) bool, one per target
    category_ids: torch.Tensor  # (K,) int64 dataset category ids
    record: AugmentRecord
    pan_seg: torch.Tensor | None = field(default=None, repr=False)  # (H, W) int64 ids, 0 = void
    sem_seg: torch.Tensor | None = field(default=None, repr=False)  # (H, W) int64, 255 = ignore


def panoptic_training_sample(
    image: np.ndarray,
    id_map: np.ndarray,
    segments: list[dict],
    record: AugmentRecord,
    *,
    sem_seg: np.ndarray | None = None,
) -> TrainingSample:
    """Apply ``record`` to an image (H, W, 3) uint8 RGB and its panoptic id map (H, W).

    Targets: every segment of ``segments`` (``segments_info`` entries: id, category_id, iscrowd)
    that is not crowd, in order, masks after the transforms, empty ones kept. ``sem_seg``: an
    optional (H, W) semantic map transformed alongside (the ADE20K panoptic mapper builds one; the
    loss does not use it), padded with 255.
    """
    pan = rgb2id(transform_panoptic_png(id2rgb(id_map), record))
    pan = _pad(torch.from_numpy(pan), record.pad_size, VOID_ID)
    kept = [s for s in segments if not s.get("iscrowd", 0)]
    ids = torch.tensor([int(s["id"]) for s in kept], dtype=torch.int64)
    sem = None
    if sem_seg is not None:
        sem = _pad(
            torch.from_numpy(transform_label_map(sem_seg, record)), record.pad_size, IGNORE_LABEL
        )
    return TrainingSample(
        image=apply_record(image, record),
        masks=pan[None] == ids[:, None, None],
        category_ids=torch.tensor([int(s["category_id"]) for s in kept], dtype=torch.int64),
        record=record,
        pan_seg=pan,
        sem_seg=sem,
    )


def semantic_training_sample(
    image: np.ndarray, label: np.ndarray, record: AugmentRecord, *, ignore_index: int = IGNORE_LABEL
) -> TrainingSample:
    """Apply ``record`` to an image (H, W, 3) uint8 RGB and its label map (H, W) of class indices
    (``ignore_index`` = no class). Targets: one mask per class present after the transforms, in
    class order; category id = class index + 1 (as :class:`~eclipse_seg.data.semantic.SemanticAsPanoptic`)."""
    sem = _pad(torch.from_numpy(transform_label_map(label, record)), record.pad_size, ignore_index)
    classes = torch.unique(sem)
    classes = classes[classes != ignore_index]
    return TrainingSample(
        image=apply_record(image, record),
        masks=sem[None] == classes[:, None, None],
        category_ids=classes + 1,
        record=record,
        sem_seg=sem,
    )


class TrainingPipeline:
    """An official pipeline bound to a dataset: ``sample(i, rng)`` draws a record for image ``i``
    and applies it; ``replay(i, record)`` applies a given one.

    ``dataset``: a :class:`~eclipse_seg.data.coco_panoptic.CocoPanopticDataset` for a panoptic
    pipeline, a :class:`~eclipse_seg.data.semantic.SemanticAsPanoptic` for a semantic one.
    """

    def __init__(self, spec: PipelineSpec, dataset):
        need = "panoptic_inputs" if spec.targets == "panoptic" else "semantic_inputs"
        if not hasattr(dataset, need):
            kind = "coco_panoptic" if spec.targets == "panoptic" else "semantic"
            raise ConfigError(
                f"data.pipeline={spec.name} builds {spec.targets} targets and needs "
                f"data.dataset={kind}, got {type(dataset).__name__}"
            )
        if spec.color_aug:
            require_opencv()
        self.spec, self.dataset = spec, dataset

    def draw(self, index: int, rng: np.random.Generator) -> AugmentRecord:
        return draw_record(self.spec, self.dataset.image_size(index), rng)

    def sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        return self.replay(index, self.draw(index, rng))

    def replay(self, index: int, record: AugmentRecord) -> TrainingSample:
        if self.spec.targets == "panoptic":
            image, id_map, segments = self.dataset.panoptic_inputs(index)
            return panoptic_training_sample(image, id_map, segments, record)
        image, label = self.dataset.semantic_inputs(index)
        return semantic_training_sample(image, label, record)

    def landscape(self, indices: list[int]) -> np.ndarray:
        """(N,) bool: width > height for each dataset index (detectron2's two aspect groups)."""
        sizes = np.array([self.dataset.image_size(i) for i in indices], dtype=np.int64).reshape(
            -1, 2
        )
        return sizes[:, 1] > sizes[:, 0]
