"""The runtime without PyTorch: imports, runs an ONNX file and writes predictions in a process where
`import torch` fails; and an ONNX file without our metadata is refused with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402 - after the importorskip

from eclipse_seg.errors import CheckpointError  # noqa: E402
from eclipse_seg.runtime.metadata import FORMAT, METADATA_KEY, OUTPUT_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
Q, C = 5, 3  # queries, classes


def _metadata() -> dict:
    return {
        "format": FORMAT,
        "eclipse_seg_version": "test",
        "task": "semantic",
        "scenario": {"name": "2-1", "step": 1, "method": "eclipse"},
        "classes_per_step": [2, 1],
        "query_groups": [3, 2],
        "deltas": [0.0, 0.5],
        "categories": [
            {"label": 0, "id": 11, "name": "sky", "isthing": False},
            {"label": 1, "id": 12, "name": "car", "isthing": True},
            {"label": 2, "id": 13, "name": "road", "isthing": False},
        ],
        "test": {
            "object_mask_threshold": 0.1,
            "overlap_threshold": 0.2,
            "min_size": 0,
            "max_size": 0,
        },
        "input": {
            "name": "images",
            "height": None,
            "width": None,
            "min_side": 32,
            "size_divisibility": 32,
        },
        "outputs": {name: "" for name in OUTPUT_NAMES},
        "mask_stride": 4,
    }


def _write_onnx(path: Path, metadata: dict | None) -> Path:
    """A small graph with the interface of an exported model: logits from the image's mean
    colour, masks from a stride-4 convolution (sizes that are multiples of 32 only)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((Q, 3, 4, 4)) * 0.02).astype(np.float32), "wm"
        ),
        numpy_helper.from_array((rng.standard_normal(Q) * 2 - 2).astype(np.float32), "bm"),
        numpy_helper.from_array(
            (rng.standard_normal((3, Q * (C + 1))) * 0.05).astype(np.float32), "wl"
        ),
        numpy_helper.from_array(np.array([-1, Q, C + 1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "wm", "bm"], ["pred_masks"], strides=[4, 4]),
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["mean", "wl"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["pred_logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, ["B", Q, C + 1]),
            helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, ["B", Q, "h", "w"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
    onnx.save(model, path)
    return path


_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
sys.modules["torch"] = None
"""

_RUN = (
    _BLOCK_TORCH
    + """
import json
import numpy as np
from PIL import Image
from eclipse_seg.runtime import Segmenter
from eclipse_seg.cli import main
seg = Segmenter(sys.argv[1])
image = np.array(Image.open(sys.argv[2]))
pred = seg.predict(image)
assert main(["predict", "--onnx", sys.argv[1], sys.argv[2], "--output", sys.argv[3]]) == 0
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(json.dumps({"segments": pred["segments_info"], "panoptic": pred["panoptic_seg"].tolist(),
                  "torch_modules": [m for m in loaded if sys.modules[m] is not None]}))
"""
)


def test_runtime_runs_with_torch_blocked(tmp_path):
    onnx_path = _write_onnx(tmp_path / "tiny.onnx", _metadata())
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    image[:, :48] //= 4  # a dark half and a bright half: different masks win
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "im.png")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUN,
            str(onnx_path),
            str(tmp_path / "im.png"),
            str(tmp_path / "out"),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_modules"] == []

    # the same image through ONNX Runtime here, post-processed by the PyTorch rules
    import onnxruntime
    import torch

    from eclipse_seg.inference import postprocess

    logits, masks = onnxruntime.InferenceSession(str(onnx_path)).run(
        list(OUTPUT_NAMES), {"images": image.transpose(2, 0, 1)[None].astype(np.float32)}
    )
    ref = postprocess(
        torch.from_numpy(logits[0]),
        torch.from_numpy(masks[0]),
        (64, 96),
        (64, 96),
        (64, 96),
        torch.tensor([False, True, False]),
        0.1,
        0.2,
    )
    assert ref["segments_info"], "the test graph should predict segments"
    assert [s["label"] for s in result["segments"]] == [s["label"] for s in ref["segments_info"]]
    assert np.array_equal(np.array(result["panoptic"]), ref["panoptic_seg"].numpy())
    # files of `eclipse-seg predict --onnx`, semantic model: label PNG of category ids
    semantic = np.array(Image.open(tmp_path / "out" / "semantic" / "im.png"))
    ids = np.array([11, 12, 13, 0] + [0] * 252)
    sem = ref["sem_seg"].numpy()
    assert np.array_equal(semantic, ids[np.where(sem == 255, 3, sem)])


def test_onnx_without_our_metadata_is_refused(tmp_path):
    from eclipse_seg.runtime import Segmenter

    with pytest.raises(CheckpointError, match="no eclipse-seg metadata.*eclipse-seg export"):
        Segmenter(_write_onnx(tmp_path / "plain.onnx", None))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.pop("categories"), "'categories' is missing"),
        (lambda m: m.update(format="other/2"), "this version reads"),
        (lambda m: m["categories"].pop(), "2 categories for 3 classes"),
        (lambda m: m["deltas"].append(0.1), "3 deltas for 2 query groups"),
    ],
)
def test_malformed_metadata_names_the_field(tmp_path, change, message):
    from eclipse_seg.runtime import Segmenter

    metadata = _metadata()
    change(metadata)
    with pytest.raises(CheckpointError, match=message):
        Segmenter(_write_onnx(tmp_path / "bad.onnx", metadata))


def test_fixed_size_model_refuses_other_sizes(tmp_path):
    from eclipse_seg.errors import DataError
    from eclipse_seg.runtime import Segmenter

    metadata = _metadata()
    metadata["input"].update(height=64, width=96)
    seg = Segmenter(_write_onnx(tmp_path / "fixed.onnx", metadata))
    assert seg.predict(np.zeros((64, 96, 3), np.uint8))["panoptic_seg"].shape == (64, 96)
    with pytest.raises(DataError, match="exported for 64x96 images"):
        seg.predict(np.zeros((96, 64, 3), np.uint8))
