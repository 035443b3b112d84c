"""Swin backbone in Mask2Former's layout: shapes, official key names, parameter counts, the
shifted-window attention against a naive per-token reference, weight loading and integration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.model.backbone.swin import (
    MASK_VALUE,
    SWIN_PRESETS,
    PatchMerging,
    SwinBlock,
    SwinConfig,
    SwinTransformer,
    load_swin_weights,
    shifted_window_mask,
    swin_preset,
)
from eclipse_seg.model.mask2former import Mask2Former, ModelConfig
from tests.conftest import TINY_MODEL

# Measured here. Without `norm0..norm3` the counts equal the official ImageNet classifiers minus
# their head and final norm: Swin-T 28,288,354 - 769,000 - 1,536 = 27,517,818 and
# Swin-S 49,606,258 - 769,000 - 1,536 = 48,835,722.
SWIN_T_PARAMS = 27_520_698
SWIN_T_PARAMS_NO_OUT_NORMS = 27_517_818

TINY_SWIN = {
    "embed_dim": 24,
    "depths": [2, 2, 2, 2],
    "num_heads": [1, 2, 3, 6],
    "window_size": 4,
    "drop_path_rate": 0.0,
}
TINY_SWIN_OVERRIDES = [
    "model.backbone_type=swin",
    "model.swin.embed_dim=24",
    "model.swin.depths=[2, 2, 2, 2]",
    "model.swin.num_heads=[1, 2, 3, 6]",
    "model.swin.window_size=4",
    "model.swin.drop_path_rate=0.1",
]


def tiny_swin(**kw) -> SwinTransformer:
    return SwinTransformer(SwinConfig(**{**TINY_SWIN, **kw}))


@pytest.fixture(scope="module")
def swin_t():
    torch.manual_seed(0)
    return SwinTransformer(swin_preset("tiny"))


# ----------------------------------------------------------------------------------------------
# configs and structure


def test_presets_match_mask2former_configs():
    t, s, b, l_ = (SWIN_PRESETS[k] for k in ("tiny", "small", "base", "large"))
    assert (t.embed_dim, t.depths, t.num_heads, t.window_size, t.pretrain_img_size) == (
        96,
        [2, 2, 6, 2],
        [3, 6, 12, 24],
        7,
        224,
    )
    assert (s.embed_dim, s.depths, s.num_heads, s.window_size) == (
        96,
        [2, 2, 18, 2],
        [3, 6, 12, 24],
        7,
    )
    assert (b.embed_dim, b.depths, b.num_heads, b.window_size, b.pretrain_img_size) == (
        128,
        [2, 2, 18, 2],
        [4, 8, 16, 32],
        12,
        384,
    )
    assert (l_.embed_dim, l_.depths, l_.num_heads, l_.window_size, l_.pretrain_img_size) == (
        192,
        [2, 2, 18, 2],
        [6, 12, 24, 48],
        12,
        384,
    )
    for c in (t, s, b, l_):
        assert (
            c.patch_size,
            c.ape,
            c.patch_norm,
            c.drop_path_rate,
            c.mlp_ratio,
            c.out_indices,
        ) == (4, False, True, 0.3, 4.0, [0, 1, 2, 3])
    a = swin_preset("tiny", window_size=5)
    assert a.window_size == 5 and SWIN_PRESETS["tiny"].window_size == 7  # a copy
    a.depths.append(1)
    assert SWIN_PRESETS["tiny"].depths == [2, 2, 6, 2]
    with pytest.raises(ConfigError, match="unknown Swin preset"):
        swin_preset("huge")


@pytest.mark.parametrize("hw", [(64, 64), (50, 70), (33, 17)])
def test_output_strides_and_channels(hw):
    torch.manual_seed(0)
    model = tiny_swin().eval()
    assert model.out_channels == {"res2": 24, "res3": 48, "res4": 96, "res5": 192}
    assert model.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    h, w = hw
    out = model(torch.randn(2, 3, h, w))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, feat in out.items():
        s = model.strides[name]
        assert feat.shape == (2, model.out_channels[name], math.ceil(h / s), math.ceil(w / s)), name
        assert torch.isfinite(feat).all()


def test_out_indices_subset_and_bad_configs():
    model = tiny_swin(out_indices=[1, 3])
    assert model.out_channels == {"res3": 48, "res5": 192}
    assert not hasattr(model, "norm0") and hasattr(model, "norm3")
    assert list(model(torch.randn(1, 3, 32, 32))) == ["res3", "res5"]
    with pytest.raises(ConfigError, match="depths"):
        tiny_swin(num_heads=[1, 2, 3])
    with pytest.raises(ConfigError, match="out_indices"):
        tiny_swin(out_indices=[4])
    with pytest.raises(ConfigError, match="divisible"):
        tiny_swin(embed_dim=25)


def test_swin_t_keys_shapes_and_param_count(swin_t):
    sd = swin_t.state_dict()
    expected = {
        "patch_embed.proj.weight": (96, 3, 4, 4),
        "patch_embed.proj.bias": (96,),
        "patch_embed.norm.weight": (96,),
        "layers.0.blocks.0.norm1.weight": (96,),
        "layers.0.blocks.0.attn.qkv.weight": (288, 96),
        "layers.0.blocks.0.attn.qkv.bias": (288,),
        "layers.0.blocks.0.attn.proj.weight": (96, 96),
        "layers.0.blocks.0.attn.relative_position_bias_table": (169, 3),
        "layers.0.blocks.0.attn.relative_position_index": (49, 49),
        "layers.0.blocks.1.norm2.bias": (96,),
        "layers.0.blocks.1.mlp.fc1.weight": (384, 96),
        "layers.0.blocks.1.mlp.fc2.weight": (96, 384),
        "layers.0.downsample.reduction.weight": (192, 384),
        "layers.0.downsample.norm.weight": (384,),
        "layers.2.blocks.5.attn.relative_position_bias_table": (169, 12),
        "layers.2.downsample.reduction.weight": (768, 1536),
        "layers.3.blocks.1.mlp.fc2.bias": (768,),
        "norm0.weight": (96,),
        "norm1.weight": (192,),
        "norm2.bias": (384,),
        "norm3.weight": (768,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layers.2.blocks.6.norm1.weight" not in sd
    assert not any(k.startswith("layers.3.downsample") for k in sd)
    assert not any(k.startswith(("head.", "norm.", "absolute_pos_embed")) for k in sd)
    assert not any("attn_mask" in k for k in sd)
    assert "layers.0.downsample.reduction.bias" not in sd  # no bias, as in the official
    n = sum(p.numel() for p in swin_t.parameters())
    assert n == SWIN_T_PARAMS
    out_norms = sum(
        p.numel()
        for k, p in swin_t.named_parameters()
        if k[:5] in {"norm0", "norm1", "norm2", "norm3"}
    )
    assert n - out_norms == SWIN_T_PARAMS_NO_OUT_NORMS


def test_drop_path_schedule(swin_t):
    rates = [
        b.drop_path.p if hasattr(b.drop_path, "p") else 0.0
        for layer in swin_t.layers
        for b in layer.blocks
    ]
    assert len(rates) == 12
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == pytest.approx(torch.linspace(0, 0.3, 12).tolist())


def test_relative_position_index_official_convention(swin_t):
    idx = swin_t.layers[0].blocks[0].attn.relative_position_index
    ws = 7
    for q, k in [(0, 0), (0, 48), (48, 0), (8, 15), (10, 3)]:
        dr, dc = q // ws - k // ws, q % ws - k % ws  # query minus key
        assert idx[q, k] == (dr + ws - 1) * (2 * ws - 1) + dc + ws - 1


# ----------------------------------------------------------------------------------------------
# shifted windows


def test_shifted_window_mask_pattern():
    # padded 8x8 map, window 4, shift 2: 4 windows; regions per axis [0,4) [4,6) [6,8)
    m = shifted_window_mask(8, 8, 4, 2)
    assert m.shape == (4, 16, 16)
    assert set(m.unique().tolist()) == {0.0, MASK_VALUE}
    assert (m[0] == 0).all()  # top-left window lies in one region
    # window 1 (top-right): columns 4..7 of rows 0..3 -> columns 4,5 vs 6,7 are different regions
    allowed = m[1] == 0
    col = torch.arange(16) % 4
    assert torch.equal(allowed, (col[:, None] < 2) == (col[None, :] < 2))
    # window 3 (bottom-right): four 2x2 regions
    row = torch.arange(16) // 4
    region = (row >= 2).long() * 2 + (col >= 2).long()
    assert torch.equal(m[3] == 0, region[:, None] == region[None, :])
    assert (m.diagonal(dim1=1, dim2=2) == 0).all()


def _naive_block(block: SwinBlock, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-token reference on the padded map: token p may attend to key q iff both fall in the same
    window after the cyclic shift and the shift did not wrap one of them around relative to the
    other (their displacement is the same before and after the roll)."""
    b, _, c = x.shape
    ws, s = block.window_size, block.shift
    attn = block.attn
    heads, d = attn.num_heads, c // attn.num_heads
    y = block.norm1(x).reshape(b, h, w, c)
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h)).reshape(b, hp * wp, c)
    r, col = torch.arange(hp).repeat_interleave(wp), torch.arange(wp).repeat(hp)
    rr, cr = (r - s) % hp, (col - s) % wp  # positions after the roll
    same_window = ((rr // ws)[:, None] == (rr // ws)[None, :]) & (
        (cr // ws)[:, None] == (cr // ws)[None, :]
    )
    dr, dc = r[:, None] - r[None, :], col[:, None] - col[None, :]
    no_wrap = (dr == rr[:, None] - rr[None, :]) & (dc == cr[:, None] - cr[None, :])
    allowed = same_window & no_wrap
    q, k, v = attn.qkv(y).reshape(b, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    table = attn.relative_position_bias_table  # ((2ws-1)^2, heads)
    idx = ((dr + ws - 1) * (2 * ws - 1) + (dc + ws - 1)).clamp(0, table.shape[0] - 1)
    logits = logits + table[idx].permute(2, 0, 1)
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, hp, wp, c)[:, :h, :w]
    x = x + attn.proj(out.reshape(b, h * w, c))
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(8, 8), (6, 7), (11, 5)])
def test_block_matches_naive_reference(shift, hw):
    torch.manual_seed(1)
    h, w = hw
    block = SwinBlock(12, 3, 4, shift, 2.0, True, 0.0, 0.0, 0.0).eval()
    torch.nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)
    x = torch.randn(2, h * w, 12)
    hp, wp = math.ceil(h / 4) * 4, math.ceil(w / 4) * 4
    mask = shifted_window_mask(hp, wp, 4, 2)
    with torch.no_grad():
        got = block(x, h, w, mask)
        want = _naive_block(block, x, h, w)
        block.attn.use_sdpa = True
        fast = block(x, h, w, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, want, atol=1e-5, rtol=1e-5)


