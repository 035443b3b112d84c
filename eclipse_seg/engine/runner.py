"""The continual runner: every step of a scenario for one method (ECLIPSE or a baseline), resumable
step by step, evaluating after each step and appending to one `results.json`.

Layout of an output directory:
  <out>/<method>/step_<t>/{last.pt, prev.pt, final.pt, log.jsonl}
  <out>/results.json, <out>/pq_over_steps.png, <out>/class_heatmap.png, <out>/config.yaml
A completed step (final.pt + its results entry) is never recomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from eclipse_seg.config import METHODS, Config
from eclipse_seg.continual import count_parameters, grow_for_step, set_deltas
from eclipse_seg.engine import distributed as dist
from eclipse_seg.engine.build import (
    Dataset,
    build_datasets,
    build_model,
    build_scenario,
    load_state,
    manifest_for,
    resolve_device,
    thing_ids_of,
)
from eclipse_seg.engine.check_data import preflight
from eclipse_seg.engine.checkpoint import load_checkpoint, save_checkpoint
from eclipse_seg.engine.continual_metrics import add_continual_metrics, class_names_of
from eclipse_seg.engine.evaluate import evaluate_model
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.pretrained import load_step0_weights, require_step0_weights
from eclipse_seg.engine.results import joint_rows, read_results, step_result, write_results
from eclipse_seg.engine.train import plan_step, train_step
from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import Scenario


@dataclass
class RunInputs:
    """What a run reads, validated before anything is written: the datasets and the scenario."""

    train: Dataset
    val: Dataset
    scenario: Scenario
    steps: list[int]  # the steps to run

    @property
    def thing_ids(self) -> set[int]:
        return thing_ids_of(self.train.categories)


def prepare_run(
    cfg: Config,
    method: str = "eclipse",
    steps: list[int] | None = None,
    *,
    evaluate: bool = True,
    init_from: Path | None = None,
) -> RunInputs:
    """Check the method, step 0's backbone weight file, the data (cheap preflight) and the
    scenario and its steps; raises before any output is written."""
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    require_step0_weights(cfg, method, steps, init_from)
    preflight(cfg, splits=("train", "val") if evaluate else ("train",), scenario=method != "joint")
    train_ds, val_ds = build_datasets(cfg)
    scenario = build_scenario(cfg, train_ds)
    all_steps = [0] if method == "joint" else list(range(scenario.num_steps))
    for s in steps or []:
        if s not in all_steps:
            raise ConfigError(
                f"step {s} does not exist for method {method} in scenario "
                f"{scenario.name} (steps 0..{all_steps[-1]})"
            )
    return RunInputs(train_ds, val_ds, scenario, all_steps if steps is None else list(steps))


def run(
    cfg: Config,
    method: str = "eclipse",
    steps: list[int] | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    init_from: Path | None = None,
    results_path: Path | None = None,
    evaluate: bool = True,
    inputs: RunInputs | None = None,
) -> dict:
    """Run `steps` (default: all) of the scenario with `method`; returns the results dict.

    `init_from`: a step-0 final checkpoint to start from instead of training step 0 (the demo
    shares one base model between ECLIPSE and fine-tuning, as the paper's comparisons do).
    `inputs`: from `prepare_run` (called here when not given)."""
    inputs = inputs or prepare_run(cfg, method, steps, evaluate=evaluate, init_from=init_from)
    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    results_path = results_path or out / "results.json"
    train_ds, val_ds, scenario, steps = inputs.train, inputs.val, inputs.scenario, inputs.steps
    thing_ids = inputs.thing_ids
    results = read_results(results_path, scenario)
    results["class_names"] = class_names_of(train_ds.categories, scenario.order)
    entry = results["methods"].setdefault(method, {"steps": []})
    t_start = time.perf_counter()
    model = None
    for step in steps:
        step_dir = out / method / f"step_{step}"
        final = step_dir / "final.pt"
        done = {e["step"] for e in entry["steps"]}
        if final.exists() and (step in done or not evaluate):
            dist.log(f"[{method}] step {step} already complete ({final}); skipping")
            model = None
            continue
        if model is None:
            model = _model_before_step(cfg, scenario, method, step, thing_ids, out)
        if step > 0:
            grow_for_step(
                model, scenario.classes_of_step(step), thing_ids, method, cfg.continual.num_prompts
            )
        model.to(device)
        plan = plan_step(cfg, scenario, step, method)
        pretrained = (
            load_step0_weights(model, cfg)  # ImageNet weights; their SHA-256 in the manifest
            if step == 0 and init_from is None and not final.exists()
            else {}
        )
        manifest = {
            **manifest_for(cfg, scenario, step, method, model, train_ds.categories),
            **pretrained,
        }
        if final.exists():  # trained before, not yet evaluated: reuse the weights
            payload = load_checkpoint(final)
            load_state(model, payload["model"], final)
            stats = {
                "train_seconds": payload.get("train_seconds", 0.0),
                "trainable_params": payload["manifest"].get("trainable_params", 0),
            }
        elif step == 0 and init_from is not None:
            stats = _adopt_base(model, init_from, final, manifest)
        else:
            stats = train_step(
                model,
                cfg,
                scenario,
                plan,
                train_ds,
                step_dir,
                manifest,
                resume=resume,
                progress=progress,
                evaluate_fn=_periodic_evaluation(model, val_ds, scenario, step, cfg),
            )
        set_deltas(model, cfg.continual.deltas)
        if not evaluate:
            continue
        summary = evaluate_step(model, cfg, val_ds, scenario, step, progress=progress)
        if dist.rank() != 0:
            continue
        if method == "joint":  # one model for all classes: report it against every step's ranges
            rows = joint_rows(summary, scenario, thing_ids)
        else:
            rows = [step_result(summary, step, scenario)]
        for row in rows:
            row["trainable_params"] = stats["trainable_params"]
            row["total_params"] = count_parameters(model)
            row["train_seconds"] = round(stats["train_seconds"], 2)
            entry["steps"] = [e for e in entry["steps"] if e["step"] != row["step"]] + [row]
        entry["steps"].sort(key=lambda e: e["step"])
        add_continual_metrics(entry["steps"])
        results["total_seconds"] = round(
            results.get("total_seconds", 0.0) + time.perf_counter() - t_start, 2
        )
        t_start = time.perf_counter()
        write_results(results_path, results)
    return results


def evaluate_step(
    model: Mask2Former,
    cfg: Config,
    val_ds: Dataset,
    scenario: Scenario,
    step: int,
    *,
    progress: bool = True,
    predictions_dir: Path | None = None,
) -> dict:
    """`evaluate_model` of `model` with the config's test settings."""
    return evaluate_model(
        Predictor(model, scenario, cfg.test, val_ds.categories),
        val_ds,
        step,
        max_images=cfg.data.max_val_images,
        progress=progress,
        predictions_dir=predictions_dir,
    )


def _periodic_evaluation(model, val_ds, scenario, step, cfg):
    """PQ (or mIoU) old / new / all of the model being trained (for `solver.eval_period`)."""

    def evaluate() -> dict:
        summary = evaluate_step(model, cfg, val_ds, scenario, step, progress=False)
        if not summary:
            return {}
        row = step_result(summary, step, scenario)
        return {
            k: v for k, v in row.items() if k.endswith(("_old", "_new", "_all")) and v is not None
        }

    return evaluate


def _model_before_step(cfg, scenario, method, step, thing_ids, out) -> Mask2Former:
    """Model with the weights of the end of step-1 (or fresh for step 0)."""
    if step == 0:
        return build_model(cfg, scenario, method, 0, thing_ids)
    prev = out / method / f"step_{step - 1}" / "final.pt"
    if not prev.exists():
        raise CheckpointError(
            f"step {step} of {method} needs step {step - 1} first: {prev} not found"
        )
    model = build_model(cfg, scenario, method, step - 1, thing_ids)
    load_state(model, load_checkpoint(prev)["model"], prev)
    return model


def _adopt_base(model: Mask2Former, init_from: Path, final: Path, manifest: dict) -> dict:
    """Use another run's step-0 weights as this method's step 0 (recorded in its own final.pt)."""
    payload = load_checkpoint(init_from)
    load_state(model, payload["model"], init_from)
    seconds = payload.get("train_seconds", 0.0)
    save_checkpoint(
        final,
        {
            "model": model.state_dict(),
            "manifest": {
                **manifest,
                "iteration": payload["manifest"].get("iteration"),
                "complete": True,
                "initialised_from": str(init_from),
            },
            "train_seconds": seconds,
        },
    )
    return {"train_seconds": seconds, "trainable_params": count_parameters(model)}
