"""A tiny `train --orders 3` run shared by the orders and report tests (made once per session;
tests that change it work on a copy)."""

from __future__ import annotations

import pytest

from eclipse_seg.cli import main
from eclipse_seg.data.synthetic import make_synthetic
from tests.conftest import TINY_MODEL

# 32x32 images, 2 steps (9 + 3 classes), 2 iterations per step, 2 validation images
TINY_ORDERS_RUN = TINY_MODEL + [
    "continual.scenario=9,3",
    "solver.iterations=2",
    "continual.iterations=2",
    "continual.finetune_iterations=2",
    "solver.checkpoint_period=1",
    "data.max_val_images=2",
    "data.base_size=32",
    "data.crop_size=32",
]


def orders_args(data, out, *extra: str) -> list[str]:
    return [
        "train",
        "synthetic/base",
        "--output",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        *TINY_ORDERS_RUN,
        f"data.root={data}",
        *extra,
    ]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic32")
    make_synthetic(root, seed=3, num_train=16, num_val=4, height=32, width=32)
    return root


@pytest.fixture(scope="session")
def orders_run(small_data, tmp_path_factory):
    """(data root, output folder) of `train --orders 3` (ECLIPSE) on the tiny settings."""
    out = tmp_path_factory.mktemp("orders") / "run"
    assert main(orders_args(small_data, out, "--orders", "3")) == 0
    return small_data, out
