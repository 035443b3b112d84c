"""`eclipse-seg demo`: the whole method on a laptop, no download.

Generates the synthetic panoptic world (`eclipse_seg.data.synthetic`), trains step 0 on the base
classes, runs every incremental step with ECLIPSE and with fine-tuning (both from the same step-0
model), trains the joint model (the offline ceiling: the step-0 model trained further on every
class with every label),
evaluates PQ old / new / all after every step, prints the comparison and a verdict that checks the
method's claims on the run's own numbers, and writes `results.json`, `pq_over_steps.png` and
overlays (ground truth beside the final ECLIPSE and fine-tuning predictions).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eclipse_seg.config import Config, load_config
from eclipse_seg.engine.build import (
    build_datasets,
    build_model,
    build_scenario,
    manifest_for,
    resolve_device,
)
from eclipse_seg.engine.checkpoint import load_checkpoint
from eclipse_seg.engine.continual_metrics import plot_class_heatmap
from eclipse_seg.engine.outputs import claim_output_dir
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.report import write_report
from eclipse_seg.engine.results import format_results_table, plot_results, write_results
from eclipse_seg.engine.runner import run
from eclipse_seg.engine.train import plan_step, train_step
from eclipse_seg.engine.visualize import render_overlay, side_by_side
from eclipse_seg.errors import CheckpointError
from eclipse_seg.model.mask2former import Mask2Former

DEMO_CONFIG = Path(__file__).parent / "configs" / "synthetic" / "base.yaml"
QUICK = [
    "data.synthetic_train=48",
    "data.synthetic_val=12",
    "solver.iterations=12",
    "continual.iterations=4",
    "continual.finetune_iterations=4",
    "continual.joint_iterations=12",
    "solver.checkpoint_period=6",
    "continual.num_prompts=2",
]

# The claims the demo makes, with the thresholds its numbers must meet (PQ in points).
MIN_STEP0_PQ = 55.0
MIN_NEW_CLASS_PQ = 30.0  # every incremental class at its own step, and the new class(es) at the end
MIN_OLD_KEPT = 0.90  # ECLIPSE's old-class PQ after the last step, as a fraction of step 0's PQ
MAX_FINETUNE_OLD_PQ = 10.0  # fine-tuning forgets


def demo_config(out: Path, quick: bool, seed: int = 0) -> Config:
    """The demo's config: `synthetic/base` written under `out`; `seed` draws both the synthetic
    world (`data.synthetic_seed`) and the training (`solver.seed`)."""
    overrides = [
        f"output_dir={out}",
        f"data.root={out / 'data'}",
        f"solver.seed={seed}",
        f"data.synthetic_seed={seed}",
    ] + (QUICK if quick else [])
    return load_config(DEMO_CONFIG, overrides)


def run_demo(out: Path, *, quick: bool = False, progress: bool = True, seed: int = 0) -> dict:
    """Run (or resume) the demo in `out`; returns the results dict (also in `out/results.json`)."""
    cfg = demo_config(out, quick, seed)
    start = time.perf_counter()
    resumed = (out / "eclipse").exists()  # an earlier run's work is reused, its time not counted
    with claim_output_dir(out, cfg, resume=True):
        run(cfg, "eclipse", progress=progress)
        base = out / "eclipse" / "step_0" / "final.pt"
        run(cfg, "finetune", progress=progress, init_from=base)
        train_joint_from_base(cfg, base, progress=progress)
        results = run(cfg, "joint", progress=progress)  # evaluates the joint model trained above
        results["total_seconds"] = round(time.perf_counter() - start, 1)
        results["resumed"] = resumed
        results["seed"] = seed
        results["threads"] = torch.get_num_threads()
        results["joint_training"] = joint_description(cfg)
        results["class_names"] = {str(k): v for k, v in class_names(cfg).items()}
        write_results(out / "results.json", results)
        plot_results(results, out / "pq_over_steps.png")
        plot_class_heatmap(results, out / "class_heatmap.png")
        last = len(results["classes_per_step"]) - 1
        write_overlays(
            out / "eclipse" / f"step_{last}" / "final.pt",
            out / "finetune" / f"step_{last}" / "final.pt",
            cfg,
            out / "overlays",
        )
        write_report(out)
    print(format_results_table(results))
    print(f"joint = {results['joint_training']}")
    print(format_new_classes(results))
    claims = check_claims(results)
    print(format_verdict(claims, quick))
    note = ", resumed: the earlier run's time is not counted" if resumed else ""
    print(
        f"\nwrote {out / 'results.json'}, {out / 'pq_over_steps.png'}, {out / 'overlays'}/ "
        f"({results['total_seconds']:.0f} s{note}; seed {seed}, {results['threads']} threads)"
    )
    return results


def joint_description(cfg: Config) -> str:
    iterations = cfg.continual.joint_iterations or cfg.solver.iterations
    return (
        f"the step-0 model trained {iterations} more iterations on every class with every "
        f"label ({cfg.solver.iterations} + {iterations} iterations in all)"
    )


def train_joint_from_base(cfg: Config, base_weights: Path, *, progress: bool = True) -> None:
    """The joint model (the offline ceiling): the step-0 weights, its class head widened to every
    class, trained `continual.joint_iterations` on all images with all labels. Written where the
    runner's joint method keeps its weights, so `run(cfg, "joint")` evaluates it; resumable."""
    out = Path(cfg.output_dir)
    step_dir = out / "joint" / "step_0"
    if (step_dir / "final.pt").exists():
        return
    train_ds, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train_ds)
    thing_ids = {c["id"] for c in train_ds.categories if c.get("isthing")}
    model = build_model(cfg, scenario, "joint", 0, thing_ids)
    load_widened(model, load_checkpoint(base_weights)["model"], base_weights)
    model.to(resolve_device(cfg.device))
    manifest = {
        **manifest_for(cfg, scenario, 0, "joint", model, train_ds.categories),
        "initialised_from": str(base_weights),
    }
    train_step(
        model,
        cfg,
        scenario,
        plan_step(cfg, scenario, 0, "joint"),
        train_ds,
        step_dir,
        manifest,
        resume=True,
        progress=progress,
    )


