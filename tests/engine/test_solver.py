"""The official optimiser (per-tensor groups, lr multipliers, weight-decay rules) and schedules,
and what the training loop does with them."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from eclipse_seg.config import load_config
from eclipse_seg.continual import add_step, freeze_for_step
from eclipse_seg.engine.runner import build_datasets, build_model, build_scenario, manifest_for
from eclipse_seg.engine.solver import build_adamw, lr_factor, param_rules
from eclipse_seg.engine.train import plan_step, train_step
from eclipse_seg.model.mask2former import Mask2Former


@pytest.fixture(scope="module")
def r50_ade():
    """The real R50 ADE20K panoptic model of the shipped config, random weights."""
    cfg = load_config("ade20k/panoptic_r50", ["model.base_classes=100"])
    torch.manual_seed(0)
    return cfg, Mask2Former(cfg.model)


def table(rules) -> dict[tuple[float, float], int]:
    out: dict[tuple[float, float], int] = {}
    for r in rules:
        key = (r.lr_multiplier, r.weight_decay)
        out[key] = out.get(key, 0) + 1
    return out


def test_r50_ade_parameter_groups(r50_ade):
    cfg, model = r50_ade
    rules = param_rules(model, cfg.solver)
    # backbone: 53 convs (FrozenBN has no parameters) at lr x0.1, decayed.
    # not decayed (93): LayerNorms 28 in the decoder (9 layers x 3 + decoder_norm) and 12 in the
    # pixel-decoder encoder (6 layers x 2), GroupNorms 5 (3 input projections, adapter_1, layer_1):
    # 45 norms x (weight, bias) = 90; nn.Embeddings 3 (query_feat, query_embed, level_embed).
    # everything else (209) decayed at lr x1, biases and the pixel decoder's level_embed included.
    assert table(rules) == {(0.1, 0.05): 53, (1.0, 0.05): 209, (1.0, 0.0): 93}
    kinds = {r.name: r.kind for r in rules}
    assert sum(k == "norm" for k in kinds.values()) == 90
    assert sum(k == "embedding" for k in kinds.values()) == 3
    by_name = {r.name: r for r in rules}
    level = by_name["sem_seg_head.pixel_decoder.transformer.level_embed"]
    assert (level.weight_decay, level.kind) == (0.05, "decayed")  # a bare Parameter: decayed
    for name in ("query_feat", "query_embed", "level_embed"):
        assert by_name[f"sem_seg_head.predictor.{name}.weight"].weight_decay == 0.0
    assert by_name["sem_seg_head.predictor.mask_embed.layers.0.bias"].weight_decay == 0.05
    assert all((r.lr_multiplier == 0.1) == r.name.startswith("backbone.") for r in rules)


def test_one_group_per_tensor_with_its_lr_and_decay(r50_ade):
    cfg, model = r50_ade
    opt = build_adamw(model, 1e-4, cfg.solver)
    rules = param_rules(model, cfg.solver)
    assert len(opt.param_groups) == len(rules) == sum(1 for p in model.parameters())
    for g, r in zip(opt.param_groups, rules):
        assert g["params"] == [r.param]
        assert g["lr"] == g["initial_lr"] == 1e-4 * r.lr_multiplier
        assert g["weight_decay"] == r.weight_decay
        assert g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8


def test_trained_batch_norm_is_not_decayed():
    cfg = load_config("synthetic/base", ["model.backbone.norm=BN", "model.base_classes=9"])
    rules = param_rules(Mask2Former(cfg.model), cfg.solver)
    bn = [r for r in rules if r.name.startswith("backbone.") and ".norm." in r.name]
    assert len(bn) == 2 * 53 and all(r.weight_decay == 0.0 and r.kind == "norm" for r in bn)


def _merged_adamw(model, lr, solver):
    """The previous optimiser: one group per (lr, weight decay), same per-tensor rules."""
    groups: dict = {}
    for r in param_rules(model, solver):
        groups.setdefault((lr * r.lr_multiplier, r.weight_decay), []).append(r.param)
    return torch.optim.AdamW(
        [{"params": ps, "lr": a, "weight_decay": w} for (a, w), ps in groups.items()],
        lr=lr,
        foreach=True,
    )


def test_prompt_step_update_is_bitwise_the_grouped_one():
    """Per-tensor groups change no arithmetic: a prompt step's clipped AdamW updates equal the
    grouped optimiser's bit for bit."""
    cfg = load_config("synthetic/base")
    results = []
    for make in (build_adamw, _merged_adamw):
        torch.manual_seed(0)
        model = Mask2Former(dataclasses.replace(cfg.model, base_classes=9))
        add_step(model, 2, 5)
        params = freeze_for_step(model, 1)
        opt = make(model, 5e-4, cfg.solver)
        for it in range(3):
            g = torch.Generator().manual_seed(it)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            torch.nn.utils.clip_grad_norm_(params, 0.01)
            opt.step()
        results.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("schedule", ["poly", "constant"])
