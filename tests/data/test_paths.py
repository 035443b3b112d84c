"""data.root resolution: ECLIPSE_DATA for relative roots, the working directory otherwise."""

from pathlib import Path

from eclipse_seg.data.paths import data_path, data_root, root_note


def test_relative_root_goes_under_eclipse_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ECLIPSE_DATA", str(tmp_path))
    assert data_root("ADEChallengeData2016") == tmp_path / "ADEChallengeData2016"
    assert data_path("coco", "annotations/panoptic_val2017.json") == (
        tmp_path / "coco" / "annotations" / "panoptic_val2017.json"
    )
    assert data_path("", "x.json") == tmp_path / "x.json"
    assert f"ECLIPSE_DATA={tmp_path}" in root_note("coco")


def test_absolute_paths_ignore_eclipse_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ECLIPSE_DATA", "/elsewhere")
    assert data_root(str(tmp_path)) == tmp_path
    assert data_path("coco", str(tmp_path / "a.json")) == tmp_path / "a.json"
    assert "absolute (ECLIPSE_DATA not used)" in root_note(str(tmp_path))


def test_without_eclipse_data_the_working_directory(monkeypatch):
    monkeypatch.setenv("ECLIPSE_DATA", "")  # empty = unset
    assert data_path("datasets/coco", "train2017") == Path("datasets/coco/train2017")
    assert "working directory" in root_note("coco") and "ECLIPSE_DATA is not set" in root_note(
        "coco"
    )
