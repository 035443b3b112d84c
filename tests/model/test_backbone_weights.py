"""ImageNet weight files into a backbone: the torchvision and detectron2 layouts, the specific errors
of a wrong or partial file, safe unpickling, where a configured file is looked for, and the
backbone interface (output shapes, freezing, norms)."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.model.backbone import (
    WEIGHTS_ENV,
    ResNet,
    ResNetConfig,
    SwinConfig,
    SwinTransformer,
    find_weights,
)
from eclipse_seg.model.backbone.resnet import FrozenBatchNorm2d
from eclipse_seg.model.layers import FeatureSpec, make_norm, train_keeping_frozen_in_eval

TINY = {"depth": 50, "stem_out_channels": 8, "res2_out_channels": 16, "width_per_group": 4}


def tiny_resnet(**kw) -> ResNet:
    return ResNet(ResNetConfig(**{**TINY, **kw}))


def randomise(model: ResNet, seed: int = 1) -> ResNet:
    """Distinct random values in every tensor (FrozenBN statistics included, variances > 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            r = torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else None
            v.copy_(r if r is not None else torch.randn(v.shape, generator=g) * 0.1)
    return model


def d2_to_torchvision(key: str) -> str:
    """detectron2 name -> torchvision name (the inverse of detectron2's conversion script)."""
    if key.startswith("stem."):
        return key[5:].replace("conv1.norm.", "bn1.")
    stage = int(key[3]) - 1
    key = f"layer{stage}" + key[4:]
    key = key.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
    for i in (1, 2, 3):
        key = key.replace(f".conv{i}.norm.", f".bn{i}.")
    return key


def save_torchvision(model: ResNet, path) -> None:
    state = {d2_to_torchvision(k): v.clone() for k, v in model.state_dict().items()}
    for k in [k for k in state if k.endswith("running_var")]:
        state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(100)
    state["fc.weight"] = torch.zeros(10, model.out_channels["res5"])
    state["fc.bias"] = torch.zeros(10)
    torch.save(state, path)


def save_detectron2(model: ResNet, path) -> None:
    """The model-zoo layout: detectron2 names, numpy arrays, the classifier renamed `stem.fc`."""
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    state["stem.fc.weight"] = np.zeros((10, model.out_channels["res5"]), np.float32)
    state["stem.fc.bias"] = np.zeros((10,), np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "torchvision", "matching_heuristics": True}, f)


def features(model, x):
    with torch.no_grad():
        return model.eval()(x)


# ----- the two layouts -------------------------------------------------------------------------


def test_torchvision_and_detectron2_layouts_give_equal_outputs(tmp_path):
    src = randomise(tiny_resnet())
    save_torchvision(src, tmp_path / "resnet50.pth")
    save_detectron2(src, tmp_path / "R-50.pkl")
    x = torch.randn(2, 3, 64, 96)
    ref = features(src, x)
    outs = []
    for name in ("resnet50.pth", "R-50.pkl"):
        torch.manual_seed(7)
        model = tiny_resnet()
        report = model.load_weights(tmp_path / name)
        assert report.complete and len(report.loaded) == len(model.state_dict())
        assert report.sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        outs.append(features(model, x))
    for key in ref:
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=0, atol=0)
        torch.testing.assert_close(outs[0][key], ref[key], rtol=0, atol=0)


def test_backbone_prefixed_names_load(tmp_path):
    src = randomise(tiny_resnet())
    torch.save(
        {"model": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "m.pth"
    )
    model = tiny_resnet()
    model.load_weights(tmp_path / "m.pth")
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_trained_batch_norm_loads_the_same_file(tmp_path):
    """R101 semantic trains BN: the same file fits (BN step counters are not taken from it) and, in
    eval mode, BN computes what FrozenBN does."""
    src = randomise(tiny_resnet())
    save_detectron2(src, tmp_path / "R-50.pkl")
    x = torch.randn(1, 3, 64, 64)
    for norm in ("BN", "SyncBN"):
        model = tiny_resnet(norm=norm)
        report = model.load_weights(tmp_path / "R-50.pkl")
        assert report.complete
        out, ref = features(model, x), features(src, x)
        for key in ref:
            torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-5)


