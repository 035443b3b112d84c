import sys
from pathlib import Path

import pytest

from eclipse_seg.data.catalogs import official_order
from eclipse_seg.data.coco_panoptic import CocoPanopticDataset
from eclipse_seg.errors import ScenarioError
from eclipse_seg.scenarios import (
    OFFICIAL_SCENARIOS,
    Scenario,
    eval_class_groups,
    official_scenario,
    parse_scenario,
    restrict_to_classes,
    step_training_indices,
)

sys.path.insert(0, str(Path(__file__).parent / "data"))
from test_coco_panoptic import edit_json, make_dataset

EXPECTED = {
    ("ade20k", "100-5"): [100] + [5] * 10,
    ("ade20k", "100-10"): [100] + [10] * 5,
    ("ade20k", "100-50"): [100, 50],
    ("ade20k", "50-10"): [50] + [10] * 10,
    ("ade20k", "50-20"): [50] + [20] * 5,
    ("ade20k", "50-50"): [50, 50, 50],
    ("coco", "83-5"): [83] + [5] * 10,
    ("coco", "83-10"): [83] + [10] * 5,
}


@pytest.mark.parametrize("ds, name", list(EXPECTED))
def test_official_scenarios(ds, name):
    sc = official_scenario(ds, name)
    steps = EXPECTED[(ds, name)]
    assert list(sc.steps) == steps and sc.num_steps == len(steps)
    assert list(OFFICIAL_SCENARIOS[ds][name]) == steps
    order = official_order(ds)
    assert list(sc.order) == order
    start = 0
    for t, n in enumerate(steps):
        assert list(sc.classes_of_step(t)) == order[start : start + n]
        assert sc.new_classes(t) == sc.classes_of_step(t)
        assert list(sc.old_classes(t)) == order[:start]
        assert list(sc.seen_classes(t)) == order[: start + n]
        assert sc.labels_of_step(t) == range(start, start + n)
        g = eval_class_groups(sc, t)
        assert g == {
            "old": order[:start],
            "new": order[start : start + n],
            "all": order[: start + n],
        }
        start += n
    assert eval_class_groups(sc, 0)["old"] == []
    assert sc.label_of(order[0]) == 0 and sc.category_of(len(order) - 1) == order[-1]
    assert sc.step_of_label(steps[0]) == 1 and sc.step_of_label(steps[0] - 1) == 0


def test_coco_83_5_first_step_and_json_ids():
    sc = official_scenario("coco", "83-5")
    assert sc.classes_of_step(0)[:3] == (1, 3, 10)
    assert sc.classes_of_step(1) == (12, 101, 108, 125, 123)
    assert sc.classes_of_step(10) == (72, 113, 44, 31, 4)
    js = official_scenario("coco", "83-5", id_space="json")
    assert js.steps == sc.steps and len(set(js.order)) == 133 and max(js.order) == 200
    ade = official_scenario("ade20k", "100-50", id_space="json")
    assert ade.order == tuple(range(150))


def test_custom_lists_and_labels():
    order = [10, 20, 30, 40, 50, 60]
    for spec in ("3,2,1", "[3, 2, 1]", " 3 ,2,1 "):
        sc = parse_scenario(spec, order)
        assert sc.steps == (3, 2, 1) and sc.name == "3,2,1"
    sc = parse_scenario("4-1", order)
    assert sc.steps == (4, 1, 1)
    assert sc.label_of(50) == 4 and sc.category_of(4) == 50 and sc.step_of_label(4) == 1
    assert sc.step_of_class(60) == 2
    assert sc.old_classes(2) == (10, 20, 30, 40, 50) and sc.new_classes(2) == (60,)
    assert parse_scenario("6", order).num_steps == 1
    assert parse_scenario("6-2", order).steps == (6,)


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("4-3", "do not divide"),
        ("7-1", "exceeds"),
        ("0-2", "positive"),
        ("3,2", "sum to 5 .* 6 classes"),
        ("3,2,2", "sum to 7"),
        ("3,0,3", "positive"),
        ("3,-1,4", "positive"),
        ("abc", "malformed"),
        ("3-2-1", "malformed"),
        ("[3,3", "malformed"),
        ("", "malformed"),
        ("3,,3", "malformed"),
    ],
)
def test_parse_errors(spec, msg):
    with pytest.raises(ScenarioError, match=msg):
        parse_scenario(spec, [1, 2, 3, 4, 5, 6])


def test_scenario_errors():
    with pytest.raises(ScenarioError, match="duplicate class ids \\[2\\]"):
        parse_scenario("2,2", [1, 2, 2, 3])
    with pytest.raises(ScenarioError, match="must be equal"):
        Scenario("x", (1, 2, 3), (1, 1))
    with pytest.raises(ScenarioError, match="empty"):
        parse_scenario("1", [])
    sc = parse_scenario("2,1", [5, 6, 7])
    with pytest.raises(ScenarioError, match="step 2 out of range"):
        sc.classes_of_step(2)
    with pytest.raises(ScenarioError, match="category id 9"):
        sc.label_of(9)
    with pytest.raises(ScenarioError, match="label 3 out of range"):
        sc.category_of(3)
    with pytest.raises(ScenarioError, match="not an official"):
        official_scenario("ade20k", "100-7")
    with pytest.raises(ScenarioError, match="unknown catalog"):
        official_scenario("voc", "15-5")


def test_overlap_mode(tmp_path):
    # image 0: grass, cat, dog; image 1: grass, cat; image 2: grass, cat, crowd dog
    make_dataset(tmp_path, n=3, seg_cats=[{}, {2: None}, {}])
    edit_json(tmp_path, lambda d: d["annotations"][2]["segments_info"][2].update(iscrowd=1))
    ds = CocoPanopticDataset(tmp_path / "pan.json", tmp_path / "pan", tmp_path / "images")
    sc = parse_scenario("1,1,1", [7, 1, 2])
    assert step_training_indices(ds, sc, 0) == [0, 1, 2]
    assert step_training_indices(ds, sc, 1) == [0, 1, 2]
    assert step_training_indices(ds, sc, 2) == [0]  # the crowd dog of image 2 does not count

    s = ds[0]
    r = restrict_to_classes(s, sc.classes_of_step(2))
    assert r.category_ids.tolist() == [2] and r.masks.shape[0] == 1
    assert r.segment_ids.tolist() == [70000] and r.isthing.tolist() == [True]
    assert r.id_map is s.id_map and r.segments_info is s.segments_info  # raw GT unchanged
    assert s.category_ids.tolist() == [7, 1, 2]  # original untouched
    assert restrict_to_classes(s, []).masks.shape == (0,) + tuple(s.masks.shape[1:])
    assert restrict_to_classes(s, sc.seen_classes(1)).category_ids.tolist() == [7, 1]

    bad = parse_scenario("1,2", [7, 1, 99])
    with pytest.raises(ScenarioError, match="class ids \\[99\\] are not categories"):
        step_training_indices(ds, bad, 1)
