import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eclipse_seg.data.coco_panoptic import (
    CocoPanopticDataset,
    segments_from_id_map,
    write_coco_panoptic,
    write_panoptic_png,
)
from eclipse_seg.errors import DataError

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "coco_panoptic_sample"
H, W = 6, 8
CATS = [
    {"id": 1, "name": "cat", "isthing": 1, "color": [200, 0, 0]},
    {"id": 2, "name": "dog", "isthing": 1, "color": [0, 200, 0]},
    {"id": 7, "name": "grass", "isthing": 0, "color": [0, 0, 200]},
]


def _id_map(k: int) -> tuple[np.ndarray, dict]:
    ids = np.full((H, W), 300 + k, dtype=np.int64)  # grass background
    ids[1:3, 1:4] = 1000 + k  # cat
    ids[4:6, 5:8] = 70000 + k  # dog (uses the G/B channels)
    ids[0, 7] = 0  # void
    return ids, {300 + k: 7, 1000 + k: 1, 70000 + k: 2}


def make_dataset(root: Path, n: int = 2, seg_cats=None):
    images, anns = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ids, s2c = _id_map(k)
        if seg_cats is not None:
            s2c = {sid: seg_cats[k].get(c, c) for sid, c in s2c.items()}
            s2c = {sid: c for sid, c in s2c.items() if c is not None}
            for sid in list(_id_map(k)[1]):
                if sid not in s2c:
                    ids[ids == sid] = 0
        img = np.random.default_rng(k).integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{k}.png")
        images.append({"id": k, "file_name": f"im{k}.png", "height": H, "width": W})
        anns.append(
            {
                "image_id": k,
                "file_name": f"im{k}.png",
                "segments_info": segments_from_id_map(ids, s2c),
                "_id_map": ids,
            }
        )
    write_coco_panoptic(root / "pan.json", root / "pan", images, anns, CATS)
    return root / "pan.json", root / "pan", root / "images"


def open_ds(root: Path, **kw) -> CocoPanopticDataset:
    return CocoPanopticDataset(root / "pan.json", root / "pan", root / "images", **kw)


def edit_json(root: Path, fn):
    doc = json.loads((root / "pan.json").read_text())
    fn(doc)
    (root / "pan.json").write_text(json.dumps(doc))


# ---------------------------------------------------------------------------------------------
def test_segments_from_id_map_area_bbox():
    ids = np.zeros((5, 6), dtype=np.int64)
    ids[1:4, 2:5] = 7  # 3x3 block at x=2..4, y=1..3
    ids[0, 0] = 9
    ids[4, 5] = 9  # spread: x 0..5, y 0..4
    segs = segments_from_id_map(ids, {7: 3, 9: 4, 11: 5}, iscrowd={9: 1})
    assert segs == [
        {"id": 7, "category_id": 3, "iscrowd": 0, "area": 9, "bbox": [2, 1, 3, 3]},
        {"id": 9, "category_id": 4, "iscrowd": 1, "area": 2, "bbox": [0, 0, 6, 5]},
    ]  # 11 has no pixel: left out
    with pytest.raises(DataError, match=r"\[9\]"):
        segments_from_id_map(ids, {7: 3})


def test_write_and_load_tiny(tmp_path):
    make_dataset(tmp_path)
    ds = open_ds(tmp_path)
    assert len(ds) == 2 and ds.image_ids == [0, 1]
    assert set(ds.category_by_id) == {1, 2, 7}
    s = ds[1]
    assert s.image.shape == (3, H, W) and s.image.dtype == torch.uint8
    assert s.masks.shape == (3, H, W) and s.masks.dtype == torch.bool
    assert s.segment_ids.tolist() == [301, 1001, 70001]
    assert s.category_ids.tolist() == [7, 1, 2]
    assert s.isthing.tolist() == [False, True, True]
    assert s.iscrowd.tolist() == [False, False, False]
    assert int(s.masks.sum()) == H * W - 1  # one void pixel
    assert not s.masks.sum(0).gt(1).any()
    assert s.id_map.dtype == np.int64 and s.id_map[0, 7] == 0
    assert (s.height, s.width, s.file_name, s.image_id) == (H, W, "im1.png", 1)
    np.testing.assert_array_equal(s.image.permute(1, 2, 0).numpy(), ds.load_image(1))
    # writer leaves no temp files behind and no "_id_map" in the JSON
    assert sorted(p.name for p in (tmp_path / "pan").iterdir()) == ["im0.png", "im1.png"]
    assert "_id_map" not in (tmp_path / "pan.json").read_text()
    # subset by image id
    assert open_ds(tmp_path, image_ids=[1]).image_ids == [1]
    with pytest.raises(DataError, match="42"):
        open_ds(tmp_path, image_ids=[42])


