"""An official ECLIPSE checkpoint, imported with `import-official`, exports (fixed size, through the
command line) and the ONNX model matches the official model in eager PyTorch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compat"))
from official_fixtures import TINY_OPTS, eval_opts, write_official_configs

pytestmark = pytest.mark.slow  # one trace + ONNX export of the model

OPTS = eval_opts("ade_ps 50-20") + TINY_OPTS + ["CONT.TASK", "2"]  # 2 prompt groups of 20


def test_imported_official_checkpoint_exports_and_matches(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from eclipse_seg.cli import main
    from eclipse_seg.compat.official_checkpoint import build_official, load_official
    from eclipse_seg.export import read_onnx_metadata
    from eclipse_seg.runtime import Segmenter

    cfg_path = write_official_configs(tmp_path)["ade_ps"]
    torch.manual_seed(0)
    model, *_ = build_official(cfg_path, OPTS)
    with torch.no_grad():
        for p in model.parameters():  # prompts start equal: make every group distinct
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v for k, v in model.state_dict().items() if k != "thing_mask"}
    torch.save({"model": state, "iteration": 1}, tmp_path / "model_final.pth")
    ours, onnx_path = tmp_path / "ours.pt", tmp_path / "ade_50_20.onnx"
    assert (
        main(
            [
                "import-official",
                "--weights",
                str(tmp_path / "model_final.pth"),
                "--config",
                str(cfg_path),
                "--output",
                str(ours),
                "--opts",
                *OPTS,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "export",
                "--weights",
                str(ours),
                "--format",
                "onnx",
                "--output",
                str(onnx_path),
                "--height",
                "64",
                "--width",
                "80",
            ]
        )
        == 0
    )

    official = load_official(tmp_path / "model_final.pth", cfg_path, OPTS)
    image = torch.randint(
        0, 256, (3, 64, 80), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    with torch.no_grad():
        want = official([image])
    logits, masks = Segmenter(onnx_path).run(image.float()[None].numpy())
    assert np.abs(logits - want.pred_logits.numpy()).max() <= 1e-4
    assert np.abs(masks - want.pred_masks.numpy()).max() <= 2e-4

    meta = read_onnx_metadata(onnx_path)
    assert meta["scenario"] == {"name": "50-20", "step": 2, "method": "eclipse"}
    assert meta["classes_per_step"] == [50, 20, 20] and meta["query_groups"] == [50, 20, 20]
    assert meta["deltas"] == pytest.approx([0.4, 0.5, 0.5])
    assert meta["categories"][0]["name"] == "wall" and meta["categories"][7]["name"] == "bed"
    assert [c["isthing"] for c in meta["categories"]] == official.thing_mask.tolist()
    assert (meta["input"]["height"], meta["input"]["width"]) == (64, 80)
