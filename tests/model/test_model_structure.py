"""Structure of the real R50 ADE model (detectron2 ResNet layout, Mask2Former heads) and the official
checkpoint key names."""

import pickle

import numpy as np
import pytest
import torch

from eclipse_seg.errors import CheckpointError
from eclipse_seg.model.backbone.resnet import (
    FrozenBatchNorm2d,
    ResNet,
    ResNetConfig,
    load_resnet_weights,
)
from eclipse_seg.model.decoder import DecoderConfig
from eclipse_seg.model.mask2former import Mask2Former, ModelConfig
from eclipse_seg.model.pixel_decoder import PixelDecoderConfig

# Measured on the default R50 ADE config with 100 base classes. The backbone part equals
# torchvision's resnet50 without `fc` and with BN affine parameters as (frozen) buffers.
R50_TOTAL_PARAMS = 43_975_397
R50_BACKBONE_PARAMS = 23_454_912
R50_PIXEL_DECODER_PARAMS = 6_035_904
R50_PREDICTOR_PARAMS = 14_484_581

PD = "sem_seg_head.pixel_decoder."
PR = "sem_seg_head.predictor."


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return Mask2Former(ModelConfig(base_classes=100))


@pytest.fixture(scope="module")
def sd(r50):
    return r50.state_dict()


def test_default_configs_are_official():
    d, p = DecoderConfig(), PixelDecoderConfig()
    assert (d.hidden_dim, d.num_layers, d.num_queries, d.num_heads, d.ffn_dim) == (
        256,
        9,
        100,
        8,
        2048,
    )
    assert not d.pre_norm
    assert (p.conv_dim, p.mask_dim, p.num_layers, p.ffn_dim, p.num_points, p.num_heads) == (
        256,
        256,
        6,
        1024,
        4,
        8,
    )
    r = ResNetConfig()
    assert (r.depth, r.stem_out_channels, r.res2_out_channels, r.width_per_group) == (
        50,
        64,
        256,
        64,
    )


