"""One tiny continual checkpoint and one export of it (traced once, written as .pt2 and .onnx),
shared by the export tests: tracing the whole model takes tens of seconds."""

from __future__ import annotations

import pytest
from tiny_models import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt")


@pytest.fixture(scope="session")
def exported(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported with a dynamic image size: {"model", "cfg", "onnx", "pt2",
    "results"}."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from eclipse_seg.engine.build import load_model
    from eclipse_seg.export import deploy_metadata, export_onnx, export_program, trace

    model, cfg, scenario, step, method = load_model(tiny_checkpoint)
    metadata = deploy_metadata(model, cfg, scenario, step, method)
    traced = trace(model)
    out = tmp_path_factory.mktemp("exported")
    # the .pt2 round trip is what test_exported_program_* check (loading one takes ~20 s)
    results = {
        "pt2": export_program(model, out / "tiny.pt2", metadata, traced=traced, verify=False),
        "onnx": export_onnx(model, out / "tiny.onnx", metadata, traced=traced),
    }
    return {
        "model": model,
        "cfg": cfg,
        "onnx": out / "tiny.onnx",
        "pt2": out / "tiny.pt2",
        "results": results,
        "metadata": metadata,
    }
