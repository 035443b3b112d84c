"""Training-loop services: periodic evaluation and JSON-lines logs, the shipped configs."""

from __future__ import annotations

import json

import pytest

from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.engine.build import build_datasets, build_model, build_scenario, manifest_for
from eclipse_seg.engine.train import plan_step, train_step


def test_periodic_evaluation_is_logged(tiny_cfg, tmp_path):
    cfg = tiny_cfg("solver.iterations=4", "solver.eval_period=2", "solver.log_period=1")
    train, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    model = build_model(cfg, scenario, "eclipse", 0, set())
    calls = []

    def evaluate():
        calls.append(model.training)
        return {"pq_all": 12.5}

    train_step(
        model,
        cfg,
        scenario,
        plan_step(cfg, scenario, 0, "eclipse"),
        train,
        tmp_path,
        manifest_for(cfg, scenario, 0, "eclipse", model),
        progress=False,
        evaluate_fn=evaluate,
    )
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/pq_all" in r]
    assert [r["iteration"] for r in evals] == [2]  # not at the end: the runner evaluates then
    assert len(calls) == 1 and model.training
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "name,steps",
    [
        ("ade20k/panoptic_r50", 11),
        ("coco/panoptic_r50", 11),
        ("ade20k/semantic_r101", 11),
        ("synthetic/base", 4),
    ],
)
def test_shipped_configs_load(name, steps):
    from eclipse_seg.data.catalogs import official_order
    from eclipse_seg.scenarios import parse_scenario

    cfg = load_config(resolve_config(name))
    order = official_order(cfg.data.catalog) if cfg.data.catalog else list(range(1, 13))
    scenario = parse_scenario(cfg.continual.scenario, order)
    assert scenario.num_steps == steps
    assert cfg.model.base_classes == 0  # taken from the scenario when the model is built
