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
