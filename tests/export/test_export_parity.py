"""Acceptance: the exported model (ONNX Runtime and the torch.export program) matches eager PyTorch
on images of two sizes, and the torch-free runtime predicts what `model.predict` predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from parity import assert_same_prediction, near_decisions
from PIL import Image

from eclipse_seg.data.panoptic_ids import rgb2id
from eclipse_seg.errors import DataError

pytestmark = pytest.mark.slow  # one trace + two exports of the whole model (session fixture)

SIZES = [(64, 96), (75, 50)]  # (H, W): the second is padded inside the graph (to 96 x 64)
LOGITS_TOL, MASKS_TOL = 1e-4, 2e-4


def _images(n_per_size: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for h, w in SIZES
        for _ in range(n_per_size)
    ]


def _eager(model, image):
    with torch.no_grad():
        out = model([image])
    return out.pred_logits, out.pred_masks


def test_export_verified_itself(exported):
    """`export_onnx` ran the file with ONNX Runtime on its tracing example (batch of 2)."""
    result = exported["results"]["onnx"]
    assert result.dynamic and exported["results"]["pt2"].dynamic
    assert result.max_abs_diff["pred_logits"] <= LOGITS_TOL
    assert result.max_abs_diff["pred_masks"] <= MASKS_TOL


def test_onnx_runtime_matches_eager_on_two_sizes(exported):
    from eclipse_seg.runtime import Segmenter

    seg = Segmenter(exported["onnx"])
    for image in _images():
        logits, masks = _eager(exported["model"], image)
        got_logits, got_masks = seg.run(image.float()[None].numpy())
        assert got_masks.shape == tuple(masks.shape)  # padded to 32 inside the graph
        assert np.abs(got_logits - logits.numpy()).max() <= LOGITS_TOL
        assert np.abs(got_masks - masks.numpy()).max() <= MASKS_TOL


def test_exported_program_matches_eager_on_two_sizes(exported):
    from eclipse_seg.export import load_program

    program, metadata = load_program(exported["pt2"])
    assert metadata == exported["metadata"]
    module = program.module()
    for image in _images():
        logits, masks = _eager(exported["model"], image)
        with torch.no_grad():
            got_logits, got_masks = module(image.float()[None])
        assert (got_logits - logits).abs().max() <= LOGITS_TOL
        assert (got_masks - masks).abs().max() <= MASKS_TOL


def test_dynamic_batch(exported):
    """Two images of one size in one call give each image's own result."""
    from eclipse_seg.runtime import Segmenter

    first, second = _images(2)[:2]
    batch = torch.stack([first, second]).float().numpy()
    logits, masks = Segmenter(exported["onnx"]).run(batch)
    for i, image in enumerate((first, second)):
        want_logits, want_masks = _eager(exported["model"], image)
        assert np.abs(logits[i] - want_logits[0].numpy()).max() <= LOGITS_TOL
        assert np.abs(masks[i] - want_masks[0].numpy()).max() <= MASKS_TOL


def test_runtime_predict_equals_model_predict(exported):
    from eclipse_seg.runtime import Segmenter

    model, test = exported["model"], exported["cfg"].test
    thresholds = {
        "object_mask_threshold": test.object_mask_threshold,
        "overlap_threshold": test.overlap_threshold,
    }
    seg = Segmenter(exported["onnx"])
    segments = 0
    for image in _images():
        ref = model.predict([image], **thresholds)[0]
        got = seg.predict(image.permute(1, 2, 0).numpy())
        logits, masks = _eager(model, image)
        size = tuple(image.shape[-2:])
        padded = (masks.shape[-2] * 4, masks.shape[-1] * 4)
        near, near_queries = near_decisions(logits[0], masks[0], padded, size, size, **thresholds)
        assert not near_queries and near.mean() < 0.01  # the comparison covers nearly everything
        assert_same_prediction(ref, got, near)
        segments += len(got["segments_info"])
    assert segments >= 4  # a comparison of actual segments, things and stuff


def test_runtime_output_size_and_thresholds(exported):
    """Predictions come back at the requested size; thresholds can be overridden."""
    from eclipse_seg.runtime import Segmenter

    model, seg = exported["model"], Segmenter(exported["onnx"])
    image = _images()[0]
    ref = model.predict(
        [image], output_sizes=[(40, 130)], object_mask_threshold=0.0, overlap_threshold=0.0
    )[0]
    got = seg.predict(
        image.permute(1, 2, 0).numpy(),
        output_size=(40, 130),
        object_mask_threshold=0.0,
        overlap_threshold=0.0,
    )
    assert got["panoptic_seg"].shape == (40, 130)
    assert [s["label"] for s in got["segments_info"]] == [s["label"] for s in ref["segments_info"]]


def test_metadata_describes_the_model(exported):
    from eclipse_seg import __version__
    from eclipse_seg.export import read_onnx_metadata

    meta = read_onnx_metadata(exported["onnx"])
    model = exported["model"]
    assert meta == exported["metadata"]
    assert meta["classes_per_step"] == [6, 2, 2, 2] and meta["query_groups"] == [8, 3, 3, 3]
    assert meta["deltas"] == pytest.approx([0.4, 0.6, -0.5, 0.6])
    assert meta["deltas"] == pytest.approx(model.decoder.deltas_for((0, 1, 2, 3)).tolist())
    assert [c["isthing"] for c in meta["categories"]] == model.thing_mask.tolist()
    assert [c["name"] for c in meta["categories"][:3]] == ["sky", "disk", "grass"]
    assert meta["test"] == {
        "object_mask_threshold": pytest.approx(0.2),
        "overlap_threshold": pytest.approx(0.3),
        "min_size": 0,
        "max_size": 0,
    }
    assert meta["scenario"] == {"name": "6-2", "step": 3, "method": "eclipse"}
    assert meta["input"]["height"] is None and meta["eclipse_seg_version"] == __version__


def test_runtime_refuses_too_small_images(exported):
    from eclipse_seg.runtime import Segmenter

    with pytest.raises(DataError, match="at least 33 pixels"):
        Segmenter(exported["onnx"]).predict(np.zeros((20, 64, 3), np.uint8))


def test_predict_cli_with_onnx(exported, tmp_path):
    from eclipse_seg.cli import main
    from eclipse_seg.runtime import Segmenter

    paths = []
    for i, image in enumerate(_images()):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    out = tmp_path / "pred"
    assert (
        main(["predict", "--onnx", str(exported["onnx"]), *map(str, paths), "--output", str(out)])
        == 0
    )
    seg = Segmenter(exported["onnx"])
    data = json.loads((out / "predictions.json").read_text())
    assert data["step"] == 3 and {c["name"] for c in data["categories"]} >= {"sky", "disk"}
    for path, ann in zip(paths, data["annotations"]):
        want = seg.predict(np.array(Image.open(path)))
        ids = rgb2id(np.array(Image.open(out / "panoptic" / path.name)))
        assert np.array_equal(ids, want["panoptic_seg"])
        order = [c["id"] for c in exported["metadata"]["categories"]]
        assert [s["category_id"] for s in ann["segments_info"]] == [
            order[s["label"]] for s in want["segments_info"]
        ]  # dataset category ids
