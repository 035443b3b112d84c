"""The pixel decoder's fast path (gather sampling, fused residual/FFN, cached constants) against the
explicit grid_sample reference path, at the real R50 layer widths (d_model 256, 8 heads, 4 points,
3 levels, FFN 1024) on small maps."""

from __future__ import annotations

import pytest
import torch

import eclipse_seg.model.msdeform_attn as msda
from eclipse_seg.model.msdeform_attn import (
    MSDeformAttn,
    ms_deform_attn_core,
    ms_deform_attn_gather,
    pad_levels,
)
from eclipse_seg.model.pixel_decoder import (
    DeformableEncoderLayer,
    MSDeformAttnPixelDecoder,
    PixelDecoderConfig,
    PixelDecoderOutput,
    reference_points,
    token_maps,
)

SHAPES = [(2, 3), (4, 6), (8, 12)]  # res5, res4, res3 of a 64 x 96 input
R50_CHANNELS = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}


def _gather_from_locations(value, shapes, locations, weights):
    """ms_deform_attn_gather on the reference core's inputs (locations in [0, 1])."""
    d = value.shape[-1]
    size = torch.tensor([[w, h] for h, w in shapes], dtype=locations.dtype)
    pixels = (locations * size[:, None, :] - 0.5).flatten(3, 4)  # (B, Lq, M, L*P, 2)
    table = pad_levels(value.flatten(2), shapes).view(-1, d)
    return ms_deform_attn_gather(table, shapes, pixels[..., 0], pixels[..., 1], weights.flatten(3))


def _locations(g, b, lq, m, n_levels, n_points, dtype):
    """Inside, near and far outside the maps, plus exact pixel centres, borders and corners."""
    loc = torch.rand(b, lq, m, n_levels, n_points, 2, generator=g, dtype=dtype) * 1.8 - 0.4
    loc[0, 0, 0, :, 0] = torch.tensor([0.0, 0.0], dtype=dtype)  # the map's corner
    loc[0, 0, 0, :, 1] = torch.tensor([1.0, 1.0], dtype=dtype)  # the opposite corner
    loc[0, 0, 1, :, 2] = torch.tensor([-3.0, 0.5], dtype=dtype)  # far outside
    for lvl, (h, w) in enumerate(SHAPES):
        loc[0, 1, 0, lvl, 0] = torch.tensor([0.5 / w, 1.5 / h], dtype=dtype)  # pixel centres
        loc[0, 1, 0, lvl, 1] = torch.tensor([-0.5 / w, 0.5], dtype=dtype)  # half a pixel outside
        loc[0, 1, 0, lvl, 2] = torch.tensor([(w + 0.5) / w, 0.25], dtype=dtype)
    return loc


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_gather_core_equals_grid_sample_core(dtype, tol):
    g = torch.Generator().manual_seed(0)
    b, m, d, n_points = 2, 8, 32, 4
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(b, s, m, d, generator=g, dtype=dtype)
    loc = _locations(g, b, 40, m, len(SHAPES), n_points, dtype)
    weights = torch.rand(b, 40, m, len(SHAPES), n_points, generator=g, dtype=dtype)
    expected = ms_deform_attn_core(value, SHAPES, loc, weights)
    got = _gather_from_locations(value, SHAPES, loc, weights)
    assert got.shape == expected.shape == (b, 40, m * d)
    torch.testing.assert_close(got, expected, atol=tol, rtol=0)


