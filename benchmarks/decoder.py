"""Per-op profile of the masked-attention decoder as continual steps accumulate: the R50 ADE model
(hidden 256, 8 heads, FFN 2048, 9 layers, random weights) with T steps of 10 prompts (100 + 10T
queries), in eval and inference mode on the trunk features of one image, exactly as inference
runs it.

Per T: the decoder's process CPU time (min over --passes unprofiled passes) and the process CPU time
per aten op (benchmarks._common.OpTimes; the smallest total of each op over --passes profiled
passes). `--before DIR` profiles DIR's `eclipse_seg` (a checkout of an earlier revision) with this
same benchmark in its own process, alternated with this checkout's --rounds times, and prints both
side by side: where the time per added query went, op by op.

  python -m benchmarks.decoder [--quick] [--steps 0,10] [--size 512] [--passes 3] [--threads 1]
                               [--attention auto|fused|explicit] [--before DIR] [--rounds 1]
                               [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from benchmarks._common import OpTimes, describe, min_op_ms, run_child, table, write_json
from benchmarks.inference import ATTENTION, build

TOP_OPS = 12


def child(steps: list[int], size: int, passes: int, attention: str) -> dict:
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    out = {"device": describe(torch.device("cpu")), "T": {}}
    for T in steps:
        model = build(T, torch.device("cpu"), ATTENTION[attention])
        with torch.inference_mode():  # as model.predict and evaluation run it
            mask_features, multi_scale = model.sem_seg_head.pixel_decoder(
                model.backbone(model.preprocess([image]))
            )
            model.decoder(multi_scale, mask_features)  # warm-up
            cpu, profiles = [], []
            for _ in range(passes):
                t0 = time.process_time()
                model.decoder(multi_scale, mask_features)
                cpu.append(time.process_time() - t0)
                with OpTimes() as ops:
                    model.decoder(multi_scale, mask_features)
                profiles.append(ops)
        out["T"][str(T)] = {
            "queries": sum(map(model.decoder.group_size, range(model.decoder.num_groups))),
            "cpu_ms_min": 1000.0 * min(cpu),
            "ops_ms": min_op_ms(profiles),
        }
    return out


def merge(runs: list[dict]) -> dict:
    """Several rounds of one checkout: per T, the smallest decoder time and per-op total."""
    merged = {"device": runs[0]["device"], "T": {}}
    for t in runs[0]["T"]:
        per = [r["T"][t] for r in runs]
        names = {k for p in per for k in p["ops_ms"]}
        merged["T"][t] = {
            "queries": per[0]["queries"],
            "cpu_ms_min": min(p["cpu_ms_min"] for p in per),
            "ops_ms": {k: min(p["ops_ms"].get(k, 0.0) for p in per) for k in names},
        }
    return merged


def op_table(after: dict, before: dict | None) -> str:
    steps = list(after["T"])
    runs = [("before", before), ("after", after)] if before else [("", after)]
    names = sorted(
        {k for _, r in runs for t in steps for k in r["T"][t]["ops_ms"]},
        key=lambda k: -max(r["T"][steps[-1]]["ops_ms"].get(k, 0.0) for _, r in runs),
    )
    headers = ["aten op"] + [f"{label} T={t}".strip() for label, _ in runs for t in steps]

    def row(name, get):
        return [name] + [get(r["T"][t]) for _, r in runs for t in steps]

    rows = [row(k, lambda d, k=k: d["ops_ms"].get(k, 0.0)) for k in names[:TOP_OPS]]
    rows.append(
        row("(other ops)", lambda d: sum(sorted(d["ops_ms"].values(), reverse=True)[TOP_OPS:]))
    )
    rows.append(row("decoder CPU min", lambda d: d["cpu_ms_min"]))
    return table(headers, rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="256x256, 1 pass (under a minute)")
    ap.add_argument("--steps", default="0,10")
    ap.add_argument("--size", type=int, default=None, help="square input size (default 512)")
    ap.add_argument("--passes", type=int, default=None, help="passes per round (default 3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--attention", choices=sorted(ATTENTION), default="auto")
    ap.add_argument("--before", default=None, help="directory of another checkout to compare with")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    steps = [int(t) for t in a.steps.split(",")]
    a.size = a.size or (256 if a.quick else 512)
    a.passes = a.passes or (1 if a.quick else 3)
    if a.child:
        print(json.dumps(child(steps, a.size, a.passes, a.attention)))
        return 0
    args = ["--child", "--steps", a.steps, "--size", str(a.size), "--passes", str(a.passes)]
    args += ["--attention", a.attention]
    after_runs, before_runs = [], []
    for _ in range(a.rounds):
        if a.before:
            before_runs.append(
                run_child("benchmarks.decoder", args, eclipse_seg_from=a.before, threads=a.threads)
            )
        after_runs.append(run_child("benchmarks.decoder", args, threads=a.threads))
        print(f"round {len(after_runs)} done", file=sys.stderr, flush=True)
    after = merge(after_runs)
    before = merge(before_runs) if before_runs else None
    print(
        f"{after['device']}; input {a.size}x{a.size}, decoder in eval mode (attention {a.attention}"
        f"{'; the before checkout runs its own default' if before else ''}); process CPU ms, "
        f"min over {a.passes} passes x {a.rounds} round(s)"
        + (f"; before = {a.before}" if before else "")
    )
    print(op_table(after, before))
    for label, r in [("before", before), ("after", after)] if before else [("", after)]:
        t = r["T"]
        if len(steps) > 1:
            first, last = t[str(steps[0])], t[str(steps[-1])]
            print(
                f"{label + ': ' if label else ''}T={steps[-1]} ({last['queries']} queries) - "
                f"T={steps[0]} ({first['queries']}): "
                f"{last['cpu_ms_min'] - first['cpu_ms_min']:.1f} ms"
            )
    write_json(a.json, {"after": after, "before": before, "threads": a.threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