def load_widened(model: Mask2Former, state: dict, source: Path) -> None:
    """Load a step-0 state into a model whose base class head scores more classes: every tensor is
    copied, the head's last layer into its first rows (the base classes keep their labels 0..B-1;
    the other rows keep their fresh initialisation); the thing flags stay the model's own."""
    own = model.state_dict()
    head = "sem_seg_head.predictor.class_embed.cls.1."
    merged = {}
    for key, value in own.items():
        src = state.get(key)
        if key == "thing_mask":
            merged[key] = value
        elif src is None:
            raise CheckpointError(f"{source} lacks {key}: not a step-0 checkpoint of this model")
        elif src.shape == value.shape:
            merged[key] = src
        elif (
            key.startswith(head)
            and src.shape[1:] == value.shape[1:]
            and src.shape[0] < value.shape[0]
        ):
            widened = value.clone()
            widened[: src.shape[0]] = src
            merged[key] = widened
        else:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(src.shape)}, the joint model "
                f"{tuple(value.shape)}"
            )
    model.load_state_dict(merged)


def class_names(cfg: Config) -> dict[int, str]:
    """Category id -> name of the demo's dataset."""
    return {c["id"]: c["name"] for c in build_datasets(cfg)[1].categories}


# ----- the verdict ---------------------------------------------------------------------------------
@dataclass
class Claim:
    """One claim of the demo, its measured value and whether it holds."""

    text: str
    value: float | None
    holds: bool


def incremental_class_pq(results: dict) -> list[tuple[int, int, float | None]]:
    """(step, category id, PQ at its own step) of every class learned after step 0 by ECLIPSE."""
    order = results["class_order"]
    sizes = results["classes_per_step"]
    rows = {e["step"]: e for e in results["methods"]["eclipse"]["steps"]}
    out, start = [], sizes[0]
    for t, n in enumerate(sizes[1:], start=1):
        for cat in order[start : start + n]:
            out.append((t, cat, rows.get(t, {}).get("per_class", {}).get(str(cat))))
        start += n
    return out