@pytest.mark.parametrize(
    "key,shape",
    [
        ("backbone.stem.conv1.weight", (64, 3, 7, 7)),
        ("backbone.stem.conv1.norm.weight", (64,)),
        ("backbone.stem.conv1.norm.bias", (64,)),
        ("backbone.stem.conv1.norm.running_mean", (64,)),
        ("backbone.stem.conv1.norm.running_var", (64,)),
        ("backbone.res2.0.shortcut.weight", (256, 64, 1, 1)),
        ("backbone.res2.0.shortcut.norm.running_var", (256,)),
        ("backbone.res2.0.conv1.weight", (64, 64, 1, 1)),
        ("backbone.res2.0.conv2.weight", (64, 64, 3, 3)),
        ("backbone.res2.2.conv3.norm.weight", (256,)),
        ("backbone.res3.0.shortcut.weight", (512, 256, 1, 1)),
        ("backbone.res3.3.conv2.weight", (128, 128, 3, 3)),
        ("backbone.res4.5.conv3.weight", (1024, 256, 1, 1)),
        ("backbone.res5.0.shortcut.weight", (2048, 1024, 1, 1)),
        ("backbone.res5.2.conv3.weight", (2048, 512, 1, 1)),
        ("backbone.res5.2.conv3.norm.running_mean", (2048,)),
        (PD + "input_proj.0.0.weight", (256, 2048, 1, 1)),  # input_proj[0] is res5 (coarsest)
        (PD + "input_proj.0.0.bias", (256,)),
        (PD + "input_proj.0.1.weight", (256,)),  # GroupNorm
        (PD + "input_proj.1.0.weight", (256, 1024, 1, 1)),
        (PD + "input_proj.2.0.weight", (256, 512, 1, 1)),
        (PD + "input_proj.2.1.bias", (256,)),
        (PD + "transformer.level_embed", (3, 256)),
        (
            PD + "transformer.encoder.layers.0.self_attn.sampling_offsets.weight",
            (8 * 3 * 4 * 2, 256),
        ),
        (
            PD + "transformer.encoder.layers.5.self_attn.sampling_offsets.weight",
            (8 * 3 * 4 * 2, 256),
        ),
        (PD + "transformer.encoder.layers.5.self_attn.sampling_offsets.bias", (192,)),
        (PD + "transformer.encoder.layers.5.self_attn.attention_weights.weight", (8 * 3 * 4, 256)),
        (PD + "transformer.encoder.layers.5.self_attn.value_proj.weight", (256, 256)),
        (PD + "transformer.encoder.layers.5.self_attn.output_proj.weight", (256, 256)),
        (PD + "transformer.encoder.layers.5.norm1.weight", (256,)),
        (PD + "transformer.encoder.layers.5.linear1.weight", (1024, 256)),
        (PD + "transformer.encoder.layers.5.linear2.weight", (256, 1024)),
        (PD + "transformer.encoder.layers.5.norm2.bias", (256,)),
        (PD + "adapter_1.weight", (256, 256, 1, 1)),
        (PD + "adapter_1.norm.weight", (256,)),
        (PD + "layer_1.weight", (256, 256, 3, 3)),
        (PD + "layer_1.norm.weight", (256,)),
        (PD + "layer_1.norm.bias", (256,)),
        (PD + "mask_features.weight", (256, 256, 1, 1)),
        (PD + "mask_features.bias", (256,)),
        (PR + "query_feat.weight", (100, 256)),
        (PR + "query_embed.weight", (100, 256)),
        (PR + "level_embed.weight", (3, 256)),
        (PR + "transformer_cross_attention_layers.0.multihead_attn.in_proj_weight", (768, 256)),
        (PR + "transformer_cross_attention_layers.8.multihead_attn.in_proj_weight", (768, 256)),
        (PR + "transformer_cross_attention_layers.8.multihead_attn.out_proj.weight", (256, 256)),
        (PR + "transformer_cross_attention_layers.8.norm.weight", (256,)),
        (PR + "transformer_self_attention_layers.0.self_attn.in_proj_weight", (768, 256)),
        (PR + "transformer_self_attention_layers.8.self_attn.in_proj_bias", (768,)),
        (PR + "transformer_self_attention_layers.8.norm.bias", (256,)),
        (PR + "transformer_ffn_layers.0.linear1.weight", (2048, 256)),
        (PR + "transformer_ffn_layers.8.linear1.weight", (2048, 256)),
        (PR + "transformer_ffn_layers.8.linear2.weight", (256, 2048)),
        (PR + "transformer_ffn_layers.8.norm.weight", (256,)),
        (PR + "decoder_norm.weight", (256,)),
        (PR + "decoder_norm.bias", (256,)),
        (PR + "mask_embed.layers.0.weight", (256, 256)),
        (PR + "mask_embed.layers.2.weight", (256, 256)),
        (PR + "mask_embed.layers.2.bias", (256,)),
        (PR + "class_embed.cls.0.weight", (1, 256)),
        (PR + "class_embed.cls.0.bias", (1,)),
        (PR + "class_embed.cls.1.weight", (100, 256)),
        (PR + "class_embed.cls.1.bias", (100,)),
    ],
)
def test_official_key_shapes(sd, key, shape):
    assert key in sd, key
    assert tuple(sd[key].shape) == shape


def test_module_family_counts(sd):
    keys = list(sd)

    def indices(prefix):
        return {int(k[len(prefix) :].split(".")[0]) for k in keys if k.startswith(prefix)}

    assert indices("backbone.res2.") == set(range(3))
    assert indices("backbone.res3.") == set(range(4))
    assert indices("backbone.res4.") == set(range(6))
    assert indices("backbone.res5.") == set(range(3))
    assert indices(PD + "input_proj.") == {0, 1, 2}
    assert indices(PD + "transformer.encoder.layers.") == set(range(6))
    for fam in (
        "transformer_self_attention_layers",
        "transformer_cross_attention_layers",
        "transformer_ffn_layers",
    ):
        assert indices(PR + fam + ".") == set(range(9))
    assert indices(PR + "mask_embed.layers.") == {0, 1, 2}
    assert indices(PR + "class_embed.cls.") == {0, 1}
    # only the first block of each stage has a projection shortcut
    shortcuts = {k.split(".")[1] + "." + k.split(".")[2] for k in keys if ".shortcut.weight" in k}
    assert shortcuts == {"res2.0", "res3.0", "res4.0", "res5.0"}
    # hidden == conv_dim: the predictor's input_proj are empty Sequentials (no keys)
    assert not [k for k in keys if k.startswith(PR + "input_proj")]
    # no prompt groups yet
    assert not [k for k in keys if k.startswith(PR + "prompt_")]


