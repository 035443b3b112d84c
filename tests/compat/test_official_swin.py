"""Official Swin models (Mask2Former's D2SwinTransformer): MODEL.SWIN.* mapping, checkpoints in the
official key layout (with or without the relative_position_index buffers) and mismatches."""

from __future__ import annotations

import pickle

import pytest
import torch
from official_fixtures import (
    SWIN_CONFIGS,
    SWIN_TINY_OPTS,
    TINY_OPTS,
    eval_opts,
    official_swin_backbone_state,
    write_official_configs,
    write_swin_configs,
)

from eclipse_seg.cli import main
from eclipse_seg.compat.official_checkpoint import (
    build_official,
    load_official,
)
from eclipse_seg.compat.official_config import load_official_config, to_eclipse_config
from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.model.backbone import swin_preset

OPTS = eval_opts("ade_ps 50-20") + TINY_OPTS + SWIN_TINY_OPTS + ["CONT.TASK", "1"]
INDEX = "backbone.layers.1.blocks.1.attn.relative_position_index"


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    return {**write_official_configs(root), **write_swin_configs(root)}


# ---- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["ade_ps", "coco_ps"])
@pytest.mark.parametrize("size", sorted(SWIN_CONFIGS))
def test_official_swin_configs_map_to_our_presets(configs, which, size):
    base = 100 if which == "ade_ps" else 83
    official = load_official_config(
        configs[f"{which} {size}"],
        ["CONT.SOFTCLS", "False", "CONT.BASE_CLS", str(base), "CONT.TASK", "0"],
    )
    cfg, _ = to_eclipse_config(official)
    assert cfg.model.backbone_type == "swin"
    assert cfg.model.swin == swin_preset(size)
    assert cfg.model.decoder.num_queries == (200 if size == "large" else 100)


def test_training_only_swin_keys_are_carried(configs):
    opts = eval_opts("ade_ps 100-5") + [
        "MODEL.SWIN.APE",
        "True",
        "MODEL.SWIN.USE_CHECKPOINT",
        "True",
        "MODEL.SWIN.DROP_RATE",
        "0.1",
        "MODEL.SWIN.ATTN_DROP_RATE",
        "0.2",
        "MODEL.SWIN.DROP_PATH_RATE",
        "0.1",
        "MODEL.SWIN.QKV_BIAS",
        "False",
        "MODEL.SWIN.MLP_RATIO",
        "2.0",
        "MODEL.SWIN.QK_SCALE",
        str(32**-0.5),  # equals the default of every Swin-T stage
        "MODEL.RESNETS.STRIDE_IN_1X1",
        "True",  # ResNet keys are ignored with a Swin backbone
    ]
    cfg, _ = to_eclipse_config(load_official_config(configs["ade_ps tiny"], opts))
    s = cfg.model.swin
    assert (s.ape, s.use_checkpoint, s.drop_rate, s.attn_drop_rate, s.drop_path_rate) == (
        True,
        True,
        0.1,
        0.2,
        0.1,
    )
    assert not s.qkv_bias and s.mlp_ratio == 2.0 and s.frozen_stages == -1


@pytest.mark.parametrize(
    "opts,key",
    [
        (["MODEL.SWIN.PATCH_SIZE", "2"], "MODEL.SWIN.PATCH_SIZE"),
        (["MODEL.SWIN.QK_SCALE", "0.1"], "MODEL.SWIN.QK_SCALE"),
        (["MODEL.SWIN.OUT_FEATURES", "['res3', 'res4', 'res5']"], "MODEL.SWIN.OUT_FEATURES"),
        (["MODEL.SWIN.DEPTHS", "[2, 2, 6]"], "MODEL.SWIN.DEPTHS"),
        (["MODEL.SWIN.NUM_HEADS", "[5, 6, 12, 24]"], "MODEL.SWIN.NUM_HEADS"),
        (["MODEL.SWIN.DROP_PATH_RATE", "1.5"], "MODEL.SWIN.DROP_PATH_RATE"),
        (["MODEL.SWIN.WINDOW_SIZE", "0"], "MODEL.SWIN.WINDOW_SIZE"),
        (["MODEL.BACKBONE.NAME", "D2ConvNeXt"], "MODEL.BACKBONE.NAME"),
    ],
)
def test_swin_settings_we_cannot_honour_name_the_key(configs, opts, key):
    official = load_official_config(configs["ade_ps tiny"], eval_opts("ade_ps 100-5") + opts)
    with pytest.raises(ConfigError) as e:
        to_eclipse_config(official)
    assert key in str(e.value)


