"""ColorAugSSD: each step on hand-checkable pixels (float32 arithmetic, clipping, truncation), the
HSV steps against OpenCV called directly, the two step orders, the draw, and the missing-OpenCV
error."""

import sys

import numpy as np
import pytest

from eclipse_seg.data.color_aug import ColorAugRecord, apply_color_aug, draw_color_aug
from eclipse_seg.errors import ConfigError

cv2 = pytest.importorskip("cv2")

NONE = ColorAugRecord(
    brightness=None, contrast_first=True, contrast=None, saturation=None, hue=None
)


def record(**kw) -> ColorAugRecord:
    return ColorAugRecord(**{**NONE.to_dict(), **kw})


def image(*rgb: tuple[int, int, int]) -> np.ndarray:
    """(1, N, 3) uint8 RGB image of the given pixels."""
    return np.array([rgb], dtype=np.uint8)


def test_no_step_is_identity():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_color_aug(img, NONE), img)


def test_brightness_adds_clips_and_truncates():
    out = apply_color_aug(image((0, 10, 250), (5, 100, 255)), record(brightness=10.7))
    np.testing.assert_array_equal(out, image((10, 20, 255), (15, 110, 255)))  # 20.7 -> 20, not 21
    out = apply_color_aug(image((0, 10, 250)), record(brightness=-7.5))
    np.testing.assert_array_equal(out, image((0, 2, 242)))  # -7.5 -> 0; 2.5 -> 2


def test_contrast_multiplies_clips_and_truncates():
    out = apply_color_aug(image((5, 100, 200), (3, 0, 255)), record(contrast=1.5))
    np.testing.assert_array_equal(out, image((7, 150, 255), (4, 0, 255)))  # 7.5 -> 7, 300 -> 255


def test_contrast_computes_in_float32():
    alpha = 1 - 2e-8  # rounds to 1.0 in float32: 255 stays 255 (float64 would give 254.99 -> 254)
    np.testing.assert_array_equal(
        apply_color_aug(image((255, 255, 255)), record(contrast=alpha)), image((255, 255, 255))
    )


def test_saturation_truncates_the_scaled_s_channel():
    # RGB (200, 100, 100): OpenCV HSV S = 127 (V = 200); x 0.5 = 63.5 -> 63 (truncated), and back:
    # min channel = 200 * (1 - 63 / 255) = 150.6 -> 151 (with S = 64 it would be 150)
    np.testing.assert_array_equal(
        apply_color_aug(image((200, 100, 100)), record(saturation=0.5)), image((200, 151, 151))
    )


def test_hue_shifts_cyclically_in_opencv_units_on_bgr():
    red = image((255, 0, 0), (255, 0, 0))
    # OpenCV H is degrees / 2: red is 0; -18 wraps to 162 (324 degrees), +18 is 36 degrees
    np.testing.assert_array_equal(
        apply_color_aug(red, record(hue=-18)), image((255, 0, 153), (255, 0, 153))
    )
    np.testing.assert_array_equal(
        apply_color_aug(red, record(hue=18)), image((255, 153, 0), (255, 153, 0))
    )


def _opencv_reference(rgb: np.ndarray, saturation: float | None, hue: int | None) -> np.ndarray:
    """The HSV steps written directly against OpenCV, on the BGR image."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if saturation is not None:
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = np.clip(hsv[:, :, 1].astype(np.float32) * saturation, 0, 255).astype(
            np.uint8
        )
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if hue is not None:
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + hue) % 180
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return bgr[:, :, ::-1]


@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 64, 3), (3, 1, 3)])
@pytest.mark.parametrize("saturation, hue", [(1.37, None), (None, -11), (0.61, 17)])
def test_hsv_steps_equal_opencv_directly(shape, saturation, hue):
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = apply_color_aug(img, record(saturation=saturation, hue=hue))
    np.testing.assert_array_equal(out, _opencv_reference(img, saturation, hue))
    assert out.flags.c_contiguous and out.dtype == np.uint8


@pytest.mark.parametrize("contrast_first", [True, False])
def test_branch_order(contrast_first):
    img = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    full = record(
        brightness=-12.25, contrast_first=contrast_first, contrast=1.45, saturation=1.3, hue=7
    )
    steps = [record(brightness=-12.25)]
    hsv = [record(saturation=1.3), record(hue=7)]
    steps += [record(contrast=1.45), *hsv] if contrast_first else [*hsv, record(contrast=1.45)]
    expected = img
    for step in steps:
        expected = apply_color_aug(expected, step)
    np.testing.assert_array_equal(apply_color_aug(img, full), expected)
    other = apply_color_aug(img, record(**{**full.to_dict(), "contrast_first": not contrast_first}))
    assert not np.array_equal(other, expected)  # the order matters on this image


def test_draw_probabilities_and_ranges():
    rng = np.random.default_rng(3)
    draws = [draw_color_aug(rng) for _ in range(4000)]
    for name in ("brightness", "contrast", "saturation", "hue"):
        applied = [getattr(r, name) for r in draws if getattr(r, name) is not None]
        assert 0.46 < len(applied) / len(draws) < 0.54, name
    assert 0.46 < np.mean([r.contrast_first for r in draws]) < 0.54
    b = [r.brightness for r in draws if r.brightness is not None]
    assert -32 <= min(b) < -31 and 31 < max(b) <= 32
    for name in ("contrast", "saturation"):
        v = [getattr(r, name) for r in draws if getattr(r, name) is not None]
        assert 0.5 <= min(v) < 0.51 and 1.49 < max(v) <= 1.5
    hues = {r.hue for r in draws if r.hue is not None}
    assert hues == set(range(-18, 19))
    assert all(isinstance(r.hue, int) for r in draws if r.hue is not None)


def test_record_round_trip():
    r = record(brightness=3.0000000000000004, contrast_first=False, contrast=0.7, hue=-3)
    assert ColorAugRecord.from_dict(r.to_dict()) == r


def test_missing_opencv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'eclipse-seg\[train\]'"):
        apply_color_aug(image((1, 2, 3)), record(hue=1))


def test_rejects_a_non_uint8_image():
    with pytest.raises(ValueError, match="uint8"):
        apply_color_aug(np.zeros((2, 2, 3), np.float32), NONE)
