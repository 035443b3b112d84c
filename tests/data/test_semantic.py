from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eclipse_seg.data.semantic import SemanticDataset
from eclipse_seg.errors import DataError


def make(root: Path, labels: dict[str, np.ndarray], images=None):
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    for stem, lab in labels.items():
        h, w = lab.shape
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "img" / f"{stem}.jpg")
        Image.fromarray(lab.astype(np.uint8), mode="L").save(root / "ann" / f"{stem}.png")
    return root / "img", root / "ann"


def test_ade_mapping(tmp_path):
    lab = np.array([[0, 1, 150], [2, 0, 75]])
    ds = SemanticDataset(*make(tmp_path, {"b": lab, "a": lab[:, ::-1].copy()}))
    assert len(ds) == 2
    s = ds[1]
    assert s.file_name == "b.jpg"
    assert s.image.shape == (3, 2, 3) and s.image.dtype == torch.uint8
    assert s.label.dtype == torch.int64
    assert s.label.tolist() == [[255, 0, 149], [1, 255, 74]]
    assert ds[0].file_name == "a.jpg"


def test_out_of_range_value(tmp_path):
    ds = SemanticDataset(*make(tmp_path, {"x": np.array([[1, 151], [3, 200]])}))
    with pytest.raises(DataError, match=r"ann/x\.png: label values \[151, 200\] out of range"):
        ds[0]


def test_missing_partner_files(tmp_path):
    img, ann = make(tmp_path, {"x": np.ones((2, 2)), "y": np.ones((2, 2))})
    (ann / "y.png").unlink()
    with pytest.raises(DataError, match=r"no label .*y\.png"):
        SemanticDataset(img, ann)
    (img / "y.jpg").unlink()
    (img / "x.jpg").unlink()
    with pytest.raises(DataError, match=r"no '\*\.jpg' image files"):
        SemanticDataset(img, ann)
    Image.new("RGB", (2, 2)).save(img / "x.jpg")
    Image.new("L", (2, 2)).save(ann / "z.png")
    with pytest.raises(DataError, match=r"no image .*z\.jpg"):
        SemanticDataset(img, ann)
    with pytest.raises(DataError, match="nowhere: image folder not found"):
        SemanticDataset(tmp_path / "nowhere", ann)


def test_size_mismatch_and_corrupt(tmp_path):
    img, ann = make(tmp_path, {"x": np.ones((4, 4)), "y": np.ones((4, 4))})
    Image.new("L", (5, 4), 1).save(ann / "x.png")
    data = (ann / "y.png").read_bytes()
    (ann / "y.png").write_bytes(data[:20])
    ds = SemanticDataset(img, ann)
    with pytest.raises(DataError, match=r"x\.png: label size 5x4 .* differs from image"):
        ds[0]
    with pytest.raises(DataError, match=r"y\.png: cannot decode label PNG"):
        ds[1]
    Image.new("RGB", (4, 4)).save(ann / "y.png")
    with pytest.raises(DataError, match=r"y\.png: label PNG must be single-channel"):
        ds[1]


def test_offset_zero_keeps_ignore(tmp_path):
    lab = np.array([[0, 4, 255]])
    ds = SemanticDataset(*make(tmp_path, {"x": lab}), label_offset=0, num_classes=5)
    assert ds[0].label.tolist() == [[0, 4, 255]]


def test_as_panoptic_one_segment_per_class(tmp_path):
    from eclipse_seg.data.semantic import SemanticAsPanoptic, semantic_categories

    lab = np.array([[0, 1, 1], [3, 0, 1]])
    ds = SemanticAsPanoptic(
        SemanticDataset(*make(tmp_path, {"a": lab, "b": np.full((2, 3), 2)})),
        semantic_categories("ade20k"),
    )
    s = ds[0]
    assert s.category_ids.tolist() == [1, 3]  # category id = PNG value = class index + 1
    assert s.masks.tolist() == [
        [[False, True, True], [False, False, True]],
        [[False, False, False], [True, False, False]],
    ]
    assert s.id_map.tolist() == [[0, 1, 1], [3, 0, 1]]  # "other" is void: in no mask
    assert not s.iscrowd.any() and s.isthing.tolist() == [False, False]  # wall, floor: stuff
    assert ds.image_ids_with_any_category([2]) == [1]
    assert ds.image_ids_with_any_category([3, 150]) == [0]
    assert ds.load_label(0).tolist() == [[255, 0, 0], [2, 255, 0]]
    assert ds.load_label(0, unlabeled=150).tolist() == [[150, 0, 0], [2, 150, 0]]


def test_categories_without_catalog_need_a_count():
    from eclipse_seg.data.semantic import semantic_categories
    from eclipse_seg.errors import ConfigError

    assert [c["id"] for c in semantic_categories("", 3)] == [1, 2, 3]
    assert len(semantic_categories("ade20k")) == 150
    with pytest.raises(ConfigError, match="data.num_classes"):
        semantic_categories("", 0)
