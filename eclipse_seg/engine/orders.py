"""Class-order robustness: the same scenario trained over several class orders, and the spread of
its results (continual results depend on which classes come first; one order is one sample).

Layout of ``eclipse-seg train CONFIG --orders K --output OUT``:
  OUT/order_<i>/   a complete run of order i (results.json, <method>/step_<t>/, its figures and
                   config.yaml with ``continual.order`` set), resumable as any run
  OUT/orders.json  the orders, each order's old / new / all / avg per method and step, and their
                   mean and standard deviation over the orders (see `summarize_orders`)
  OUT/orders.png   per method, the mean over orders with a +-1 std band and each order faintly

order_0 is the configured order (``continual.order``, else the catalog's official order, else the
dataset's category order); order i >= 1 is a permutation of the same classes drawn from
``(order_seed, i)``, so asking for more orders later keeps the earlier ones. Step sizes are kept.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eclipse_seg.config import Config
from eclipse_seg.engine import distributed as dist
from eclipse_seg.engine.build import scenario_for
from eclipse_seg.engine.continual_metrics import metric_key, plot_class_heatmap
from eclipse_seg.engine.outputs import claim_output_dir
from eclipse_seg.engine.results import plot_results, style_step_axes, write_results
from eclipse_seg.engine.runner import RunInputs, prepare_run, run
from eclipse_seg.errors import ConfigError

__all__ = [
    "ORDERS_JSON",
    "ORDERS_PLOT",
    "OrderPlan",
    "class_orders",
    "format_orders_table",
    "plan_orders",
    "plot_orders",
    "run_orders",
    "summarize_orders",
]

ORDERS_JSON = "orders.json"
ORDERS_PLOT = "orders.png"
_GROUPS = ("old", "new", "all", "avg")


def class_orders(base: list[int] | tuple[int, ...], count: int, seed: int) -> list[list[int]]:
    """``base`` followed by ``count - 1`` permutations of it; permutation i is drawn from
    ``(seed, i)`` and redrawn while it repeats an earlier order (when enough orders exist)."""
    if count < 1:
        raise ConfigError(f"--orders must be at least 1, got {count}")
    base = list(base)
    orders = [base]
    distinct = math.factorial(len(base))
    for i in range(1, count):
        rng = np.random.default_rng([seed, i])
        order = [base[k] for k in rng.permutation(len(base))]
        while order in orders and len(orders) < distinct:
            order = [base[k] for k in rng.permutation(len(base))]
        orders.append(order)
    return orders


@dataclass
class OrderPlan:
    """Everything the orders of a run need, checked before anything is written."""

    out: Path
    method: str
    seed: int
    orders: list[list[int]]
    configs: list[Config]  # one per order: output_dir OUT/order_<i>, order i >= 1 explicit
    inputs: list[RunInputs]

    def folder(self, i: int) -> Path:
        return Path(self.configs[i].output_dir)


def plan_orders(cfg: Config, count: int, seed: int = 0, method: str = "eclipse") -> OrderPlan:
    """Check the data and scenario once (as `prepare_run`), draw the orders and give each its
    config and scenario. An existing ``orders.json`` of other orders (another seed or another
    configured order) is an error: its runs would be summarised with the wrong orders."""
    first = prepare_run(cfg, method)
    orders = class_orders(first.scenario.order, count, seed)
    out = Path(cfg.output_dir)
    _check_existing(out / ORDERS_JSON, orders)
    configs, inputs = [], []
    for i, order in enumerate(orders):
        cfg_i = copy.deepcopy(cfg)
        cfg_i.output_dir = str(out / f"order_{i}")
        if i > 0:
            cfg_i.continual.order = list(order)
        scenario = first.scenario if i == 0 else scenario_for(cfg_i, first.train.categories)
        configs.append(cfg_i)
        inputs.append(RunInputs(first.train, first.val, scenario, first.steps))
    return OrderPlan(out, method, seed, orders, configs, inputs)


def _check_existing(path: Path, orders: list[list[int]]) -> None:
    if not path.exists():
        return
    try:
        saved = [o["order"] for o in json.loads(path.read_text())["orders"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path} is not an orders summary ({e}); move it away to start afresh"
        ) from e
    for i, (old, new) in enumerate(zip(saved, orders)):
        if old != new:
            raise ConfigError(
                f"{path}: order {i} was {old} but is now {new} (another --order-seed "
                "or another configured order?); use another --output"
            )


def run_orders(plan: OrderPlan, *, resume: bool = True, progress: bool = True) -> dict:
    """Run the plan's method over every order (an order whose results hold every step is skipped;
    a partly done one continues as `run` does), then write and return the summary."""
    for i in range(len(plan.orders)):
        folder = plan.folder(i)
        if _complete(folder / "results.json", plan.method, plan.inputs[i].steps):
            dist.log(f"[{plan.method}] order {i} already complete ({folder}); skipping")
            continue
        dist.log(f"[{plan.method}] order {i} of {len(plan.orders)}: {plan.orders[i]}")
        with claim_output_dir(folder, plan.configs[i], resume=resume):
            results = run(
                plan.configs[i],
                plan.method,
                resume=resume,
                progress=progress,
                inputs=plan.inputs[i],
            )
            if dist.rank() == 0:
                plot_results(results, folder / "pq_over_steps.png")
                plot_class_heatmap(results, folder / "class_heatmap.png")
    if dist.rank() != 0:
        return {}
    per_order = [_read(plan.folder(i) / "results.json") for i in range(len(plan.orders))]
    summary = summarize_orders(per_order, plan.orders, seed=plan.seed)
    write_results(plan.out / ORDERS_JSON, summary)
    plot_orders(summary, plan.out / ORDERS_PLOT)
    return summary


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _complete(path: Path, method: str, steps: list[int]) -> bool:
    results = _read(path)
    if not results:
        return False
    done = {r["step"] for r in results["methods"].get(method, {}).get("steps", [])}
    return set(steps) <= done


def _spread(values: list[float]) -> dict:
    """mean, sample standard deviation (n - 1; None for a single value) and n of `values`."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {
        "mean": round(float(np.mean(values)), 3),
        "std": None if std is None else round(std, 3),
        "n": len(values),
    }


