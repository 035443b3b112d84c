"""`eclipse-seg demo` over seeds and thread counts: does every claim hold on every run, how long
does a run take, and does a rerun with the same seed and thread count give the same numbers?

    python -m benchmarks.demo_seeds [--seeds 0 1 2] [--threads 1 2] [--out DIR] [--repeat]
                                    [--quick] [--json PATH]

Each run is a fresh `python -m eclipse_seg demo --seed S` with OMP_NUM_THREADS=T (a different
thread count sums floats in another order, so it is an independent check of robustness), in
`DIR/seed<S>_threads<T>`; a finished run is not recomputed (delete its folder to rerun it).
`--repeat` reruns the first seed with the first thread count in a second folder and reports
whether every number in `results.json` is identical. Wall-clock times are only meaningful on an
otherwise idle machine. Prints one table row per run; exit status 1 if a claim fails somewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import describe, table, write_json
from eclipse_seg.demo import check_claims, incremental_class_pq


def run_demo(seed: int, threads: int, folder: Path, quick: bool) -> tuple[dict, float | None]:
    """results.json of the demo in `folder` (run now unless already there), and the wall seconds
    of the run (None when it was already there)."""
    results_path = folder / "results.json"
    if results_path.exists() and "joint_training" in json.loads(results_path.read_text()):
        return json.loads(results_path.read_text()), None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable,
        "-m",
        "eclipse_seg",
        "demo",
        "--seed",
        str(seed),
        "--out",
        str(folder),
        "--no-progress",
    ] + (["--quick"] if quick else [])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(results_path.read_text()), time.perf_counter() - start


def numbers(results: dict) -> dict:
    """Every PQ figure of a results dict (what a rerun must reproduce exactly)."""
    out = {}
    for method, entry in results["methods"].items():
        for e in entry["steps"]:
            for k, v in e.items():
                if k.startswith("pq") or k == "per_class":
                    out[f"{method}/{e['step']}/{k}"] = v
    return out


def row(seed: int, threads: int, results: dict, seconds: float | None) -> list:
    m = results["methods"]
    last = len(results["classes_per_step"]) - 1
    ecl = {e["step"]: e for e in m["eclipse"]["steps"]}
    ft = {e["step"]: e for e in m["finetune"]["steps"]}
    joint = {e["step"]: e for e in m["joint"]["steps"]}
    claims = check_claims(results)
    incremental = "/".join(
        f"{pq:.1f}" if pq is not None else "-" for _, _, pq in incremental_class_pq(results)
    )
    failed = [c.text for c in claims if not c.holds]
    resumed = "*" if results.get("resumed") else ""  # an earlier run's time is not counted
    return [
        seed,
        threads,
        "-" if seconds is None else f"{seconds:.0f}",
        f"{results.get('total_seconds', 0.0):.0f}{resumed}",
        ecl[0]["pq_all"],
        incremental,
        ecl[last]["pq_old"],
        ecl[last]["pq_new"],
        ecl[last]["pq_all"],
        ft[last]["pq_old"],
        joint[last]["pq_all"],
        f"{len(claims) - len(failed)}/{len(claims)}",
    ], failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="runs/demo_seeds")
    p.add_argument(
        "--repeat",
        action="store_true",
        help="rerun the first seed / thread count and compare every number",
    )
    p.add_argument("--quick", action="store_true", help="the demo's --quick smoke run (plumbing)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    out = Path(args.out)
    headers = [
        "seed",
        "threads",
        "wall s",
        "demo s",
        "step-0 PQ",
        "new classes at their step",
        "ECLIPSE old",
        "ECLIPSE new",
        "ECLIPSE all",
        "FT old",
        "joint all",
        "claims",
    ]
    rows, failures, record = [], [], []
    for seed in args.seeds:
        for threads in args.threads:
            results, seconds = run_demo(
                seed, threads, out / f"seed{seed}_threads{threads}", args.quick
            )
            r, failed = row(seed, threads, results, seconds)
            rows.append(r)
            failures += [f"seed {seed}, {threads} threads: {f}" for f in failed]
            record.append(
                {"seed": seed, "threads": threads, "wall_seconds": seconds, "results": results}
            )
    print(f"eclipse-seg demo{' --quick' if args.quick else ''} on {describe_cpu()}")
    print(table(headers, rows))
    same = None
    if args.repeat:
        seed, threads = args.seeds[0], args.threads[0]
        first = json.loads((out / f"seed{seed}_threads{threads}" / "results.json").read_text())
        again, _ = run_demo(seed, threads, out / f"seed{seed}_threads{threads}_repeat", args.quick)
        same = numbers(first) == numbers(again)
        print(
            f"rerun of seed {seed} with {threads} threads: "
            f"{'identical numbers' if same else 'NUMBERS DIFFER'}"
        )
    for f in failures:
        print(f"FAIL {f}")
    if not failures:
        print("every claim holds on every run")
    write_json(args.json, {"machine": describe_cpu(), "runs": record, "rerun_identical": same})
    return 1 if failures or same is False else 0


def describe_cpu() -> str:
    import torch

    return describe(torch.device("cpu")).split(" (")[0]


if __name__ == "__main__":
    sys.exit(main())
