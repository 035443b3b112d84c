"""Shared fixtures: a tiny synthetic dataset and a tiny config of the real model structure."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.data.synthetic import make_synthetic

# CI runs the property tests derandomized: a red CI is reproducible; locally they explore anew.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

TINY_MODEL = [
    "model.backbone.stem_out_channels=8",
    "model.backbone.res2_out_channels=16",
    "model.backbone.width_per_group=4",
    "model.pixel_decoder.conv_dim=32",
    "model.pixel_decoder.mask_dim=32",
    "model.pixel_decoder.num_layers=1",
    "model.pixel_decoder.ffn_dim=64",
    "model.decoder.hidden_dim=32",
    "model.decoder.ffn_dim=64",
    "model.decoder.num_layers=3",
    "model.decoder.num_queries=8",
    "loss.num_points=64",
    "solver.batch_size=2",
    "continual.num_prompts=3",
    "solver.iterations=3",
    "continual.iterations=3",
    "solver.checkpoint_period=2",
    "test.batch_size=4",
    "continual.scenario=6-2",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, seed=3, num_train=24, num_val=6, height=64, width=64)
    return root


@pytest.fixture
def tiny_cfg(tiny_data, tmp_path):
    def make(*extra: str):
        return load_config(
            resolve_config("synthetic/base"),
            TINY_MODEL + [f"data.root={tiny_data}", f"output_dir={tmp_path / 'run'}", *extra],
        )

    return make


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_data_root_from_the_environment(monkeypatch):
    """Relative data roots resolve against the working directory unless a test sets ECLIPSE_DATA."""
    monkeypatch.delenv("ECLIPSE_DATA", raising=False)
