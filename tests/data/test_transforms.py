"""Test-time resize: detectron2's ResizeShortestEdge sizes (int(x + 0.5) rounding, max-size cap)
and its Pillow bilinear resize of uint8 images."""

import numpy as np
import pytest
from PIL import Image

from eclipse_seg.data.transforms import resize_shortest_edge, shortest_edge_size


@pytest.mark.parametrize(
    "hw, short, max_size, expected",
    [
        ((480, 640), 800, 1333, (800, 1067)),  # 640 * 800 / 480 = 1066.67
        (
            (1000, 200),
            800,
            1333,
            (1333, 267),
        ),  # 4000 x 800 capped to 1333: 800 * 1333 / 4000 = 266.6
        ((512, 683), 512, 2048, (512, 683)),  # already at the short side
        ((4, 5), 2, 0, (2, 3)),  # 2.5 rounds up (round() would give 2)
        ((10, 10), 20, 0, (20, 20)),  # square: both sides
        ((300, 4000), 640, 2560, (192, 2560)),  # capped by the long side: 640 * 2560 / 8533.3 = 192
        ((48, 64), 0, 100, (48, 64)),  # short side 0: no resize
    ],
)
def test_output_size(hw, short, max_size, expected):
    assert shortest_edge_size(*hw, short, max_size) == expected


def test_resize_is_pillow_bilinear_on_uint8():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = resize_shortest_edge(image, 8, 0)
    expected = np.asarray(Image.fromarray(image).resize((11, 8), Image.BILINEAR))
    assert out.dtype == np.uint8 and out.shape == (8, 11, 3)
    np.testing.assert_array_equal(out, expected)
    assert resize_shortest_edge(image, 0, 0) is image
