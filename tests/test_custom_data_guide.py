"""docs/custom-data.md, walked: its quick-start commands and its config, run through the command
line on a generated dataset whose category ids are 7, 3, 42, 11 (neither contiguous nor from 1)."""

from __future__ import annotations

import glob
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from eclipse_seg.cli import main
from tests.conftest import TINY_MODEL
from tests.custom_data import CATEGORIES, make_mask_folder_dataset

GUIDE = Path(__file__).parents[1] / "docs" / "custom-data.md"
# the guide's model and image sizes are real ones; the walk shrinks them (tiny model, 64x64, a few
# iterations) through overrides, as a user would for a smoke run
SMALL = [o for o in TINY_MODEL if not o.startswith("continual.scenario=")] + [
    "data.base_size=64",
    "data.crop_size=64",
    "test.min_size=0",
    "test.max_size=0",
]


def guide_commands() -> list[list[str]]:
    """The `eclipse-seg ...` lines of the quick start's bash blocks, split as a shell would."""
    quick_start = GUIDE.read_text().split("\n## 1.")[0]
    lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", quick_start, re.DOTALL)
        for line in block.splitlines()
        if line.startswith("eclipse-seg ")
    ]
    return [shlex.split(line)[1:] for line in lines]


def guide_config() -> str:
    """The config of section 3 (the guide's first YAML block)."""
    return re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.DOTALL)[0]


def test_guide_config_and_categories_agree_with_the_test_data():
    cfg = yaml.safe_load(guide_config())
    assert cfg["data"]["root"] == "mydata" and cfg["data"]["dataset"] == "coco_panoptic"
    assert sorted(cfg["continual"]["order"]) == sorted(c["id"] for c in CATEGORIES)
    shown = json.loads(re.findall(r"```json\n(.*?)```", GUIDE.read_text(), re.DOTALL)[0])
    assert shown == CATEGORIES


@pytest.mark.slow
def test_the_custom_data_guide_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_mask_folder_dataset(tmp_path / "mydata", num_train=8, num_val=3, size=64, seed=2)
    (tmp_path / "mydata" / "config.yaml").write_text(guide_config())
    commands = guide_commands()
    assert [c[0] for c in commands] == [
        "convert-masks",
        "convert-masks",
        "check-data",
        "train",
        "evaluate",
        "predict",
    ]
    for argv in commands:
        argv = [
            x for token in argv for x in (sorted(glob.glob(token)) if "*" in token else [token])
        ]
        if argv[0] == "train":
            argv += SMALL + ["--no-progress"]
        if argv[0] == "evaluate":
            argv += [
                "test.min_size=0",
                "test.max_size=0",
                "--no-progress",
                "--output",
                "summary.json",
            ]
        assert main(argv) == 0, argv
        if argv[0] == "check-data":
            assert "no problems found" in capsys.readouterr().out

    ids = {str(c["id"]) for c in CATEGORIES}
    doc = json.loads((tmp_path / "mydata" / "val" / "panoptic.json").read_text())
    assert [c["id"] for c in doc["categories"]] == [7, 3, 42, 11]

    results = json.loads((tmp_path / "runs" / "mydata" / "results.json").read_text())
    assert results["class_order"] == [7, 42, 3, 11] and results["classes_per_step"] == [2, 2]
    steps = results["methods"]["eclipse"]["steps"]
    assert [set(e["per_class"]) for e in steps] == [{"7", "42"}, ids]  # scored by category id

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"]["step"] == 1 and set(summary["summary"]["per_class"]) == ids

    pred = json.loads((tmp_path / "predictions" / "predictions.json").read_text())
    assert [a["file_name"] for a in pred["annotations"]] == [
        "val_000.png",
        "val_001.png",
        "val_002.png",
    ]
    assert {c["name"] for c in pred["categories"]} == {"road", "sky", "car", "person"}
    predicted = {s["category_id"] for a in pred["annotations"] for s in a["segments_info"]}
    assert predicted <= {7, 42, 3, 11}
    assert len(list((tmp_path / "predictions" / "overlays").glob("*.png"))) == 3
