"""A run's results: the `results.json` rows (one per method and step, in points), the table the
CLI prints and the PQ-over-steps plot.

Row of a step t: ``{metric}_old`` (classes of steps < t; None at step 0), ``{metric}_new`` (classes
of step t), ``{metric}_all`` (every seen class), PQ things / stuff, per-class values, trainable and
total parameters and training seconds; ``metric`` is ``pq`` or, for semantic data, ``miou``. The
runner adds forgetting and the running avg (`continual_metrics`); the document also holds
``class_names`` ({id: name}) for tables and figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from eclipse_seg.data.files import atomic_write_bytes
from eclipse_seg.errors import ConfigError
from eclipse_seg.scenarios import Scenario, step_class_groups

__all__ = [
    "format_results_table",
    "joint_rows",
    "plot_results",
    "read_results",
    "step_result",
    "write_results",
]


def step_result(summary: dict, step: int, scenario: Scenario) -> dict:
    """The results.json entry of one step in points (0-100) from an evaluation summary (fractions):
    PQ (``pq_*``, things / stuff) or, for a semantic summary, mIoU (``miou_*``)."""
    g = summary["groups"]
    metric = summary.get("metric", "pq")

    def pts(name):
        return round(100 * g[name][metric], 3) if g.get(name, {}).get("n") else None

    seen = set(scenario.seen_classes(step))
    row = {
        "step": step,
        f"{metric}_old": pts("old") if step > 0 else None,
        f"{metric}_new": pts("new"),
        f"{metric}_all": pts("all"),
    }
    if metric == "pq":
        row.update(pq_things=pts("things"), pq_stuff=pts("stuff"))
    row["per_class"] = {
        k: _class_points(v, metric) for k, v in summary["per_class"].items() if int(k) in seen
    }
    return row


def _class_points(value, metric: str) -> float | None:
    """A class's PQ (its statistics dict) or IoU (None: no ground-truth pixel) in points."""
    value = value["pq"] if metric == "pq" else value
    return None if value is None else round(100 * value, 3)


def _class_value(stats, metric: str) -> float | None:
    """A class's PQ or IoU as a fraction; None when the class is absent (left out of the means)."""
    if metric != "pq":
        return stats
    return stats["pq"] if stats["tp"] + stats["fp"] + stats["fn"] > 0 else None


def joint_rows(summary: dict, scenario: Scenario, thing_ids: set[int]) -> list[dict]:
    """Joint training predicts every class from the start; at step t it is scored on the class
    ranges of step t (old / new / all seen), from one evaluation's per-class statistics."""
    rows = []
    per_class = summary["per_class"]
    metric = summary.get("metric", "pq")
    for t in range(scenario.num_steps):
        groups = {}
        for name, ids in step_class_groups(scenario, t, thing_ids).items():
            vals = [
                v for v in (_class_value(per_class[str(c)], metric) for c in ids) if v is not None
            ]
            groups[name] = {metric: sum(vals) / len(vals) if vals else 0.0, "n": len(vals)}
        rows.append(
            step_result({"metric": metric, "groups": groups, "per_class": per_class}, t, scenario)
        )
    return rows


def read_results(path: Path, scenario: Scenario) -> dict:
    """The results of `path`, or a fresh document for `scenario`; another scenario's is an error."""
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path} is not valid JSON ({e}); move it away to start afresh"
            ) from e
        if results.get("classes_per_step") != list(scenario.steps):
            raise ConfigError(
                f"{path} holds results of another scenario "
                f"({results.get('scenario')}); use another output directory"
            )
        return results
    return {
        "scenario": scenario.name,
        "classes_per_step": list(scenario.steps),
        "class_order": list(scenario.order),
        "methods": {},
        "total_seconds": 0.0,
    }


def write_results(path: Path, results: dict) -> None:
    atomic_write_bytes(path, json.dumps(results, indent=1).encode())


def _metric(results: dict) -> tuple[str, str]:
    """("pq", "PQ") or, for semantic runs, ("miou", "mIoU")."""
    rows = [e for entry in results["methods"].values() for e in entry["steps"]]
    return ("miou", "mIoU") if any("miou_all" in e for e in rows) else ("pq", "PQ")


def format_results_table(results: dict) -> str:
    """Methods x steps: PQ (or mIoU) old / new / all, things / stuff, avg (mean all-class value
    over steps 0..t) and forget (mean forgetting of the old classes), in points ("-": not
    defined, e.g. old classes at step 0; see `continual_metrics`)."""
    key, name = _metric(results)
    extra = (("pq_things", "pq_stuff") if key == "pq" else ()) + (f"{key}_avg", "forgetting_mean")
    heads = [f"{name} old", f"{name} new", f"{name} all"] + [
        {"forgetting_mean": "forget"}.get(k, k.split("_")[-1]) for k in extra
    ]
    lines = [
        f"scenario {results['scenario']}  classes per step {results['classes_per_step']}",
        f"{'method':<10} {'step':>4} " + "".join(f"{h:>8} " for h in heads) + f"{'trainable':>12}",
    ]

    def f(v):
        return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    for method, entry in results["methods"].items():
        for e in entry["steps"]:
            tp = e.get("trainable_params")
            total = e.get("total_params")
            share = f"{tp:,} ({100 * tp / total:.1f}%)" if tp and total else "-"
            values = [e.get(f"{key}_{g}") for g in ("old", "new", "all")] + [
                e.get(k) for k in extra
            ]
            lines.append(
                f"{method:<10} {e['step']:>4} "
                + "".join(f"{f(v)} " for v in values)
                + f"{share:>12}"
            )
    return "\n".join(lines)


def style_step_axes(axes, name: str, num_steps: int) -> None:
    """The look of every value-over-steps panel: integer steps 0..num_steps-1, a 0-100 scale,
    the metric's name on the y axis, a light grid, a legend when something is labelled."""
    from matplotlib.ticker import MaxNLocator

    last = max(num_steps - 1, 1)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.25, last + 0.25)
        ax.set_ylim(0, 100)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{name} (points)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()


def plot_results(results: dict, path: Path) -> None:
    """All-class PQ (or mIoU) over steps per method and, when any step has old classes, the old
    classes' value (forgetting) beside it. Integer step ticks, a 0-100 scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, name = _metric(results)
    methods = {m: e["steps"] for m, e in results["methods"].items() if e["steps"]}
    has_old = any(e.get(f"{key}_old") is not None for rows in methods.values() for e in rows)
    fig, axes = plt.subplots(
        1, 2 if has_old else 1, figsize=(10 if has_old else 5.5, 4), squeeze=False
    )
    axes = axes[0]
    for method, rows in methods.items():
        points = [(e["step"], e.get(f"{key}_all")) for e in rows if e.get(f"{key}_all") is not None]
        if points:
            axes[0].plot(*zip(*points), marker="o", label=method)
        old = [(e["step"], e[f"{key}_old"]) for e in rows if e.get(f"{key}_old") is not None]
        if old and has_old:
            axes[1].plot(*zip(*old), marker="o", label=method)
    axes[0].set_title(f"{name} over all seen classes")
    if has_old:
        axes[1].set_title(f"{name} of old classes (forgetting)")
    style_step_axes(axes, name, len(results["classes_per_step"]))
    fig.suptitle(f"scenario {results['scenario']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
