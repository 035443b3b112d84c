"""The continual runner: every step of a scenario for one method (ECLIPSE or a baseline), resumable
step by step, evaluating after each step and appending to one `results.json`.

Layout of an output directory:
  <out>/<method>/step_<t>/{last.pt, prev.pt, final.pt, log.jsonl}
  <out>/results.json, <out>/pq_over_steps.png, <out>/config.yaml
A completed step (final.pt + its results entry) is never recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from eclipse_seg.config import DATASETS, METHODS, Config, config_from_dict
from eclipse_seg.continual import count_parameters, set_deltas
from eclipse_seg.data.catalogs import official_order, official_to_json_ids
from eclipse_seg.data.coco_panoptic import CocoPanopticDataset, atomic_write_bytes
from eclipse_seg.data.paths import data_path, data_root, root_note
from eclipse_seg.data.semantic import SemanticAsPanoptic, SemanticDataset, semantic_categories
from eclipse_seg.data.synthetic import make_synthetic
from eclipse_seg.engine import distributed as dist
from eclipse_seg.engine.check_data import preflight
from eclipse_seg.engine.checkpoint import load_checkpoint, save_checkpoint
from eclipse_seg.engine.evaluate import evaluate_model, step_groups, step_result
from eclipse_seg.engine.pretrained import load_step0_weights, require_step0_weights
from eclipse_seg.engine.train import grow_for_step, plan_step, resolve_device, train_step
from eclipse_seg.errors import CheckpointError, ConfigError, DataError
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import Scenario, parse_scenario

Dataset = CocoPanopticDataset | SemanticAsPanoptic  # semantic data seen as panoptic


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """Train and val datasets (paths from `data.root`, see `eclipse_seg.data.paths`); the synthetic
    one is generated on first use."""
    d = cfg.data
    if d.dataset == "synthetic" and not data_path(d.root, d.val_json).exists():
        if dist.rank() == 0:
            make_synthetic(data_root(d.root), seed=d.synthetic_seed, num_train=d.synthetic_train,
                           num_val=d.synthetic_val, height=d.synthetic_size, width=d.synthetic_size)
        dist.barrier()
    elif d.dataset not in DATASETS:  # a Config built in code, not loaded (loading checks it)
        raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}, got {d.dataset!r}")
    try:
        return _split(cfg, "train"), _split(cfg, "val")
    except DataError as e:
        raise DataError(f"{e}\n({root_note(d.root)})") from e


def _split(cfg: Config, split: str) -> Dataset:
    d = cfg.data
    images = data_path(d.root, getattr(d, f"{split}_image_dir"))
    pngs = data_path(d.root, getattr(d, f"{split}_png_dir"))
    if d.dataset == "semantic":
        categories = semantic_categories(d.catalog, d.num_classes)
        reader = SemanticDataset(images, pngs, label_offset=d.label_offset,
                                 num_classes=len(categories))
        return SemanticAsPanoptic(reader, categories)
    return CocoPanopticDataset(data_path(d.root, getattr(d, f"{split}_json")), pngs, images)


def class_order(cfg: Config, categories: list[dict]) -> list[int]:
    """Class order (dataset category ids): the config's, else the catalog's official order (mapped
    to the ids of the dataset's panoptic JSON; semantic data uses the catalog's ids), else the
    dataset's category order."""
    if cfg.continual.order:
        return list(cfg.continual.order)
    if cfg.data.catalog:
        order = official_order(cfg.data.catalog)
        if cfg.data.dataset == "semantic":
            return order
        to_json = official_to_json_ids(cfg.data.catalog)
        return [to_json[c] for c in order]
    return [c["id"] for c in categories]


def build_scenario(cfg: Config, dataset: Dataset) -> Scenario:
    order = class_order(cfg, dataset.categories)
    return parse_scenario(cfg.continual.scenario or str(len(order)), order)


