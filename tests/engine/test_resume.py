"""Resume: an interrupted step continues from its last checkpoint and ends bitwise where an
uninterrupted run ends (CPU, fixed seed); a corrupt checkpoint falls back to the previous one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from eclipse_seg.engine.build import build_datasets, build_model, build_scenario, manifest_for
from eclipse_seg.engine.train import plan_step, train_step
from eclipse_seg.errors import CheckpointError


def _setup(tiny_cfg, *extra):
    cfg = tiny_cfg(
        "solver.iterations=4", "solver.checkpoint_period=2", "solver.log_period=1", *extra
    )
    train, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    things = {c["id"] for c in train.categories if c["isthing"]}
    return cfg, train, scenario, things


def _fresh(cfg, scenario, things):
    torch.manual_seed(123)
    model = build_model(cfg, scenario, "eclipse", 0, things)
    return model, manifest_for(cfg, scenario, 0, "eclipse", model)


def _losses(step_dir):
    return [json.loads(line)["loss"] for line in (step_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_is_bitwise_identical(tiny_cfg, tmp_path):
    cfg, train, scenario, things = _setup(tiny_cfg)
    plan = plan_step(cfg, scenario, 0, "eclipse")
    model, manifest = _fresh(cfg, scenario, things)
    train_step(model, cfg, scenario, plan, train, tmp_path / "a", manifest, progress=False)
    reference = model.state_dict()

    model, manifest = _fresh(cfg, scenario, things)
    stats = train_step(
        model,
        cfg,
        scenario,
        plan,
        train,
        tmp_path / "b",
        manifest,
        progress=False,
        max_iterations=3,
    )  # "killed" after iteration 3; last checkpoint at 2
    assert not stats["complete"]
    model, manifest = _fresh(cfg, scenario, things)
    stats = train_step(model, cfg, scenario, plan, train, tmp_path / "b", manifest, progress=False)
    assert stats["complete"]
    for k, v in reference.items():
        assert torch.equal(model.state_dict()[k], v), k
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert b[:2] == a[:2] and b[-2:] == a[-2:]  # iterations 3-4 replayed identically


@pytest.mark.slow
def test_corrupt_last_checkpoint_falls_back_to_previous(tiny_cfg, tmp_path):
    cfg, train, scenario, things = _setup(tiny_cfg, "solver.iterations=6")
    plan = plan_step(cfg, scenario, 0, "eclipse")
    model, manifest = _fresh(cfg, scenario, things)
    train_step(
        model, cfg, scenario, plan, train, tmp_path, manifest, progress=False, max_iterations=5
    )
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # truncated by a crash of the disk
    from eclipse_seg.engine.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(last)
    model, manifest = _fresh(cfg, scenario, things)
    stats = train_step(model, cfg, scenario, plan, train, tmp_path, manifest, progress=False)
    assert stats["complete"] and stats["iterations"] == 6


def test_checkpoint_of_other_run_is_refused(tiny_cfg, tmp_path):
    cfg, train, scenario, things = _setup(tiny_cfg)
    plan = plan_step(cfg, scenario, 0, "eclipse")
    model, manifest = _fresh(cfg, scenario, things)
    train_step(
        model, cfg, scenario, plan, train, tmp_path, manifest, progress=False, max_iterations=2
    )
    other = dict(manifest, config_hash="something-else")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train_step(model, cfg, scenario, plan, train, tmp_path, other, progress=False)


@pytest.mark.slow
def test_sigkill_mid_step_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    """A real process killed with SIGKILL resumes with `--resume` to the same final weights."""
    from tests.conftest import TINY_MODEL

    common = [
        sys.executable,
        "-m",
        "eclipse_seg",
        "train",
        "synthetic/base",
        "--step",
        "0",
        "--no-progress",
        *TINY_MODEL,
        f"data.root={tiny_data}",
        "solver.iterations=40",
        "solver.checkpoint_period=5",
        "data.max_val_images=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(common + ["--output", str(ref)], check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        common + ["--output", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    step_dir = run / "eclipse" / "step_0"
    deadline = time.time() + 120
    while time.time() < deadline and not (step_dir / "prev.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (step_dir / "final.pt").exists(), "the run finished before it could be killed"
    subprocess.run(
        common + ["--output", str(run), "--resume"], check=True, env=env, capture_output=True
    )
    a = torch.load(ref / "eclipse" / "step_0" / "final.pt", weights_only=False)["model"]
    b = torch.load(step_dir / "final.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