def test_gather_index_arithmetic_in_float64_when_float32_is_not_exact(monkeypatch):
    """Tap rows above 2**24 are not exact in float32: the gather then computes them in float64."""
    g = torch.Generator().manual_seed(1)
    value = torch.randn(2, sum(h * w for h, w in SHAPES), 8, 32, generator=g)
    loc = _locations(g, 2, 30, 8, 3, 4, torch.float32)
    weights = torch.rand(2, 30, 8, 3, 4, generator=g)
    expected = ms_deform_attn_core(value, SHAPES, loc, weights)
    monkeypatch.setattr(msda, "_FLOAT32_EXACT_INT", 16)
    torch.testing.assert_close(
        _gather_from_locations(value, SHAPES, loc, weights), expected, atol=1e-5, rtol=0
    )


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Trained-like weights: sampling offsets that depend on the query, non-uniform attention."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 if "sampling_offsets" in name or "attention_weights" in name else 0.05
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def test_attention_layer_paths_agree_in_output_and_gradients():
    torch.manual_seed(0)
    attn = _perturbed(MSDeformAttn(256, 3, 8, 4))
    s = sum(h * w for h, w in SHAPES)
    query = torch.randn(2, s, 256, requires_grad=True)
    value = torch.randn(2, s, 256, requires_grad=True)
    ref = reference_points(tuple(SHAPES), torch.float32, torch.device("cpu"))
    results = []
    for gather in (False, True):
        attn.use_gather = gather
        attn.zero_grad()
        query.grad = value.grad = None
        out = attn(query, ref, value, SHAPES)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads = {n: p.grad.clone() for n, p in attn.named_parameters()}
        results.append((out.detach(), query.grad.clone(), value.grad.clone(), grads))
    (out_r, gq_r, gv_r, gp_r), (out_f, gq_f, gv_f, gp_f) = results
    torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=0)
    torch.testing.assert_close(gq_f, gq_r, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gv_f, gv_r, atol=1e-5, rtol=1e-4)
    for name in gp_r:
        torch.testing.assert_close(gp_f[name], gp_r[name], atol=1e-4, rtol=1e-4, msg=name)


def _r50_pixel_decoder(num_layers: int = 2) -> MSDeformAttnPixelDecoder:
    torch.manual_seed(0)
    cfg = PixelDecoderConfig(num_layers=num_layers)  # R50 widths
    return _perturbed(MSDeformAttnPixelDecoder(R50_CHANNELS, cfg))