def build_model(cfg: Config, scenario: Scenario, method: str, step: int, thing_ids: set[int]) -> Mask2Former:
    """The model structure of `method` after `step`, initialised from `solver.seed`."""
    torch.manual_seed(cfg.solver.seed)
    base = scenario.num_classes if method == "joint" else scenario.steps[0]
    model_cfg = dataclasses.replace(cfg.model, base_classes=base)
    model = Mask2Former(model_cfg)
    base_classes = scenario.order if method == "joint" else scenario.classes_of_step(0)
    model.thing_mask = torch.tensor([c in thing_ids for c in base_classes], dtype=torch.bool)
    if method != "joint":
        for t in range(1, step + 1):
            grow_for_step(model, cfg, scenario, t, method, thing_ids)
    set_deltas(model, cfg.continual.deltas)
    return model


def manifest_for(cfg: Config, scenario: Scenario, step: int, method: str, model: Mask2Former) -> dict:
    return {
        "config_hash": cfg.fingerprint(), "config": cfg.to_dict(), "method": method, "step": step,
        "scenario": {"name": scenario.name, "order": list(scenario.order), "steps": list(scenario.steps)},
        "groups": [model.decoder.group_size(g) for g in range(model.decoder.num_groups)],
        "classes_per_step": model.decoder.class_embed.classes_per_step,
    }


def load_model(path: str | Path, device: str = "cpu") -> tuple[Mask2Former, Config, Scenario, int, str]:
    """Rebuild the model a checkpoint holds from the checkpoint alone (config, scenario, step, method
    are in its manifest)."""
    payload = load_checkpoint(Path(path))
    m = payload.get("manifest", {})
    missing = [k for k in ("config", "scenario", "step", "method") if k not in m]
    if missing:
        raise CheckpointError(f"{path}: manifest lacks {missing}; was it written by eclipse-seg train?")
    cfg = config_from_dict(m["config"])
    sc = m["scenario"]
    scenario = Scenario(sc["name"], tuple(sc["order"]), tuple(sc["steps"]))
    thing_ids = set(m.get("thing_ids", []))
    model = build_model(cfg, scenario, m["method"], m["step"], thing_ids)
    _load_state(model, payload["model"], path)
    model.to(resolve_device(device) if device == "auto" else torch.device(device))
    model.eval()
    return model, cfg, scenario, m["step"], m["method"]


def _load_state(model: Mask2Former, state: dict, path) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit the model of its manifest: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}")


