"""Mixed precision as officially: the pixel decoder always computes in float32, even inside an
autocast region (tested with CPU bf16 autocast; CUDA fp16 takes the same path)."""

from __future__ import annotations

import torch

from eclipse_seg.model.pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderConfig


def test_pixel_decoder_ignores_autocast():
    torch.manual_seed(0)
    channels = {"res2": 16, "res3": 32, "res4": 64, "res5": 128}
    cfg = PixelDecoderConfig(
        conv_dim=32, mask_dim=32, num_layers=1, num_heads=4, ffn_dim=64, num_groups=8
    )
    decoder = MSDeformAttnPixelDecoder(channels, cfg).eval()
    strides = (4, 8, 16, 32)
    feats = {n: torch.randn(1, c, 64 // s, 64 // s) for (n, c), s in zip(channels.items(), strides)}
    with torch.no_grad():
        ref_mask, _ = decoder(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half_in = {k: v.bfloat16() for k, v in feats.items()}  # a half-precision backbone
            mask, levels = decoder(half_in)
            assert (
                torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2)).dtype
                == torch.bfloat16
            )
    assert mask.dtype == torch.float32 and all(x.dtype == torch.float32 for x in levels)
    exact = {k: v.bfloat16().float() for k, v in feats.items()}
    with torch.no_grad():
        want_mask, want_levels = decoder(exact)
    assert torch.equal(mask, want_mask)
    assert all(torch.equal(a, b) for a, b in zip(levels, want_levels))
    assert not torch.equal(ref_mask, mask)  # the inputs were rounded to bf16, the maths was not
