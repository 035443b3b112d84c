"""Class-order spread of the demo config: `train synthetic/base --orders K` with ECLIPSE (the
configured order 1..12 plus K-1 seeded random orders, scenario 9-1), the mean ± std over orders of
old / new / all PQ per step and of the final all-class PQ, and the wall time of each order.

The full run trains the demo's ECLIPSE schedule K times (step 0 + three 1-class steps per order);
``--quick`` uses the demo's quick settings (a smoke run: the numbers mean nothing). Resumable:
rerun with the same --out to continue.

  python -m benchmarks.orders [--quick] [--orders 3] [--seed 0] [--out DIR] [--json out.json]
                              [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import describe, table, write_json
from eclipse_seg.config import load_config
from eclipse_seg.demo import DEMO_CONFIG, QUICK
from eclipse_seg.engine.orders import format_orders_table, plan_orders, run_orders
from eclipse_seg.engine.outputs import claim_output_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the demo's quick settings (smoke run)")
    ap.add_argument("--orders", type=int, default=3, help="class orders (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="order seed (default 0)")
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out or tmp)
        overrides = [f"output_dir={out}", f"data.root={out / 'data'}", f"device={a.device}"]
        cfg = load_config(DEMO_CONFIG, overrides + (QUICK if a.quick else []))
        start = time.perf_counter()
        plan = plan_orders(cfg, a.orders, a.seed, "eclipse")
        with claim_output_dir(out, cfg, resume=True):
            summary = run_orders(plan, resume=True, progress=False)
        seconds = time.perf_counter() - start
    print(
        f"device {describe(torch.device(a.device))}; {seconds:.0f} s for {a.orders} orders "
        f"({'quick' if a.quick else 'full demo'} settings)"
    )
    print(format_orders_table(summary))
    final = summary["methods"]["eclipse"]["final_all"]
    print(
        table(
            ["orders", "final all-class PQ mean", "std", "seconds"],
            [[final["n"], final["mean"], final["std"] or 0.0, seconds]],
        )
    )
    write_json(
        a.json,
        {
            "device": describe(torch.device(a.device)),
            "seconds": seconds,
            "quick": a.quick,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