def test_image_ids_with_any_category_ignores_crowd(tmp_path):
    make_dataset(tmp_path, n=3, seg_cats=[{}, {2: None}, {}])
    edit_json(tmp_path, lambda d: d["annotations"][2]["segments_info"][2].update(iscrowd=1))
    ds = open_ds(tmp_path)
    assert ds.image_ids_with_any_category([2]) == [0]
    assert ds.image_ids_with_any_category([2], include_crowd=True) == [0, 2]
    assert ds.image_ids_with_any_category([7, 1]) == [0, 1, 2]
    assert ds.image_ids_with_any_category([99]) == []
    assert ds[2].iscrowd.tolist() == [False, False, True]


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    make_dataset(tmp_path)
    Image.new("L", (W, H), 77).save(tmp_path / "images" / "im0.png")
    Image.new("RGBA", (W, H), (1, 2, 3, 4)).save(tmp_path / "images" / "im1.png")
    ds = open_ds(tmp_path)
    assert ds[0].image.shape == (3, H, W) and int(ds[0].image[:, 0, 0].sum()) == 3 * 77
    assert ds[1].image[:, 0, 0].tolist() == [1, 2, 3]


# ---- bad inputs ----------------------------------------------------------------------------------
def test_missing_json_and_corrupt_json(tmp_path):
    with pytest.raises(DataError, match="nope.json.*not found"):
        CocoPanopticDataset(tmp_path / "nope.json", tmp_path, tmp_path)
    (tmp_path / "bad.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"bad\.json.*invalid JSON at line 1"):
        CocoPanopticDataset(tmp_path / "bad.json", tmp_path, tmp_path)


@pytest.mark.parametrize(
    "mutate, path",
    [
        (lambda d: d.pop("categories"), r"categories: missing"),
        (lambda d: d["images"][1].pop("height"), r"images\[1\]\.height: missing"),
        (lambda d: d["images"][0].update(width="8"), r"images\[0\]\.width: expected a positive"),
        (
            lambda d: d["annotations"][1]["segments_info"][1].pop("category_id"),
            r"annotations\[1\]\.segments_info\[1\]\.category_id: missing",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][2].update(category_id=55),
            r"annotations\[0\]\.segments_info\[2\]\.category_id: unknown category id 55",
        ),
        (
            lambda d: d["annotations"][0].update(image_id=9),
            r"annotations\[0\]\.image_id: image id 9",
        ),
        (lambda d: d["categories"][2].pop("isthing"), r"categories\[2\]\.isthing: missing"),
        (
            lambda d: d["annotations"][0]["segments_info"][0].update(iscrowd=2),
            r"annotations\[0\]\.segments_info\[0\]\.iscrowd: expected 0 or 1",
        ),
    ],
)
def test_bad_json_fields(tmp_path, mutate, path):
    make_dataset(tmp_path)
    edit_json(tmp_path, mutate)
    with pytest.raises(DataError, match=r"pan\.json: " + path):
        open_ds(tmp_path)


def test_missing_image_and_png(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "images" / "im0.png").unlink()
    (tmp_path / "pan" / "im1.png").unlink()
    ds = open_ds(tmp_path)  # files are checked lazily
    with pytest.raises(DataError, match=r"im0\.png: image file not found"):
        ds[0]
    with pytest.raises(DataError, match=r"pan/im1\.png: panoptic PNG file not found"):
        ds[1]


