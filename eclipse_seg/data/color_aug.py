"""ColorAugSSD: the photometric augmentation of Mask2Former's ADE20K training (the SSD recipe, as
detectron2's PointRend project implements it), split into a draw and a pure apply.

A :class:`ColorAugRecord` holds every random outcome of one image; :func:`apply_color_aug` replays it.
The steps work on uint8 images in BGR order:

1. brightness (half of the time): every channel ``+ delta``, ``delta ~ U(-32, 32)``;
2. one of two orders, half of the time each: contrast -> saturation -> hue, or saturation -> hue ->
   contrast;
   - contrast (half of the time): every channel ``x alpha``, ``alpha ~ U(0.5, 1.5)``;
   - saturation (half of the time): OpenCV's uint8 HSV, ``S x alpha``, ``alpha ~ U(0.5, 1.5)``;
   - hue (half of the time): OpenCV's uint8 HSV (H in 0..179), ``H := (H + delta) mod 180``,
     ``delta`` an integer in [-18, 18].

Every arithmetic step computes in float32 (``value * alpha + beta``), clips to [0, 255] and truncates
to uint8, as the official code does. The HSV round trip must be OpenCV's own: its uint8 HSV -> BGR
conversion rounds differently by pixel position (vectorised body vs row tail), so any other
implementation is off by one on most pixels. OpenCV is the optional extra ``train``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np

from eclipse_seg.errors import ConfigError

__all__ = ["ColorAugRecord", "apply_color_aug", "draw_color_aug", "require_opencv"]

BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18


@dataclass(frozen=True)
class ColorAugRecord:
    """The random outcome of ColorAugSSD for one image; ``None`` = that step was skipped."""

    brightness: float | None  # delta added to every channel
    contrast_first: bool  # True: contrast, saturation, hue; False: saturation, hue, contrast
    contrast: float | None  # factor of every channel
    saturation: float | None  # factor of the HSV S channel
    hue: int | None  # shift of the HSV H channel (0..179, cyclic)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ColorAugRecord:
        return cls(
            brightness=None if d["brightness"] is None else float(d["brightness"]),
            contrast_first=bool(d["contrast_first"]),
            contrast=None if d["contrast"] is None else float(d["contrast"]),
            saturation=None if d["saturation"] is None else float(d["saturation"]),
            hue=None if d["hue"] is None else int(d["hue"]),
        )


def draw_color_aug(rng: np.random.Generator) -> ColorAugRecord:
    """Draw one image's ColorAugSSD outcome (each step with probability 1/2, the order 1/2)."""

    def maybe(draw):
        return draw() if rng.random() < 0.5 else None

    brightness = maybe(lambda: float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)))
    contrast_first = bool(rng.random() < 0.5)
    contrast = maybe(lambda: float(rng.uniform(*CONTRAST_RANGE)))
    saturation = maybe(lambda: float(rng.uniform(*SATURATION_RANGE)))
    hue = maybe(lambda: int(rng.integers(-HUE_DELTA, HUE_DELTA + 1)))
    return ColorAugRecord(brightness, contrast_first, contrast, saturation, hue)


def require_opencv() -> ModuleType:
    """The ``cv2`` module, or a ConfigError that names the extra to install."""
    try:
        import cv2
    except ImportError as e:
        raise ConfigError(
            "the official ADE20K training pipelines (data.pipeline=ade20k_panoptic / "
            "ade20k_semantic) apply ColorAugSSD in OpenCV's uint8 HSV, which needs OpenCV: "
            "pip install 'eclipse-seg[train]' (opencv-python-headless)"
        ) from e
    return cv2


def _scale_shift(values: np.ndarray, alpha: float = 1, beta: float = 0) -> np.ndarray:
    """uint8 -> float32 ``values * alpha + beta``, clipped to [0, 255], truncated to uint8."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _saturation(bgr: np.ndarray, alpha: float, cv2: ModuleType) -> np.ndarray:
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[:, :, 1] = _scale_shift(hsv[:, :, 1], alpha=alpha)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _hue(bgr: np.ndarray, delta: int, cv2: ModuleType) -> np.ndarray:
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + delta) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def apply_color_aug(image: np.ndarray, record: ColorAugRecord) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB with the recorded steps applied (in BGR order
    internally, as the official transform given RGB images)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"ColorAugSSD needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}"
        )
    cv2 = require_opencv()
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    if record.brightness is not None:
        bgr = _scale_shift(bgr, beta=record.brightness)

    def contrast(x: np.ndarray) -> np.ndarray:
        return x if record.contrast is None else _scale_shift(x, alpha=record.contrast)

    if record.contrast_first:
        bgr = contrast(bgr)
    if record.saturation is not None:
        bgr = _saturation(bgr, record.saturation, cv2)
    if record.hue is not None:
        bgr = _hue(bgr, record.hue, cv2)
    if not record.contrast_first:
        bgr = contrast(bgr)
    return np.ascontiguousarray(bgr[:, :, ::-1])
