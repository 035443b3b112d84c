"""ECLIPSE's continual rules: growth, initialisation, freezing, grouped inference."""

from __future__ import annotations

import pytest
import torch

from eclipse_seg.continual import add_step, freeze_for_step, set_deltas
from eclipse_seg.engine.build import build_datasets, build_model, build_scenario
from eclipse_seg.engine.runner import run
from eclipse_seg.engine.train import plan_step, train_step
from eclipse_seg.model.mask2former import Mask2Former


def _tiny(tiny_cfg, *overrides: str) -> tuple:
    cfg = tiny_cfg(*overrides)
    train, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    thing_ids = {c["id"] for c in train.categories if c["isthing"]}
    return cfg, train, scenario, thing_ids


def _images(n=2, size=64):
    g = torch.Generator().manual_seed(1)
    return [
        torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)
    ]


def test_add_step_initialisation(tiny_cfg):
    cfg, _, scenario, thing_ids = _tiny(tiny_cfg, "model.decoder.deep_cls=true")  # 3-layer heads
    model = build_model(cfg, scenario, "eclipse", 0, thing_ids)
    dec = model.decoder
    g = add_step(model, 2, 3, thing_flags=[True, False])
    assert g == 1 and dec.num_groups == 2
    mean_feat = dec.query_feat.weight.mean(0)
    assert torch.equal(dec.prompt_feat[0].weight, mean_feat.expand(3, -1))
    for layer in range(dec.cfg.num_layers):  # deep prompts: one embedding per layer, all = mean
        assert torch.equal(
            dec.prompt_embed[0][layer].weight, dec.query_embed.weight.mean(0).expand(3, -1)
        )
    for a, b in zip(dec.prompt_mask_embed[0].parameters(), dec.mask_embed.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    head, noobj = dec.class_embed.cls[2], dec.class_embed.cls[0]
    assert torch.equal(head.layers[0].weight, noobj.layers[0].weight)
    assert torch.equal(head.layers[-1].weight, noobj.layers[-1].weight.repeat(2, 1))
    assert model.thing_mask.tolist()[-2:] == [True, False]
    assert dec.class_embed.classes_per_step == [6, 2]


def test_freeze_leaves_only_group_parameters(tiny_cfg):
    cfg, _, scenario, thing_ids = _tiny(tiny_cfg)
    model = build_model(cfg, scenario, "eclipse", 1, thing_ids)
    params = freeze_for_step(model, 1, train_no_object_head=True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(
        n.startswith(
            (
                "sem_seg_head.predictor.prompt_",
                "sem_seg_head.predictor.class_embed.cls.0",
                "sem_seg_head.predictor.class_embed.cls.2",
            )
        )
        for n in names
    )
    assert sum(p.numel() for p in params) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    freeze_for_step(model, 1, train_no_object_head=False)
    assert not any(p.requires_grad for p in model.decoder.class_embed.cls[0].parameters())


@pytest.mark.slow
def test_prompt_step_changes_nothing_old_bitwise(tiny_cfg, tmp_path):
    cfg, train, scenario, thing_ids = _tiny(tiny_cfg)
    cfg.continual.train_no_object_head = False
    model = build_model(cfg, scenario, "eclipse", 0, thing_ids)
    model.eval()
    before_out = model(_images(), groups=(0,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    add_step(model, 2, cfg.continual.num_prompts)
    model.train()
    stats = train_step(
        model,
        cfg,
        scenario,
        plan_step(cfg, scenario, 1, "eclipse"),
        train,
        tmp_path / "s1",
        {"step": 1},
        resume=False,
        progress=False,
    )
    assert stats["iterations"] == 3
    after = model.state_dict()
    for k, v in before.items():
        got = after[k][: v.shape[0]] if k == "thing_mask" else after[k]  # the flags only grow
        assert torch.equal(got, v), f"{k} changed during prompt tuning"
    new = [k for k in after if k not in before]
    assert any(not torch.equal(after[k], before.get(k, after[k] * 0)) for k in new)
    model.eval()
    after_out = model(_images(), groups=(0,))  # old group alone: bitwise identical predictions
    assert torch.equal(before_out.pred_logits[..., :6], after_out.pred_logits[..., :6])
    assert torch.equal(before_out.pred_logits[..., -1], after_out.pred_logits[..., -1])
    assert torch.equal(before_out.pred_masks, after_out.pred_masks)


def test_grouped_pass_equals_each_group_alone(tiny_cfg):
    cfg, _, scenario, thing_ids = _tiny(tiny_cfg)
    model = build_model(cfg, scenario, "eclipse", 3, thing_ids)
    for p in model.decoder.prompt_feat.parameters():  # make groups differ
        p.data.normal_()
    model.eval()
    images = _images()
    with torch.no_grad():
        joint = model(images)
        batch = model.preprocess(images)
        trunk = model.features(batch)
        mf, ms = trunk.mask_features, trunk.multi_scale_features
        full = model.decoder(ms, mf, manipulate=False)
        start = 0
        for g in range(model.decoder.num_groups):
            alone = model.decoder(ms, mf, groups=(g,), manipulate=False)
            n = model.decoder.group_size(g)
            torch.testing.assert_close(
                full.pred_logits[:, start : start + n], alone.pred_logits, atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                full.pred_masks[:, start : start + n], alone.pred_masks, atol=1e-5, rtol=1e-5
            )
            start += n
    assert joint.pred_logits.shape[1] == start


def test_logit_manipulation_only_in_eval_with_groups(tiny_cfg):
    cfg, _, scenario, thing_ids = _tiny(tiny_cfg)
    model = build_model(cfg, scenario, "eclipse", 1, thing_ids)
    set_deltas(model, [0.4, 0.6])
    model.eval()
    with torch.no_grad():
        out = model(_images(1))
    q0 = model.decoder.group_size(0)
    # base queries cannot predict step-1 classes, prompts cannot predict base classes
    assert torch.all(out.pred_logits[0, :q0, 6:8] == -10)
    assert torch.all(out.pred_logits[0, q0:, :6] == -10)
    base_only: Mask2Former = build_model(cfg, scenario, "eclipse", 0, thing_ids)
    set_deltas(base_only, [0.4])
    base_only.eval()
    with (
        torch.no_grad()
    ):  # a single group is never manipulated (official: no prompts, no manipulation)
        raw = base_only(_images(1), groups=(0,), manipulate=False)
        auto = base_only(_images(1))
    assert torch.equal(raw.pred_logits, auto.pred_logits)


@pytest.mark.slow
def test_runner_all_steps_and_results(tiny_cfg):
    cfg = tiny_cfg("data.max_val_images=4")
    results = run(cfg, "eclipse", progress=False)
    steps = results["methods"]["eclipse"]["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert steps[0]["pq_old"] is None and steps[1]["pq_old"] is not None
    assert steps[1]["trainable_params"] < steps[0]["trainable_params"] / 5
    for s in steps:
        assert set(s) >= {
            "pq_old",
            "pq_new",
            "pq_all",
            "pq_things",
            "pq_stuff",
            "per_class",
            "trainable_params",
            "train_seconds",
        }
        assert len(s["per_class"]) == sum(results["classes_per_step"][: s["step"] + 1])
