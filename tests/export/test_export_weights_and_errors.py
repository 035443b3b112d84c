"""safetensors export + loading (no unpickling), the export-friendly pixel decoder, and the errors
of `eclipse-seg export` (all without tracing)."""

from __future__ import annotations

import pickle

import pytest
import torch
from tiny_models import tiny_continual

from eclipse_seg.cli import main
from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.export.graph import InferenceGraph, check_exportable, export_copy, export_friendly


def _images():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8)]


def test_safetensors_round_trip_without_pickle(tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    from eclipse_seg.engine.build import load_model
    from eclipse_seg.export import load_safetensors
    from eclipse_seg.runtime.metadata import decode_metadata

    out = tmp_path / "tiny.safetensors"
    assert (
        main(
            [
                "export",
                "--weights",
                str(tiny_checkpoint),
                "--format",
                "safetensors",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    want, cfg, scenario, step, method = load_model(tiny_checkpoint)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading safetensors must not unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    got, got_cfg, got_scenario, got_step, got_method = load_safetensors(out)
    assert (got_cfg, got_scenario, got_step, got_method) == (cfg, scenario, step, method)
    for (k, a), (k2, b) in zip(want.state_dict().items(), got.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    with torch.no_grad():
        a, b = want(_images()), got(_images())
    assert torch.equal(a.pred_logits, b.pred_logits) and torch.equal(a.pred_masks, b.pred_masks)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = decode_metadata(f.metadata()["eclipse_seg"], str(out))
    assert meta["classes_per_step"] == [6, 2, 2, 2]


def test_safetensors_without_manifest_is_refused(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    from eclipse_seg.export import load_safetensors

    path = tmp_path / "plain.safetensors"
    st.save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not written by `eclipse-seg export"):
        load_safetensors(path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="plain.safetensors"):
        load_safetensors(path)


def test_export_friendly_pixel_decoder_is_bitwise_the_eager_one():
    """The forwards swapped in for tracing compute exactly what the model's own forwards do."""
    model, _, _ = tiny_continual(1)
    graph = InferenceGraph(export_copy(model))
    images = torch.randint(0, 256, (2, 3, 72, 104), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = graph(images.float())
        with export_friendly(graph.model):
            got = graph(images.float())
        again = graph(images.float())  # restored afterwards
    for a, b, c in zip(want, got, again):
        assert torch.equal(a, b) and torch.equal(a, c)
    # and the graph equals the model's own preprocessing + forward on the reference paths it
    # traces (explicit attention, grid_sample pixel decoder) bitwise, and the default fast paths
    # within float rounding
    with torch.no_grad():
        fast = model(list(images.to(torch.uint8)))
        model.sem_seg_head.pixel_decoder.set_fast(False)
        model.set_fast_attention(False)
        eager = model(list(images.to(torch.uint8)))
    assert torch.equal(eager.pred_logits, want[0]) and torch.equal(eager.pred_masks, want[1])
    assert torch.allclose(fast.pred_logits, want[0], atol=1e-4)
    assert torch.allclose(fast.pred_masks, want[1], atol=2e-4)


def test_export_copy_leaves_the_model_alone():
    model, _, _ = tiny_continual(1)
    model.train().set_fast_attention(True)
    clone = export_copy(model)
    assert model.training and not clone.training
    assert model.decoder.transformer_self_attention_layers[0].self_attn.use_sdpa
    assert not clone.decoder.transformer_self_attention_layers[0].self_attn.use_sdpa


def test_swin_with_dynamic_size_says_why(tiny_checkpoint, tmp_path):
    model, _, _ = tiny_continual(
        0,
        "model.backbone_type=swin",
        "model.swin.embed_dim=8",
        "model.swin.depths=[2,2,2,2]",
        "model.swin.num_heads=[1,2,2,4]",
        "model.swin.window_size=4",
    )
    with pytest.raises(ConfigError, match="swin.*window size.*--height H --width W"):
        check_exportable(model, None)
    check_exportable(model, (64, 96))  # a fixed size is fine


def test_export_command_errors(tiny_checkpoint, tmp_path, capsys):
    base = ["export", "--weights", str(tiny_checkpoint), "--output", str(tmp_path / "m.onnx")]
    assert main(base + ["--format", "onnx", "--opset", "16"]) == 2
    assert "GridSample" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--weights",
                str(tmp_path / "missing.pt"),
                "--format",
                "onnx",
                "--output",
                str(tmp_path / "m.onnx"),
            ]
        )
        == 2
    )
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--format", "onnx", "--height", "64"])
    assert "go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--format", "tflite"])
