"""Official checkpoints (.pth {"model": state} and model-zoo-style .pkl of numpy arrays): strict
loading with readable errors, identical outputs, and the import into our own checkpoint format."""

from __future__ import annotations

import pickle

import pytest
import torch
from official_fixtures import TINY_OPTS, eval_opts, write_official_configs

from eclipse_seg.cli import main
from eclipse_seg.compat.official_checkpoint import (
    build_official,
    load_official,
    official_thing_ids,
)
from eclipse_seg.errors import CheckpointError, ConfigError

NAME = "ade_ps 50-20"  # 50 base queries, 20 prompts per step
OPTS = eval_opts(NAME) + TINY_OPTS + ["CONT.TASK", "2"]  # an intermediate step: 2 prompt groups


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A random model in the official key layout, saved as an official .pth and .pkl."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg_path = write_official_configs(root)["ade_ps"]
    torch.manual_seed(0)
    model, *_ = build_official(cfg_path, OPTS)
    with torch.no_grad():
        for p in model.parameters():  # prompts start equal: make every group distinct
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    state = {k: v for k, v in model.state_dict().items() if k != "thing_mask"}
    extra = {
        "criterion.empty_weight": torch.ones(71),
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
        "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1),
    }
    pth = root / "model_final.pth"
    torch.save({"model": {**state, **extra}, "iteration": 32000}, pth)
    pkl = root / "model_final.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, f)
    torch.manual_seed(1)
    images = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)]
    with torch.no_grad():
        ref = model(images)
    return {
        "root": root,
        "cfg": cfg_path,
        "pth": pth,
        "pkl": pkl,
        "state": state,
        "model": model,
        "images": images,
        "ref": ref,
    }


def test_official_key_layout(official):
    """Names and shapes of the official modules (from the official code) exist in our model."""
    sd = official["state"]
    p = "sem_seg_head.predictor."
    expect = {
        "backbone.stem.conv1.weight": (8, 3, 7, 7),
        "backbone.stem.conv1.norm.running_var": (8,),
        "backbone.res2.0.shortcut.weight": (16, 8, 1, 1),
        "backbone.res3.0.conv2.weight": (8, 8, 3, 3),
        "sem_seg_head.pixel_decoder.input_proj.0.0.weight": (32, 128, 1, 1),
        "sem_seg_head.pixel_decoder.input_proj.0.1.weight": (32,),
        "sem_seg_head.pixel_decoder.transformer.level_embed": (3, 32),
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight": (
            2 * 3 * 4 * 2,
            32,
        ),
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.linear1.weight": (1024, 32),
        "sem_seg_head.pixel_decoder.adapter_1.weight": (32, 16, 1, 1),
        "sem_seg_head.pixel_decoder.layer_1.norm.weight": (32,),
        "sem_seg_head.pixel_decoder.mask_features.weight": (16, 32, 1, 1),
        p + "query_feat.weight": (50, 32),
        p + "query_embed.weight": (50, 32),
        p + "level_embed.weight": (3, 32),
        p + "transformer_self_attention_layers.2.self_attn.in_proj_weight": (96, 32),
        p + "transformer_cross_attention_layers.0.multihead_attn.out_proj.weight": (32, 32),
        p + "transformer_ffn_layers.1.linear1.weight": (32, 32),
        p + "decoder_norm.weight": (32,),
        p + "mask_embed.layers.2.weight": (16, 32),
        p + "class_embed.cls.0.layers.2.weight": (1, 32),
        p + "class_embed.cls.1.layers.2.weight": (50, 32),
        p + "class_embed.cls.3.layers.2.bias": (20,),
        p + "prompt_feat.1.weight": (20, 32),
        p + "prompt_embed.1.2.weight": (20, 32),
        p + "prompt_mask_embed.0.layers.2.weight": (16, 32),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith(p + "input_proj.") and k.endswith("weight") for k in sd)


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_load_official_gives_identical_outputs(official, kind):
    model = load_official(official[kind], official["cfg"], OPTS)
    assert not model.training
    with torch.no_grad():
        out = model(official["images"])
    assert torch.equal(out.pred_logits, official["ref"].pred_logits)
    assert torch.equal(out.pred_masks, official["ref"].pred_masks)
    assert model.decoder.deltas_for((0, 1, 2)).tolist() == pytest.approx([0.4, 0.5, 0.5])
    # thing flags from the ADE20K catalog in the class order (ADE: label l = id l + 1)
    from eclipse_seg.data.catalogs import load_catalog

    flags = [c["isthing"] for c in load_catalog("ade20k")][:90]
    assert model.thing_mask.tolist() == [bool(f) for f in flags]