# ---- checkpoints ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official(tmp_path_factory, configs):
    """A tiny Swin model at step 1 as an official .pth / .pkl: the backbone from the official layout,
    the heads (their layout is tested with R50) from a model of the same config."""
    root = tmp_path_factory.mktemp("swin_ckpt")
    cfg_path = configs["ade_ps"]
    torch.manual_seed(0)
    model, *_ = build_official(cfg_path, OPTS)
    heads = {
        k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.") and k != "thing_mask"
    }
    state = {**heads, **official_swin_backbone_state()}
    pth, pkl = root / "model_final.pth", root / "model_final.pkl"
    torch.save({"model": state, "iteration": 1000}, pth)
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}}, f)
    torch.manual_seed(1)
    images = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)]
    return {"root": root, "cfg": cfg_path, "pth": pth, "pkl": pkl, "state": state, "images": images}


def _save(tmp_path, state, name="bad.pth"):
    torch.save({"model": state}, tmp_path / name)
    return tmp_path / name


def test_our_swin_registers_the_official_key_layout(official):
    model, *_ = build_official(official["cfg"], OPTS)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    theirs = {k: tuple(v.shape) for k, v in official["state"].items() if k.startswith("backbone.")}
    assert ours == theirs
    assert torch.equal(model.state_dict()[INDEX], official["state"][INDEX])


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_swin_checkpoint_round_trip(official, kind, tmp_path):
    from eclipse_seg.engine.build import load_model

    model = load_official(official[kind], official["cfg"], OPTS)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in official["state"].items())
    with torch.no_grad():
        ref = model(official["images"])
    out = tmp_path / "ours.pt"
    argv = [
        "--weights",
        str(official[kind]),
        "--config",
        str(official["cfg"]),
        "--output",
        str(out),
        "--opts",
        *OPTS,
    ]
    assert main(["import-official", *argv]) == 0
    ours, cfg, *_ = load_model(out)
    assert cfg.model.backbone_type == "swin" and cfg.model.swin.window_size == 4
    with torch.no_grad():
        got = ours(official["images"])
    assert torch.equal(got.pred_logits, ref.pred_logits) and torch.equal(
        got.pred_masks, ref.pred_masks
    )


def test_checkpoint_without_index_buffers_loads(official, tmp_path):
    """The buffers are fixed by WINDOW_SIZE; a checkpoint may leave them out."""
    state = {
        k: v for k, v in official["state"].items() if not k.endswith("relative_position_index")
    }
    a = load_official(_save(tmp_path, state), official["cfg"], OPTS)
    b = load_official(official["pth"], official["cfg"], OPTS)
    with torch.no_grad():
        assert torch.equal(a(official["images"]).pred_masks, b(official["images"]).pred_masks)


def test_mismatched_swin_checkpoints_are_explained(official, tmp_path):
    state = {**official["state"], INDEX: official["state"][INDEX].flip(0)}
    with pytest.raises(CheckpointError, match="WINDOW_SIZE"):
        load_official(_save(tmp_path, state), official["cfg"], OPTS)
    with pytest.raises(CheckpointError, match="WINDOW_SIZE = 2"):  # another window size
        load_official(official["pth"], official["cfg"], OPTS + ["MODEL.SWIN.WINDOW_SIZE", "2"])
    deeper = OPTS + ["MODEL.SWIN.DEPTHS", "[2, 2, 4, 2]"]
    with pytest.raises(CheckpointError, match=r"missing keys.*backbone\.layers\.2\.blocks\.2\."):
        load_official(official["pth"], official["cfg"], deeper)
    wider = OPTS + ["MODEL.SWIN.EMBED_DIM", "16"]
    shape = r"blocks\.0\.attn\.proj\.bias checkpoint \(8,\) vs model \(16,\)"
    with pytest.raises(CheckpointError, match=shape):
        load_official(official["pth"], official["cfg"], wider)
    resnet = eval_opts("ade_ps 50-20") + TINY_OPTS + ["CONT.TASK", "1"]
    with pytest.raises(CheckpointError) as e:
        load_official(official["pth"], official["cfg"], resnet)
    assert "backbone.res2.0.conv1.weight" in str(e.value)
    assert "backbone.layers.0.blocks.0.attn.proj.bias" in str(e.value)
    extra = {
        **official["state"],
        "backbone.layers.1.blocks.2.attn.relative_position_index": official["state"][INDEX],
    }
    with pytest.raises(
        CheckpointError, match=r"unexpected keys.*blocks\.2\.attn\.relative_position_index"
    ):
        load_official(_save(tmp_path, extra), official["cfg"], OPTS)
