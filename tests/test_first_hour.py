"""What a new user meets in their first hour, at the command line: no dead end after a mistake,
one-line errors for unavailable devices, `predict` output that `evaluate-panoptic` scores like
`evaluate`, readable results."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from eclipse_seg.cli import main
from eclipse_seg.engine.build import load_model
from tests.conftest import TINY_MODEL


def _train_args(tiny_data, out, *extra):
    return [
        "train",
        "synthetic/base",
        "--output",
        str(out),
        "--no-progress",
        *TINY_MODEL,
        f"data.root={tiny_data}",
        "data.max_val_images=4",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny 6-3-3 run: its step-1 checkpoint and output folder."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(_train_args(tiny_data, out, "continual.scenario=6,3,3", "--step", "0")) == 0
    assert main(_train_args(tiny_data, out, "continual.scenario=6,3,3", "--step", "1")) == 0
    return out / "eclipse" / "step_1" / "final.pt", out


@pytest.mark.slow
def test_a_bad_scenario_leaves_nothing_behind(tiny_data, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(_train_args(tiny_data, out, "--scenario", "6,3,4")) == 2
    err = capsys.readouterr().err
    assert "6,3,4" in err and "sum to 13" in err and "e.g. 6,3,3" in err  # a scenario error
    assert "the data of this config" not in err and "ECLIPSE_DATA" not in err
    assert not out.exists()
    # the corrected command goes through without --overwrite
    assert (
        main(
            _train_args(
                tiny_data, out, "--scenario", "6,6", "solver.iterations=1", "continual.iterations=1"
            )
        )
        == 0
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_unavailable_device_is_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(_train_args(tiny_data, out, "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA was requested" in err[0] and "--device cpu" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_no_progress_prints_a_line_per_log_period(trained, tiny_data, tmp_path, capsys):
    assert (
        main(
            _train_args(
                tiny_data,
                tmp_path / "r",
                "--scenario",
                "6,6",
                "--step",
                "0",
                "solver.iterations=2",
                "solver.log_period=1",
                "--threads",
                "1",
            )
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "1 CPU thread (--threads)" in err
    assert "iteration 1/2" in err and "iteration 2/2" in err and "loss" in err


@pytest.mark.slow
def test_outputs_are_readable_by_others(trained):
    weights, out = trained
    for path in (weights, out / "results.json"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044, path


@pytest.mark.slow
def test_predict_scores_like_evaluate(trained, tiny_data, tmp_path, capsys):
    """predict's files, scored by evaluate-panoptic against the ground truth, give evaluate's PQ;
    and they are the very maps `evaluate --predictions` writes."""
    weights, _ = trained
    val = tiny_data / "val"
    assert (
        main(
            [
                "evaluate",
                "--weights",
                str(weights),
                "--no-progress",
                "data.max_val_images=0",
                "--predictions",
                str(tmp_path / "ev"),
                "--output",
                str(tmp_path / "ev.json"),
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "ev.json").read_text())
    assert (
        main(
            [
                "predict",
                "--weights",
                str(weights),
                str(val / "images"),
                "--output",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    gt = json.loads((val / "panoptic.json").read_text())
    assert len(pred["annotations"]) == len(gt["annotations"])
    assert {c["id"] for c in pred["categories"]} == {c["id"] for c in gt["categories"]}
    for ann in gt["annotations"]:  # image by image, the same maps as evaluate --predictions
        a = np.asarray(Image.open(tmp_path / "ev" / "panoptic" / ann["file_name"]))
        b = np.asarray(Image.open(tmp_path / "pred" / "panoptic" / ann["file_name"]))
        assert np.array_equal(a, b), ann["file_name"]
    # predict names images by file stem; map them to the ground truth's ids to score them
    stem_to_id = {a["file_name"].rsplit(".", 1)[0]: a["image_id"] for a in gt["annotations"]}
    for a in pred["annotations"]:
        a["image_id"] = stem_to_id[a["image_id"]]
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    groups = evaluated["summary"]["groups"]
    scenario = load_model(weights).scenario
    spec = ",".join(
        f"{g}:" + "+".join(str(c) for c in scenario.classes_of_step(t))
        for g, t in (("old", 0), ("new", 1))
    )
    assert (
        main(
            [
                "evaluate-panoptic",
                "--gt-json",
                str(val / "panoptic.json"),
                "--gt-folder",
                str(val / "panoptic"),
                "--pred-json",
                str(tmp_path / "pred.json"),
                "--pred-folder",
                str(tmp_path / "pred" / "panoptic"),
                "--class-groups",
                spec,
                "--output",
                str(tmp_path / "pq.json"),
            ]
        )
        == 0
    )
    scored = json.loads((tmp_path / "pq.json").read_text())
    assert scored["unit"] == evaluated["unit"] == "points"
    assert scored["groups"]["old"]["pq"] == pytest.approx(groups["old"]["pq"], abs=1e-3)
    assert scored["groups"]["new"]["pq"] == pytest.approx(groups["new"]["pq"], abs=1e-3)


@pytest.mark.slow
def test_predict_checks_every_input_before_writing(trained, tiny_data, tmp_path, capsys):
    weights, _ = trained
    good = tiny_data / "val" / "images" / "val_000000.png"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert (
        main(
            [
                "predict",
                "--weights",
                str(weights),
                str(good),
                str(bad),
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_needs_no_dataset(trained, tiny_data, tmp_path, monkeypatch):
    """Names and colours come from the checkpoint: run from elsewhere, nothing is generated."""
    weights, _ = trained
    monkeypatch.chdir(tmp_path)
    image = tiny_data / "val" / "images" / "val_000001.png"
    assert main(["predict", "--weights", str(weights), str(image), "--output", "o"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    pred = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert (
        pred["images"][0]["id"] == "val_000001"
        and pred["annotations"][0]["image_id"] == "val_000001"
    )
    assert {c["name"] for c in pred["categories"]} >= {"disk", "sky"}


@pytest.mark.slow
def test_evaluate_prints_one_table(trained, capsys):
    weights, _ = trained
    assert main(["evaluate", "--weights", str(weights), "--no-progress", "--per-class"]) == 0
    out = capsys.readouterr().out
    for row in ("old classes", "new classes", "all seen", "seen things", "seen stuff"):
        assert row in out
    assert "All" not in out and "None" not in out
    assert "PQ (points): old" in out


@pytest.mark.slow
def test_evaluate_refuses_foreign_categories(trained, tmp_path, capsys):
    weights, _ = trained
    main(["make-synthetic", "--out", str(tmp_path / "d"), "--train", "2", "--val", "2"])
    doc = json.loads((tmp_path / "d" / "val" / "panoptic.json").read_text())
    for c in doc["categories"]:
        c["id"] += 100
    for a in doc["annotations"]:
        for s in a["segments_info"]:
            s["category_id"] += 100
    (tmp_path / "d" / "val" / "panoptic.json").write_text(json.dumps(doc))
    assert (
        main(
            ["evaluate", "--weights", str(weights), "--no-progress", f"data.root={tmp_path / 'd'}"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "are not categories of this validation set" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--version"]])
def test_version(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "eclipse-seg 0." in capsys.readouterr().out


def test_make_synthetic_rejects_negative_counts(capsys):
    with pytest.raises(SystemExit) as e:
        main(["make-synthetic", "--out", "x", "--train", "-1"])
    assert e.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_unknown_config_name_lists_the_shipped_ones(capsys):
    assert main(["train", "synthetic/bas"]) == 2
    err = capsys.readouterr().err
    assert "synthetic/base" in err and "ade20k/panoptic_r50" in err


def test_plot_of_one_step_has_one_panel(tmp_path):
    from eclipse_seg.engine.results import plot_results

    results = {
        "scenario": "12",
        "classes_per_step": [12],
        "methods": {
            "eclipse": {"steps": [{"step": 0, "pq_old": None, "pq_new": 40.0, "pq_all": 40.0}]}
        },
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_results(results, tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").size[0] < 600  # one panel, not two


def test_make_synthetic_rerun_leaves_no_stale_files(tmp_path):
    out = tmp_path / "d"
    assert main(["make-synthetic", "--out", str(out), "--train", "3", "--val", "2"]) == 0
    assert main(["make-synthetic", "--out", str(out), "--train", "1", "--val", "1"]) == 0
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["train_000000.png"]
    assert sorted(p.name for p in (out / "val" / "panoptic").iterdir()) == ["val_000000.png"]
