"""Configs = scripts: every official scenario is a shipped config equal to the official table, and
`eclipse-seg train CONFIG --dry-run` prints the resolved recipe without writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from eclipse_seg.cli import main
from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.engine.recipe import official_differences, official_recipe_for
from eclipse_seg.model.backbone import WEIGHTS_ENV
from eclipse_seg.scenarios import OFFICIAL_BENCHMARKS, OFFICIAL_RECIPES

CONFIGS = Path(__file__).resolve().parents[2] / "eclipse_seg" / "configs"

# The official ECLIPSE scripts (script/{ade_ps,ade_ss,coco_ps}/*.sh), written out once more:
# base queries, step-0 iterations, prompts, iterations and lr of steps >= 1, evaluation deltas.
SCRIPTS = {
    ("ade20k-panoptic", "100-5"): (100, 160000, 10, 12000, 5e-4, [0.4] + [0.6] * 10),
    ("ade20k-panoptic", "100-10"): (100, 160000, 10, 16000, 5e-4, [0.4] + [0.5] * 5),
    ("ade20k-panoptic", "100-50"): (100, 160000, 50, 80000, 5e-4, [-0.4, -0.6]),
    ("ade20k-panoptic", "50-10"): (50, 80000, 10, 24000, 5e-4, [0.4] + [0.5] * 10),
    ("ade20k-panoptic", "50-20"): (50, 80000, 20, 32000, 5e-4, [0.4] + [0.5] * 5),
    ("ade20k-panoptic", "50-50"): (50, 80000, 50, 120000, 5e-4, [0.5, -0.4, -0.4]),
    ("ade20k-semantic", "100-5"): (100, 160000, 5, 12000, 1e-3, [0.1] + [0.8] * 10),
    ("ade20k-semantic", "100-10"): (100, 160000, 10, 24000, 1e-3, [0.1] + [0.7] * 5),
    ("ade20k-semantic", "100-50"): (100, 160000, 50, 120000, 1e-3, [0.0, -0.1]),
    ("coco-panoptic", "83-5"): (100, 240000, 10, 8000, 5e-4, [0.5] + [0.6] * 10),
    ("coco-panoptic", "83-10"): (100, 240000, 10, 32000, 5e-4, [0.5] + [0.6] * 5),
}


def test_table_matches_the_official_scripts():
    assert set(OFFICIAL_RECIPES) == set(SCRIPTS)
    for key, (queries, step0, prompts, iters, lr, deltas) in SCRIPTS.items():
        r = OFFICIAL_RECIPES[key]
        assert (r.base_queries, r.step0_iterations, r.prompts, r.iterations, r.lr) == (
            queries,
            step0,
            prompts,
            iters,
            lr,
        ), key
        assert list(r.deltas) == deltas, key
    b = OFFICIAL_BENCHMARKS
    assert (
        b["ade20k-panoptic"].batch_size,
        b["ade20k-semantic"].batch_size,
        b["coco-panoptic"].batch_size,
    ) == (8, 16, 16)
    assert b["ade20k-semantic"].norm == "SyncBN" and b["ade20k-panoptic"].norm == "FrozenBN"
    assert b["coco-panoptic"].schedule == "constant" and b["ade20k-semantic"].schedule == "poly"


@pytest.mark.parametrize("key", sorted(OFFICIAL_RECIPES))
def test_each_shipped_config_is_its_official_recipe(key):
    recipe = OFFICIAL_RECIPES[key]
    cfg = load_config(resolve_config(recipe.config))
    assert official_recipe_for(cfg) == recipe
    assert official_differences(cfg, recipe) == []


def test_every_shipped_real_config_is_in_the_table():
    shipped = {
        str(p.relative_to(CONFIGS).with_suffix(""))
        for p in CONFIGS.glob("*/*.yaml")
        if p.parent.name != "synthetic"
    }
    assert shipped == {r.config for r in OFFICIAL_RECIPES.values()}


def test_differences_are_named():
    cfg = load_config(
        resolve_config("ade20k/panoptic_r50"),
        ["continual.scenario=100-10", "model.backbone.weights=none"],
    )
    diffs = official_differences(cfg, official_recipe_for(cfg))
    assert "continual.iterations: 12000 (official 16000)" in diffs
    assert any(d.startswith("continual.deltas:") for d in diffs)
    assert "model.backbone.weights: 'none' (official 'R-50.pkl')" in diffs
    # deltas compare as applied: [0.4, 0.6] is the official [0.4, 0.6 x10]
    assert not [
        d
        for d in official_differences(
            load_config(resolve_config("ade20k/panoptic_r50")),
            OFFICIAL_RECIPES["ade20k-panoptic", "100-5"],
        )
    ]


def test_dry_run_prints_the_recipe_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    rc = main(["train", "ade20k/panoptic_r50", "--dry-run", "--output", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0
    assert list(tmp_path.iterdir()) == []
    flat = " ".join(out.split())  # long fields wrap
    assert "this config matches it" in flat
    assert f"R-50.pkl: NOT FOUND (looked in: {tmp_path / 'R-50.pkl'})" in flat
    lines = out.splitlines()
    header = next(i for i, x in enumerate(lines) if "weight decay  rule" in x)  # step 0's
    rows = [x.split() for x in lines[header + 1 : header + 5]]
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == [
        ("0.1", "0.05", "decayed", "53"),
        ("1", "0", "embedding", "3"),
        ("1", "0", "norm", "90"),
        ("1", "0.05", "decayed", "209"),
    ]
    assert "355 tensors: 262 with weight decay, 93 without" in out
    assert "it 0: 0.0001, it 1: 9.99994e-05, it 80000: 5.35887e-05, it 159999: 2.07153e-09" in out
    assert "28 tensors: 18 with weight decay, 10 without" in out  # a prompt step
    assert "dataset=coco_panoptic" in flat and "crop_size=" in flat

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "R-50.pkl").write_bytes(b"0" * 2048)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "w"))
    assert main(["train", "ade20k/panoptic_r50", "--dry-run", "--step", "0"]) == 0
    out = capsys.readouterr().out
    assert f"R-50.pkl: found {tmp_path / 'w' / 'R-50.pkl'}" in " ".join(out.split())
    assert "prompt" not in out


def test_dry_run_coco_has_a_constant_lr(capsys):
    assert main(["train", "coco/panoptic_r50", "--dry-run", "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "schedule      constant lr" in out
    assert "it 0: 0.0005, it 1: 0.0005, it 4000: 0.0005, it 7999: 0.0005" in out
