"""Evaluation throughput and memory on the synthetic val set (generated into a temp dir):
- the PQ evaluator alone (eclipse_seg.metrics.panoptic_quality.PanopticEvaluator.add on
  precomputed id maps: ground truth vs. a degraded copy of it);
- the full evaluate path (eclipse_seg.engine.evaluate.evaluate_model: image loading, model
  prediction with the synthetic config's model at step 1 = two query groups, post-processing, PQ);
- peak memory of evaluating N val images (500; streaming, so it must not grow with N): measured in
  a fresh subprocess per N (CPU: ru_maxrss growth; CUDA: max_memory_allocated).

python -m benchmarks.evaluate [--quick] [--json out.json] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import (
    describe,
    maxrss_mb,
    memory_method,
    peak_mb,
    reset_peak,
    run_child,
    table,
    write_json,
)


def _setup(root: Path, device: torch.device):
    from eclipse_seg.config import load_config
    from eclipse_seg.continual import set_deltas
    from eclipse_seg.engine.build import build_datasets, build_model, build_scenario

    cfg = load_config("synthetic/base", [f"data.root={root}", f"output_dir={root}/run"])
    train, val = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    things = {c["id"] for c in train.categories if c["isthing"]}
    model = build_model(cfg, scenario, "eclipse", 1, things).to(device).eval()
    set_deltas(model, cfg.continual.deltas)
    return cfg, val, scenario, model


def child(root: Path, n: int, device: torch.device, mode: str) -> dict:
    from eclipse_seg.engine.evaluate import evaluate_model
    from eclipse_seg.engine.predictor import Predictor
    from eclipse_seg.metrics.panoptic_quality import PanopticEvaluator

    cfg, val, scenario, model = _setup(root, device)
    n = min(n, len(val))
    if mode == "evaluator":
        maps = [(val.load_id_map(i), val.annotation(i)["segments_info"]) for i in range(n)]
        preds = []
        for ids, segs in maps:  # a degraded prediction: drop the first segment, shift by 2 px
            p = np.roll(ids, 2, axis=1).copy()
            if segs:
                p[p == segs[0]["id"]] = 0
            preds.append((p, [dict(s) for s in segs[1:]]))
        ev = PanopticEvaluator(val.categories)
        t0 = time.perf_counter()
        for (ids, segs), (p, psegs) in zip(maps, preds):
            ev.add(ids, segs, p, psegs)
        dt = time.perf_counter() - t0
        return {"mode": mode, "images": n, "seconds": dt, "images_per_s": n / dt}
    predictor = Predictor(model, scenario, cfg.test)
    evaluate_model(predictor, val, 1, max_images=4, progress=False)  # warm-up
    reset_peak(device)
    rss0 = maxrss_mb()
    t0 = time.perf_counter()
    summary = evaluate_model(predictor, val, 1, max_images=n, progress=False)
    dt = time.perf_counter() - t0
    return {
        "mode": mode,
        "images": summary.get("num_images", n),
        "seconds": dt,
        "images_per_s": n / dt,
        "peak_mb": peak_mb(device, rss0),
        "peak_rss_mb": maxrss_mb(),
        "device": describe(device),
        "pq_all": summary["groups"]["all"]["pq"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="100 val images (memory at 50 and 100)")
    ap.add_argument("--json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=None, help="val images (default 500; quick 100)")
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if a.child:
        root, n, mode = a.child
        print(json.dumps(child(Path(root), int(n), device, mode)))
        return 0
    from eclipse_seg.data.synthetic import make_synthetic

    n = a.images or (100 if a.quick else 500)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_synthetic(Path(tmp), seed=0, num_train=40, num_val=n, height=64, width=64)
        print(
            f"synthetic val set of {n} images generated in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        common = ["--device", a.device]
        evaluator = run_child("benchmarks.evaluate", ["--child", tmp, str(n), "evaluator"] + common)
        small = run_child("benchmarks.evaluate", ["--child", tmp, str(n // 5), "full"] + common)
        full = run_child("benchmarks.evaluate", ["--child", tmp, str(n), "full"] + common)
    rows = [
        [
            "PQ evaluator alone",
            evaluator["images"],
            evaluator["seconds"],
            evaluator["images_per_s"],
            "-",
        ],
        [
            "evaluate_model (full path)",
            small["images"],
            small["seconds"],
            small["images_per_s"],
            small["peak_mb"],
        ],
        [
            "evaluate_model (full path)",
            full["images"],
            full["seconds"],
            full["images_per_s"],
            full["peak_mb"],
        ],
    ]
    print(
        f"device {full['device']}; synthetic 64x64 val images; model: configs/synthetic/base.yaml at "
        f"step 1 (2 query groups), test.batch_size 4; peak memory: {memory_method(device)}"
    )
    print(table(["what", "images", "seconds", "images/s", "peak MB"], rows))
    print(f"evaluated images reported by evaluate_model: {full['images']} of {n}")
    write_json(
        a.json,
        {
            "device": full["device"],
            "memory": memory_method(device),
            "evaluator_images_per_s": evaluator["images_per_s"],
            "full_images_per_s": full["images_per_s"],
            "peak_mb": {
                str(small["images"]): small["peak_mb"],
                str(full["images"]): full["peak_mb"],
            },
            "results": [evaluator, small, full],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
