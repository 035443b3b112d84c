"""The converter from per-image mask folders / label PNGs to COCO panoptic, and categories files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eclipse_seg.cli import main
from eclipse_seg.data.categories import load_categories
from eclipse_seg.data.coco_panoptic import CocoPanopticDataset
from eclipse_seg.data.convert import convert_label_pngs, convert_mask_folders
from eclipse_seg.errors import DataError
from tests.custom_data import CATEGORIES, make_mask_folder_dataset


def _segments(dataset: CocoPanopticDataset, i: int) -> list[tuple[int, bytes]]:
    s = dataset[i]
    return sorted((int(c), m.numpy().tobytes()) for c, m in zip(s.category_ids, s.masks))


def test_mask_folders_round_trip(tmp_path):
    """Every mask file comes back as its segment, with the file's category id; stuff split over two
    files (sky_1, sky_2) is one segment; names and ids both name categories."""
    truth = make_mask_folder_dataset(tmp_path, num_train=4, num_val=1, size=40)
    split = tmp_path / "train"
    summary = convert_mask_folders(
        split / "images",
        split / "masks",
        tmp_path / "categories.json",
        split / "panoptic.json",
        split / "panoptic",
    )
    dataset = CocoPanopticDataset(split / "panoptic.json", split / "panoptic", split / "images")
    assert len(dataset) == 4 and summary.num_images == 4
    assert [{k: c[k] for k in ("id", "name", "isthing")} for c in dataset.categories] == CATEGORIES
    colours = [tuple(c["color"]) for c in dataset.categories]  # added: overlays tell classes apart
    assert len(set(colours)) == 4
    assert [dataset.image_info(i)["file_name"] for i in range(4)] == [
        f"train_00{i}.jpg" for i in range(4)
    ]
    for i, stem in enumerate(sorted(truth["train"])):
        expected = sorted((c, m.tobytes()) for c, m in truth["train"][stem])
        assert _segments(dataset, i) == expected
        assert not dataset[i].iscrowd.any()
    assert summary.segments[3] == 4  # one sky segment per image, although odd images have 2 files
    assert sum(summary.segments.values()) == sum(len(v) for v in truth["train"].values())


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def one_image(tmp_path):
    """split/images/a.png (8x10) and the categories file."""
    _write(tmp_path / "split" / "images" / "a.png", np.zeros((8, 10, 3), dtype=np.uint8))
    (tmp_path / "cats.json").write_text(json.dumps({"categories": CATEGORIES, "images": []}))
    return tmp_path


def _mask(rows: slice, cols: slice, shape=(8, 10)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[rows, cols] = 255
    return m


def _convert_masks(root, **kw):
    s = root / "split"
    return convert_mask_folders(
        s / "images", s / "masks", root / "cats.json", s / "panoptic.json", s / "panoptic", **kw
    )


def test_overlapping_masks_are_an_error_naming_both_files_or_void(one_image):
    masks = one_image / "split" / "masks" / "a"
    _write(masks / "car_1.png", _mask(slice(0, 4), slice(0, 5)))
    _write(masks / "42_2.png", _mask(slice(2, 6), slice(3, 8)))  # 2x2 pixels shared
    with pytest.raises(DataError, match=r"car_1.png: 4 pixels also belong to .*42_2.png"):
        _convert_masks(one_image)
    _convert_masks(one_image, overlap="void")
    s = one_image / "split"
    sample = CocoPanopticDataset(s / "panoptic.json", s / "panoptic", s / "images")[0]
    assert sample.masks.sum(dim=(1, 2)).tolist() == [16, 16]  # 20 - 4 each
    assert int(sample.masks.any(0).sum()) == 32 and sample.category_ids.tolist() == [42, 42]


@pytest.mark.parametrize(
    "name, problem",
    [
        ("bus_1.png", "'bus_1' names no category"),
        ("notes.txt", "not a mask PNG"),
    ],
)
def test_bad_mask_file_names_are_errors(one_image, name, problem):
    path = one_image / "split" / "masks" / "a" / name
    if name.endswith(".png"):
        _write(path, _mask(slice(0, 2), slice(0, 2)))
    else:
        path.parent.mkdir(parents=True)
        path.write_text("x")
    with pytest.raises(DataError, match=problem):
        _convert_masks(one_image)


def test_mask_size_and_pairing_problems(one_image):
    masks = one_image / "split" / "masks"
    _write(masks / "a" / "road.png", _mask(slice(0, 2), slice(0, 2), shape=(9, 10)))
    with pytest.raises(
        DataError, match=r"road.png: size 10x9 \(WxH\) differs from its image a.png"
    ):
        _convert_masks(one_image)
    (masks / "a" / "road.png").unlink()
    (masks / "b").mkdir()
    with pytest.raises(DataError, match=r"1 mask folder\(s\) in .* have no image .*\['b'\]"):
        _convert_masks(one_image)
    (masks / "b").rmdir()
    _write(one_image / "split" / "images" / "c.jpg", np.zeros((8, 10, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"1 image\(s\) of .* have no mask folder .*\['c'\]"):
        _convert_masks(one_image)


def test_label_pngs_with_instances(one_image):
    """Class-id PNG + instance PNG: thing instances separated, thing pixels of instance 0 one crowd
    segment, stuff one segment whatever its instance numbers."""
    s = one_image / "split"
    labels = np.zeros((8, 10), dtype=np.uint8)  # 0 = void
    labels[:4] = 3  # sky
    labels[4:] = 7  # road
    labels[5:7, 0:3] = 42  # car, instance 1
    labels[5:7, 4:6] = 42  # car, instance 2
    labels[5:7, 7:9] = 42  # car pixels without an instance: crowd
    labels[0, 0] = 0
    inst = np.zeros((8, 10), dtype=np.uint8)
    inst[5:7, 0:3], inst[5:7, 4:6] = 1, 2
    inst[:2] = 5  # instance numbers on stuff are ignored
    _write(s / "labels" / "a.png", labels)
    _write(s / "instances" / "a.png", inst)
    assert main(["convert-masks", str(s), "--categories", str(one_image / "cats.json")]) == 0
    ds = CocoPanopticDataset(s / "panoptic.json", s / "panoptic", s / "images")
    sample = ds[0]
    got = sorted(
        (int(c), int(m.sum()), bool(k))
        for c, m, k in zip(sample.category_ids, sample.masks, sample.iscrowd)
    )
    assert got == [(3, 39, False), (7, 26, False), (42, 4, False), (42, 4, True), (42, 6, False)]
    assert sample.id_map[0, 0] == 0


def test_label_pngs_without_instances_and_bad_values(one_image, capsys):
    s = one_image / "split"
    labels = np.full((8, 10), 7, dtype=np.uint8)
    labels[:, :3] = 11
    labels[:, 8:] = 255
    _write(s / "labels" / "a.png", labels)
    with pytest.raises(DataError, match=r"a.png: values \[255\] are neither category ids"):
        convert_label_pngs(
            s / "images", s / "labels", one_image / "cats.json", s / "p.json", s / "p"
        )
    assert (
        main(
            [
                "convert-masks",
                str(s),
                "--categories",
                str(one_image / "cats.json"),
                "--void-values",
                "0,255",
            ]
        )
        == 0
    )
    assert "id   11  person (thing): 1 segments in 1 images" in capsys.readouterr().out
    sample = CocoPanopticDataset(s / "panoptic.json", s / "panoptic", s / "images")[0]
    assert sorted(sample.category_ids.tolist()) == [7, 11]  # one segment per class
    _write(s / "labels" / "a.png", np.zeros((8, 10, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="must be single-channel"):
        convert_label_pngs(
            s / "images", s / "labels", one_image / "cats.json", s / "p.json", s / "p"
        )


def test_cli_needs_a_layout(one_image, capsys):
    assert (
        main(
            [
                "convert-masks",
                str(one_image / "split"),
                "--categories",
                str(one_image / "cats.json"),
            ]
        )
        == 2
    )
    assert "neither masks/ nor labels/" in capsys.readouterr().err


@pytest.mark.parametrize(
    "doc, problem",
    [
        ([], "non-empty list"),
        ({"images": []}, "no 'categories' key"),
        (
            [{"id": 1, "name": "a", "isthing": 0}, {"id": 1, "name": "b", "isthing": 1}],
            r"categories\[1\].id: duplicate category id 1",
        ),
        ([{"id": "1", "name": "a", "isthing": 0}], r"categories\[0\].id: expected an integer"),
        ([{"id": 1, "name": "a", "isthing": 2}], r"categories\[0\].isthing: expected 0 or 1"),
        ([{"id": 1, "name": "", "isthing": 0}], r"categories\[0\].name: expected a non-empty"),
        ([{"id": 1, "name": "a", "isthing": 0, "color": [1, 2]}], r"categories\[0\].color"),
    ],
)
def test_categories_file_problems_name_file_and_field(tmp_path, doc, problem):
    path = tmp_path / "cats.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=problem) as e:
        load_categories(path)
    assert str(path) in str(e.value)


def test_categories_file_forms(tmp_path):
    path = tmp_path / "cats.json"
    path.write_text(json.dumps([{"id": -2, "name": "a", "isthing": True}]))
    assert load_categories(path) == [{"id": -2, "name": "a", "isthing": 1}]
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a valid JSON file"):
        load_categories(path)
