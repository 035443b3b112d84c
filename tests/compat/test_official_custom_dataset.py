"""Official checkpoints of any dataset: a categories file fixes the id, name and thing flag of each
model label (CONT.ORDER's value k = the file's k-th class); without one only ADE20K / COCO import."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from official_fixtures import TINY_OPTS, eval_opts, write_official_configs
from PIL import Image

from eclipse_seg.cli import main
from eclipse_seg.compat.official_checkpoint import build_official, load_official
from eclipse_seg.data.coco_panoptic import segments_from_id_map, write_coco_panoptic
from eclipse_seg.engine.build import load_model
from eclipse_seg.engine.checkpoint import load_checkpoint
from eclipse_seg.errors import ConfigError, DataError

# 7 classes in the dataset's registration order; ids neither contiguous nor from 1
CATEGORIES = [
    {"id": 12, "name": "road", "isthing": 0},
    {"id": 5, "name": "sky", "isthing": 0},
    {"id": 40, "name": "car", "isthing": 1},
    {"id": 7, "name": "person", "isthing": 1},
    {"id": 23, "name": "tree", "isthing": 0},
    {"id": 31, "name": "bicycle", "isthing": 1},
    {"id": 2, "name": "building", "isthing": 0},
]
ORDER = [3, 1, 6, 2, 7, 4, 5]  # official CONT.ORDER: positions 1..7 in the file
LABEL_IDS = [CATEGORIES[k - 1]["id"] for k in ORDER]  # model label -> dataset id
DATASET = [
    "DATASETS.TRAIN",
    "('mydata_panoptic_train',)",
    "DATASETS.TEST",
    "('mydata_panoptic_val',)",
]
# 3 base classes, then steps of 2: at CONT.TASK 2 the model knows all 7
OPTS = (
    eval_opts("ade_ps 100-10")
    + TINY_OPTS
    + DATASET
    + [
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "8",
        "CONT.ORDER",
        str(ORDER),
        "CONT.BASE_CLS",
        "3",
        "CONT.INC_CLS",
        "2",
        "CONT.TASK",
        "2",
        "CONT.NUM_PROMPTS",
        "4",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
        "10",
        "CONT.LOGIT_MANI_DELTAS",
        "[0.4, 0.5, 0.5]",
    ]
)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A random 7-class model in the official key layout, saved as an official .pth, plus the
    categories both as a list and inside a COCO panoptic JSON."""
    root = tmp_path_factory.mktemp("custom")
    cfg = write_official_configs(root)["ade_ps"]
    as_list = root / "categories.json"
    as_list.write_text(json.dumps(CATEGORIES))
    as_panoptic = root / "panoptic_train.json"
    as_panoptic.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    torch.manual_seed(0)
    model, *_ = build_official(cfg, OPTS, categories=as_list)
    with torch.no_grad():
        for p in model.parameters():  # prompts start equal: make every group distinct
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    pth = root / "model_final.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k != "thing_mask"}}, pth)
    images = [torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)]
    with torch.no_grad():
        ref = model(images)
    return {
        "root": root,
        "cfg": cfg,
        "pth": pth,
        "list": as_list,
        "panoptic": as_panoptic,
        "images": images,
        "ref": ref,
    }


def test_categories_fix_the_id_and_thing_flag_of_every_label(official):
    _, cfg, scenario, info, thing_ids = build_official(
        official["cfg"], OPTS, categories=official["list"]
    )
    assert list(scenario.order) == LABEL_IDS == [40, 12, 31, 5, 2, 7, 23]
    assert scenario.steps == (3, 2, 2) and info["step"] == 2
    assert thing_ids == {40, 7, 31}
    assert (cfg.data.dataset, cfg.data.catalog) == ("coco_panoptic", "")
    model = load_official(official["pth"], official["cfg"], OPTS, categories=official["panoptic"])
    assert model.thing_mask.tolist() == [True, False, True, False, False, True, False]
    with torch.no_grad():
        out = model(official["images"])
    assert torch.equal(out.pred_logits, official["ref"].pred_logits)
    assert torch.equal(out.pred_masks, official["ref"].pred_masks)


def test_official_thing_lookup_goes_by_position(official):
    """Officially label l is a thing when l + 1 is a thing's contiguous id (its position)."""
    model = load_official(
        official["pth"], official["cfg"], OPTS, categories=CATEGORIES, official_thing_lookup=True
    )
    things_at = {k for k, c in enumerate(CATEGORIES, start=1) if c["isthing"]}  # {3, 4, 6}
    assert model.thing_mask.tolist() == [label + 1 in things_at for label in range(7)]
    assert model.thing_mask.nonzero().flatten().tolist() == [2, 3, 5]


def test_import_official_keeps_names_and_ids(official, tmp_path, capsys):
    ours = tmp_path / "ours.pt"
    assert (
        main(
            [
                "import-official",
                "--weights",
                str(official["pth"]),
                "--config",
                str(official["cfg"]),
                "--categories",
                str(official["list"]),
                "--output",
                str(ours),
                "--opts",
                *OPTS,
            ]
        )
        == 0
    )
    assert "step 2" in capsys.readouterr().out
    manifest = load_checkpoint(ours)["manifest"]
    assert [c["name"] for c in manifest["categories"]] == [c["name"] for c in CATEGORIES]
    assert manifest["imported_from"]["categories"] == str(official["list"])
    model, _, scenario, _, _ = load_model(ours)
    assert [scenario.category_of(label) for label in range(7)] == LABEL_IDS
    assert sorted(manifest["thing_ids"]) == [7, 31, 40]
    with torch.no_grad():
        assert torch.equal(model(official["images"]).pred_logits, official["ref"].pred_logits)


