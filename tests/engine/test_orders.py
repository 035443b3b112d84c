"""Class-order robustness: drawing the orders, the summary over orders, `train --orders K` end to
end and its resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from eclipse_seg.cli import main
from eclipse_seg.engine import runner
from eclipse_seg.engine.orders import class_orders, format_orders_table, summarize_orders
from eclipse_seg.errors import ConfigError
from tests.engine.conftest import orders_args


def test_orders_start_with_the_configured_one_and_permute_it():
    base = [7, 3, 42, 11, 5]
    orders = class_orders(base, 4, seed=1)
    assert orders[0] == base
    assert all(sorted(o) == sorted(base) for o in orders)
    assert len({tuple(o) for o in orders}) == 4
    assert class_orders(base, 4, seed=1) == orders  # seeded
    assert class_orders(base, 6, seed=1)[:4] == orders  # more orders later keep the earlier ones
    assert class_orders(base, 4, seed=2)[1:] != orders[1:]


def test_orders_do_not_repeat_while_new_ones_exist():
    orders = class_orders([1, 2, 3], 6, seed=0)  # 3! = 6 orders exist: all of them
    assert sorted(map(tuple, orders)) == sorted({tuple(o) for o in orders})
    with pytest.raises(ConfigError, match="at least 1"):
        class_orders([1, 2, 3], 0, seed=0)


def _results(order, alls, olds):
    steps = [
        {
            "step": t,
            "pq_old": olds[t],
            "pq_new": 50.0,
            "pq_all": alls[t],
            "pq_avg": float(np.mean(alls[: t + 1])),
            "forgetting_mean": None,
        }
        for t in range(len(alls))
    ]
    return {
        "scenario": "2,1",
        "classes_per_step": [2, 1],
        "class_order": order,
        "methods": {"eclipse": {"steps": steps}},
    }


def test_summary_by_hand():
    orders = [[1, 2, 3], [3, 1, 2], [2, 3, 1]]
    per_order = [
        _results(orders[0], [60.0, 40.0], [None, 30.0]),
        _results(orders[1], [50.0, 20.0], [None, 10.0]),
        None,
    ]  # not run yet
    doc = summarize_orders(per_order, orders, seed=4)
    assert doc["order_seed"] == 4 and [o["order"] for o in doc["orders"]] == orders
    assert doc["orders"][2]["methods"] == {}
    steps = doc["methods"]["eclipse"]["steps"]
    assert steps[0]["pq_all"] == {
        "mean": 55.0,
        "std": pytest.approx(np.std([60, 50], ddof=1), abs=1e-3),
        "n": 2,
    }
    assert steps[0]["pq_old"] == {"mean": None, "std": None, "n": 0}
    assert steps[1]["pq_old"]["mean"] == 20.0
    assert steps[1]["pq_avg"]["mean"] == pytest.approx((50.0 + 35.0) / 2)
    assert doc["methods"]["eclipse"]["final_all"]["mean"] == 30.0
    one = summarize_orders(per_order[:1], orders[:1])
    assert one["methods"]["eclipse"]["final_all"] == {"mean": 40.0, "std": None, "n": 1}
    table = format_orders_table(doc)
    assert "55.00 ± 7.07" in table and "30.00 ± 14.14" in table


@pytest.mark.slow
def test_train_orders_summary_and_plot(orders_run, capsys):
    _, out = orders_run
    doc = json.loads((out / "orders.json").read_text())
    assert [o["folder"] for o in doc["orders"]] == ["order_0", "order_1", "order_2"]
    assert doc["orders"][0]["order"] == list(range(1, 13))  # the configured (dataset) order
    finals = []
    for o in doc["orders"]:
        results = json.loads((out / o["folder"] / "results.json").read_text())
        assert results["class_order"] == o["order"] and results["classes_per_step"] == [9, 3]
        rows = results["methods"]["eclipse"]["steps"]
        assert [r["step"] for r in rows] == [0, 1]
        assert rows[1]["pq_avg"] == pytest.approx(
            (rows[0]["pq_all"] + rows[1]["pq_all"]) / 2, abs=1e-3
        )
        assert set(rows[1]["forgetting"]) == {str(c) for c in o["order"][:9]}
        assert results["class_names"]["1"] == "sky"
        assert (out / o["folder"] / "class_heatmap.png").stat().st_size > 0
        finals.append(rows[1]["pq_all"])
    assert len({tuple(o["order"]) for o in doc["orders"]}) == 3
    final = doc["methods"]["eclipse"]["final_all"]
    assert final["n"] == 3 and final["mean"] == pytest.approx(np.mean(finals), abs=1e-3)
    assert final["std"] == pytest.approx(np.std(finals, ddof=1), abs=1e-3)
    assert (out / "orders.png").stat().st_size > 0


@pytest.mark.slow
def test_killed_order_resumes_and_only_missing_work_is_done(
    orders_run, tmp_path, monkeypatch, capsys
):
    data, done = orders_run
    out = tmp_path / "run"
    shutil.copytree(done, out)
    # order 1 was killed during step 1 (its last.pt survives), order 2 after step 0's training
    (out / "order_1" / "eclipse" / "step_1" / "final.pt").unlink()
    _drop_rows(out / "order_1" / "results.json", steps={1})
    shutil.rmtree(out / "order_2" / "eclipse" / "step_1")
    (out / "order_2" / "results.json").unlink()
    (out / "orders.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in (out / "order_0").rglob("*") if p.is_file()}
    trained = []
    real = runner.train_step

    def record(model, cfg, scenario, plan, dataset, step_dir, *args, **kwargs):
        trained.append(step_dir.relative_to(out).as_posix())
        return real(model, cfg, scenario, plan, dataset, step_dir, *args, **kwargs)

    monkeypatch.setattr(runner, "train_step", record)
    capsys.readouterr()
    assert main(orders_args(data, out, "--orders", "3", "--resume")) == 0
    log = capsys.readouterr()
    assert trained == ["order_1/eclipse/step_1", "order_2/eclipse/step_1"]
    assert "order 0 already complete" in log.out + log.err
    assert "resumed step 1" in log.out + log.err  # order 1 continued from its last.pt
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    doc = json.loads((out / "orders.json").read_text())
    assert doc["methods"]["eclipse"]["final_all"]["n"] == 3
    # a different seed would summarise other orders than those that ran: refused before any work
    assert main(orders_args(data, out, "--orders", "3", "--order-seed", "5", "--resume")) == 2
    assert "order 1 was" in capsys.readouterr().err


def _drop_rows(path, steps):
    results = json.loads(path.read_text())
    for entry in results["methods"].values():
        entry["steps"] = [r for r in entry["steps"] if r["step"] not in steps]
    path.write_text(json.dumps(results))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--orders", "2", "--step", "0"], "--step cannot be combined"),
        (["--order-seed", "3"], "only applies with --orders"),
    ],
)
def test_order_options_misuse(small_data, tmp_path, capsys, extra, message):
    assert main(orders_args(small_data, tmp_path / "run", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything is written
