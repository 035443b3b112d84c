"""The official training pipelines: the presets, the draws, each transform on hand-checkable inputs
for given records (resize rules, crop boxes at the edges, flip, 128 / void / ignore padding), the
targets (crowd removed, empty masks kept), replay of recorded samples, and the config keys."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eclipse_seg.config import load_config
from eclipse_seg.data.color_aug import ColorAugRecord
from eclipse_seg.data.panoptic_ids import id2rgb, rgb2id
from eclipse_seg.data.pipelines import (
    OFFICIAL_PIPELINES,
    AugmentRecord,
    TrainingPipeline,
    apply_record,
    draw_record,
    official_short_sides,
    panoptic_training_sample,
    pipeline_spec,
    semantic_training_sample,
    transform_image,
    transform_label_map,
    transform_panoptic_png,
)
from eclipse_seg.errors import ConfigError, DataError

ADE_PAN = OFFICIAL_PIPELINES["ade20k_panoptic"]


def rec(input_size, resized_size=None, crop=None, flip=False, pad=0, color=None, short=0):
    return AugmentRecord(
        tuple(input_size),
        short or min(resized_size or input_size),
        tuple(resized_size or input_size),
        crop,
        color,
        flip,
        pad,
    )


def test_official_presets():
    assert official_short_sides(640) == tuple(range(320, 1281, 64))
    # fmt: off
    assert official_short_sides(512) == (256, 307, 358, 409, 460, 512, 563, 614, 665, 716, 768, 819,
                                         870, 921, 972, 1024)
    # fmt: on
    sem, coco = OFFICIAL_PIPELINES["ade20k_semantic"], OFFICIAL_PIPELINES["coco_panoptic"]
    assert (
        ADE_PAN.targets,
        ADE_PAN.max_size,
        ADE_PAN.crop_size,
        ADE_PAN.pad_size,
        ADE_PAN.color_aug,
        ADE_PAN.flip,
    ) == ("panoptic", 2560, 640, 640, True, True)
    assert (
        sem.targets,
        sem.short_sides,
        sem.max_size,
        sem.crop_size,
        sem.pad_size,
        sem.color_aug,
    ) == ("semantic", official_short_sides(512), 2048, 512, 512, True)
    assert (
        coco.targets,
        coco.short_sides,
        coco.max_size,
        coco.crop_size,
        coco.pad_size,
        coco.color_aug,
        coco.flip,
    ) == ("panoptic", (800,), 1333, 0, 0, False, True)


def test_spec_overrides():
    small = pipeline_spec(
        "ade20k_panoptic", short_sides=[64, 96], max_size=256, crop_size=48, flip=False
    )
    assert (small.short_sides, small.max_size, small.crop_size, small.pad_size, small.flip) == (
        (64, 96),
        256,
        48,
        48,
        False,
    )
    assert pipeline_spec("ade20k_semantic") == OFFICIAL_PIPELINES["ade20k_semantic"]
    coco = pipeline_spec("coco_panoptic", crop_size=64)
    assert (coco.crop_size, coco.pad_size) == (64, 0)  # COCO never pads in the mapper
    with pytest.raises(ConfigError, match="train_short_sides"):
        pipeline_spec("ade20k_panoptic", short_sides=[0])
    with pytest.raises(ConfigError, match="train_crop_size"):
        pipeline_spec("ade20k_panoptic", crop_size=-1)
    with pytest.raises(ConfigError, match="no official pipeline 'voc'"):
        pipeline_spec("voc")
    assert "random crop 640x640" in ADE_PAN.describe() and "ColorAugSSD" in ADE_PAN.describe()


# --------------------------------------------------------------------------------------------------
# draws
# --------------------------------------------------------------------------------------------------
def test_draws_follow_the_spec():
    rng = np.random.default_rng(0)
    records = [draw_record(ADE_PAN, (480, 640), rng) for _ in range(800)]
    assert {r.short_side for r in records} == set(ADE_PAN.short_sides)
    assert 0.45 < np.mean([r.flip for r in records]) < 0.55
    for r in records:
        h, w = r.resized_size
        assert h == r.short_side and w == int(r.short_side * 640 / 480 + 0.5)
        y0, x0, ch, cw = r.crop
        assert (ch, cw) == (min(640, h), min(640, w)) and 0 <= y0 <= h - ch and 0 <= x0 <= w - cw
        assert r.color is not None and r.pad_size == 640
    # the corner is uniform over the valid range (0..1067 for 1280 x 1707): both ends occur
    big = [
        draw_record(pipeline_spec("ade20k_panoptic", short_sides=[1280]), (480, 640), rng).crop
        for _ in range(400)
    ]
    assert min(c[1] for c in big) < 30 and max(c[1] for c in big) > 1067 - 30


def test_long_side_cap_and_crop_larger_than_image():
    rng = np.random.default_rng(1)
    spec = pipeline_spec("ade20k_panoptic", short_sides=[1280])
    r = draw_record(spec, (100, 1000), rng)  # 1280 x 12800 capped to 2560: 256 x 2560
    assert r.resized_size == (256, 2560)
    assert r.crop[0] == 0 and r.crop[2:] == (256, 640)  # crop height clipped to the image
    r = draw_record(pipeline_spec("ade20k_panoptic", short_sides=[320]), (300, 400), rng)
    assert (
        r.resized_size == (320, 427) and r.crop == (0, 0, 320, 427) and r.output_size == (320, 427)
    )


def test_coco_draws_no_crop_no_colour():
    r = draw_record(OFFICIAL_PIPELINES["coco_panoptic"], (480, 640), np.random.default_rng(2))
    assert (r.resized_size, r.crop, r.color, r.pad_size) == ((800, 1067), None, None, 0)


# --------------------------------------------------------------------------------------------------
# transforms for given records
# --------------------------------------------------------------------------------------------------
def _ramp(h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 with distinct hand-readable values: R = row, G = column, B = 7."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(h)[:, None]
    img[..., 1] = np.arange(w)[None]
    img[..., 2] = 7
    return img


def test_crop_and_flip_without_resize():
    img = _ramp(4, 6)
    out = transform_image(img, rec((4, 6), crop=(1, 2, 2, 3)))
    np.testing.assert_array_equal(out[..., 0], [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(out[..., 1], [[2, 3, 4], [2, 3, 4]])
    flipped = transform_image(img, rec((4, 6), crop=(1, 2, 2, 3), flip=True))
    np.testing.assert_array_equal(flipped[..., 1], [[4, 3, 2], [4, 3, 2]])


@pytest.mark.parametrize("crop", [(0, 0, 2, 3), (2, 3, 2, 3), (0, 0, 4, 6)])
def test_crop_at_the_borders(crop):
    img = _ramp(4, 6)
    y0, x0, h, w = crop
    np.testing.assert_array_equal(
        transform_image(img, rec((4, 6), crop=crop)), img[y0 : y0 + h, x0 : x0 + w]
    )


def test_crop_outside_the_image_is_an_error():
    with pytest.raises(DataError, match=r"crop \(3, 0, 2, 3\)"):
        transform_image(_ramp(4, 6), rec((4, 6), crop=(3, 0, 2, 3)))
    with pytest.raises(DataError, match="record drawn for 6x4"):
        transform_image(_ramp(5, 6), rec((4, 6)))


def test_image_resize_is_pillow_bilinear():
    img = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    r = rec((5, 7), resized_size=(9, 13), crop=(2, 3, 4, 5))
    full = np.asarray(Image.fromarray(img).resize((13, 9), Image.BILINEAR))
    np.testing.assert_array_equal(transform_image(img, r), full[2:6, 3:8])


def test_image_padding_is_128_at_bottom_right():
    img = _ramp(3, 5)
    out = apply_record(img, rec((3, 5), pad=8))
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out[:, :3, :5].permute(1, 2, 0).numpy(), img)
    assert (out[:, 3:] == 128).all() and (out[:, :, 5:] == 128).all()
    assert torch.equal(apply_record(img, rec((3, 5))), torch.from_numpy(img).permute(2, 0, 1))


def _nearest_maps(h, w, nh, nw):
    """A unique-id map resized by both nearest rules (Pillow on RGB ids, torch on floats)."""
    ids = np.arange(1, h * w + 1).reshape(h, w)
    pil = rgb2id(np.asarray(Image.fromarray(id2rgb(ids)).resize((nw, nh), Image.NEAREST)))
    torch_rule = (
        F.interpolate(
            torch.from_numpy(ids.astype(np.float64))[None, None], size=(nh, nw), mode="nearest"
        )[0, 0]
        .numpy()
        .astype(np.int64)
    )
    return ids, pil, torch_rule


def test_panoptic_png_uses_pillow_nearest_and_labels_torch_nearest():
    ids, pil, torch_rule = _nearest_maps(5, 7, 12, 17)
    assert (pil != torch_rule).any()  # the two official rules disagree here
    r = rec((5, 7), resized_size=(12, 17))
    np.testing.assert_array_equal(rgb2id(transform_panoptic_png(id2rgb(ids), r)), pil)
    np.testing.assert_array_equal(transform_label_map(ids, r), torch_rule)
    # the same record through the training samples: panoptic targets follow Pillow, semantic torch
    img = np.zeros((5, 7, 3), np.uint8)
    segs = [{"id": int(i), "category_id": 1, "iscrowd": 0} for i in range(1, 36)]
    pan = panoptic_training_sample(img, ids, segs, r)
    np.testing.assert_array_equal(pan.pan_seg.numpy(), pil)
    sem = semantic_training_sample(img, ids - 1, r)
    np.testing.assert_array_equal(sem.sem_seg.numpy(), torch_rule - 1)


def test_nearest_rules_differ_on_about_one_percent_of_a_region_map():
    # regions of 13 x 13 pixels, short side 260 -> 1088: the rules disagree near region borders only
    rng = np.random.default_rng(4)
    labels = np.kron(rng.integers(1, 50, (20, 26)), np.ones((13, 13), np.int64))  # 260 x 338
    r = rec((260, 338), resized_size=(1088, 1414))
    pil = rgb2id(transform_panoptic_png(id2rgb(labels), r))
    torch_rule = transform_label_map(labels, r)
    assert 0.005 < (pil != torch_rule).mean() < 0.05


# --------------------------------------------------------------------------------------------------
# training samples
# --------------------------------------------------------------------------------------------------
def _panoptic_inputs():
    """6 x 8 image; segments: 1 (left half), 2 (right half, crowd), 3 (bottom-right 2x2)."""
    img = _ramp(6, 8)
    ids = np.zeros((6, 8), np.int64)
    ids[:, :4] = 1
    ids[:, 4:] = 2
    ids[4:, 6:] = 3
    segs = [
        {"id": 1, "category_id": 10, "iscrowd": 0},
        {"id": 2, "category_id": 20, "iscrowd": 1},
        {"id": 3, "category_id": 30, "iscrowd": 0},
    ]
    return img, ids, segs


def test_panoptic_targets_drop_crowd_keep_empty_masks_and_pad_void():
    img, ids, segs = _panoptic_inputs()
    r = rec((6, 8), crop=(0, 0, 4, 8), pad=10)  # rows 0..3: segment 3 is cropped away
    s = panoptic_training_sample(img, ids, segs, r, sem_seg=ids.astype(np.float64))
    assert s.category_ids.tolist() == [10, 30]  # crowd segment 2 gives no target
    assert s.masks.shape == (2, 10, 10) and s.masks.dtype == torch.bool
    assert s.masks[0, :4, :4].all() and s.masks[0].sum() == 16
    assert not s.masks[1].any()  # cropped away: an empty target that still counts
    assert (s.pan_seg[4:] == 0).all() and (s.pan_seg[:, 8:] == 0).all()  # void padding
    assert (s.pan_seg[:4, 4:8] == 2).all()  # the crowd pixels stay in the map
    assert (s.sem_seg[4:] == 255).all() and (s.sem_seg[:, 8:] == 255).all()
    assert (s.image[:, 4:] == 128).all() and s.image.shape == (3, 10, 10)


def test_panoptic_flip_moves_masks_with_the_image():
    img, ids, segs = _panoptic_inputs()
    s = panoptic_training_sample(img, ids, segs, rec((6, 8), flip=True))
    assert s.masks[0, :, 4:].all() and not s.masks[0, :, :4].any()
    assert s.masks[1, 4:, :2].all() and s.masks[1].sum() == 4
    np.testing.assert_array_equal(s.image[1, 0].numpy(), np.arange(8)[::-1])


def test_no_segment_gives_an_empty_target_set():
    img, ids, _ = _panoptic_inputs()
    s = panoptic_training_sample(
        img, ids, [{"id": 2, "category_id": 20, "iscrowd": 1}], rec((6, 8))
    )
    assert s.masks.shape == (0, 6, 8) and s.category_ids.numel() == 0


def test_semantic_targets_are_the_classes_left_after_the_crop():
    img = _ramp(6, 8)
    label = np.full((6, 8), 255, np.int64)
    label[:, :4] = 0
    label[:3, 4:] = 7
    label[3:, 4:] = 2
    s = semantic_training_sample(img, label, rec((6, 8), crop=(0, 2, 3, 6), pad=8))
    assert s.category_ids.tolist() == [1, 8]  # class 2 was cropped away; ids = class + 1
    assert s.masks.shape == (2, 8, 8)
    assert s.masks[0, :3, :2].all() and s.masks[1, :3, 2:6].all() and s.masks.sum() == 18
    assert (s.sem_seg[3:] == 255).all() and (s.sem_seg[:, 6:] == 255).all()  # padding = ignore


class _FakePanoptic:
    def __init__(self):
        self.inputs = _panoptic_inputs()

    def image_size(self, i):
        return (6, 8)

    def panoptic_inputs(self, i):
        return self.inputs


def test_record_replay_gives_identical_tensors():
    pipeline = TrainingPipeline(
        pipeline_spec("ade20k_panoptic", short_sides=[6, 9, 12], crop_size=8), _FakePanoptic()
    )
    for seed in range(6):
        drawn = pipeline.sample(0, np.random.default_rng(seed))
        logged = json.loads(json.dumps(drawn.record.to_dict()))
        replayed = pipeline.replay(0, AugmentRecord.from_dict(logged))
        assert replayed.record == drawn.record
        for name in ("image", "masks", "category_ids", "pan_seg"):
            assert torch.equal(getattr(replayed, name), getattr(drawn, name)), name
    with pytest.raises(DataError, match="not an augmentation record"):
        AugmentRecord.from_dict({"input_size": [6, 8]})


def test_colour_step_is_applied_before_the_flip():
    # ColorAugSSD sees the unflipped crop (OpenCV's rounding depends on the pixel position)
    img = np.random.default_rng(5).integers(0, 256, (4, 37, 3), dtype=np.uint8)
    color = ColorAugRecord(None, True, None, 1.3, 5)
    from eclipse_seg.data.color_aug import apply_color_aug

    out = transform_image(img, rec((4, 37), color=color, flip=True))
    np.testing.assert_array_equal(out, apply_color_aug(img, color)[:, ::-1])


def test_pipeline_needs_the_matching_dataset_kind():
    with pytest.raises(ConfigError, match="data.pipeline=ade20k_semantic builds semantic targets"):
        TrainingPipeline(OFFICIAL_PIPELINES["ade20k_semantic"], _FakePanoptic())


# --------------------------------------------------------------------------------------------------
# config keys
# --------------------------------------------------------------------------------------------------
def test_config_keys_belong_to_their_pipeline():
    cfg = load_config("ade20k/panoptic_r50")
    assert cfg.data.pipeline == "ade20k_panoptic"
    assert load_config("coco/panoptic_r50").data.pipeline == "coco_panoptic"
    assert load_config("ade20k/semantic_r101").data.pipeline == "ade20k_semantic"
    assert load_config("synthetic/base").data.pipeline == "synthetic"
    with pytest.raises(
        ConfigError, match=r"'data.crop_size' is not used by data.pipeline=ade20k_panoptic"
    ):
        load_config("ade20k/panoptic_r50", ["data.crop_size=64"])
    with pytest.raises(
        ConfigError, match=r"'data.train_short_sides' is not used by data.pipeline=synthetic"
    ):
        load_config("synthetic/base", ["data.train_short_sides=[64]"])
    with pytest.raises(ConfigError, match="data.pipeline"):
        load_config(None, ["data.pipeline=voc"])
    small = load_config("ade20k/panoptic_r50", ["data.train_short_sides=[64]"])
    assert small.data.train_short_sides == [64]
