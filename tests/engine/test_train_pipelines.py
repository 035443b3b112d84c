"""The shipped ADE20K / COCO configs draw their training batches through the official pipelines:
tiny datasets in the real layouts, one batch each through the training code path, at the official
sizes (640 x 640 / 512 x 512 padded with 128, COCO 800 on the short side)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from eclipse_seg.config import load_config
from eclipse_seg.data.catalogs import official_to_json_ids
from eclipse_seg.engine.build import build_datasets, build_scenario
from eclipse_seg.engine.train import StepData, plan_step
from eclipse_seg.errors import ConfigError
from tests.real_layouts import make_ade20k_panoptic, make_ade20k_semantic, make_coco_panoptic

pytest.importorskip("cv2")


def _step_data(config, make, scenario, tmp_path, monkeypatch, *overrides):
    monkeypatch.setenv("ECLIPSE_DATA", str(make(tmp_path, train=5)))
    cfg = load_config(config, [f"continual.scenario={scenario}", *overrides])
    train, _ = build_datasets(cfg)
    sc = build_scenario(cfg, train)
    plan = plan_step(cfg, sc, 0, "eclipse")
    return StepData(train, sc, plan, cfg), sc, plan


@pytest.mark.parametrize(
    "config, make, size",
    [
        ("ade20k/panoptic_r50", make_ade20k_panoptic, 640),
        ("ade20k/semantic_r101", make_ade20k_semantic, 512),
    ],
)
def test_ade20k_batches_are_padded_crops(config, make, size, tmp_path, monkeypatch):
    data, sc, plan = _step_data(config, make, "100-50", tmp_path, monkeypatch)
    step_labels = {sc.label_of(c) for c in plan.classes}
    images, targets = data.batch(0, 0, 0, 3)
    assert len(images) == len(targets) == len(data.last_records) == 3
    for image, target, (index, record) in zip(images, targets, data.last_records):
        assert image.shape == (3, size, size) and image.dtype == torch.uint8
        assert record.input_size == (48, 64) and record.pad_size == size
        h, w = record.output_size
        assert (image[:, h:] == 128).all() and (image[:, :, w:] == 128).all()
        assert target.masks.shape[-2:] == (size, size)
        assert not target.masks[:, h:].any() and not target.masks[:, :, w:].any()
        assert set(target.labels.tolist()) <= step_labels
        # replaying the logged record gives the same sample
        replay = data.pipeline.replay(index, record)
        assert torch.equal(replay.image, image)
    # the same iteration again (a resumed run) draws the same batch
    again, _ = _step_data(config, make, "100-50", tmp_path / "again", monkeypatch)[0].batch(
        0, 0, 0, 3
    )
    assert all(torch.equal(a, b) for a, b in zip(again, images))


def test_ade20k_panoptic_keeps_every_segment_of_the_step(tmp_path, monkeypatch):
    # each image holds ADE classes 1, 6 (step 0 of 100-50) and 120: two targets whatever the crop
    data, sc, _ = _step_data(
        "ade20k/panoptic_r50",
        make_ade20k_panoptic,
        "100-50",
        tmp_path,
        monkeypatch,
        "data.train_short_sides=[1280]",
    )
    to_json = official_to_json_ids("ade20k")
    expected = sorted(sc.label_of(to_json[c]) for c in (1, 6))
    empty = 0
    for it in range(4):
        _, targets = data.batch(0, 0, it, 2)
        for t in targets:
            assert sorted(t.labels.tolist()) == expected
            empty += int((t.masks.flatten(1).sum(1) == 0).sum())
    assert empty > 0  # 1280 x 1707 cropped to 640 x 640 misses a stripe now and then


def test_coco_batch_is_resized_not_cropped(tmp_path, monkeypatch):
    data, _, _ = _step_data("coco/panoptic_r50", make_coco_panoptic, "83-50", tmp_path, monkeypatch)
    images, targets = data.batch(0, 0, 0, 2)
    for image, target, (_, record) in zip(images, targets, data.last_records):
        assert image.shape == (3, 800, 1067)  # 48 x 64 -> short side 800
        assert record.crop is None and record.color is None and record.pad_size == 0
        assert target.masks.shape[-2:] == (800, 1088)  # padded with the batch to a multiple of 32
        assert not target.masks[..., 1067:].any()
    # no colour step: the pixels are Pillow's bilinear resize of the image (flipped or not)
    for image, (index, record) in zip(images, data.last_records):
        resized = np.asarray(
            Image.fromarray(data.dataset.load_image(index)).resize((1067, 800), Image.BILINEAR)
        )
        expected = resized[:, ::-1] if record.flip else resized
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_ade20k_pipeline_without_opencv_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ConfigError, match=r"eclipse-seg\[train\]"):
        _step_data("ade20k/panoptic_r50", make_ade20k_panoptic, "100-50", tmp_path, monkeypatch)
    _step_data("coco/panoptic_r50", make_coco_panoptic, "83-50", tmp_path / "coco", monkeypatch)
