"""Per-op profile of the MSDeformAttn pixel decoder of the R50 model (d_model 256, 8 heads, 4 points,
3 levels, FFN 1024, 6 encoder layers): the reference path (grid_sample per level, unfused layers)
against the fast path (one gather per layer, fused residual/FFN), with the ResNet-50 backbone on the
same features for scale.

Each thread count runs in its own process (torch.set_num_threads); backbone, reference and fast
pixel decoder are run round-robin, so load from other processes hits all three alike. Stage times:
median wall clock and min process CPU time (time.process_time, summed over threads: on a shared
machine it is far less disturbed than wall clock). The per-op table is process CPU time per aten op
(benchmarks._common.OpTimes), the smallest total of each op over the profiled passes. `--compile`
adds both paths under torch.compile (inductor, static shapes; timed, not profiled) to the rounds.

  python -m benchmarks.pixel_decoder [--size 512] [--batch 1] [--threads 1,2] [--passes 5] [--compile]
                                     [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

from benchmarks._common import OpTimes, describe, min_op_ms, run_child, table, write_json

STAGES = ("backbone", "pixel_decoder_reference", "pixel_decoder_fast")
# --compile: torch.compile (inductor, static shapes) of the fast and of the reference path
COMPILED = ("pixel_decoder_fast_compiled", "pixel_decoder_reference_compiled")


def child(threads: int, size: int, batch: int, passes: int, compile_: bool = False) -> dict:
    from eclipse_seg.model.mask2former import Mask2Former, ModelConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Mask2Former(ModelConfig(base_classes=100)).eval()
    pixel_decoder = model.sem_seg_head.pixel_decoder
    x = torch.randn(batch, 3, size, size)
    stages = STAGES + (COMPILED if compile_ else ())
    wall: dict[str, list[float]] = {s: [] for s in stages}
    cpu: dict[str, list[float]] = {s: [] for s in stages}
    ops: dict[str, list[OpTimes]] = {s: [] for s in STAGES}  # compiled stages: not profiled
    compile_s: dict[str, float] = {}
    compiled_diff = 0.0
    with torch.inference_mode():
        features = model.backbone(x)
        runs = {
            "backbone": lambda: model.backbone(x),
            "pixel_decoder_reference": lambda: pixel_decoder.set_fast(False)(features),
            "pixel_decoder_fast": lambda: pixel_decoder.set_fast(True)(features),
        }
        ref, fast = runs["pixel_decoder_reference"](), runs["pixel_decoder_fast"]()  # warm-up
        diff = _max_abs_diff(ref, fast)
        for stage, fast_path in zip(COMPILED, (True, False)) if compile_ else ():
            compiled = torch.compile(
                copy.deepcopy(pixel_decoder).set_fast(fast_path), dynamic=False
            )
            t0 = time.perf_counter()
            out = compiled(features)  # compiles
            compile_s[stage] = time.perf_counter() - t0
            compiled_diff = max(compiled_diff, _max_abs_diff(fast, out))
            runs[stage] = lambda compiled=compiled: compiled(features)
        for _ in range(passes):
            for stage, fn in runs.items():
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                wall[stage].append(time.perf_counter() - w0)
                cpu[stage].append(time.process_time() - c0)
                if stage in ops:
                    with OpTimes() as profile:
                        fn()
                    ops[stage].append(profile)
    return {
        "threads": threads,
        "device": describe(torch.device("cpu")),
        "max_abs_diff": diff,
        "compile_s": compile_s,
        "compiled_max_abs_diff": compiled_diff,
        "wall_ms": {s: 1000 * statistics.median(v) for s, v in wall.items()},
        "cpu_ms": {s: 1000 * min(v) for s, v in cpu.items()},
        "ops_ms": {s: min_op_ms(p) for s, p in ops.items()},
        "op_calls": {s: dict(p[0].calls) for s, p in ops.items()},
    }


def _max_abs_diff(a, b) -> float:
    pairs = [(a.mask_features, b.mask_features)] + list(
        zip(a.multi_scale_features, b.multi_scale_features)
    )
    return max(float((x - y).abs().max()) for x, y in pairs)


def op_table(r: dict, top: int = 22) -> str:
    ref, fast = r["ops_ms"]["pixel_decoder_reference"], r["ops_ms"]["pixel_decoder_fast"]
    names = sorted(set(ref) | set(fast), key=lambda k: -max(ref.get(k, 0.0), fast.get(k, 0.0)))
    rows, rest = [], [0.0, 0.0]
    for i, k in enumerate(names):
        a, b = ref.get(k, 0.0), fast.get(k, 0.0)
        if i < top:
            calls = (
                r["op_calls"]["pixel_decoder_reference"].get(k, 0),
                r["op_calls"]["pixel_decoder_fast"].get(k, 0),
            )
            rows.append([k, a, calls[0], b, calls[1]])
        else:
            rest[0] += a
            rest[1] += b
    rows.append(["(other ops)", rest[0], "", rest[1], ""])
    rows.append(["sum of ops", sum(ref.values()), "", sum(fast.values()), ""])
    return table(["aten op", "reference ms", "calls", "fast ms", "calls"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument(
        "--compile", action="store_true", help="also torch.compile both paths (minutes to compile)"
    )
    ap.add_argument("--json")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(a.child, a.size, a.batch, a.passes, a.compile)))
        return 0
    results = []
    for n in [int(t) for t in a.threads.split(",")]:
        results.append(
            run_child(
                "benchmarks.pixel_decoder",
                [
                    "--child",
                    str(n),
                    "--size",
                    str(a.size),
                    "--batch",
                    str(a.batch),
                    "--passes",
                    str(a.passes),
                ]
                + (["--compile"] if a.compile else []),
            )
        )
        print(f"{n} thread(s) done", file=sys.stderr, flush=True)
    print(
        f"{results[0]['device'].split(' (')[0]}; input {a.size}x{a.size}, batch {a.batch}; "
        f"{a.passes} round-robin passes per stage; wall: median, CPU: min"
    )
    rows = []
    for r in results:
        bb_wall, bb_cpu = r["wall_ms"]["backbone"], r["cpu_ms"]["backbone"]
        for s in r["wall_ms"]:
            rows.append(
                [
                    r["threads"],
                    s,
                    r["wall_ms"][s],
                    r["cpu_ms"][s],
                    f"{r['wall_ms'][s] / bb_wall:.2f}x",
                    f"{r['cpu_ms'][s] / bb_cpu:.2f}x",
                ]
            )
    print(
        table(["threads", "stage", "wall ms", "CPU ms", "wall / backbone", "CPU / backbone"], rows)
    )
    for r in results:
        sp_w = r["wall_ms"]["pixel_decoder_reference"] / r["wall_ms"]["pixel_decoder_fast"]
        sp_c = r["cpu_ms"]["pixel_decoder_reference"] / r["cpu_ms"]["pixel_decoder_fast"]
        print(
            f"\n{r['threads']} thread(s): fast pixel decoder {sp_w:.2f}x (wall) / {sp_c:.2f}x (CPU) "
            f"faster than the reference; max |fast - reference| = {r['max_abs_diff']:.1e}"
        )
        for stage, seconds in r.get("compile_s", {}).items():
            print(f"{stage}: compiled in {seconds:.0f} s")
        if r.get("compile_s"):
            print(f"max |compiled - fast| = {r['compiled_max_abs_diff']:.1e}")
        print(f"process CPU ms per aten op (min over {a.passes} passes), {r['threads']} thread(s):")
        print(op_table(r))
    write_json(a.json, {"size": a.size, "batch": a.batch, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
