import numpy as np
import pytest

from eclipse_seg.data.panoptic_ids import MAX_ID, id2rgb, id2rgb_scalar, rgb2id, rgb2id_scalar


def test_round_trip_random_ids():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, MAX_ID + 1, size=(37, 53), dtype=np.int64)
    ids[0, 0], ids[0, 1] = 0, MAX_ID
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (37, 53, 3)
    back = rgb2id(rgb)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, ids)


def test_encoding_convention():
    rgb = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert rgb2id(rgb)[0, 0] == 1 + 256 * 2 + 256**2 * 3
    assert rgb2id_scalar((1, 2, 3)) == 1 + 512 + 3 * 65536
    assert id2rgb_scalar(1 + 512 + 3 * 65536) == (1, 2, 3)
    for i in (0, 1, 255, 256, 65535, 65536, MAX_ID):
        assert rgb2id_scalar(id2rgb_scalar(i)) == i


def test_bad_inputs():
    with pytest.raises(ValueError):
        id2rgb(np.array([[MAX_ID + 1]]))
    with pytest.raises(ValueError):
        id2rgb(np.array([[-1]]))
    with pytest.raises(ValueError):
        rgb2id(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        id2rgb_scalar(-3)