def test_imported_model_is_scored_in_the_dataset_ids(official, tmp_path, monkeypatch):
    """`evaluate` on a COCO-panoptic dataset with the file's ids: no remapping by the user."""
    ours = tmp_path / "ours.pt"
    assert (
        main(
            [
                "import-official",
                "--weights",
                str(official["pth"]),
                "--config",
                str(official["cfg"]),
                "--categories",
                str(official["list"]),
                "--output",
                str(ours),
                "--opts",
                *OPTS,
            ]
        )
        == 0
    )
    data = tmp_path / "mydata"
    id_map = np.ones((48, 64), dtype=np.int64)  # road | car | tree stripes
    id_map[:, 20:40], id_map[:, 40:] = 2, 3
    rng = np.random.default_rng(0)
    for split in ("train", "val"):  # evaluate reads the val split (and opens the train JSON)
        (data / split / "images").mkdir(parents=True)
        images, annotations = [], []
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
                data / split / "images" / f"{k}.png"
            )
            images.append({"id": k, "file_name": f"{k}.png", "height": 48, "width": 64})
            annotations.append(
                {
                    "image_id": k,
                    "file_name": f"{k}.png",
                    "_id_map": id_map,
                    "segments_info": segments_from_id_map(id_map, {1: 12, 2: 40, 3: 23}),
                }
            )
        write_coco_panoptic(
            data / split / "panoptic.json",
            data / split / "panoptic",
            images,
            annotations,
            CATEGORIES,
        )
    monkeypatch.chdir(tmp_path)
    preds = tmp_path / "preds"
    assert (
        main(
            [
                "evaluate",
                "--weights",
                str(ours),
                "data.root=mydata",
                "--no-progress",
                "--predictions",
                str(preds),
                "--output",
                str(tmp_path / "summary.json"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert set(summary["per_class"]) == {str(c["id"]) for c in CATEGORIES}
    got = {
        a["image_id"]: sorted(s["category_id"] for s in a["segments_info"])
        for a in json.loads((preds / "predictions.json").read_text())["annotations"]
    }
    model, cfg, *_ = load_model(ours)
    image = torch.from_numpy(np.array(Image.open(data / "val" / "images" / "0.png"))).permute(
        2, 0, 1
    )
    labels = [
        s["label"]
        for s in model.predict(
            [image],
            object_mask_threshold=cfg.test.object_mask_threshold,
            overlap_threshold=cfg.test.overlap_threshold,
        )[0]["segments_info"]
    ]
    assert labels and got[0] == sorted(LABEL_IDS[label] for label in labels)


def test_unknown_dataset_needs_a_categories_file(official):
    with pytest.raises(ConfigError, match="categories file") as e:
        build_official(official["cfg"], OPTS)
    assert "mydata_panoptic_train" in str(e.value)


def test_class_count_must_match_the_checkpoint(official, tmp_path):
    six = tmp_path / "six.json"
    six.write_text(json.dumps(CATEGORIES[:6]))
    with pytest.raises(ConfigError, match=r"lists 6 classes but the checkpoint's model has 7"):
        load_official(official["pth"], official["cfg"], OPTS, categories=six)
    # a config that still has the ADE20K class count
    with pytest.raises(ConfigError, match="NUM_CLASSES"):
        build_official(
            official["cfg"], OPTS + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "151"], categories=CATEGORIES
        )
    with pytest.raises(ConfigError, match=r"CONT.ORDER' has 6 classes"):
        build_official(
            official["cfg"], OPTS + ["CONT.ORDER", "[3, 1, 6, 2, 7, 4]"], categories=CATEGORIES
        )
    with pytest.raises(ConfigError, match=r"outside 1\.\.7"):
        build_official(
            official["cfg"], OPTS + ["CONT.ORDER", "[3, 1, 6, 2, 7, 4, 9]"], categories=CATEGORIES
        )


def test_malformed_categories_file_names_the_field(official, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**CATEGORIES[0]}, {"id": 5, "name": "sky"}]))
    with pytest.raises(DataError, match=r"bad.json: categories\[1\].isthing: missing"):
        build_official(official["cfg"], OPTS, categories=bad)
    with pytest.raises(DataError, match="not found"):
        build_official(official["cfg"], OPTS, categories=tmp_path / "missing.json")


def test_semantic_custom_data_needs_png_value_ids(official):
    """Semantic training sets: CONT.ORDER holds label-PNG values, so ids must be 1..n in order."""
    opts = OPTS + ["DATASETS.TRAIN", "('mydata_sem_seg_train',)"]
    with pytest.raises(ConfigError, match="ids must be 1..7"):
        build_official(official["cfg"], opts, categories=CATEGORIES)
    png_ids = [{**c, "id": k} for k, c in enumerate(CATEGORIES, start=1)]
    _, cfg, scenario, _, _ = build_official(official["cfg"], opts, categories=png_ids)
    assert (cfg.data.dataset, cfg.data.num_classes) == ("semantic", 7)
    assert list(scenario.order) == ORDER
