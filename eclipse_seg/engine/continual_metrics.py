"""Continual-learning metrics of a run, read from its results rows (one row per method and step,
with the per-class values in ``per_class``): forgetting per class, the "avg" column of continual
papers and a per-class x per-step heat map.

- Forgetting of class c at step t, for a class seen before step t: the best value c had at any
  earlier step minus its value at step t, in points (positive = forgotten, negative = improved).
- avg at step t: the mean of the all-class value (``pq_all`` / ``miou_all``) over steps 0..t; the
  last step's avg is the "avg" column of continual papers.

Rows gain ``forgetting`` ({class id: points or None}), ``forgetting_mean`` (mean over the classes
with a value; None at step 0) and ``{metric}_avg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "HeatMap",
    "add_continual_metrics",
    "class_heatmap",
    "class_names_of",
    "metric_key",
    "plot_class_heatmap",
]


def metric_key(rows: list[dict]) -> str:
    """ "miou" when the rows hold mIoU (semantic data), else "pq"."""
    return "miou" if any("miou_all" in r for r in rows) else "pq"


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def add_continual_metrics(rows: list[dict]) -> list[dict]:
    """Write forgetting, forgetting_mean and ``{metric}_avg`` into each row of one method (in place,
    whatever the rows' order; values are recomputed from scratch, so calling it again is harmless).

    avg is None when a step 0..t is missing or has no all-class value (a partial run)."""
    key = metric_key(rows)
    by_step = {r["step"]: r for r in rows}
    for t, row in by_step.items():
        earlier = [by_step[s] for s in sorted(by_step) if s < t]
        best: dict[str, float] = {}
        for r in earlier:
            for c, v in (r.get("per_class") or {}).items():
                if v is not None:
                    best[c] = max(v, best.get(c, v))
        seen_before = {c for r in earlier for c in (r.get("per_class") or {})}
        current = row.get("per_class") or {}
        forgetting = {}
        for c in current:
            if c not in seen_before:
                continue
            now = current[c]
            forgetting[c] = None if now is None or c not in best else round(best[c] - now, 3)
        row["forgetting"] = forgetting
        row["forgetting_mean"] = _mean([v for v in forgetting.values() if v is not None])
        alls = [by_step[s].get(f"{key}_all") if s in by_step else None for s in range(t + 1)]
        row[f"{key}_avg"] = None if any(v is None for v in alls) else _mean(alls)
    return rows


def class_names_of(categories: list[dict], order: list[int] | tuple[int, ...]) -> dict[str, str]:
    """{class id as a string: name} for the classes of a class order (results.json's
    ``class_names``); a category without a name is named by its id."""
    by_id = {c["id"]: c for c in categories}
    return {str(c): str(by_id.get(c, {}).get("name", c)) for c in order}


@dataclass
class HeatMap:
    """What the heat map shows: ``rows`` (class labels, class order), ``steps`` and per method a
    (classes, steps) array of points, NaN where the class is not yet seen (or has no value)."""

    rows: list[str]
    steps: list[int]
    values: dict[str, np.ndarray]


def class_heatmap(results: dict, names: dict[str, str] | None = None) -> HeatMap:
    """The per-class x per-step values of every method of a results document. ``names``: {id:
    name} (default: the document's ``class_names``); a class without a name shows its id."""
    names = names if names is not None else results.get("class_names") or {}
    order = [str(c) for c in results["class_order"]]
    steps = list(range(len(results["classes_per_step"])))
    values = {}
    for method, entry in results["methods"].items():
        if not entry.get("steps"):
            continue
        grid = np.full((len(order), len(steps)), np.nan)
        for row in entry["steps"]:
            if row["step"] not in steps:
                continue
            for i, c in enumerate(order):
                v = (row.get("per_class") or {}).get(c)
                if v is not None:
                    grid[i, row["step"]] = v
        values[method] = grid
    labels = [names.get(c, c) for c in order]
    return HeatMap(labels, steps, values)


def plot_class_heatmap(results: dict, path: Path, names: dict[str, str] | None = None) -> HeatMap:
    """Write the heat map PNG: one panel per method, classes (rows, in class order, lines between
    the steps' class groups) x steps (columns), 0-100 colour scale, values written in the cells
    when the grid is small; blank = not yet seen. Returns what it drew."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = class_heatmap(results, names)
    key = metric_key([r for e in results["methods"].values() for r in e.get("steps", [])])
    unit = "mIoU" if key == "miou" else "PQ"
    n_classes, n_steps = len(heat.rows), len(heat.steps)
    panels = max(1, len(heat.values))
    font = 8 if n_classes <= 40 else 5
    width = 1.6 + panels * (0.9 + 0.55 * n_steps) + 1.0
    height = min(40.0, 1.4 + 0.24 * n_classes)
    fig, axes = plt.subplots(
        1, panels, figsize=(width, height), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    bounds = np.cumsum(results["classes_per_step"])[:-1] - 0.5
    image = None
    for ax, (method, grid) in zip(axes, heat.values.items()):
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            vmin=0,
            vmax=100,
            cmap="viridis",
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(method, fontsize=9)
        ax.set_xticks(range(n_steps), [str(s) for s in heat.steps], fontsize=font)
        ax.set_xlabel("step", fontsize=font + 1)
        ax.set_yticks(
            range(n_classes), heat.rows if ax is axes[0] else [""] * n_classes, fontsize=font
        )
        for b in bounds:
            ax.axhline(b, color="white", linewidth=1.2)
        if n_classes * n_steps <= 400:
            for (i, j), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=font - 1,
                        color="black" if v > 60 else "white",
                    )
    if not heat.values:
        axes[0].text(0.5, 0.5, "no results yet", ha="center", va="center")
        axes[0].set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=list(axes), label=f"{unit} (points)", fraction=0.05, pad=0.02)
    fig.suptitle(f"per-class {unit} after each step (scenario {results['scenario']})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return heat
