"""Threads on a shared CPU: one step-0 training iteration of the demo model (synthetic config,
batch 8, 64x64) with 1 and with 2 torch threads, on the machine as it is and with one competing
busy process (a pure-Python loop pinned to nothing, like another user's job).

    python -m benchmarks.threads [--iterations 5] [--json out.json]

Each measurement runs in a fresh process (torch's thread pool is sized once per process) and
reports the median seconds per iteration after one warm-up iteration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def child(threads: int, iterations: int) -> float:
    """Median seconds of one step-0 iteration of the demo model with `threads` torch threads."""
    import torch

    from eclipse_seg.config import load_config
    from eclipse_seg.engine.build import (
        build_datasets,
        build_model,
        build_scenario,
        manifest_for,
        thing_ids_of,
    )
    from eclipse_seg.engine.train import plan_step, train_step

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            "synthetic/base",
            [
                f"data.root={tmp}/data",
                f"output_dir={tmp}/run",
                "data.synthetic_train=16",
                "data.synthetic_val=2",
                "solver.checkpoint_period=100000",
            ],
        )
        train, _ = build_datasets(cfg)
        scenario = build_scenario(cfg, train)
        model = build_model(cfg, scenario, "eclipse", 0, thing_ids_of(train.categories))
        seconds = {}
        # a warm-up run first (one-time costs: allocator, caches), then 1 and N+1 iterations: their
        # difference is N iterations without the per-run fixed cost
        for key, n in (("warm-up", 1), (1, 1), (iterations + 1, iterations + 1)):
            cfg.solver.iterations = n
            plan = plan_step(cfg, scenario, 0, "eclipse")
            manifest = manifest_for(cfg, scenario, 0, "eclipse", model)
            t0 = time.perf_counter()
            train_step(
                model, cfg, scenario, plan, train, Path(tmp) / f"s{key}", manifest, progress=False
            )
            seconds[key] = time.perf_counter() - t0
        return (seconds[iterations + 1] - seconds[1]) / iterations


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps({"seconds": child(*a.child)}))
        return 0
    rows = []
    for competing in (False, True):
        stop = mp.Event()
        busy = mp.Process(target=_busy, args=(stop,), daemon=True) if competing else None
        if busy:
            busy.start()
        try:
            for threads in (1, 2):
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.threads",
                        "--child",
                        str(threads),
                        str(a.iterations),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                rows.append(
                    {
                        "competing_process": competing,
                        "threads": threads,
                        "seconds_per_iteration": json.loads(out.splitlines()[-1])["seconds"],
                    }
                )
        finally:
            if busy:
                stop.set()
                busy.join()
    print(f"{'competing process':>18} {'threads':>8} {'s / iteration':>14}")
    for r in rows:
        print(
            f"{'yes' if r['competing_process'] else 'no':>18} {r['threads']:>8} "
            f"{r['seconds_per_iteration']:>14.3f}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