# ----- wrong or partial files ------------------------------------------------------------------


def test_partial_file_is_refused_and_nothing_loaded(tmp_path):
    src = randomise(tiny_resnet())
    state = {k: v.numpy() for k, v in src.state_dict().items() if not k.startswith("res5.2.")}
    with open(tmp_path / "part.pkl", "wb") as f:
        pickle.dump({"model": state}, f)
    model = tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        model.load_weights(tmp_path / "part.pkl")
    msg = str(e.value)
    assert "part.pkl" in msg and "missing keys (15)" in msg and "res5.2.conv1.weight" in msg
    assert "allow_partial" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # asked for: the 250 tensors that fit load, the report lists the 15 others
    report = model.load_weights(tmp_path / "part.pkl", allow_partial=True)
    assert not report.complete and len(report.missing) == 15 and len(report.loaded) == 250
    assert torch.equal(model.res4[0].conv1.weight, src.res4[0].conv1.weight)
    assert torch.equal(model.res5[2].conv1.weight, before["res5.2.conv1.weight"])


def test_other_depth_and_shape_mismatch_are_named(tmp_path):
    deeper = randomise(tiny_resnet(depth=101))
    save_detectron2(deeper, tmp_path / "R-101.pkl")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(255\).*res4\.10\.conv1\.weight"):
        tiny_resnet().load_weights(tmp_path / "R-101.pkl")
    wider = randomise(tiny_resnet(stem_out_channels=16))
    save_detectron2(wider, tmp_path / "wide.pkl")
    with pytest.raises(
        CheckpointError, match=r"stem\.conv1\.weight: file \(16, 3, 7, 7\) vs model"
    ):
        tiny_resnet().load_weights(tmp_path / "wide.pkl")


def test_file_of_another_backbone_is_named(tmp_path):
    swin = SwinTransformer(
        SwinConfig(embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 3, 6], window_size=4)
    )
    torch.save({"model": swin.state_dict()}, tmp_path / "swin_tiny.pth")
    with pytest.raises(CheckpointError, match="holds no tensor of this ResNet"):
        tiny_resnet().load_weights(tmp_path / "swin_tiny.pth")
    save_detectron2(tiny_resnet(), tmp_path / "R-50.pkl")
    with pytest.raises(CheckpointError, match="holds no tensor of this Swin backbone"):
        swin.load_weights(tmp_path / "R-50.pkl")


def test_caffe2_msra_weights_are_explained(tmp_path):
    with open(tmp_path / "MSRA-R-50.pkl", "wb") as f:
        pickle.dump(
            {
                "conv1_w": np.zeros((64, 3, 7, 7), np.float32),
                "res_conv1_bn_s": np.ones(64, np.float32),
                "res2_0_branch2a_w": np.zeros((64, 64, 1, 1), np.float32),
            },
            f,
        )
    with pytest.raises(CheckpointError, match="Caffe2 .*BGR"):
        tiny_resnet().load_weights(tmp_path / "MSRA-R-50.pkl")


def test_pickle_cannot_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": Payload()}}, f)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        tiny_resnet().load_weights(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()


