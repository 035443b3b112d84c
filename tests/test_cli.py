"""The command line, end to end on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eclipse_seg.cli import main
from tests.conftest import TINY_MODEL


def test_make_synthetic_is_deterministic(tmp_path):
    args = ["--train", "3", "--val", "2", "--size", "48x40", "--seed", "7"]
    for name in ("a", "b"):
        assert main(["make-synthetic", "--out", str(tmp_path / name), *args]) == 0
    for rel in (
        "train/panoptic.json",
        "val/panoptic/val_000001.png",
        "train/images/train_000002.png",
    ):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    doc = json.loads((tmp_path / "a" / "train" / "panoptic.json").read_text())
    assert doc["images"][0]["height"] == 48 and doc["images"][0]["width"] == 40


@pytest.mark.slow
def test_train_evaluate_predict(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "synthetic/base",
        "--output",
        str(out),
        "--no-progress",
        *TINY_MODEL,
        f"data.root={tiny_data}",
        "data.max_val_images=3",
        "continual.scenario=6,3,3",
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["classes_per_step"] == [6, 3, 3]
    assert (out / "pq_over_steps.png").stat().st_size > 0
    weights = out / "eclipse" / "step_2" / "final.pt"
    assert (
        main(
            [
                "evaluate",
                "--weights",
                str(weights),
                "--no-progress",
                "data.max_val_images=2",
                "--output",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["step"]["step"] == 2 and ev["step"]["pq_old"] is not None
    image = tiny_data / "val" / "images" / "val_000000.png"
    assert (
        main(["predict", "--weights", str(weights), str(image), "--output", str(tmp_path / "pred")])
        == 0
    )
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert pred["annotations"][0]["file_name"] == "val_000000.png"
    assert (tmp_path / "pred" / "overlays" / "val_000000.png").exists()
    # a second job with another config may not write into the same directory
    assert main(args + ["solver.lr=0.5"]) == 2
    assert "different config" in capsys.readouterr().err


def test_unknown_config_key_is_named(capsys):
    assert main(["train", "synthetic/base", "solver.lrr=1"]) == 2
    assert "solver.lrr" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_quick(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(results["methods"]) == {"eclipse", "finetune", "joint"}
    assert len(results["methods"]["eclipse"]["steps"]) == 4
    assert len(results["methods"]["joint"]["steps"]) == 4
    # fine-tuning starts from ECLIPSE's step-0 model: identical step-0 numbers
    assert (
        results["methods"]["finetune"]["steps"][0]["pq_all"]
        == results["methods"]["eclipse"]["steps"][0]["pq_all"]
    )
    assert (tmp_path / "demo" / "pq_over_steps.png").exists()
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == 4
    assert (tmp_path / "demo" / "class_heatmap.png").stat().st_size > 0
    assert (
        "panels: ground truth, eclipse, finetune, joint"
        in (tmp_path / "demo" / "report.html").read_text()
    )


@pytest.mark.slow
def test_demo_is_deterministic_per_seed(tmp_path):
    """Same seed, same thread count: the same weights at every step and the same numbers; another
    seed: another world and other weights."""

    def demo(name: str, seed: int) -> tuple[dict, dict]:
        out = tmp_path / name
        args = ["demo", "--quick", "--out", str(out), "--seed", str(seed), "--threads", "1"]
        assert main(args + ["--no-progress"]) == 0
        weights = torch.load(out / "eclipse" / "step_3" / "final.pt", weights_only=False)["model"]
        return json.loads((out / "results.json").read_text()), weights

    (first, w1), (again, w2), (_, w3) = demo("a", 1), demo("b", 1), demo("c", 2)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert _same_pq(first, again)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def _same_pq(a: dict, b: dict) -> bool:
    """Every PQ figure equal (train times may differ)."""

    def pqs(r):
        return [
            {k: v for k, v in e.items() if k.startswith("pq") or k == "per_class"}
            for m in sorted(r["methods"])
            for e in r["methods"][m]["steps"]
        ]

    return pqs(a) == pqs(b)


@pytest.mark.parametrize("bad", [["train"], ["make-synthetic", "--out", "x", "--size", "10"]])
def test_bad_arguments_exit_nonzero(bad):
    with pytest.raises(SystemExit) as e:
        main(bad)
    assert e.value.code != 0


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            [
                "evaluate-panoptic",
                "--gt-json",
                "missing.json",
                "--gt-folder",
                "g",
                "--pred-json",
                "p.json",
                "--pred-folder",
                "p",
            ],
            "missing.json",
        ),
        (
            [
                "import-official",
                "--weights",
                "missing.pth",
                "--config",
                "missing.yaml",
                "--output",
                "o.pt",
            ],
            "missing",
        ),
        (
            [
                "check-data",
                "--quick",
                "synthetic/base",
                "data.dataset=coco_panoptic",
                "data.root=missing-root",
            ],
            "missing-root",
        ),
    ],
)
def test_pass_through_commands_accept_options_first(argv, expected, tmp_path, monkeypatch, capsys):
    """The documented commands start with an option; the top-level parser must hand it on, and the
    command's own error (a missing file) must come back, not argparse's 'unrecognized arguments'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(Path(__file__).parents[1] / "configs")
    code = main(argv)
    err = capsys.readouterr()
    assert code != 0
    assert "unrecognized arguments" not in err.err
    assert expected in err.err + err.out
