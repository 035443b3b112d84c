"""`eclipse-seg demo`: the whole method on a laptop, no download.

Generates the synthetic panoptic dataset, trains step 0 (9 classes), runs 3 incremental steps of 1
class with ECLIPSE and with fine-tuning (both from the same step-0 model), trains the joint upper
bound, evaluates PQ old / new / all after every step, prints the comparison, and writes
`results.json`, `pq_over_steps.png` and prediction overlays.
"""

from __future__ import annotations

import time
from pathlib import Path

from eclipse_seg.config import CONFIG_DIR, load_config
from eclipse_seg.engine.build import build_datasets
from eclipse_seg.engine.outputs import claim_output_dir
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.results import format_results_table, plot_results, write_results
from eclipse_seg.engine.runner import run
from eclipse_seg.engine.visualize import save_overlay

DEMO_CONFIG = CONFIG_DIR / "synthetic" / "base.yaml"
QUICK = ["data.synthetic_train=48", "data.synthetic_val=12", "solver.iterations=12",
         "continual.iterations=4", "continual.finetune_iterations=4",
         "continual.joint_iterations=12", "solver.checkpoint_period=6", "continual.num_prompts=2"]


def demo_config(out: Path, quick: bool):
    overrides = [f"output_dir={out}", f"data.root={out / 'data'}"] + (QUICK if quick else [])
    return load_config(DEMO_CONFIG, overrides)


def run_demo(out: Path, *, quick: bool = False, progress: bool = True) -> dict:
    cfg = demo_config(out, quick)
    start = time.perf_counter()
    with claim_output_dir(out, cfg, resume=True):
        run(cfg, "eclipse", progress=progress)
        base = out / "eclipse" / "step_0" / "final.pt"
        run(cfg, "finetune", progress=progress, init_from=base)
        results = run(cfg, "joint", progress=progress)
        results["total_seconds"] = round(time.perf_counter() - start, 1)
        write_results(out / "results.json", results)
        plot_results(results, out / "pq_over_steps.png")
        last = len(results["classes_per_step"]) - 1
        _overlays(out / "eclipse" / f"step_{last}" / "final.pt", cfg, out / "overlays")
    print(format_results_table(results))
    print(_verdict(results))
    print(f"\nwrote {out / 'results.json'}, {out / 'pq_over_steps.png'}, {out / 'overlays'}/ "
          f"({results['total_seconds']:.0f} s)")
    return results


def _overlays(weights: Path, cfg, folder: Path, count: int = 4) -> None:
    predictor = Predictor.from_checkpoint(weights)
    val = build_datasets(cfg)[1]
    names = {c["id"]: c["name"] for c in val.categories}
    colors = {c["id"]: c["color"] for c in val.categories}
    for i in range(min(count, len(val))):
        rgb = val.load_image(i)
        pred = predictor([rgb])[0]
        save_overlay(rgb, pred.panoptic, pred.segments, names, colors, folder / f"val_{i:02d}.png")


def _verdict(results: dict) -> str:
    """The demo's claims, checked on its own numbers."""
    m = results["methods"]
    ecl, ft = m["eclipse"]["steps"], m["finetune"]["steps"]
    base = ecl[0]["pq_new"]
    final_old = ecl[-1]["pq_old"]
    kept = f"{100 * final_old / base:.0f}%" if base else "n/a"
    lines = ["", f"ECLIPSE keeps {final_old:.1f} PQ on old classes after the last step "
                 f"({kept} of its step-0 PQ {base:.1f}); "
                 f"fine-tuning keeps {ft[-1]['pq_old']:.1f}.",
             f"New-class PQ at the last step: ECLIPSE {ecl[-1]['pq_new']:.1f}, "
             f"fine-tuning {ft[-1]['pq_new']:.1f}; joint (upper bound) all-class PQ "
             f"{m['joint']['steps'][-1]['pq_all']:.1f}.",
             f"Trainable parameters per incremental step: ECLIPSE {ecl[-1]['trainable_params']:,} "
             f"of {ecl[-1]['total_params']:,} "
             f"({100 * ecl[-1]['trainable_params'] / ecl[-1]['total_params']:.1f}%)."]
    return "\n".join(lines)
