"""The shipped ADE20K / COCO configs on tiny datasets in the real layouts, found through
ECLIPSE_DATA: two training iterations per step and evaluation end to end, and the errors a user
with misplaced, missing or corrupt files gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eclipse_seg.cli import main
from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.engine.check_data import preflight
from eclipse_seg.errors import DataError
from tests.conftest import TINY_MODEL
from tests.real_layouts import (
    SIZE,
    make_ade20k_panoptic,
    make_ade20k_semantic,
    make_coco_panoptic,
)

SMALL = [
    *TINY_MODEL,
    "data.train_short_sides=[64]",
    "data.train_crop_size=64",
    "test.min_size=64",
    "test.max_size=96",
    "solver.iterations=2",
    "continual.iterations=2",
]
SMALL += ["model.backbone.weights=none"]  # tiny widths: no ImageNet file fits; random on purpose


@pytest.mark.parametrize(
    "config, make, scenario, metric",
    [
        ("ade20k/panoptic_r50", make_ade20k_panoptic, "100-50", "pq"),
        ("coco/panoptic_r50", make_coco_panoptic, "83-50", "pq"),
        ("ade20k/semantic_r101", make_ade20k_semantic, "100-50", "miou"),
    ],
)
@pytest.mark.slow
def test_train_evaluate_predict(config, make, scenario, metric, tmp_path, monkeypatch):
    data = make(tmp_path / "data")
    monkeypatch.setenv("ECLIPSE_DATA", str(data))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                config,
                "--output",
                str(out),
                "--no-progress",
                *SMALL,
                f"continual.scenario={scenario}",
            ]
        )
        == 0
    )
    rows = json.loads((out / "results.json").read_text())["methods"]["eclipse"]["steps"]
    assert [r["step"] for r in rows] == [0, 1] and rows[1][f"{metric}_old"] is not None
    weights = out / "eclipse" / "step_1" / "final.pt"
    assert (
        main(
            [
                "evaluate",
                "--weights",
                str(weights),
                "--no-progress",
                "--output",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["summary"]["num_images"] == 2 and ev["step"][f"{metric}_all"] is not None
    image = next((data).rglob("*.jpg"))
    assert (
        main(["predict", "--weights", str(weights), str(image), "--output", str(tmp_path / "pred")])
        == 0
    )
    # inferred at 64x85 (test.min_size 64), written at the image's own 48x64
    assert Image.open(tmp_path / "pred" / "panoptic" / f"{image.stem}.png").size == SIZE[::-1]
    if metric == "miou":
        assert Image.open(tmp_path / "pred" / "semantic" / f"{image.stem}.png").size == SIZE[::-1]


def _semantic_cfg(*extra):
    return load_config(resolve_config("ade20k/semantic_r101"), list(extra))


def test_wrong_data_root_names_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ECLIPSE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        preflight(_semantic_cfg())
    folder = tmp_path / "nowhere" / "ADEChallengeData2016" / "annotations" / "training"
    assert f"{folder}: label folder not found" in str(e.value)
    assert f"resolved against ECLIPSE_DATA={tmp_path / 'nowhere'}" in str(e.value)
    monkeypatch.delenv("ECLIPSE_DATA")
    with pytest.raises(DataError, match="ECLIPSE_DATA is not set"):
        preflight(_semantic_cfg())


def test_missing_panoptic_json_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ECLIPSE_DATA", str(make_ade20k_panoptic(tmp_path)))
    (tmp_path / "ADEChallengeData2016" / "ade20k_panoptic_val.json").unlink()
    with pytest.raises(DataError, match=r"ade20k_panoptic_val\.json: panoptic JSON file not found"):
        preflight(load_config(resolve_config("ade20k/panoptic_r50"), ["continual.scenario=100-50"]))


def test_semantic_problems_name_file_and_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ECLIPSE_DATA", str(make_ade20k_semantic(tmp_path)))
    labels = tmp_path / "ADEChallengeData2016" / "annotations" / "training"
    (labels / "ADE_train_00000000.png").unlink()
    with pytest.raises(DataError, match=r"ADE_train_00000000\.png: label PNG not found for image"):
        preflight(_semantic_cfg("continual.scenario=100-50"))
    Image.fromarray(np.full(SIZE, 200, np.uint8), mode="L").save(labels / "ADE_train_00000000.png")
    (labels / "ADE_train_00000001.png").write_bytes(
        (labels / "ADE_train_00000002.png").read_bytes()[:40]
    )
    Image.fromarray(np.ones((8, 8), np.uint8), mode="L").save(labels / "ADE_train_00000003.png")
    assert main(["check-data", "ade20k/semantic_r101", "continual.scenario=100-50"]) == 1
    out = capsys.readouterr().out
    assert "ADE_train_00000000.png: label values [200] out of range" in out
    assert "ADE_train_00000001.png: cannot decode label PNG" in out
    assert "ADE_train_00000003.png: label size 8x8 (WxH) differs from the image" in out
    assert f"resolved against ECLIPSE_DATA={tmp_path}" in out


def test_semantic_step_without_training_image_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ECLIPSE_DATA", str(make_ade20k_semantic(tmp_path)))
    # every training map holds ADE ids 1, 6, 120: scenario 100-5's steps 2..10 have no image
    assert main(["check-data", "ade20k/semantic_r101"]) == 1
    assert "step 2 of scenario 100-5: no training image" in capsys.readouterr().out