def test_frozen_bn_not_parameters(r50):
    names = {n for n, _ in r50.named_parameters()}
    assert not [n for n in names if n.startswith("backbone.") and ".norm." in n]
    norms = [m for n, m in r50.backbone.named_modules() if n.endswith("norm")]
    assert len(norms) == 1 + (3 + 4 + 6 + 3) * 3 + 4
    assert all(isinstance(m, FrozenBatchNorm2d) and m.eps == 1e-5 for m in norms)


def test_stride_on_3x3_conv(r50):
    bb = r50.backbone
    assert bb.stem.conv1.stride == (2, 2)
    assert bb.res2[0].conv2.stride == (1, 1)
    for stage in ("res3", "res4", "res5"):
        first = getattr(bb, stage)[0]
        assert first.conv1.stride == (1, 1)
        assert first.conv2.stride == (2, 2)
        assert first.conv3.stride == (1, 1)
        assert first.shortcut.stride == (2, 2)
        assert getattr(bb, stage)[1].conv2.stride == (1, 1)


def test_parameter_count(r50):
    total = sum(p.numel() for p in r50.parameters())
    parts = {
        pre: sum(p.numel() for n, p in r50.named_parameters() if n.startswith(pre))
        for pre in ("backbone.", PD, PR)
    }
    print(f"R50 ADE (100 base classes) parameters: total {total}, {parts}")
    assert parts["backbone."] == R50_BACKBONE_PARAMS
    assert parts[PD] == R50_PIXEL_DECODER_PARAMS
    assert parts[PR] == R50_PREDICTOR_PARAMS
    assert total == R50_TOTAL_PARAMS
    assert all(p.requires_grad for p in r50.parameters())  # freeze_at 0 (official)


def test_output_strides_r50(r50):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = r50.backbone(x)
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for name, stride, ch in (
        ("res2", 4, 256),
        ("res3", 8, 512),
        ("res4", 16, 1024),
        ("res5", 32, 2048),
    ):
        assert tuple(feats[name].shape) == (1, ch, 64 // stride, 96 // stride), name
    assert r50.backbone.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def test_r101_block_counts():
    # a narrow R101 (same structure, small widths) keeps the test fast
    bb = ResNet(
        ResNetConfig(depth=101, stem_out_channels=8, res2_out_channels=16, width_per_group=4)
    )
    assert [len(getattr(bb, s)) for s in ("res2", "res3", "res4", "res5")] == [3, 4, 23, 3]
    assert bb.out_channels == {"res2": 16, "res3": 32, "res4": 64, "res5": 128}


def test_bad_depth():
    with pytest.raises(ValueError):
        ResNet(ResNetConfig(depth=34))


def test_frozen_bn_formula():
    torch.manual_seed(0)
    c = 5
    bn = FrozenBatchNorm2d(c)
    bn.weight.copy_(torch.rand(c) + 0.5)
    bn.bias.copy_(torch.randn(c))
    bn.running_mean.copy_(torch.randn(c))
    bn.running_var.copy_(torch.rand(c) + 0.1)
    x = torch.randn(2, c, 3, 4)
    v = lambda t: t.view(1, -1, 1, 1)
    expected = (x - v(bn.running_mean)) / torch.sqrt(v(bn.running_var) + 1e-5) * v(bn.weight) + v(
        bn.bias
    )
    assert torch.allclose(bn(x), expected, atol=1e-6)
    # equals eval-mode BatchNorm2d with the same statistics
    ref = torch.nn.BatchNorm2d(c, eps=1e-5).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(ref, name).copy_(getattr(bn, name))
    assert torch.allclose(bn(x), ref(x), atol=1e-6)
    assert not list(bn.parameters())
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


# ----- torchvision / detectron2 weight loading ------------------------------------------------------
TINY = ResNetConfig(depth=50, stem_out_channels=8, res2_out_channels=16, width_per_group=4)


def _torchvision_state(model: ResNet, with_fc: bool = True) -> dict:
    """A torchvision-style resnet50 state dict whose values are distinct random tensors of the
    tiny model's shapes, keyed by torchvision names."""
    g = torch.Generator().manual_seed(1)
    state = {"conv1.weight": model.stem.conv1.weight.shape}
    for p in ("weight", "bias", "running_mean", "running_var"):
        state[f"bn1.{p}"] = (model.stem.conv1.out_channels,)
    state["bn1.num_batches_tracked"] = ()
    for s in range(4):
        stage = getattr(model, f"res{s + 2}")
        for i, block in enumerate(stage):
            pre = f"layer{s + 1}.{i}."
            for j in (1, 2, 3):
                conv = getattr(block, f"conv{j}")
                state[pre + f"conv{j}.weight"] = conv.weight.shape
                for p in ("weight", "bias", "running_mean", "running_var"):
                    state[pre + f"bn{j}.{p}"] = (conv.out_channels,)
                state[pre + f"bn{j}.num_batches_tracked"] = ()
            if block.shortcut is not None:
                state[pre + "downsample.0.weight"] = block.shortcut.weight.shape
                for p in ("weight", "bias", "running_mean", "running_var"):
                    state[pre + f"downsample.1.{p}"] = (block.shortcut.out_channels,)
    out = {}
    for k, shape in state.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g)
    if with_fc:
        out["fc.weight"] = torch.randn(10, model.out_channels["res5"], generator=g)
        out["fc.bias"] = torch.randn(10, generator=g)
    return out


