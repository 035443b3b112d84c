"""The synthetic dataset: deterministic, valid COCO panoptic, things with instances and occlusion,
stuff regions, and classes that pixel colour alone does not separate."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from eclipse_seg.data.coco_panoptic import CocoPanopticDataset
from eclipse_seg.data.panoptic_ids import rgb2id
from eclipse_seg.data.synthetic import (
    SYNTHETIC_CATEGORIES,
    SyntheticSpec,
    generate_image,
    make_synthetic,
)


def test_categories_mix_things_and_stuff():
    assert len(SYNTHETIC_CATEGORIES) >= 12
    things = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
    assert 4 <= len(things) <= len(SYNTHETIC_CATEGORIES) - 4
    first6 = SYNTHETIC_CATEGORIES[:6]
    assert any(c["isthing"] for c in first6) and not all(c["isthing"] for c in first6)


def test_generation_is_deterministic_per_seed():
    a = generate_image(np.random.default_rng([1, 0, 5]), SyntheticSpec())
    b = generate_image(np.random.default_rng([1, 0, 5]), SyntheticSpec())
    c = generate_image(np.random.default_rng([2, 0, 5]), SyntheticSpec())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_written_dataset_is_valid_coco_panoptic(tiny_data):
    doc = json.loads((tiny_data / "train" / "panoptic.json").read_text())
    for ann in doc["annotations"]:
        ids = rgb2id(np.asarray(Image.open(tiny_data / "train" / "panoptic" / ann["file_name"])))
        listed = {s["id"] for s in ann["segments_info"]}
        present = set(np.unique(ids).tolist()) - {0}
        assert present == listed
        for s in ann["segments_info"]:
            ys, xs = np.nonzero(ids == s["id"])
            assert s["area"] == len(ys)
            assert s["bbox"] == [
                int(xs.min()),
                int(ys.min()),
                int(xs.max() - xs.min() + 1),
                int(ys.max() - ys.min() + 1),
            ]
    ds = CocoPanopticDataset(
        tiny_data / "train" / "panoptic.json",
        tiny_data / "train" / "panoptic",
        tiny_data / "train" / "images",
    )
    sample = ds[0]
    assert sample.image.shape == (3, 64, 64) and sample.masks.shape[1:] == (64, 64)


def test_images_have_instances_occlusion_and_stuff():
    multi, touching, stuff_regions = 0, 0, 0
    thing_ids = {c["id"] for c in SYNTHETIC_CATEGORIES if c["isthing"]}
    for i in range(60):
        _, ids, seg_to_cat = generate_image(np.random.default_rng([0, 0, i]), SyntheticSpec())
        things = {s for s, c in seg_to_cat.items() if c in thing_ids}
        multi += len(things) >= 2
        stuff_regions += sum(1 for c in seg_to_cat.values() if c not in thing_ids)
        # two instances sharing a boundary: one was drawn over the other
        a, b = ids[:, :-1], ids[:, 1:]
        touching += bool(np.any((a != b) & np.isin(a, list(things)) & np.isin(b, list(things))))
    assert multi >= 15 and stuff_regions >= 100 and touching >= 5


def test_pixel_colour_does_not_separate_thing_classes(tmp_path):
    """Every thing colour is worn by two classes: a per-pixel colour lookup cannot be perfect."""
    make_synthetic(tmp_path, seed=0, num_train=80, num_val=0)
    ds = CocoPanopticDataset(
        tmp_path / "train" / "panoptic.json",
        tmp_path / "train" / "panoptic",
        tmp_path / "train" / "images",
    )
    thing_ids = {c["id"] for c in SYNTHETIC_CATEGORIES if c["isthing"]}
    classes_per_colour: dict[tuple, set] = {}
    for i in range(len(ds)):
        s = ds[i]
        img = s.image.numpy().transpose(1, 2, 0)
        for m, c in zip(s.masks.numpy(), s.category_ids.tolist()):
            if c in thing_ids:
                mean = img[m].mean(0)
                key = tuple(int(v) // 64 for v in mean)  # coarse colour bin of the instance
                classes_per_colour.setdefault(key, set()).add(c)
    assert any(len(v) >= 2 for v in classes_per_colour.values())
