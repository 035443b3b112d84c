"""ms_deform_attn_core against a naive loop with hand-written bilinear interpolation."""

import math

import pytest
import torch

from eclipse_seg.model.msdeform_attn import MSDeformAttn, ms_deform_attn_core


def _bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img (D, H, W); (x, y) in [0, 1] normalised, pixel centres at (i + 0.5) / W; zero outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for yy, wy in ((y0, y0 + 1 - py), (y0 + 1, py - y0)):
        for xx, wx in ((x0, x0 + 1 - px), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _naive(value, shapes, locs, weights):
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = locs.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, lq, m * d, dtype=value.dtype)
    for bi in range(b):
        for q in range(lq):
            for head in range(m):
                acc = torch.zeros(d, dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    img = value[bi, starts[lvl] : starts[lvl + 1], head].T.reshape(d, h, w)
                    for p in range(n_points):
                        x, y = locs[bi, q, head, lvl, p].tolist()
                        acc += weights[bi, q, head, lvl, p] * _bilinear(img, x, y)
                out[bi, q, head * d : (head + 1) * d] = acc
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_core_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 5), (2, 3)]
    b, m, d, lq, n_points = 2, 2, 3, 4, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=g, dtype=torch.float64)
    # locations well outside [0, 1] too (partly and fully outside the map)
    locs = (
        torch.rand(b, lq, m, len(shapes), n_points, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    )
    locs[0, 0, 0, 0, 0] = torch.tensor([-0.5, 0.5], dtype=torch.float64)  # fully outside: 0
    locs[0, 0, 0, 0, 1] = torch.tensor([1.05, 1.02], dtype=torch.float64)  # just outside the corner
    locs[0, 0, 0, 1, 0] = torch.tensor([0.5 / 3, 0.5 / 2], dtype=torch.float64)  # exactly a centre
    weights = torch.rand(b, lq, m, len(shapes), n_points, generator=g, dtype=torch.float64)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    got = ms_deform_attn_core(value, shapes, locs, weights)
    exp = _naive(value, shapes, locs, weights)
    assert got.shape == (b, lq, m * d)
    assert torch.allclose(got, exp, atol=1e-5, rtol=0)


def test_core_float32_and_pixel_centre():
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 4), (2, 2)]
    value = torch.randn(1, 20, 1, 2, generator=g)
    locs = torch.rand(1, 3, 1, 2, 2, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(1, 3, 1, 2, 2, generator=g)
    assert torch.allclose(
        ms_deform_attn_core(value, shapes, locs, weights),
        _naive(value, shapes, locs, weights),
        atol=1e-5,
    )
    # a single point at the centre of pixel (row 2, col 1) of level 0 returns that value exactly
    locs = torch.zeros(1, 1, 1, 2, 1, 2)
    locs[0, 0, 0, 0, 0] = torch.tensor([1.5 / 4, 2.5 / 4])
    locs[0, 0, 0, 1, 0] = torch.tensor([5.0, 5.0])  # level 1 sampled outside: contributes 0
    w = torch.ones(1, 1, 1, 2, 1)
    out = ms_deform_attn_core(value, shapes, locs, w)
    assert torch.allclose(out[0, 0], value[0, 2 * 4 + 1, 0], atol=1e-6)


def test_module_init_and_shapes():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=3)
    # official init: zero offset weights; bias = per-head unit direction (max-norm 1) x (point + 1)
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.allclose(bias[0, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(bias[1, 1, 2], torch.tensor([0.0, 3.0]), atol=1e-6)  # head 1: 90 degrees
    assert torch.allclose(bias[:, 0], bias[:, 1])  # same for every level
    shapes = [(4, 6), (2, 3)]
    s = sum(h * w for h, w in shapes)
    q = torch.randn(2, 5, 16)
    ref = torch.rand(2, 5, 2, 2)
    out = attn(q, ref, torch.randn(2, s, 16), shapes)
    assert out.shape == (2, 5, 16)
    with pytest.raises(ValueError):
        MSDeformAttn(d_model=10, n_heads=4)
