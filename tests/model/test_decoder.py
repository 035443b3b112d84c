"""Masked-attention decoder: attention-mask rule, prediction count, shapes, logit manipulation."""

import math

import pytest
import torch
from torch import nn

from eclipse_seg.continual import add_step, set_deltas
from eclipse_seg.model.backbone.resnet import ResNetConfig
from eclipse_seg.model.decoder import (
    Attention,
    DecoderConfig,
    MaskedAttentionDecoder,
    manipulate_logits,
    query_masks,
)
from eclipse_seg.model.layers import train_keeping_frozen_in_eval
from eclipse_seg.model.mask2former import Mask2Former, ModelConfig
from eclipse_seg.model.pixel_decoder import PixelDecoderConfig

HID = 16


def tiny_decoder(num_layers=3, num_queries=5, base_classes=4, **kw) -> MaskedAttentionDecoder:
    torch.manual_seed(0)
    cfg = DecoderConfig(
        hidden_dim=HID,
        num_heads=2,
        ffn_dim=32,
        num_layers=num_layers,
        num_queries=num_queries,
        **kw,
    )
    return MaskedAttentionDecoder(HID, HID, cfg, base_classes)


def inputs(b=2, h=8, w=12):
    g = torch.Generator().manual_seed(1)
    multi = [
        torch.randn(b, HID, h // 4, w // 4, generator=g),
        torch.randn(b, HID, h // 2, w // 2, generator=g),
        torch.randn(b, HID, h, w, generator=g),
    ]
    return multi, torch.randn(b, HID, 2 * h, 2 * w, generator=g)


class FixedEmbed(nn.Module):
    """Stands in for the mask MLP: returns preset per-image, per-query mask embeddings."""

    def __init__(self, embeds: torch.Tensor):
        super().__init__()
        self.embeds = embeds

    def forward(self, x):
        return self.embeds


def test_fully_blocked_row_attends_everywhere():
    dec = tiny_decoder(num_queries=3)
    # mask_features (2, 2, 4, 4): channel 0 = 1; channel 1 = +1 left half / -1 right half (image 0),
    # reversed for image 1
    mf = torch.zeros(2, 2, 4, 4)
    mf[:, 0] = 1.0
    mf[0, 1, :, :2], mf[0, 1, :, 2:] = 1.0, -1.0
    mf[1, 1] = -mf[0, 1]
    emb = torch.tensor([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])  # all < 0.5 / left half / all >= 0.5
    dec.mask_embed = FixedEmbed(emb.expand(2, -1, -1))
    idx = dec.group_indices((0,), mf.device)
    logits, masks, attn = dec.prediction_heads(torch.randn(2, 3, HID), mf, (0,), idx, (4, 4), False)
    assert masks.shape == (2, 3, 4, 4)
    assert logits.shape == (2, 3, 5)
    assert attn.dtype == torch.bool and attn.shape == (2, 3, 16)  # one mask for every head
    left = torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True
    expected = torch.stack(
        [
            torch.stack(
                [
                    torch.zeros(16, dtype=torch.bool),
                    ~left.flatten(),
                    torch.zeros(16, dtype=torch.bool),
                ]
            ),
            torch.stack(
                [
                    torch.zeros(16, dtype=torch.bool),
                    left.flatten(),
                    torch.zeros(16, dtype=torch.bool),
                ]
            ),
        ]
    )  # True = blocked; query 0 (blocked everywhere) is fully unblocked
    assert torch.equal(attn, expected)


def test_attn_mask_resized_to_level():
    dec = tiny_decoder(num_queries=1)
    mf = torch.ones(1, 1, 8, 8)
    mf[..., :4] = -1.0  # left half negative
    dec.mask_embed = FixedEmbed(torch.ones(1, 1, 1))
    idx = dec.group_indices((0,), mf.device)
    _, _, attn = dec.prediction_heads(torch.randn(1, 1, HID), mf, (0,), idx, (2, 2), False)
    assert attn.shape == (1, 1, 4)
    assert attn[0, 0].tolist() == [True, False, True, False]


def test_mask_shared_by_heads_equals_the_mask_repeated_per_head():
    torch.manual_seed(0)
    attn = Attention(32, 4)
    nn.init.xavier_uniform_(attn.in_proj_weight)  # the layers that hold it initialise it
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.rand(2, 5, 7) < 0.5
    mask[..., 0] = False  # no fully blocked row (the decoder never passes one)
    for sdpa in (False, True):
        attn.use_sdpa = sdpa
        shared = attn(q, kv, kv, attn_mask=mask)
        per_head = attn(q, kv, kv, attn_mask=mask.repeat_interleave(4, dim=0))
        assert torch.equal(shared, per_head)
        assert not torch.allclose(shared, attn(q, kv, kv))  # the mask does act


def test_query_masks_are_the_einsum_laid_out_channels_last():
    g = torch.Generator().manual_seed(0)
    embed, features = torch.randn(2, 7, 16, generator=g), torch.randn(2, 16, 6, 10, generator=g)
    expected = torch.einsum("bqc,bchw->bqhw", embed, features)
    masks = query_masks(embed, features.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(masks, expected, rtol=0, atol=1e-5)
    assert masks.is_contiguous(memory_format=torch.channels_last)
    # on NCHW features, and with autograd: the einsum itself (the training runs' gradient bits)
    for e, f in [
        (embed, features),
        (embed.requires_grad_(), features.to(memory_format=torch.channels_last)),
    ]:
        masks = query_masks(e, f)
        assert torch.equal(masks, expected) and masks.is_contiguous()


def test_predictions_do_not_depend_on_grad_mode():
    """With autograd the decoder takes the einsum on NCHW features, in inference mode the
    channels-last product on channels-last features: the same values."""
    model = tiny_model().train()
    x = torch.rand(2, 3, 32, 32) * 255
    with_grad = model(x)
    assert with_grad.pred_masks.is_contiguous()
    with torch.inference_mode():
        without = model(x)
    assert without.pred_masks.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip([with_grad] + with_grad.aux_outputs, [without] + without.aux_outputs):
        torch.testing.assert_close(a.pred_masks, b.pred_masks, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.pred_logits, b.pred_logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("aux,n_aux", [("all", 3), ("first", 1)])
def test_prediction_count_and_shapes(aux, n_aux):
    dec = tiny_decoder(num_layers=3, num_queries=5, base_classes=4)
    multi, mf = inputs()
    out = dec(multi, mf, aux=aux)
    assert out.pred_logits.shape == (2, 5, 4 + 1)
    assert out.pred_masks.shape == (2, 5, 16, 24)
    assert len(out.aux_outputs) == n_aux
    for p in out.aux_outputs:
        assert p.pred_logits.shape == (2, 5, 5) and p.pred_masks.shape == (2, 5, 16, 24)
    # the first aux prediction is the one on the learnable queries (identical for every image)
    first = out.aux_outputs[0].pred_logits
    assert torch.allclose(first[0], first[1])
    assert not torch.allclose(out.pred_logits[0], out.pred_logits[1])


def test_all_predictions_with_aux_all():
    dec = tiny_decoder(num_layers=4)
    multi, mf = inputs()
    out = dec(multi, mf, aux="all")
    assert len(out.aux_outputs) + 1 == 4 + 1  # one before the first layer, one per layer


def test_no_input_proj_when_dims_match_and_projection_otherwise():
    dec = tiny_decoder()
    assert all(isinstance(p, nn.Sequential) and len(p) == 0 for p in dec.input_proj)
    cfg = DecoderConfig(hidden_dim=HID, num_heads=2, ffn_dim=32, num_layers=1, num_queries=2)
    dec2 = MaskedAttentionDecoder(8, HID, cfg, 3)
    assert [tuple(p.weight.shape) for p in dec2.input_proj] == [(HID, 8, 1, 1)] * 3


# ----- logit manipulation ---------------------------------------------------------------------------
def L(p):
    return math.log(p / (1 - p))


# columns: group 0 has 2 classes, group 1 has 1, group 2 has 2; no-object last
COL_GROUP = torch.tensor([0, 0, 1, 2, 2])
QUERY_GROUP = torch.tensor([0, 0, 1, 2, 2])


def _logits():
    x = torch.tensor(
        [
            # q0 (g0): other groups' columns sigmoid 0.5 + 0.2 + 0.1 = 0.8
            [1.0, 2.0, 0.0, L(0.2), L(0.1), 3.0],
            # q1 (g0): other columns sigmoid 0.9 * 3 = 2.7 -> min(1, .) = 1
            [0.5, -0.5, L(0.9), L(0.9), L(0.9), -1.0],
            # q2 (g1)
            [0.3, 0.4, 1.5, 0.6, 0.7, 2.0],
            # q3 (g2): no-object sigmoid 0.5
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.0],
            # q4 (g2): no-object ~ 1
            [-0.1, -0.2, -0.3, 1.4, 1.5, 20.0],
        ],
        dtype=torch.float64,
    )
    return x[None]


def test_manipulate_logits_hand_computed():
    x = _logits()
    out = manipulate_logits(x, QUERY_GROUP, COL_GROUP, torch.tensor([0.5, 0.0, -0.4]))
    exp = x.clone()
    # other groups' columns -> -10, own columns untouched
    exp[0, 0:2, 2:5] = -10.0
    exp[0, 2, [0, 1, 3, 4]] = -10.0
    exp[0, 3:5, 0:3] = -10.0
    # delta > 0: logit(clamp(d * min(1, evidence)))
    exp[0, 0, 5] = L(0.5 * 0.8)
    exp[0, 1, 5] = L(0.5 * 1.0)
    # delta = 0: unchanged
    exp[0, 2, 5] = 2.0
    # delta < 0: logit(clamp(|d| * sigmoid(no-object)))
    exp[0, 3, 5] = L(0.4 * 0.5)
    exp[0, 4, 5] = L(0.4 * torch.sigmoid(torch.tensor(20.0, dtype=torch.float64)).item())
    assert torch.allclose(out, exp, atol=1e-9)


def test_manipulate_logits_clamps():
    x = _logits()
    x[0, 1, 2:5] = -30.0  # q1: no evidence -> 0 -> clamp 0.001
    x[0, 4, 5] = -30.0  # q4: no-object prob ~ 0 -> clamp 0.001
    out = manipulate_logits(x, QUERY_GROUP, COL_GROUP, torch.tensor([2.0, 0.0, -3.0]))
    assert out[0, 0, 5].item() == pytest.approx(L(0.999))  # 2 * 0.8 = 1.6 -> 0.999
    assert out[0, 1, 5].item() == pytest.approx(L(0.001))
    assert out[0, 2, 5].item() == 2.0
    assert out[0, 3, 5].item() == pytest.approx(L(0.999))  # 3 * 0.5 = 1.5 -> 0.999
    assert out[0, 4, 5].item() == pytest.approx(L(0.001))
    assert (out[0, 0, 2:5] == -10).all() and (out[0, 4, 0:3] == -10).all()


def test_manipulate_logits_batched_float32():
    x = torch.cat([_logits(), _logits().flip(-1)]).float()
    d = torch.tensor([0.5, 0.0, -0.4])
    out = manipulate_logits(x, QUERY_GROUP, COL_GROUP, d)
    for b in range(2):
        assert torch.allclose(
            out[b : b + 1], manipulate_logits(x[b : b + 1], QUERY_GROUP, COL_GROUP, d)
        )
    assert out.dtype == torch.float32


def test_deltas_padding_and_truncation():
    dec = tiny_decoder()
    dec.prompt_feat.append(nn.Embedding(2, HID))
    dec.prompt_feat.append(nn.Embedding(2, HID))
    assert dec.num_groups == 3
    for given, expected in (
        ([0.4], [0.4, 0.4, 0.4]),
        ([0.4, 0.6], [0.4, 0.6, 0.6]),
        ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]),
        ([0.1, -0.2, 0.3, 0.4], [0.1, -0.2, 0.3]),
    ):
        dec.deltas = torch.tensor(given)
        assert torch.allclose(dec.deltas_for((0, 1, 2)), torch.tensor(expected))


# ----- groups in a whole (tiny) model ---------------------------------------------------------------
def small_trunk_model(
    decoder: DecoderConfig, base_classes: int = 3, width: int = HID, heads: int = 2
) -> Mask2Former:
    """A tiny ResNet and one-layer pixel decoder of `width` channels under `decoder`."""
    torch.manual_seed(0)
    return Mask2Former(
        ModelConfig(
            backbone=ResNetConfig(
                depth=50, stem_out_channels=8, res2_out_channels=16, width_per_group=4
            ),
            pixel_decoder=PixelDecoderConfig(
                conv_dim=width,
                mask_dim=width,
                num_layers=1,
                num_heads=heads,
                ffn_dim=32,
                num_groups=4,
            ),
            decoder=decoder,
            base_classes=base_classes,
        )
    )


def tiny_model():
    return small_trunk_model(
        DecoderConfig(hidden_dim=HID, num_heads=2, ffn_dim=32, num_layers=3, num_queries=4)
    )


def test_groups_isolated_and_manipulated_in_eval():
    model = tiny_model().eval()
    add_step(model, num_classes=2, num_prompts=3)
    set_deltas(model, [0.4, 0.6])
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        base = model(x, groups=(0,))
        both = model(x)
    assert both.pred_logits.shape == (1, 4 + 3, 3 + 2 + 1)
    assert len(both.aux_outputs) == 3
    # block-diagonal self-attention: the base queries' masks do not depend on the prompt group
    assert torch.allclose(both.pred_masks[:, :4], base.pred_masks, atol=1e-5)
    for pred in [both] + list(both.aux_outputs):
        assert (pred.pred_logits[0, :4, 3:5] == -10).all()
        assert (pred.pred_logits[0, 4:, :3] == -10).all()
    # single group: no manipulation by default
    assert not (base.pred_logits == -10).any()
    # manipulation is off in training mode
    model.train()
    out = model(x)
    assert not (out.pred_logits == -10).any()


@pytest.mark.parametrize("deep_cls", [True, False])
def test_stacked_prompt_heads_equal_one_call_per_group(deep_cls, monkeypatch):
    """With >= 2 prompt groups the prompt heads run as one batched matmul per layer; the result
    must be the per-group loop's, and the base group's outputs must not change bits."""
    model = small_trunk_model(
        DecoderConfig(
            hidden_dim=HID, num_heads=2, ffn_dim=32, num_layers=3, num_queries=4, deep_cls=deep_cls
        )
    ).eval()
    for _ in range(3):
        add_step(model, num_classes=2, num_prompts=3)
    set_deltas(model, [0.4, 0.6, -0.3, 0.0])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    dec = model.decoder
    stacked = dec.stacked_heads(tuple(range(dec.num_groups)))
    assert stacked["cls"] is not None and stacked["mask"] is not None
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setattr(dec, "stacked_heads", lambda groups: {"cls": None, "mask": None})
        loop = model(x)
    for a, b in zip([fast] + fast.aux_outputs, [loop] + loop.aux_outputs):
        assert torch.allclose(a.pred_logits, b.pred_logits, atol=1e-5)
        assert torch.allclose(a.pred_masks, b.pred_masks, atol=1e-5)
        assert torch.equal(a.pred_masks[:, :4], b.pred_masks[:, :4])  # base group: same path
        assert torch.equal(a.pred_logits[:, :4, :3], b.pred_logits[:, :4, :3])


def test_heads_of_different_shapes_are_not_stacked():
    model = tiny_model().eval()
    add_step(model, num_classes=2, num_prompts=3)
    add_step(model, num_classes=1, num_prompts=2)  # another class count and prompt count
    heads = model.decoder.stacked_heads((0, 1, 2))
    assert heads == {"cls": None, "mask": None}
    assert model.decoder.stacked_heads((0, 1)) == {"cls": None, "mask": None}


def test_decoder_attention_paths_at_real_widths():
    """The fused attention (default in eval mode) against the explicit path, on the R50 model's
    decoder widths (256 channels, 8 heads, FFN 2048, 9 layers, 100 queries) with two prompt
    groups: within 1e-5 of the outputs' scale; training mode stays on the explicit path's bits."""
    model = small_trunk_model(DecoderConfig(), base_classes=20, width=256, heads=8).eval()
    for _ in range(2):
        add_step(model, num_classes=3, num_prompts=10)
    set_deltas(model, [0.4, 0.6])
    g = torch.Generator().manual_seed(1)
    multi = [torch.randn(1, 256, 4 * 2**i, 5 * 2**i, generator=g) for i in range(3)]
    mask_features = torch.randn(1, 256, 32, 40, generator=g)
    dec = model.decoder
    with torch.no_grad():
        fused = dec(multi, mask_features)
        model.set_fast_attention(False)
        explicit = dec(multi, mask_features)
        model.set_fast_attention(None).train()
        trained = dec(multi, mask_features, manipulate=True)
    pairs = [(fused, explicit)] + list(zip(fused.aux_outputs, explicit.aux_outputs))
    for a, b in pairs:
        for x, y in [(a.pred_logits, b.pred_logits), (a.pred_masks, b.pred_masks)]:
            torch.testing.assert_close(x, y, rtol=0, atol=1e-5 * float(y.abs().max()))
    assert not torch.equal(fused.pred_masks, explicit.pred_masks)  # two paths indeed
    assert torch.equal(trained.pred_masks, explicit.pred_masks)
    assert torch.equal(trained.pred_logits, explicit.pred_logits)


def test_prompt_tuning_trains_on_the_explicit_attention():
    """In a prompt step the frozen attention modules are in eval mode inside a training decoder:
    the decoder's mode picks the path, so training keeps the explicit path's bits."""
    model = tiny_model()
    add_step(model, num_classes=2, num_prompts=3)
    for name, p in model.named_parameters():
        p.requires_grad_(".prompt_" in name)
    train_keeping_frozen_in_eval(model)
    attn = model.decoder.transformer_self_attention_layers[0]
    assert model.decoder.training and not attn.training
    x = torch.rand(2, 3, 32, 32) * 255
    out = model(x, groups=(1,))
    model.set_fast_attention(False)
    explicit = model(x, groups=(1,))
    model.set_fast_attention(True)
    fused = model(x, groups=(1,))
    assert torch.equal(out.pred_masks, explicit.pred_masks)
    assert not torch.equal(fused.pred_masks, explicit.pred_masks)