def check_claims(results: dict) -> list[Claim]:
    """The demo's claims, checked on the run's own numbers (PQ in points)."""
    m = results["methods"]
    ecl = {e["step"]: e for e in m["eclipse"]["steps"]}
    ft = {e["step"]: e for e in m["finetune"]["steps"]}
    joint = {e["step"]: e for e in m["joint"]["steps"]}
    last = len(results["classes_per_step"]) - 1
    step0 = ecl[0]["pq_all"]
    claims = [Claim(f"step-0 PQ >= {MIN_STEP0_PQ:.0f}", step0, step0 >= MIN_STEP0_PQ)]
    names = results.get("class_names", {})
    for t, cat, pq in incremental_class_pq(results):
        name = names.get(str(cat), f"class {cat}")
        claims.append(
            Claim(
                f"ECLIPSE learns {name} (step {t}): PQ at its step >= {MIN_NEW_CLASS_PQ:.0f}",
                pq,
                pq is not None and pq >= MIN_NEW_CLASS_PQ,
            )
        )
    old, new = ecl[last]["pq_old"], ecl[last]["pq_new"]
    kept = old / step0 if step0 else 0.0
    claims.append(
        Claim(
            f"ECLIPSE keeps the old classes: old-class PQ after step {last} >= "
            f"{100 * MIN_OLD_KEPT:.0f}% of step 0 ({MIN_OLD_KEPT * step0:.1f})",
            old,
            kept >= MIN_OLD_KEPT,
        )
    )
    claims.append(
        Claim(
            f"ECLIPSE new-class PQ after step {last} >= {MIN_NEW_CLASS_PQ:.0f}",
            new,
            new >= MIN_NEW_CLASS_PQ,
        )
    )
    ft_old = ft[last]["pq_old"]
    claims.append(
        Claim(
            f"fine-tuning forgets: old-class PQ after step {last} <= {MAX_FINETUNE_OLD_PQ:.0f}",
            ft_old,
            ft_old <= MAX_FINETUNE_OLD_PQ,
        )
    )
    joint_all, ecl_all = joint[last]["pq_all"], ecl[last]["pq_all"]
    claims.append(
        Claim(
            f"joint is the ceiling: all-class PQ >= ECLIPSE's ({ecl_all:.1f})",
            joint_all,
            joint_all >= ecl_all,
        )
    )
    return claims


def format_verdict(claims: list[Claim], quick: bool = False) -> str:
    lines = ["", "Verdict (this run's numbers):"]
    for c in claims:
        value = "-" if c.value is None else f"{c.value:.1f}"
        lines.append(f"  [{'PASS' if c.holds else 'FAIL'}] {c.text}: {value}")
    failed = [c for c in claims if not c.holds]
    if not failed:
        lines.append(f"All {len(claims)} claims hold.")
    else:
        lines.append(f"{len(failed)} of {len(claims)} claims FAIL on this run.")
        if quick:
            lines.append(
                "(--quick is a smoke run of a few iterations: the claims are not expected "
                "to hold; run without --quick.)"
            )
    return "\n".join(lines)


def format_new_classes(results: dict) -> str:
    """One line per incremental class: its PQ at its own step with ECLIPSE and fine-tuning."""
    ft = {e["step"]: e for e in results["methods"]["finetune"]["steps"]}
    names = results.get("class_names", {})
    lines = ["", "incremental classes (PQ at their own step): ECLIPSE / fine-tuning"]
    for t, cat, pq in incremental_class_pq(results):
        ft_pq = ft.get(t, {}).get("per_class", {}).get(str(cat))
        name = names.get(str(cat), str(cat))
        lines.append(f"  step {t} {name:<10} {_pts(pq):>6} / {_pts(ft_pq):>6}")
    return "\n".join(lines)


def _pts(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


# ----- overlays ------------------------------------------------------------------------------------
def write_overlays(
    eclipse_weights: Path, finetune_weights: Path, cfg: Config, folder: Path, count: int = 4
) -> list[Path]:
    """For `count` validation images (those showing an incremental class first): ground truth |
    ECLIPSE | fine-tuning after the last step, side by side, segments named by class."""
    predictors = [Predictor.from_checkpoint(w) for w in (eclipse_weights, finetune_weights)]
    val = build_datasets(cfg)[1]
    scenario = predictors[0].scenario
    names = {c["id"]: c["name"] for c in val.categories}
    colors = {c["id"]: c["color"] for c in val.categories}
    things = {c["id"] for c in val.categories if c.get("isthing")}
    incremental = set(scenario.order[scenario.steps[0] :])
    paths = []
    for i in _overlay_images(val, incremental, count):
        rgb = val.load_image(i)
        gt = [
            {
                "id": s["id"],
                "category_id": s["category_id"],
                "isthing": int(s["category_id"] in things),
            }
            for s in val.annotation(i)["segments_info"]
        ]
        panels = [render_overlay(rgb, val.load_id_map(i), gt, names, colors, title="ground truth")]
        for predictor, title in zip(predictors, ("ECLIPSE", "fine-tuning")):
            pred = predictor([rgb])[0]
            panels.append(
                render_overlay(rgb, pred.panoptic, pred.segments, names, colors, title=title)
            )
        path = folder / f"val_{i:03d}.png"
        side_by_side(panels, path)
        paths.append(path)
    return paths


def _overlay_images(val, incremental: set[int], count: int) -> list[int]:
    """Indices of `count` validation images, those containing an incremental class first."""
    with_new, others = [], []
    for i in range(len(val)):
        cats = {s["category_id"] for s in val.annotation(i)["segments_info"]}
        (with_new if cats & incremental else others).append(i)
    return (with_new + others)[:count]