def test_patch_merging_order_and_odd_padding():
    pm = PatchMerging(1)
    with torch.no_grad():
        pm.norm.weight.fill_(1.0)
        pm.norm.bias.zero_()
    x = torch.arange(15.0).reshape(1, 15, 1)  # 3x5 map, value = 5 * row + col
    captured = {}
    pm.norm.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    out = pm(x, 3, 5)
    assert out.shape == (1, 2 * 3, 2)
    # first 2x2 cell: (0,0), (1,0), (0,1), (1,1) -> 0, 5, 1, 6; last cell padded with zeros
    assert captured["in"][0, 0].tolist() == [0.0, 5.0, 1.0, 6.0]
    assert captured["in"][0, 5].tolist() == [14.0, 0.0, 0.0, 0.0]


def test_drop_path_trains_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = tiny_swin(drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    a, b = model(x)["res5"], model(x)["res5"]
    assert torch.equal(a, b)
    model.train()
    model(x)["res5"].sum().backward()
    assert model.layers[0].blocks[0].attn.qkv.weight.grad is not None


def test_frozen_stages():
    model = tiny_swin(frozen_stages=2)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    model.train()
    assert not model.layers[0].training and model.layers[1].training


# ----------------------------------------------------------------------------------------------
# weights


def _official_like_state(model: SwinTransformer) -> dict:
    """What an ImageNet checkpoint holds: no out norms, plus classifier, final norm, attn_mask."""
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("norm")}
    c = model.num_features[-1]
    sd.update(
        {
            "norm.weight": torch.ones(c),
            "norm.bias": torch.zeros(c),
            "head.weight": torch.zeros(10, c),
            "head.bias": torch.zeros(10),
            "layers.0.blocks.1.attn_mask": torch.zeros(64, 16, 16),
        }
    )
    return sd