def test_pickled_torch_tensors_load(tmp_path):
    """Mask2Former's Swin .pkl conversion pickles torch tensors (not arrays) with plain pickle."""
    src = randomise(tiny_resnet())
    with open(tmp_path / "t.pkl", "wb") as f:
        pickle.dump({"model": dict(src.state_dict()), "__author__": "third_party"}, f)
    model = tiny_resnet()
    assert model.load_weights(tmp_path / "t.pkl").complete
    assert torch.equal(model.stem.conv1.weight, src.stem.conv1.weight)


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read backbone weights .*junk.pth"):
        tiny_resnet().load_weights(tmp_path / "junk.pth")
    torch.save({}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="empty dict"):
        tiny_resnet().load_weights(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not found"):
        tiny_resnet().load_weights(tmp_path / "absent.pkl")


# ----- where a configured file is looked for ---------------------------------------------------


def test_find_weights_order(tmp_path, monkeypatch):
    folder, cwd = tmp_path / "weights", tmp_path / "cwd"
    folder.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert not find_weights("none").requested and not find_weights("None").found
    miss = find_weights("R-50.pkl")
    assert miss.requested and not miss.found and miss.searched == (cwd / "R-50.pkl",)
    (cwd / "R-50.pkl").write_bytes(b"x")
    assert find_weights("R-50.pkl").path == cwd / "R-50.pkl"
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert find_weights("R-50.pkl").path == cwd / "R-50.pkl"  # the folder lacks it: cwd next
    (folder / "R-50.pkl").write_bytes(b"y")
    found = find_weights("R-50.pkl")
    assert found.path == folder / "R-50.pkl" and found.searched[0] == folder / "R-50.pkl"
    assert find_weights(str(cwd / "R-50.pkl")).path == cwd / "R-50.pkl"  # absolute: as is
    msg = find_weights("R-101.pkl").missing_message("model.backbone.weights")
    assert "'R-101.pkl' not found" in msg and str(folder / "R-101.pkl") in msg
    assert str(cwd / "R-101.pkl") in msg and "model.backbone.weights=none" in msg


# ----- the backbone interface ------------------------------------------------------------------


def test_output_shape_matches_the_features():
    for model in (
        tiny_resnet(),
        SwinTransformer(
            SwinConfig(embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 3, 6], window_size=4)
        ),
    ):
        shapes = model.output_shape()
        assert list(shapes) == ["res2", "res3", "res4", "res5"]
        assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
        out = features(model, torch.randn(1, 3, 64, 64))
        for name, spec in shapes.items():
            assert isinstance(spec, FeatureSpec)
            assert out[name].shape == (1, spec.channels, 64 // spec.stride, 64 // spec.stride)


def test_freeze_keeps_frozen_stages_fixed_and_in_eval():
    model = tiny_resnet(norm="BN", freeze_at=2)  # stem and res2
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.res2.parameters())
    assert all(p.requires_grad for p in model.res3.parameters())
    model.train()
    assert not model.stem.training and not model.res2.training and model.res3.training
    stats = model.res2[0].conv1.norm.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.res2[0].conv1.norm.running_mean, stats)
    for p in model.parameters():  # what a step-0 run does before re-applying freeze_at
        p.requires_grad_(True)
    model.freeze()
    assert not any(p.requires_grad for p in model.res2.parameters())


def test_norm_choices():
    assert isinstance(make_norm("FrozenBN", 4), FrozenBatchNorm2d)
    assert type(make_norm("BN", 4)) is torch.nn.BatchNorm2d
    assert isinstance(make_norm("SyncBN", 4), torch.nn.SyncBatchNorm)
    with pytest.raises(ConfigError, match="model.backbone.norm.*'GN'"):
        make_norm("GN", 4)
    with pytest.raises(ConfigError, match="model.backbone.norm"):
        tiny_resnet(norm="batchnorm")
    # FrozenBN has no parameters (only the 53 convs train); trained BN adds weight and bias
    assert [p.dim() for p in tiny_resnet().parameters()] == [4] * 53
    bn = tiny_resnet(norm="SyncBN")
    assert sum(p.dim() == 1 for p in bn.parameters()) == 2 * 53
    bn.train()(torch.randn(2, 3, 32, 32))  # one process, no process group: plain batch norm


def test_train_keeping_frozen_in_eval():
    """Frozen parts run as at inference (BN statistics unchanged, no dropout); modules without
    parameters inside a trainable module keep training mode."""
    net = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)),  # frozen
        torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5)
        ),
    )
    for p in net[0].parameters():
        p.requires_grad_(False)
    train_keeping_frozen_in_eval(net)
    assert net.training and not net[0].training and not net[0][1].training
    assert net[1].training and net[1][1].training and net[1][2].training
    frozen_stats, live_stats = net[0][1].running_mean.clone(), net[1][1].running_mean.clone()
    net(torch.randn(2, 3, 8, 8))
    assert torch.equal(net[0][1].running_mean, frozen_stats)
    assert not torch.equal(net[1][1].running_mean, live_stats)