def summarize_orders(
    per_order: list[dict | None], orders: list[list[int]], *, seed: int = 0
) -> dict:
    """The orders document: ``orders`` (index, folder, order and per method the rows step / old /
    new / all / avg / forgetting_mean of that order) and ``methods`` (per method and step, the
    ``{"mean", "std", "n"}`` of ``{metric}_old/new/all/avg`` over the orders that have the step;
    ``final_all``: the same of the last step's all-class value). ``per_order[i]``: order i's
    results.json (None when not run yet)."""
    present = [r for r in per_order if r]
    if not present:
        raise ConfigError("no order has results yet")
    key = metric_key([row for r in present for e in r["methods"].values() for row in e["steps"]])
    doc = {
        "scenario": present[0]["scenario"],
        "classes_per_step": present[0]["classes_per_step"],
        "metric": key,
        "order_seed": seed,
        "class_names": present[0].get("class_names", {}),
        "orders": [],
        "methods": {},
    }
    columns = [f"{key}_{g}" for g in _GROUPS]
    for i, (order, results) in enumerate(zip(orders, per_order)):
        methods = {}
        for method, entry in (results or {}).get("methods", {}).items():
            methods[method] = [
                {
                    "step": r["step"],
                    **{c: r.get(c) for c in columns},
                    "forgetting_mean": r.get("forgetting_mean"),
                }
                for r in entry["steps"]
            ]
        doc["orders"].append(
            {
                "index": i,
                "folder": f"order_{i}",
                "order": list(order),
                "configured": i == 0,
                "methods": methods,
            }
        )
    last = len(doc["classes_per_step"]) - 1
    names = sorted({m for o in doc["orders"] for m in o["methods"]})
    for method in names:
        rows = [{r["step"]: r for r in o["methods"].get(method, [])} for o in doc["orders"]]
        steps = []
        for t in range(last + 1):
            at_t = [r[t] for r in rows if t in r]
            if at_t:
                steps.append(
                    {
                        "step": t,
                        **{c: _spread([r[c] for r in at_t if r[c] is not None]) for c in columns},
                    }
                )
        finals = [
            r[last][f"{key}_all"] for r in rows if last in r and r[last][f"{key}_all"] is not None
        ]
        doc["methods"][method] = {"steps": steps, "final_all": _spread(finals)}
    return doc


def _pm(spread: dict) -> str:
    if spread["mean"] is None:
        return "-"
    return f"{spread['mean']:.2f}" + ("" if spread["std"] is None else f" ± {spread['std']:.2f}")


def format_orders_table(summary: dict) -> str:
    """Methods x steps: mean ± std over the orders of old / new / all / avg, in points."""
    key = summary["metric"]
    name = {"pq": "PQ", "miou": "mIoU"}[key]
    heads = [f"{name} {g}" for g in _GROUPS[:3]] + ["avg"]
    lines = [
        f"scenario {summary['scenario']}  classes per step {summary['classes_per_step']}  "
        f"{len(summary['orders'])} class orders (order seed {summary['order_seed']}); "
        "mean ± std over orders",
        f"{'method':<10} {'step':>4} {'orders':>6} " + "".join(f"{h:>16} " for h in heads),
    ]
    for method, entry in summary["methods"].items():
        for s in entry["steps"]:
            n = max(s[f"{key}_{g}"]["n"] for g in _GROUPS)
            lines.append(
                f"{method:<10} {s['step']:>4} {n:>6} "
                + "".join(f"{_pm(s[f'{key}_{g}']):>16} " for g in _GROUPS)
            )
    for method, entry in summary["methods"].items():
        lines.append(
            f"{method}: final all-class {name} {_pm(entry['final_all'])} "
            f"over {entry['final_all']['n']} orders"
        )
    return "\n".join(lines)


def plot_orders(summary: dict, path: Path) -> None:
    """Old / new / all over steps: per method the mean over orders (line), +-1 std (band) and each
    order (faint line). Integer steps, a 0-100 scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = summary["metric"]
    name = {"pq": "PQ", "miou": "mIoU"}[key]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), squeeze=False)
    axes = axes[0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (method, entry) in enumerate(summary["methods"].items()):
        colour = colours[k % len(colours)]
        for ax, group in zip(axes, ("old", "new", "all")):
            col = f"{key}_{group}"
            for order in summary["orders"]:
                pts = [
                    (r["step"], r[col])
                    for r in order["methods"].get(method, [])
                    if r[col] is not None
                ]
                if pts:
                    ax.plot(*zip(*pts), color=colour, alpha=0.25, linewidth=0.8)
            stats = [
                (s["step"], s[col]["mean"], s[col]["std"] or 0.0)
                for s in entry["steps"]
                if s[col]["mean"] is not None
            ]
            if not stats:
                continue
            steps, mean, std = (np.array(v) for v in zip(*stats))
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
            ax.plot(steps, mean, marker="o", color=colour, label=method)
    titles = {"old": "old classes", "new": "new classes", "all": "all seen classes"}
    for ax, group in zip(axes, ("old", "new", "all")):
        ax.set_title(f"{name} of {titles[group]}")
    style_step_axes(axes, name, len(summary["classes_per_step"]))
    fig.suptitle(
        f"scenario {summary['scenario']} over {len(summary['orders'])} class orders: "
        "mean, ±1 std band, each order faint"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
