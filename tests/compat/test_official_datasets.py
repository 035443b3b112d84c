"""An imported official model speaks the dataset's ids: panoptic JSON ids (ADE20K 0..149, COCO's
own ids) for panoptic configs, ADE ids 1..150 for semantic ones, so `eclipse-seg evaluate` scores
it on the real layouts without any remapping by the user."""

from __future__ import annotations

import json

import pytest
import torch
from official_fixtures import TINY_OPTS, eval_opts, write_official_configs

from eclipse_seg.cli import main
from eclipse_seg.compat.official_checkpoint import build_official
from eclipse_seg.data.catalogs import load_catalog, official_order, official_to_json_ids
from eclipse_seg.engine.build import load_model
from tests.real_layouts import make_ade20k_panoptic


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    return write_official_configs(tmp_path_factory.mktemp("official"))


def test_ade20k_panoptic_order_and_things_in_json_ids(configs):
    _, cfg, scenario, _, thing_ids = build_official(
        configs["ade_ps"], eval_opts("ade_ps 100-50") + TINY_OPTS
    )
    assert cfg.data.dataset == "coco_panoptic"
    assert list(scenario.order) == list(range(150))  # ADE id k is JSON id k - 1
    assert thing_ids == {c["panoptic_json_id"] for c in load_catalog("ade20k") if c["isthing"]}


def test_coco_panoptic_order_and_things_in_coco_ids(configs):
    _, cfg, scenario, _, thing_ids = build_official(
        configs["coco_ps"], eval_opts("coco_ps 83-10") + TINY_OPTS
    )
    to_coco = official_to_json_ids("coco")
    assert list(scenario.order) == [to_coco[c] for c in official_order("coco")]
    assert scenario.order[0] == 1 and 200 in scenario.order  # person; wall-other (contiguous 133)
    assert thing_ids == {c["id"] for c in load_catalog("coco") if c["isthing"]}


def test_ade20k_semantic_keeps_ade_ids(configs):
    _, cfg, scenario, _, _ = build_official(
        configs["ade_ss"], eval_opts("ade_ss 100-50") + TINY_OPTS
    )
    assert cfg.data.dataset == "semantic"
    assert list(scenario.order) == list(range(1, 151))


def test_imported_checkpoint_evaluates_on_the_ade20k_panoptic_layout(
    configs, tmp_path, monkeypatch
):
    opts = eval_opts("ade_ps 100-50") + TINY_OPTS
    torch.manual_seed(0)
    model, *_ = build_official(configs["ade_ps"], opts)
    weights = tmp_path / "model_final.pth"
    torch.save(
        {"model": {k: v for k, v in model.state_dict().items() if k != "thing_mask"}}, weights
    )
    ours = tmp_path / "ours.pt"
    assert (
        main(
            [
                "import-official",
                "--weights",
                str(weights),
                "--config",
                str(configs["ade_ps"]),
                "--output",
                str(ours),
                "--opts",
                *opts,
            ]
        )
        == 0
    )
    monkeypatch.setenv("ECLIPSE_DATA", str(make_ade20k_panoptic(tmp_path / "data")))
    preds = tmp_path / "preds"
    assert (
        main(
            [
                "evaluate",
                "ade20k/panoptic_r50",
                "test.min_size=64",
                "test.max_size=96",
                "--weights",
                str(ours),
                "--no-progress",
                "--predictions",
                str(preds),
                "--output",
                str(tmp_path / "summary.json"),
            ]
        )
        == 0
    )
    gt_ids = {c["panoptic_json_id"] for c in load_catalog("ade20k")}
    predicted = {
        s["category_id"]
        for a in json.loads((preds / "predictions.json").read_text())["annotations"]
        for s in a["segments_info"]
    }
    assert predicted and predicted <= gt_ids
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"]["step"] == 1 and summary["step"]["pq_all"] is not None
    _, _, scenario, _, _ = load_model(ours)  # what evaluation maps labels with
    assert scenario.category_of(0) == 0 and scenario.category_of(149) == 149  # wall, flag