def test_thing_classes_override(official):
    model = load_official(official["pth"], official["cfg"], OPTS, thing_classes=[0, 5, 89])
    assert model.thing_mask.nonzero().flatten().tolist() == [0, 5, 89]


def _save(tmp_path, state, name="bad.pth"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_missing_extra_and_misshaped_keys_are_listed(official, tmp_path):
    state = dict(official["state"])
    gone = "sem_seg_head.predictor.prompt_embed.1.2.weight"
    del state[gone]
    with pytest.raises(CheckpointError) as e:
        load_official(_save(tmp_path, state), official["cfg"], OPTS)
    assert gone in str(e.value) and "missing" in str(e.value)

    state = {
        **official["state"],
        "sem_seg_head.predictor.prompt_no_obj_embed.0.layers.0.weight": torch.zeros(32, 32),
    }
    with pytest.raises(CheckpointError) as e:
        load_official(_save(tmp_path, state), official["cfg"], OPTS)
    assert "prompt_no_obj_embed.0.layers.0.weight" in str(e.value) and "unexpected" in str(e.value)

    state = dict(official["state"])
    key = "sem_seg_head.predictor.class_embed.cls.3.layers.2.weight"
    state[key] = torch.zeros(10, 32)
    with pytest.raises(CheckpointError) as e:
        load_official(_save(tmp_path, state), official["cfg"], OPTS)
    assert key in str(e.value) and "(10, 32)" in str(e.value)

    # a checkpoint of another step does not fit silently
    with pytest.raises(CheckpointError, match="prompt_feat.1.weight"):
        load_official(
            official["pth"], official["cfg"], eval_opts(NAME) + TINY_OPTS + ["CONT.TASK", "1"]
        )

    state = {**official["state"], "pixel_mean": torch.zeros(3, 1, 1)}
    with pytest.raises(CheckpointError, match="pixel_mean"):
        load_official(_save(tmp_path, state), official["cfg"], OPTS)


def test_unreadable_checkpoint(tmp_path, official):
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(official["pth"].read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_official(bad, official["cfg"], OPTS)


def test_import_official_round_trip(official, tmp_path, capsys):
    from eclipse_seg.engine.build import load_model

    out = tmp_path / "ours.pt"
    argv = [
        "--weights",
        str(official["pth"]),
        "--config",
        str(official["cfg"]),
        "--output",
        str(out),
        "--opts",
        *OPTS,
    ]
    assert main(["import-official", *argv]) == 0
    assert "step 2" in capsys.readouterr().out
    model, cfg, scenario, step, method = load_model(out)
    assert (step, method, scenario.name) == (2, "eclipse", "50-20")
    assert cfg.continual.deltas == [0.4] + [0.5] * 5 and cfg.model.decoder.num_queries == 50
    with torch.no_grad():
        got = model(official["images"])
    assert torch.equal(got.pred_logits, official["ref"].pred_logits)
    assert torch.equal(got.pred_masks, official["ref"].pred_masks)
    ref_model = load_official(official["pth"], official["cfg"], OPTS)
    assert torch.equal(model.thing_mask, ref_model.thing_mask)
    # predictions go through the same post-processing
    a = model.predict(official["images"])[0]
    b = ref_model.predict(official["images"])[0]
    assert a.keys() == b.keys()


def test_model_zoo_linear_classifier_is_split(official, tmp_path):
    """A Mask2Former model-zoo checkpoint: one linear class_embed (C+1 rows, no-object last)."""
    opts = TINY_OPTS + [
        "CONT.BASE_CLS",
        "100",
        "CONT.INC_CLS",
        "5",
        "CONT.TASK",
        "0",
        "CONT.NUM_PROMPTS",
        "0",
        "CONT.SOFTCLS",
        "False",
        "MODEL.MASK_FORMER.TEST.MASK_BG",
        "False",
    ]
    model, *_ = build_official(official["cfg"], opts)
    model.eval()
    state = {k: v for k, v in model.state_dict().items() if k != "thing_mask"}
    p = "sem_seg_head.predictor.class_embed."
    w = torch.cat([state.pop(p + "cls.1.weight"), state.pop(p + "cls.0.weight")])
    b = torch.cat([state.pop(p + "cls.1.bias"), state.pop(p + "cls.0.bias")])
    pkl = tmp_path / "zoo.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(
            {
                "model": {
                    **{k: v.numpy() for k, v in state.items()},
                    p + "weight": w.numpy(),
                    p + "bias": b.numpy(),
                }
            },
            f,
        )
    loaded = load_official(pkl, official["cfg"], opts)
    with torch.no_grad():
        assert torch.equal(
            loaded(official["images"]).pred_logits, model(official["images"]).pred_logits
        )


# ---- thing / stuff lookup: ours by class id, the official one by position (docs/design.md §7) -----------
def _thing_labels(catalog, order, **kw):
    ids = official_thing_ids(catalog, order, **kw)
    return {label for label, c in enumerate(order) if c in ids}


def test_official_thing_lookup_differs_for_coco_order_c():
    """Officially label l is a thing when l + 1 is among detectron2's COCO thing map values (0-based
    contiguous ids 0..79): labels 0..78, whatever classes order "c" puts there."""
    from eclipse_seg.data.catalogs import load_catalog, official_order

    order = official_order("coco")
    names = {c["contiguous_id"]: c["name"] for c in load_catalog("coco")}
    correct = _thing_labels("coco", order)
    official = _thing_labels("coco", order, official_thing_lookup=True)
    assert len(correct) == 80 and official == set(range(79))
    # hand-checked (label, 1-based contiguous id in order "c", name, is a thing)
    for label, cid, name, thing in [
        (0, 1, "person", True),
        (6, 88, "floor-wood", False),
        (8, 126, "grass-merged", False),
        (78, 115, "window-blind", False),
        (79, 28, "tie", True),
        (82, 62, "toilet", True),
        (132, 4, "motorcycle", True),
    ]:
        assert (order[label], names[cid]) == (cid, name)
        assert (label in correct) == thing
        assert (label in official) == (label <= 78)


def test_official_thing_lookup_is_the_same_for_ade():
    from eclipse_seg.data.catalogs import official_order

    order = official_order("ade20k")
    labels = _thing_labels("ade20k", order)
    assert labels == _thing_labels("ade20k", order, official_thing_lookup=True)
    assert 0 not in labels and 7 in labels  # wall (id 1) is stuff, bed (id 8) a thing


def test_official_thing_lookup_reaches_the_model(tmp_path):
    coco = write_official_configs(tmp_path)["coco_ps"]
    opts = eval_opts("coco_ps 83-5") + TINY_OPTS + ["CONT.TASK", "1"]
    ours, *_ = build_official(coco, opts)
    official, *_ = build_official(coco, opts, official_thing_lookup=True)
    assert official.thing_mask.tolist() == [label <= 78 for label in range(88)]
    assert ours.thing_mask[82] and not ours.thing_mask[6]  # toilet, floor-wood
    with pytest.raises(ConfigError, match="not both"):
        build_official(coco, opts, [0, 1], official_thing_lookup=True)


def test_import_official_thing_lookup_flag(official, tmp_path):
    """Through `eclipse-seg import-official` (options first, as documented)."""
    from eclipse_seg.cli import main
    from eclipse_seg.engine.build import load_model
    from eclipse_seg.engine.checkpoint import load_checkpoint

    out = tmp_path / "ours.pt"
    base = [
        "--weights",
        str(official["pth"]),
        "--config",
        str(official["cfg"]),
        "--output",
        str(out),
    ]
    assert main(["import-official", *base, "--official-thing-lookup", "--opts", *OPTS]) == 0
    assert load_checkpoint(out)["manifest"]["imported_from"]["official_thing_lookup"] is True
    # ADE's identity order: the same flags as the catalog lookup
    catalog_flags = load_official(official["pth"], official["cfg"], OPTS).thing_mask
    assert torch.equal(load_model(out)[0].thing_mask, catalog_flags)
    with pytest.raises(SystemExit):
        main(
            [
                "import-official",
                *base,
                "--thing-classes",
                "0",
                "--official-thing-lookup",
                "--opts",
                *OPTS,
            ]
        )
