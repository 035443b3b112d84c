"""Step 0 and its ImageNet weight file: stop before any work when the file is missing, load it into
the fresh model otherwise, and record its SHA-256 in the checkpoint manifest."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch

from eclipse_seg.cli import main
from eclipse_seg.engine.checkpoint import load_checkpoint
from eclipse_seg.engine.pretrained import require_step0_weights, trains_step0
from eclipse_seg.engine.runner import run
from eclipse_seg.errors import CheckpointError
from eclipse_seg.model.backbone import WEIGHTS_ENV, ResNet


@pytest.fixture(autouse=True)
def _no_weights_folder(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


def test_missing_weights_stop_the_cli_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    rc = main(["train", "ade20k/panoptic_r50", "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "model.backbone.weights: pretrained backbone weights 'R-50.pkl' not found" in err
    assert str(tmp_path / "R-50.pkl") in err and WEIGHTS_ENV in err
    assert "model.backbone.weights=none" in err and "on purpose" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output dir, no config, no data


def test_missing_weights_are_reported_before_the_data(tmp_path, monkeypatch):
    """The API stops on the weight file first, although the dataset is missing as well."""
    from eclipse_seg.config import load_config, resolve_config

    path = resolve_config("ade20k/semantic_r101").resolve()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, [f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(CheckpointError, match="'R-101.pkl' not found"):
        run(cfg, "eclipse")
    assert not (tmp_path / "run").exists()


def test_weights_are_needed_only_when_step0_is_trained(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model.backbone.weights=R-50.pkl")
    assert trains_step0(cfg, "eclipse", None) and trains_step0(cfg, "joint", [0])
    assert not trains_step0(cfg, "eclipse", [2])
    assert not trains_step0(cfg, "eclipse", None, init_from=tmp_path / "base.pt")
    with pytest.raises(CheckpointError):
        require_step0_weights(cfg, "eclipse", None)
    require_step0_weights(cfg, "eclipse", [1])  # later steps start from step 0's checkpoint
    final = tmp_path / "run" / "eclipse" / "step_0" / "final.pt"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    assert not trains_step0(cfg, "eclipse", None)  # step 0 already done
    require_step0_weights(cfg, "eclipse", None)


def test_step0_loads_the_file_and_records_its_sha256(tiny_cfg, tmp_path, monkeypatch):
    """lr 0: the trained backbone still equals the file, so the file was loaded."""
    cfg = tiny_cfg("solver.iterations=1", "solver.lr=0.0")
    torch.manual_seed(3)  # other conv weights than the run's own initialisation (seed 0)
    src = ResNet(cfg.model.backbone)
    state = {k: v.numpy().copy() for k, v in src.state_dict().items()}
    for k in state:
        if k.endswith("norm.bias"):  # and FrozenBN statistics other than the identity
            state[k] += 0.1
    folder = tmp_path / "weights"
    folder.mkdir()
    with open(folder / "R-50.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "torchvision", "matching_heuristics": True}, f)
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    cfg.model.backbone.weights = "R-50.pkl"
    run(cfg, "eclipse", [0], progress=False, evaluate=False)
    payload = load_checkpoint(tmp_path / "run" / "eclipse" / "step_0" / "final.pt")
    record = payload["manifest"]["backbone_weights"]
    assert record["sha256"] == hashlib.sha256((folder / "R-50.pkl").read_bytes()).hexdigest()
    assert record["file"] == str(folder / "R-50.pkl") and record["complete"]
    assert record["tensors"] == len(state)
    for k, v in state.items():
        assert torch.equal(payload["model"][f"backbone.{k}"], torch.as_tensor(v)), k


def test_random_initialisation_is_recorded(tiny_cfg, tmp_path):
    cfg = tiny_cfg("solver.iterations=1")
    run(cfg, "eclipse", [0], progress=False, evaluate=False)
    payload = load_checkpoint(tmp_path / "run" / "eclipse" / "step_0" / "final.pt")
    assert payload["manifest"]["backbone_weights"] is None


def test_swin_weights_come_from_the_swin_section(tmp_path):
    from eclipse_seg.config import load_config
    from eclipse_seg.engine.pretrained import load_step0_weights
    from eclipse_seg.errors import ConfigError
    from eclipse_seg.model.mask2former import Mask2Former

    swin = [
        "model.backbone_type=swin",
        "model.swin.embed_dim=24",
        "model.swin.depths=[2,2,2,2]",
        "model.swin.num_heads=[1,2,3,6]",
        "model.swin.window_size=4",
    ]
    torch.manual_seed(1)
    swin.append("model.base_classes=9")
    src = Mask2Former(load_config("synthetic/base", swin).model).backbone
    torch.save({"model": src.state_dict()}, tmp_path / "swin.pth")
    cfg = load_config(
        "configs/synthetic/base.yaml", [*swin, f"model.swin.weights={tmp_path / 'swin.pth'}"]
    )
    torch.manual_seed(2)
    model = Mask2Former(cfg.model)
    record = load_step0_weights(model, cfg)["backbone_weights"]
    assert record["complete"] and record["file"] == str(tmp_path / "swin.pth")
    assert torch.equal(model.backbone.patch_embed.proj.weight, src.patch_embed.proj.weight)
    cfg.model.backbone.weights = "R-50.pkl"  # the other backbone's key: refused, not ignored
    with pytest.raises(
        ConfigError, match="model.backbone.weights='R-50.pkl' but model.backbone_type"
    ):
        load_step0_weights(model, cfg)