def _features(b: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(b, c, h // s, w // s, generator=g)
        for (name, c), s in zip(R50_CHANNELS.items(), (4, 8, 16, 32))
    }


def _max_diff(a: PixelDecoderOutput, b: PixelDecoderOutput) -> float:
    pairs = [(a.mask_features, b.mask_features)] + list(
        zip(a.multi_scale_features, b.multi_scale_features)
    )
    return max(float((x - y).detach().abs().max()) for x, y in pairs)


@pytest.mark.parametrize("query_chunk", [1024, 37])  # one chunk; uneven chunks of 37 // 2 queries
def test_pixel_decoder_fast_path_equals_reference_path(query_chunk, monkeypatch):
    """Inference (fused layers, no autograd) and autograd mode (gather only) against the reference,
    on two input sizes one after the other (the per-size caches must not mix them up). In float32
    the paths differ by rounding only: within 1e-5 of the outputs' scale, while the reference
    itself is ~1e-4 from a float64 evaluation on these weights."""
    monkeypatch.setattr(DeformableEncoderLayer, "query_chunk", query_chunk)
    pd = _r50_pixel_decoder()
    for size in ((64, 96), (96, 64)):
        feats = _features(2, *size)
        with torch.no_grad():
            ref = pd.set_fast(False)(feats)
            fused = pd.set_fast(True)(feats)
        gather = pd(feats)  # autograd on: the unfused layer with the gather sampling
        assert isinstance(ref, PixelDecoderOutput)
        assert ref.mask_features.shape == (2, 256, size[0] // 4, size[1] // 4)
        assert [tuple(f.shape[-2:]) for f in ref.multi_scale_features] == [
            (size[0] // s, size[1] // s) for s in (32, 16, 8)
        ]
        scale = max(float(f.abs().max()) for f in [ref.mask_features, *ref.multi_scale_features])
        assert _max_diff(fused, ref) <= 1e-5 * scale
        assert _max_diff(gather, ref) <= 1e-5 * scale
        assert gather.mask_features.requires_grad


def test_single_image_fast_path_equals_reference_and_hands_on_channels_last_maps():
    """Batch 1 (inference): the encoded maps are channels-last views of the tokens with exact
    channels-last strides (so bilinear upsampling takes its channels-last kernel), and the fast
    path still equals the reference."""
    pd = _r50_pixel_decoder()
    feats = _features(1, 64, 96)
    with torch.no_grad():
        ref = pd.set_fast(False)(feats)
        fast = pd.set_fast(True)(feats)
    scale = max(float(f.abs().max()) for f in [ref.mask_features, *ref.multi_scale_features])
    assert _max_diff(fast, ref) <= 1e-5 * scale
    for f in fast.multi_scale_features:
        c, h, w = f.shape[1:]
        assert f.stride() == (c * h * w, 1, w * c, c)


@pytest.mark.parametrize("b", [1, 2])
def test_token_maps_are_views_of_the_tokens(b):
    tokens = torch.randn(b, sum(h * w for h, w in SHAPES), 16)
    maps = token_maps(tokens, SHAPES)
    start = 0
    for m, (h, w) in zip(maps, SHAPES):
        expected = tokens[:, start : start + h * w].transpose(1, 2).reshape(b, 16, h, w)
        assert torch.equal(m, expected)
        assert m.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()
        if b == 1:  # exact channels-last strides (a size-1 batch dimension's stride set too)
            assert m.stride() == (16 * h * w, 1, w * 16, 16)
        start += h * w


def test_pad_levels_reuses_a_table_and_keeps_its_zero_border():
    s = sum(h * w for h, w in SHAPES)
    first = pad_levels(torch.randn(2, s, 8), SHAPES)
    value = torch.randn(2, s, 8)
    again = pad_levels(value, SHAPES, out=first)
    assert again.data_ptr() == first.data_ptr()
    assert torch.equal(again, pad_levels(value, SHAPES))  # interior rewritten, border still zero
    wrong_shape = torch.ones(2, 5, 8)
    assert torch.equal(pad_levels(value, SHAPES, out=wrong_shape), pad_levels(value, SHAPES))


def test_encoder_paths_agree_in_float64(monkeypatch):
    """In float64 the rounding differences vanish: the three paths compute the same function."""
    monkeypatch.setattr(DeformableEncoderLayer, "query_chunk", 50)
    pd = _r50_pixel_decoder().double()
    g = torch.Generator().manual_seed(5)
    srcs = [torch.randn(2, 256, h, w, generator=g, dtype=torch.float64) for h, w in SHAPES]
    outs = []
    for fast, grad in ((False, False), (True, False), (True, True)):
        pd.set_fast(fast)
        with torch.set_grad_enabled(grad):
            outs.append(pd.transformer(srcs))
    for other in outs[1:]:
        for a, b in zip(other, outs[0]):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_pixel_decoder_fast_path_gradients_equal_reference():
    pd = _r50_pixel_decoder(num_layers=1)
    feats = _features(1, 64, 96, seed=2)
    grads = []
    for fast in (False, True):
        pd.set_fast(fast).zero_grad()
        out = pd(feats)
        (
            out.mask_features.square().mean()
            + sum(f.square().mean() for f in out.multi_scale_features)
        ).backward()
        grads.append({n: p.grad.clone() for n, p in pd.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_constants_cached_in_inference_mode_serve_training():
    """Position encodings and reference points first made under inference_mode are reused by a
    training forward/backward of the same size (no 'inference tensor saved for backward')."""
    pd = _r50_pixel_decoder(num_layers=1)
    feats = _features(1, 64, 64, seed=3)
    with torch.inference_mode():
        expected = pd(feats)
    out = pd(feats)
    out.mask_features.sum().backward()
    assert _max_diff(out, expected) <= 1e-5
    assert pd.transformer.level_embed.grad is not None


def test_output_unpacks_like_the_former_tuple():
    pd = _r50_pixel_decoder(num_layers=1)
    with torch.no_grad():
        out = pd(_features(1, 64, 64))
    mask_features, multi_scale = out
    assert mask_features is out.mask_features and multi_scale is out.multi_scale_features


def test_autocast_leaves_the_pixel_decoder_in_float32():
    """Official: the pixel decoder computes in float32 even inside a reduced-precision autocast
    region (a bf16 frozen trunk speeds up the backbone only); its fast path is the same there."""
    pd = _r50_pixel_decoder(num_layers=1)
    feats = _features(1, 64, 64, seed=4)
    with torch.no_grad():
        exact = pd(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = pd({k: v.bfloat16() for k, v in feats.items()})
        rounded = pd({k: v.bfloat16().float() for k, v in feats.items()})
    assert inside.mask_features.dtype == torch.float32
    assert _max_diff(inside, rounded) == 0.0
    assert _max_diff(inside, exact) > 0.0  # only the bf16 inputs differ