def test_truncated_image_and_png(tmp_path):
    make_dataset(tmp_path)
    big = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    for p in (tmp_path / "images" / "im0.png", tmp_path / "pan" / "im1.png"):
        if p.parent.name == "images":
            Image.fromarray(big).save(p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    ds = open_ds(tmp_path)
    with pytest.raises(DataError, match=r"im0\.png: cannot decode image"):
        ds[0]
    with pytest.raises(DataError, match=r"im1\.png: cannot decode panoptic PNG"):
        ds[1]
    (tmp_path / "images" / "im1.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"images/im1\.png: cannot decode image"):
        ds.load_image(1)


def test_wrong_sizes(tmp_path):
    make_dataset(tmp_path)
    Image.new("RGB", (W + 1, H)).save(tmp_path / "images" / "im0.png")
    write_panoptic_png(tmp_path / "pan" / "im1.png", np.full((H + 2, W), 301))
    ds = open_ds(tmp_path)
    with pytest.raises(DataError, match=r"images/im0\.png: image size 9x6 .* 8x6"):
        ds[0]
    with pytest.raises(DataError, match=r"pan/im1\.png: panoptic PNG size 8x8 .* 8x6"):
        ds[1]


def test_png_ids_not_in_segments_info(tmp_path):
    make_dataset(tmp_path)
    ids, _ = _id_map(0)
    ids[0, 0] = 4242
    write_panoptic_png(tmp_path / "pan" / "im0.png", ids)
    with pytest.raises(DataError, match=r"im0\.png: segment ids \[4242\] in the PNG are not in"):
        open_ds(tmp_path)[0]


def test_segments_info_ids_absent_from_png(tmp_path):
    make_dataset(tmp_path)
    ids, _ = _id_map(0)
    ids[ids == 1000] = 300
    write_panoptic_png(tmp_path / "pan" / "im0.png", ids)
    with pytest.raises(DataError, match=r"pan\.json: segments_info ids \[1000\] .* no pixel"):
        open_ds(tmp_path)[0]
    s = open_ds(tmp_path, allow_missing_segments=True)[0]
    assert s.segment_ids.tolist() == [300, 70000] and len(s.segments_info) == 3


def test_wrong_png_mode(tmp_path):
    make_dataset(tmp_path)
    Image.new("L", (W, H)).save(tmp_path / "pan" / "im0.png")
    with pytest.raises(DataError, match=r"im0\.png: panoptic PNG must be RGB"):
        open_ds(tmp_path).load_id_map(0)


def test_writer_rejects_invalid_json(tmp_path):
    with pytest.raises(DataError, match=r"segments_info\[0\]\.category_id: unknown category id 5"):
        write_coco_panoptic(
            tmp_path / "x.json",
            tmp_path / "pan",
            [{"id": 0, "file_name": "a.png", "height": 2, "width": 2}],
            [{"image_id": 0, "file_name": "a.png", "segments_info": [{"id": 1, "category_id": 5}]}],
            CATS,
        )
    assert not (tmp_path / "x.json").exists()


# ---- the real COCO sample -------------------------------------------------------------------------
def test_real_coco_sample():
    ds = CocoPanopticDataset(
        SAMPLE / "panoptic_examples.json", SAMPLE / "panoptic", SAMPLE / "images"
    )
    doc = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    assert len(ds) == len(doc["annotations"]) == 2
    assert len(ds.categories) == 133
    for i, ann in enumerate(doc["annotations"]):
        s = ds[i]
        img = next(im for im in doc["images"] if im["id"] == ann["image_id"])
        assert s.image.shape == (3, img["height"], img["width"])
        assert s.num_segments == len(ann["segments_info"])
        assert int(s.masks.sum()) == int((s.id_map != 0).sum())
        assert not s.masks.sum(0).gt(1).any()
        areas = s.masks.flatten(1).sum(1).tolist()
        assert areas == [seg["area"] for seg in ann["segments_info"]]
        recomputed = segments_from_id_map(
            s.id_map,
            {seg["id"]: seg["category_id"] for seg in ann["segments_info"]},
            iscrowd={seg["id"]: seg["iscrowd"] for seg in ann["segments_info"]},
        )
        assert [r["bbox"] for r in recomputed] == [seg["bbox"] for seg in ann["segments_info"]]
        assert s.iscrowd.tolist() == [bool(seg["iscrowd"]) for seg in ann["segments_info"]]
        assert s.isthing.tolist() == [
            bool(ds.category_by_id[seg["category_id"]]["isthing"]) for seg in ann["segments_info"]
        ]
