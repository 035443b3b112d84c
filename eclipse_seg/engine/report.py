"""`eclipse-seg report RUN_DIR`: one self-contained HTML page of a continual run, for people.

The page holds the results table (old / new / all, avg, forgetting), the PQ-over-steps plot, the
spread over class orders when the run was made with ``--orders``, the per-class x per-step heat
map, and for a few validation images one strip per step: the ground truth of the classes seen so
far, then each method's prediction with its checkpoint of that step (``<method>/step_<t>/final.pt``;
joint training has one model for all steps). Reading the strips down, new classes appear and old
ones stay (ECLIPSE) or vanish (fine-tuning).

Self-contained: no script, no stylesheet or font from the network; every image is a PNG embedded as
a base64 ``data:`` URI. A run made with ``--orders`` is shown through its configured order
(``order_0``) plus the spread.
"""

from __future__ import annotations

import base64
import colorsys
import html
import json
import tempfile
from pathlib import Path

import numpy as np

from eclipse_seg import __version__
from eclipse_seg.engine.build import build_datasets, load_run
from eclipse_seg.engine.check_data import preflight, synthetic_pending
from eclipse_seg.engine.continual_metrics import (
    add_continual_metrics,
    metric_key,
    plot_class_heatmap,
)
from eclipse_seg.engine.orders import ORDERS_JSON, format_orders_table, plot_orders
from eclipse_seg.engine.predictor import Predictor
from eclipse_seg.engine.results import plot_results
from eclipse_seg.engine.visualize import render_overlay, side_by_side
from eclipse_seg.errors import ConfigError, EclipseSegError
from eclipse_seg.scenarios import Scenario

__all__ = ["write_report"]

_CANDIDATES = 40  # validation images considered when choosing the ones to show


def write_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    images: int = 3,
    device: str = "cpu",
    data_root: str | None = None,
) -> Path:
    """Write the HTML report of `run_dir` (default ``RUN_DIR/report.html``) and return its path.

    `images`: validation images with strips (0 = none); `data_root`: where the validation data
    is when not where the run's config says. Missing data or checkpoints leave a note in the page
    instead of the strips."""
    run_dir = Path(run_dir)
    results, orders, base = _load(run_dir)
    output = Path(output) if output else run_dir / "report.html"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parts = [_header(run_dir, results, orders), _section("Results", _results_table(results))]
        plot_results(results, tmp / "pq.png")
        parts.append(_section("PQ over steps", _figure(tmp / "pq.png", "PQ over steps per method")))
        if orders:
            plot_orders(orders, tmp / "orders.png")
            parts.append(
                _section(
                    f"Spread over {len(orders['orders'])} class orders",
                    _figure(tmp / "orders.png", "mean over class orders with a ±1 std band")
                    + f"<pre>{html.escape(format_orders_table(orders))}</pre>"
                    + _order_list(orders),
                )
            )
        plot_class_heatmap(results, tmp / "heatmap.png")
        parts.append(
            _section(
                "Per-class values after each step",
                _figure(tmp / "heatmap.png", "per-class heat map"),
            )
        )
        if images > 0:
            parts.append(
                _section(
                    "Validation images, step by step",
                    _strips(base, results, images, device, data_root, tmp),
                )
            )
        page = _PAGE.format(
            title=html.escape(f"eclipse-seg report: {run_dir.name}"),
            body="\n".join(parts),
            version=__version__,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def _load(run_dir: Path) -> tuple[dict, dict | None, Path]:
    """(results with continual metrics, the orders summary or None, the run folder whose
    checkpoints the strips use)."""
    orders = None
    base = run_dir
    if (run_dir / ORDERS_JSON).exists():
        orders = _read_json(run_dir / ORDERS_JSON)
        base = run_dir / "order_0"
    path = base / "results.json"
    if not path.exists():
        raise ConfigError(
            f"{run_dir}: no results.json{' in order_0' if orders else ''} (nor "
            f"{ORDERS_JSON}); is it the --output folder of `eclipse-seg train`?"
        )
    results = _read_json(path)
    for entry in results["methods"].values():  # results of older versions lack the metrics
        add_continual_metrics(entry.setdefault("steps", []))
    return results, orders, base


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} cannot be read as JSON: {e}") from e