def test_load_torchvision_renaming(tmp_path):
    torch.manual_seed(0)
    model = ResNet(TINY)
    tv = _torchvision_state(model)
    torch.save(tv, tmp_path / "r50.pth")
    load_resnet_weights(model, tmp_path / "r50.pth")
    sd = model.state_dict()
    pairs = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.weight": "stem.conv1.norm.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.conv1.weight": "res2.0.conv1.weight",
        "layer1.0.bn2.bias": "res2.0.conv2.norm.bias",
        "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
        "layer1.0.downsample.1.running_mean": "res2.0.shortcut.norm.running_mean",
        "layer2.0.conv2.weight": "res3.0.conv2.weight",
        "layer3.5.bn3.weight": "res4.5.conv3.norm.weight",
        "layer4.2.conv3.weight": "res5.2.conv3.weight",
        "layer4.0.downsample.1.weight": "res5.0.shortcut.norm.weight",
    }
    for tv_key, d2_key in pairs.items():
        assert torch.equal(sd[d2_key], tv[tv_key]), (tv_key, d2_key)
    # every tensor came from the file
    n_loaded = sum(
        1 for k in tv if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    )
    assert n_loaded == len(sd)


def test_load_detectron2_pickle(tmp_path):
    """The official converted `R-50.pkl` layout: {"model": {d2 name: ndarray}}, where the
    torchvision classifier became `stem.fc.*` (tools/convert-torchvision-to-d2.py)."""
    model = ResNet(TINY)
    ref = ResNet(TINY)
    state = {k: v.numpy() + 1.0 for k, v in ref.state_dict().items()}
    state["stem.fc.weight"] = np.zeros((10, 128), np.float32)
    state["stem.fc.bias"] = np.zeros((10,), np.float32)
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "torchvision", "matching_heuristics": True}, f)
    load_resnet_weights(model, tmp_path / "R-50.pkl")
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), state[k]), k


def test_load_missing_key_raises(tmp_path):
    model = ResNet(TINY)
    tv = _torchvision_state(model)
    del tv["layer3.1.bn2.running_mean"]
    torch.save(tv, tmp_path / "bad.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_resnet_weights(model, tmp_path / "bad.pth")
    assert "res4.1.conv2.norm.running_mean" in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded


def test_load_shape_mismatch_and_missing_file(tmp_path):
    model = ResNet(TINY)
    tv = _torchvision_state(model)
    tv["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(tv, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="stem.conv1.weight"):
        load_resnet_weights(model, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError):
        load_resnet_weights(model, tmp_path / "nope.pth")