def run(cfg: Config, method: str = "eclipse", steps: list[int] | None = None, *, resume: bool = True,
        progress: bool = True, init_from: Path | None = None, results_path: Path | None = None,
        evaluate: bool = True) -> dict:
    """Run `steps` (default: all) of the scenario with `method`; returns the results dict.

    `init_from`: a step-0 final checkpoint to start from instead of training step 0 (the demo
    shares one base model between ECLIPSE and fine-tuning, as the paper's comparisons do)."""
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    require_step0_weights(cfg, method, steps, init_from)  # a missing weight file stops us here
    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    results_path = results_path or out / "results.json"
    preflight(cfg, splits=("train", "val") if evaluate else ("train",), scenario=method != "joint")
    train_ds, val_ds = build_datasets(cfg)
    scenario = build_scenario(cfg, train_ds)
    thing_ids = {c["id"] for c in train_ds.categories if c.get("isthing")}
    all_steps = [0] if method == "joint" else list(range(scenario.num_steps))
    steps = all_steps if steps is None else steps
    for s in steps:
        if s not in all_steps:
            raise ConfigError(f"step {s} does not exist for method {method} in scenario "
                              f"{scenario.name} (steps 0..{all_steps[-1]})")
    results = _read_results(results_path, scenario)
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
            grow_for_step(model, cfg, scenario, step, method, thing_ids)
        model.to(device)
        plan = plan_step(cfg, scenario, step, method)
        pretrained = (load_step0_weights(model, cfg)  # ImageNet weights; their SHA-256 in the manifest
                      if step == 0 and init_from is None and not final.exists() else {})
        manifest = {**manifest_for(cfg, scenario, step, method, model), "thing_ids": sorted(thing_ids),
                    **pretrained}
        if final.exists():  # trained before, not yet evaluated: reuse the weights
            payload = load_checkpoint(final)
            _load_state(model, payload["model"], final)
            stats = {"train_seconds": payload.get("train_seconds", 0.0),
                     "trainable_params": payload["manifest"].get("trainable_params", 0)}
        elif step == 0 and init_from is not None:
            stats = _adopt_base(model, init_from, final, manifest)
        else:
            stats = train_step(model, cfg, scenario, plan, train_ds, step_dir, manifest,
                               resume=resume, progress=progress,
                               evaluate_fn=_periodic_evaluation(model, val_ds, scenario, step, cfg))
        set_deltas(model, cfg.continual.deltas)
        if not evaluate:
            continue
        summary = evaluate_step(model, cfg, val_ds, scenario, step, progress=progress)
        if dist.rank() != 0:
            continue
        if method == "joint":  # one model for all classes: report it against every step's ranges
            rows = _joint_rows(summary, scenario, thing_ids)
        else:
            rows = [step_result(summary, step, scenario)]
        for row in rows:
            row["trainable_params"] = stats["trainable_params"]
            row["total_params"] = count_parameters(model)
            row["train_seconds"] = round(stats["train_seconds"], 2)
            entry["steps"] = [e for e in entry["steps"] if e["step"] != row["step"]] + [row]
        entry["steps"].sort(key=lambda e: e["step"])
        results["total_seconds"] = round(results.get("total_seconds", 0.0) + time.perf_counter() - t_start, 2)
        t_start = time.perf_counter()
        write_results(results_path, results)
    return results


def evaluate_step(model: Mask2Former, cfg: Config, val_ds: Dataset, scenario: Scenario, step: int,
                  *, progress: bool = True, predictions_dir: Path | None = None) -> dict:
    """`evaluate_model` with the config's test settings."""
    t = cfg.test
    return evaluate_model(model, val_ds, scenario, step, batch_size=t.batch_size,
                          object_mask_threshold=t.object_mask_threshold,
                          overlap_threshold=t.overlap_threshold, max_images=cfg.data.max_val_images,
                          progress=progress, predictions_dir=predictions_dir, min_size=t.min_size,
                          max_size=t.max_size, unlabeled_as_background=t.unlabeled_as_background)


def _periodic_evaluation(model, val_ds, scenario, step, cfg):
    """PQ (or mIoU) old / new / all of the model being trained (for `solver.eval_period`)."""
    def evaluate() -> dict:
        summary = evaluate_step(model, cfg, val_ds, scenario, step, progress=False)
        if not summary:
            return {}
        row = step_result(summary, step, scenario)
        return {k: v for k, v in row.items() if k.endswith(("_old", "_new", "_all")) and v is not None}
    return evaluate


def _model_before_step(cfg, scenario, method, step, thing_ids, out) -> Mask2Former:
    """Model with the weights of the end of step-1 (or fresh for step 0)."""
    if step == 0:
        return build_model(cfg, scenario, method, 0, thing_ids)
    prev = out / method / f"step_{step - 1}" / "final.pt"
    if not prev.exists():
        raise CheckpointError(f"step {step} of {method} needs step {step - 1} first: {prev} not found")
    model = build_model(cfg, scenario, method, step - 1, thing_ids)
    _load_state(model, load_checkpoint(prev)["model"], prev)
    return model


