"""Forgetting, the running avg and the per-class heat map, on small results computed by hand."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from eclipse_seg.engine.continual_metrics import (
    add_continual_metrics,
    class_names_of,
    plot_class_heatmap,
)
from eclipse_seg.engine.results import format_results_table


def _rows():
    # given out of step order on purpose: the result may not depend on it
    return [
        {
            "step": 2,
            "pq_old": 30.0,
            "pq_new": 80.0,
            "pq_all": 37.5,
            "per_class": {"1": 40.0, "2": 10.0, "3": 20.0, "4": 80.0},
        },
        {
            "step": 0,
            "pq_old": None,
            "pq_new": 45.0,
            "pq_all": 45.0,
            "per_class": {"1": 50.0, "2": 40.0},
        },
        {
            "step": 1,
            "pq_old": 37.0,
            "pq_new": 60.0,
            "pq_all": 44.667,
            "per_class": {"1": 30.0, "2": 44.0, "3": 60.0},
        },
    ]


def test_forgetting_and_avg_by_hand():
    rows = {r["step"]: r for r in add_continual_metrics(_rows())}
    assert rows[0]["forgetting"] == {} and rows[0]["forgetting_mean"] is None
    # step 1: class 1 fell from 50 to 30, class 2 improved from 40 to 44; class 3 is new
    assert rows[1]["forgetting"] == {"1": 20.0, "2": -4.0}
    assert rows[1]["forgetting_mean"] == pytest.approx(8.0)
    # step 2: against the best earlier value (class 1: 50 at step 0, class 2: 44 at step 1)
    assert rows[2]["forgetting"] == {"1": 10.0, "2": 34.0, "3": 40.0}
    assert rows[2]["forgetting_mean"] == pytest.approx(28.0)
    assert rows[0]["pq_avg"] == pytest.approx(45.0)
    assert rows[1]["pq_avg"] == pytest.approx((45.0 + 44.667) / 2, abs=1e-3)
    assert rows[2]["pq_avg"] == pytest.approx((45.0 + 44.667 + 37.5) / 3, abs=1e-3)


def test_recomputing_gives_the_same_values():
    once = add_continual_metrics(_rows())
    twice = add_continual_metrics([dict(r) for r in once])
    assert once == twice


def test_missing_values_and_steps():
    rows = [
        {"step": 0, "miou_all": 50.0, "per_class": {"1": 50.0, "2": None}},
        {"step": 2, "miou_all": 40.0, "per_class": {"1": None, "2": 30.0, "3": 20.0}},
    ]
    add_continual_metrics(rows)
    # class 1 has no current value, class 2 never had an earlier value: no forgetting for either
    assert rows[1]["forgetting"] == {"1": None, "2": None}
    assert rows[1]["forgetting_mean"] is None
    # step 1 is missing: no avg at step 2 (it would average other steps than the paper's)
    assert rows[0]["miou_avg"] == 50.0 and rows[1]["miou_avg"] is None


def test_table_shows_avg_and_forgetting():
    rows = add_continual_metrics(_rows())
    rows.sort(key=lambda r: r["step"])
    table = format_results_table(
        {
            "scenario": "2,1,1",
            "classes_per_step": [2, 1, 1],
            "methods": {"eclipse": {"steps": rows}},
        }
    )
    header, last = table.splitlines()[1], table.splitlines()[-1]
    assert "avg" in header and "forget" in header
    assert f"{rows[2]['pq_avg']:.2f}" in last and "28.00" in last


def _results(n_classes: int, methods=("eclipse",), names=True):
    order = list(range(n_classes, 0, -1))  # class order is not id order
    steps = [n_classes - 1, 1]
    per_step = [
        {str(c): float(10 * i) for i, c in enumerate(order[: steps[0]])},
        {str(c): float(10 * i + 5) for i, c in enumerate(order)},
    ]
    doc = {
        "scenario": f"{steps[0]},1",
        "classes_per_step": steps,
        "class_order": order,
        "methods": {
            m: {"steps": [{"step": t, "pq_all": 1.0, "per_class": per_step[t]} for t in range(2)]}
            for m in methods
        },
    }
    if names:
        doc["class_names"] = {str(c): f"class-{c}" for c in order}
    return doc


def test_heatmap_rows_values_and_size(tmp_path):
    heat = plot_class_heatmap(_results(3), tmp_path / "small.png")
    assert heat.rows == ["class-3", "class-2", "class-1"]  # class order, labelled by name
    assert heat.steps == [0, 1]
    grid = heat.values["eclipse"]
    assert grid[:2, 0].tolist() == [0.0, 10.0] and math.isnan(grid[2, 0])  # unseen at step 0
    assert grid[:, 1].tolist() == [5.0, 15.0, 25.0]
    small = Image.open(tmp_path / "small.png").size
    tall = Image.open(_plot(_results(40), tmp_path / "tall.png")).size
    wide = Image.open(_plot(_results(3, ("eclipse", "finetune")), tmp_path / "wide.png")).size
    assert tall[1] > small[1] and tall[0] == small[0]  # a row per class
    assert wide[0] > small[0] and wide[1] == small[1]  # a panel per method


def _plot(results, path):
    plot_class_heatmap(results, path)
    return path


def test_heatmap_labels_without_names_are_ids(tmp_path):
    heat = plot_class_heatmap(_results(3, names=False), tmp_path / "h.png")
    assert heat.rows == ["3", "2", "1"]
    given = plot_class_heatmap(
        _results(3, names=False),
        tmp_path / "g.png",
        names=class_names_of([{"id": 2, "name": "road"}], [3, 2, 1]),
    )
    assert given.rows == ["3", "road", "1"]