def test_schedule_values(schedule):
    solver = load_config(None, [f"solver.schedule={schedule}"]).solver
    n = 160000
    got = [lr_factor(solver, it, n) for it in (0, 1, n // 2, n - 1)]
    if schedule == "constant":
        assert got == [1.0, 1.0, 1.0, 1.0]
    else:
        # detectron2's WarmupPolyLR without warm-up, in its arithmetic
        assert got == [math.pow(1.0 - it / n, 0.9) for it in (0, 1, n // 2, n - 1)]
        assert got[0] == 1.0 and got[1] == pytest.approx(1 - 0.9 / n, rel=1e-9)
        assert got[2] == pytest.approx(0.5**0.9, rel=1e-15)
        assert got[3] == pytest.approx((1 / n) ** 0.9, rel=1e-9)


@pytest.mark.parametrize("schedule", ["poly", "constant"])
def test_training_applies_the_schedule(tiny_cfg, tmp_path, schedule):
    cfg = tiny_cfg(
        "solver.iterations=4",
        "solver.log_period=1",
        f"solver.schedule={schedule}",
        "solver.backbone_multiplier=1.0",
    )
    train, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    model = build_model(cfg, scenario, "eclipse", 0, set())
    train_step(
        model,
        cfg,
        scenario,
        plan_step(cfg, scenario, 0, "eclipse"),
        train,
        tmp_path,
        manifest_for(cfg, scenario, 0, "eclipse", model),
        progress=False,
    )
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    lr = cfg.solver.lr
    want = [lr * lr_factor(cfg.solver, it, 4) for it in range(4)]
    assert lrs == want
    assert (len(set(lrs)) == 1) == (schedule == "constant")


def test_prompt_step_keeps_frozen_batch_norm_statistics(tiny_cfg, tmp_path):
    """R101 semantic trains BN in step 0; prompt steps must not move its running statistics (the
    frozen trunk runs in eval mode), while step 0 does."""
    cfg = tiny_cfg("model.backbone.norm=BN", "solver.iterations=1", "continual.iterations=2")
    train, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    model = build_model(cfg, scenario, "eclipse", 0, set())
    stats = model.backbone.res3[0].conv2.norm.running_mean.clone()
    train_step(
        model,
        cfg,
        scenario,
        plan_step(cfg, scenario, 0, "eclipse"),
        train,
        tmp_path / "0",
        manifest_for(cfg, scenario, 0, "eclipse", model),
        progress=False,
    )
    after_step0 = model.backbone.res3[0].conv2.norm.running_mean.clone()
    assert not torch.equal(after_step0, stats)
    from eclipse_seg.continual import grow_for_step

    grow_for_step(model, scenario.classes_of_step(1), set(), "eclipse", cfg.continual.num_prompts)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    train_step(
        model,
        cfg,
        scenario,
        plan_step(cfg, scenario, 1, "eclipse"),
        train,
        tmp_path / "1",
        manifest_for(cfg, scenario, 1, "eclipse", model),
        progress=False,
    )
    assert all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())
    assert model.training and not model.backbone.training