def _adopt_base(model: Mask2Former, init_from: Path, final: Path, manifest: dict) -> dict:
    """Use another run's step-0 weights as this method's step 0 (recorded in its own final.pt)."""
    payload = load_checkpoint(init_from)
    _load_state(model, payload["model"], init_from)
    seconds = payload.get("train_seconds", 0.0)
    save_checkpoint(final, {"model": model.state_dict(),
                            "manifest": {**manifest, "iteration": payload["manifest"].get("iteration"),
                                         "complete": True, "initialised_from": str(init_from)},
                            "train_seconds": seconds})
    return {"train_seconds": seconds, "trainable_params": count_parameters(model)}


def _joint_rows(summary: dict, scenario: Scenario, thing_ids: set[int]) -> list[dict]:
    """Joint training predicts every class from the start; at step t it is scored on the class
    ranges of step t (old / new / all seen), from one evaluation's per-class statistics."""
    rows = []
    per_class = summary["per_class"]
    metric = summary.get("metric", "pq")
    for t in range(scenario.num_steps):
        groups = step_groups(scenario, t, thing_ids)
        g = {}
        for name, ids in groups.items():
            vals = [v for v in (_class_value(per_class[str(c)], metric) for c in ids) if v is not None]
            g[name] = {metric: sum(vals) / len(vals) if vals else 0.0, "n": len(vals)}
        rows.append(step_result({"metric": metric, "groups": g, "per_class": per_class}, t, scenario))
    return rows


def _class_value(stats, metric: str) -> float | None:
    """A class's PQ or IoU; None when the class is absent (left out of the means)."""
    if metric != "pq":
        return stats
    return stats["pq"] if stats["tp"] + stats["fp"] + stats["fn"] > 0 else None


def _read_results(path: Path, scenario: Scenario) -> dict:
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); move it away to start afresh") from e
        if results.get("classes_per_step") != list(scenario.steps):
            raise ConfigError(f"{path} holds results of another scenario "
                              f"({results.get('scenario')}); use another output directory")
        return results
    return {"scenario": scenario.name, "classes_per_step": list(scenario.steps),
            "class_order": list(scenario.order), "methods": {}, "total_seconds": 0.0}


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(results, indent=1).encode())


def _metric(results: dict) -> tuple[str, str]:
    """("pq", "PQ") or, for semantic runs, ("miou", "mIoU")."""
    rows = [e for entry in results["methods"].values() for e in entry["steps"]]
    return ("miou", "mIoU") if any("miou_all" in e for e in rows) else ("pq", "PQ")


def format_results_table(results: dict) -> str:
    """Methods x steps: PQ (or mIoU) old / new / all, in points."""
    key, name = _metric(results)
    extra = ("pq_things", "pq_stuff") if key == "pq" else ()
    heads = [f"{name} old", f"{name} new", f"{name} all"] + [k[3:] for k in extra]
    lines = [f"scenario {results['scenario']}  classes per step {results['classes_per_step']}",
             f"{'method':<10} {'step':>4} " + "".join(f"{h:>8} " for h in heads) + f"{'trainable':>12}"]

    def f(v):
        return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    for method, entry in results["methods"].items():
        for e in entry["steps"]:
            tp = e.get("trainable_params")
            total = e.get("total_params")
            share = f"{tp:,} ({100 * tp / total:.1f}%)" if tp and total else "-"
            values = [e.get(f"{key}_{g}") for g in ("old", "new", "all")] + [e.get(k) for k in extra]
            lines.append(f"{method:<10} {e['step']:>4} " + "".join(f"{f(v)} " for v in values)
                         + f"{share:>12}")
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    key, name = _metric(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, entry in results["methods"].items():
        steps = [e["step"] for e in entry["steps"]]
        axes[0].plot(steps, [e.get(f"{key}_all") for e in entry["steps"]], marker="o", label=method)
        old = [(e["step"], e[f"{key}_old"]) for e in entry["steps"] if e.get(f"{key}_old") is not None]
        if old:
            axes[1].plot(*zip(*old), marker="o", label=method)
    axes[0].set_title(f"{name} over all seen classes")
    axes[1].set_title(f"{name} of old classes (forgetting)")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"scenario {results['scenario']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
