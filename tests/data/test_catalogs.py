import pytest

from eclipse_seg.data.catalogs import load_catalog, official_order, official_to_json_ids
from eclipse_seg.errors import ConfigError


def test_ade20k_catalog():
    cats = load_catalog("ade20k")
    assert len(cats) == 150
    assert [c["id"] for c in cats] == list(range(1, 151))
    assert [c["panoptic_json_id"] for c in cats] == list(range(150))
    # Mask2Former's ADE20K_150_CATEGORIES: 100 things, 50 stuff
    assert sum(c["isthing"] for c in cats) == 100
    assert (
        cats[0]["name"] == "wall"
        and cats[0]["isthing"] == 0
        and cats[0]["color"] == [120, 120, 120]
    )
    assert cats[12]["name"] == "person" and cats[12]["isthing"] == 1
    assert cats[-1]["name"] == "flag" and cats[-1]["color"] == [92, 0, 255]
    for c in cats:
        assert set(c) >= {"id", "name", "isthing", "color"}
        assert len(c["color"]) == 3 and all(0 <= v <= 255 for v in c["color"])


def test_coco_catalog():
    cats = load_catalog("coco")
    assert len(cats) == 133
    assert sum(c["isthing"] for c in cats) == 80
    assert [c["contiguous_id"] for c in cats] == list(range(1, 134))
    assert all(c["isthing"] for c in cats[:80]) and not any(c["isthing"] for c in cats[80:])
    assert cats[0]["id"] == 1 and cats[0]["name"] == "person"
    assert len({c["id"] for c in cats}) == 133


def test_official_orders():
    assert official_order("ade20k") == list(range(1, 151))
    order = official_order("coco")
    assert len(order) == 133 and sorted(order) == list(range(1, 134))
    m = official_to_json_ids("coco")
    assert m[1] == 1 and sorted(m.values()) == sorted(c["id"] for c in load_catalog("coco"))
    assert official_to_json_ids("ade20k")[1] == 0


def test_catalog_is_a_copy_and_unknown_name():
    load_catalog("coco")[0]["name"] = "changed"
    assert load_catalog("coco")[0]["name"] == "person"
    with pytest.raises(ConfigError, match="cityscapes"):
        load_catalog("cityscapes")