def test_load_swin_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    src = tiny_swin()
    path = tmp_path / "swin.pth"
    torch.save({"model": _official_like_state(src)}, path)
    torch.manual_seed(1)
    dst = tiny_swin()
    report = load_swin_weights(dst, path)
    assert report.complete
    assert report.initialised == sorted(
        k for k in dst.state_dict() if k[:5] in {"norm0", "norm1", "norm2", "norm3"}
    )
    for k, v in src.state_dict().items():
        if not k.startswith("norm"):
            assert torch.equal(dst.state_dict()[k], v), k
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(
        src.eval().layers[0](src.patch_embed(x).flatten(2).transpose(1, 2), 8, 8)[0],
        dst.eval().layers[0](dst.patch_embed(x).flatten(2).transpose(1, 2), 8, 8)[0],
    )


def test_load_swin_weights_accepts_backbone_prefix_and_out_norms(tmp_path):
    torch.manual_seed(0)
    src = tiny_swin()
    path = tmp_path / "m2f_backbone.pth"
    torch.save({f"backbone.{k}": v for k, v in src.state_dict().items()}, path)
    dst = tiny_swin()
    assert load_swin_weights(dst, path).initialised == []
    assert torch.equal(dst.norm2.weight, src.norm2.weight)


def test_load_swin_weights_errors(tmp_path):
    model = tiny_swin()
    sd = _official_like_state(model)
    del sd["layers.1.blocks.0.attn.qkv.weight"]
    sd["layers.9.extra"] = torch.zeros(1)
    sd["layers.0.blocks.0.attn.relative_position_bias_table"] = torch.zeros(169, 1)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as e:
        load_swin_weights(model, path)
    msg = str(e.value)
    assert "layers.1.blocks.0.attn.qkv.weight" in msg
    assert "layers.9.extra" in msg
    assert "relative_position_bias_table: file (169, 1) vs model (49, 1)" in msg
    with pytest.raises(CheckpointError, match="not found"):
        load_swin_weights(model, tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_swin_weights(model, tmp_path / "junk.pth")


# ----------------------------------------------------------------------------------------------
# integration


def test_config_yaml_with_nested_swin(tmp_path):
    y = tmp_path / "swin.yaml"
    y.write_text(
        "model:\n  backbone_type: swin\n  swin:\n    embed_dim: 24\n"
        "    depths: [2, 2, 2, 2]\n    num_heads: [1, 2, 3, 6]\n    window_size: 4\n"
    )
    cfg = load_config(y, ["model.swin.drop_path_rate=0.1"])
    assert isinstance(cfg.model.swin, SwinConfig)
    assert cfg.model.swin.depths == [2, 2, 2, 2] and cfg.model.swin.num_heads == [1, 2, 3, 6]
    assert cfg.model.swin.drop_path_rate == 0.1 and cfg.model.swin.mlp_ratio == 4.0
    with pytest.raises(ConfigError, match="model.swin.depth"):
        load_config(y, ["model.swin.depth=[1]"])
    with pytest.raises(ConfigError, match="expected a list"):
        load_config(y, ["model.swin.depths=3"])
    assert ModelConfig().backbone_type == "resnet"


def test_unknown_backbone_type():
    with pytest.raises(ConfigError, match="'vit'"):
        Mask2Former(ModelConfig(backbone_type="vit"))


def test_mask2former_with_tiny_swin_forward_and_optimizer():
    from eclipse_seg.engine.train import StepPlan, build_optimizer

    cfg = load_config(
        resolve_config("synthetic/base"),
        TINY_MODEL + TINY_SWIN_OVERRIDES + ["model.base_classes=9"],
    )
    torch.manual_seed(0)
    model = Mask2Former(cfg.model)
    assert isinstance(model.backbone, SwinTransformer)
    assert "backbone.layers.0.blocks.0.attn.qkv.weight" in model.state_dict()
    images = [
        torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
        torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8),
    ]
    model.train()
    out = model(images)
    q, c = cfg.model.decoder.num_queries, cfg.model.base_classes
    assert out.pred_logits.shape == (2, q, c + 1)
    assert out.pred_masks.shape == (2, q, 16, 16)
    (out.pred_logits.sum() + out.pred_masks.sum()).backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
    model.set_fast_attention(True)
    assert model.backbone.layers[0].blocks[0].attn.use_sdpa

    plan = StepPlan(0, "eclipse", list(range(c)), 1, 1e-3, 2, 1.0, False)
    opt = build_optimizer(model, plan, cfg)
    table = model.backbone.layers[0].blocks[0].attn.relative_position_bias_table
    qkv = model.backbone.layers[0].blocks[0].attn.qkv.weight
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd[id(table)] == 0.0 and wd[id(qkv)] == cfg.solver.weight_decay