# --------------------------------------------------------------------------------------------------
# page parts
# --------------------------------------------------------------------------------------------------
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
td.name {{ text-align: left; }}
img {{ max-width: 100%; }}
figure {{ margin: 0.5em 0; }}
figcaption, .note {{ color: #666; font-size: 90%; }}
.strip {{ margin: 0.4em 0 1em 0; }}
pre {{ background: #f7f7f7; padding: 0.5em; overflow-x: auto; }}
</style>
</head>
<body>
{body}
<p class="note">written by eclipse-seg {version}</p>
</body>
</html>
"""


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path, caption: str) -> str:
    return (
        f'<figure><img src="{_png_uri(path)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _header(run_dir: Path, results: dict, orders: dict | None) -> str:
    names = results.get("class_names", {})
    steps, start, rows = results["classes_per_step"], 0, []
    for t, n in enumerate(steps):
        ids = results["class_order"][start : start + n]
        start += n
        label = ", ".join(f"{names.get(str(c), c)} ({c})" for c in ids)
        rows.append(f'<tr><td>{t}</td><td class="name">{html.escape(label)}</td></tr>')
    note = (
        f"<p>Made with <code>--orders {len(orders['orders'])}</code>: the tables and images below "
        "are of the configured order (<code>order_0</code>); the spread section covers all "
        "orders.</p>"
        if orders
        else ""
    )
    return (
        f"<h1>{html.escape(f'Run {run_dir.name}')}</h1>\n"
        f"<p>scenario <b>{html.escape(str(results['scenario']))}</b>, classes per step "
        f"{html.escape(str(steps))}, methods {html.escape(', '.join(results['methods']))}</p>\n"
        f"{note}<table><tr><th>step</th><th>classes (id)</th></tr>{''.join(rows)}</table>"
    )


def _results_table(results: dict) -> str:
    key = metric_key([r for e in results["methods"].values() for r in e["steps"]])
    unit = "mIoU" if key == "miou" else "PQ"
    cols = [
        (f"{key}_old", f"{unit} old"),
        (f"{key}_new", f"{unit} new"),
        (f"{key}_all", f"{unit} all"),
    ]
    if key == "pq":
        cols += [("pq_things", "things"), ("pq_stuff", "stuff")]
    cols += [(f"{key}_avg", "avg"), ("forgetting_mean", "forgetting")]
    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ["method", "step", *(c[1] for c in cols), "trainable"]
    )
    body = []
    for method, entry in results["methods"].items():
        for r in entry["steps"]:
            cells = [f'<td class="name">{html.escape(method)}</td>', f"<td>{r['step']}</td>"]
            cells += [f"<td>{_num(r.get(k))}</td>" for k, _ in cols]
            tp, total = r.get("trainable_params"), r.get("total_params")
            share = f"{tp:,} ({100 * tp / total:.1f}%)" if tp and total else "-"
            cells.append(f"<td>{share}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table><tr>{head}</tr>{"".join(body)}</table><p class="note">points (0-100); '
        "avg: mean all-class value over steps 0..t; forgetting: mean over the old classes of "
        "(best earlier value - current value).</p>"
    )


def _num(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def _order_list(orders: dict) -> str:
    names = orders.get("class_names", {})
    rows = "".join(
        f'<tr><td>order_{o["index"]}</td><td class="name">'
        f"{html.escape(', '.join(names.get(str(c), str(c)) for c in o['order']))}"
        "</td></tr>"
        for o in orders["orders"]
    )
    return f"<table><tr><th>run</th><th>class order</th></tr>{rows}</table>"


# --------------------------------------------------------------------------------------------------
# strips
# --------------------------------------------------------------------------------------------------
def _strips(
    base: Path, results: dict, count: int, device: str, data_root: str | None, tmp: Path
) -> str:
    """Per chosen validation image, one strip per step: ground truth of the seen classes, then
    every method's prediction of that step; a note instead when data or checkpoints are missing."""
    scenario = Scenario(
        str(results["scenario"]), tuple(results["class_order"]), tuple(results["classes_per_step"])
    )
    methods = [m for m, e in results["methods"].items() if e.get("steps")]
    checkpoints = {
        (m, t): _checkpoint(base, m, t) for m in methods for t in range(scenario.num_steps)
    }
    existing = [p for p in checkpoints.values() if p is not None]
    if not existing:
        return '<p class="note">No checkpoint (&lt;method&gt;/step_&lt;t&gt;/final.pt) found.</p>'
    try:
        first = load_run(existing[0], device)
        cfg = first.cfg
        if data_root is not None:
            cfg.data.root = data_root
        if synthetic_pending(cfg):
            raise ConfigError(f"the synthetic validation data is not at {cfg.data.root}")
        preflight(cfg, splits=("val",), scenario=False)
        val = build_datasets(cfg)[1]
    except EclipseSegError as e:
        return (
            f'<p class="note">Validation images are not shown: {html.escape(str(e))} '
            "(pass --data-root).</p>"
        )
    categories = {c["id"]: c for c in val.categories} | {c["id"]: c for c in first.categories}
    names = {int(k): v for k, v in results.get("class_names", {}).items()} or {
        i: c.get("name", str(i)) for i, c in categories.items()
    }
    colors = _colours(categories)
    chosen = _choose_images(val, scenario, count)
    samples = [val[i] for i in chosen]
    rgbs = [s.image.permute(1, 2, 0).numpy() for s in samples]
    predictions: dict[Path, list] = {}
    out = []
    for k, (index, sample, rgb) in enumerate(zip(chosen, samples, rgbs)):
        rows = [f"<h3>{html.escape(f'validation image {sample.file_name}')} (#{index})</h3>"]
        for t in range(scenario.num_steps):
            seen = set(scenario.seen_classes(t))
            gt = [
                {**s, "isthing": categories.get(s["category_id"], {}).get("isthing", 0)}
                for s in sample.segments_info
                if s["category_id"] in seen
            ]
            panels = [render_overlay(rgb, sample.id_map, gt, names, colors, title="ground truth")]
            for m in methods:
                path = checkpoints[(m, t)]
                title = "joint (all classes)" if m == "joint" else m
                if path is None:
                    panels.append(
                        render_overlay(
                            rgb,
                            np.zeros(rgb.shape[:2], np.int64),
                            [],
                            names,
                            colors,
                            title=f"{m}: no checkpoint",
                        )
                    )
                    continue
                if path not in predictions:
                    run = first if path == existing[0] else load_run(path, device)
                    predictions[path] = Predictor.from_run(run)(rgbs)
                p = predictions[path][k]
                panels.append(
                    render_overlay(rgb, p.panoptic, p.segments, names, colors, title=title)
                )
            strip = tmp / f"strip_{k}_{t}.png"
            side_by_side(panels, strip)
            new = ", ".join(names.get(c, str(c)) for c in scenario.classes_of_step(t))
            caption = f"step {t}: new {new}; panels: ground truth, {', '.join(methods)}"
            rows.append(
                f'<div class="strip"><p>{html.escape(caption)}</p>'
                f'<img src="{_png_uri(strip)}" alt="{html.escape(caption)}"></div>'
            )
        out.append("\n".join(rows))
    return "\n".join(out) + (
        '<p class="note">Ground truth shows only the classes seen up to the '
        "step; each method predicts with its checkpoint of that step.</p>"
    )


def _checkpoint(base: Path, method: str, step: int) -> Path | None:
    """The final checkpoint of (method, step); joint training's single model serves every step."""
    path = base / method / f"step_{0 if method == 'joint' else step}" / "final.pt"
    return path if path.exists() else None


def _choose_images(val, scenario: Scenario, count: int) -> list[int]:
    """Among the first validation images, those with classes of the most steps (then the most
    classes), so that new classes have something to appear on; in dataset order."""
    scored = []
    for i in range(min(len(val), _CANDIDATES)):
        cats = {s["category_id"] for s in val[i].segments_info} & set(scenario.order)
        steps = {scenario.step_of_class(c) for c in cats}
        scored.append((-len(steps), -len(cats), i))
    return sorted(i for _, _, i in sorted(scored)[:count])


def _colours(categories: dict[int, dict]) -> dict[int, list[int]]:
    """Each category's colour; categories without one get well-separated hues."""
    colours = {}
    for k, (cid, c) in enumerate(sorted(categories.items())):
        if c.get("color"):
            colours[cid] = list(c["color"])
        else:
            r, g, b = colorsys.hls_to_rgb((k * 0.618034) % 1.0, 0.5, 0.75)
            colours[cid] = [int(255 * r), int(255 * g), int(255 * b)]
    return colours
