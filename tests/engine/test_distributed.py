"""Two CPU processes (gloo) train step 0 and a prompt-tuning step of the tiny config through the real
`train_step` (DDP for step 0, all_reduce of the group gradients for prompt tuning) and evaluate with
`evaluate_model`: the ranks stay bitwise in sync, and evaluation sees every image exactly once and
merges to the single-process result."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

from eclipse_seg.config import TestConfig, load_config, resolve_config
from eclipse_seg.continual import grow_for_step, set_deltas
from eclipse_seg.engine.build import build_datasets, build_model, build_scenario, manifest_for
from eclipse_seg.engine.evaluate import evaluate_model
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.train import plan_step, train_step
from tests.conftest import TINY_MODEL

WORLD = 2
EVAL_IMAGES = 5  # odd: the shards are uneven


def state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cfg(data_root, out):
    return load_config(
        resolve_config("synthetic/base"),
        TINY_MODEL
        + [
            f"data.root={data_root}",
            f"output_dir={out}",
            "solver.iterations=3",
            "continual.iterations=2",
            "solver.checkpoint_period=2",
            "solver.log_period=1",
            "test.batch_size=1",
        ],
    )


def _worker(rank: int, port: int, data_root: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    td.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        cfg = _cfg(data_root, out)
        train, val = build_datasets(cfg)
        scenario = build_scenario(cfg, train)
        things = {c["id"] for c in train.categories if c["isthing"]}
        model = build_model(cfg, scenario, "eclipse", 0, things)
        if rank == 1:  # a different init on rank 1: DDP must broadcast rank 0's weights
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
        record = {}
        for step in (0, 1):
            if step == 1:
                grow_for_step(
                    model, scenario.classes_of_step(1), things, "eclipse", cfg.continual.num_prompts
                )
            plan = plan_step(cfg, scenario, step, "eclipse")
            stats = train_step(
                model,
                cfg,
                scenario,
                plan,
                train,
                __import__("pathlib").Path(out) / f"step_{step}",
                manifest_for(cfg, scenario, step, "eclipse", model),
                progress=False,
            )
            record[f"hash_{step}"] = state_hash(model)
            record[f"iterations_{step}"] = stats["iterations"]
        set_deltas(model, cfg.continual.deltas)
        summary = evaluate_model(
            Predictor(model, scenario, TestConfig(batch_size=1)),
            val,
            1,
            max_images=EVAL_IMAGES,
            progress=False,
        )
        record["summary"] = summary
        if rank == 0:
            torch.save(model.state_dict(), f"{out}/final_state.pt")
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(record, f)
    finally:
        td.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not td.is_available() or not td.is_gloo_available(), reason="needs gloo")
def test_two_ranks_stay_in_sync_and_evaluate_each_image_once(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(tiny_data), str(out)), nprocs=WORLD, join=True)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert r0["iterations_0"] == 3 and r0["iterations_1"] == 2
    assert r0["hash_0"] == r1["hash_0"], "ranks diverged in step 0 (DDP)"
    assert r0["hash_1"] == r1["hash_1"], "ranks diverged in prompt tuning"
    assert r1["summary"] == {}  # only rank 0 reports
    assert r0["summary"]["num_images"] == EVAL_IMAGES
    assert (out / "step_1" / "final.pt").exists() and (out / "step_0" / "final.pt").exists()

    # single-process evaluation of the same weights gives the same merged result
    cfg = _cfg(tiny_data, tmp_path / "single")
    train, val = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    things = {c["id"] for c in train.categories if c["isthing"]}
    model = build_model(cfg, scenario, "eclipse", 1, things)
    model.load_state_dict(torch.load(out / "final_state.pt"))
    set_deltas(model, cfg.continual.deltas)
    single = evaluate_model(
        Predictor(model, scenario, TestConfig(batch_size=1)),
        val,
        1,
        max_images=EVAL_IMAGES,
        progress=False,
    )
    assert json.loads(json.dumps(single)) == r0["summary"]
