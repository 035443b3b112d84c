"""Inference latency of ECLIPSE on the R50 ADE panoptic Mask2Former (random weights) as continual
steps accumulate: T incremental steps of 10 prompts (100 base queries + 10*T prompts).

Per T (latency: all T's models in one process, measured round-robin so that load from other
processes hits every T alike; peak memory: one fresh subprocess per T):
  - end-to-end latency split into backbone (incl. preprocessing) / pixel decoder / decoder /
    post-processing (eclipse_seg.inference.postprocess, exactly as Mask2Former.predict runs it):
    wall-clock median and p90, and process CPU time (min and median; on a shared machine far less
    disturbed by other processes than wall clock);
  - the decoder alone on fixed random multi-scale features: the grouped decoder (one batched call,
    block-diagonal self-attention) and the per-group Python loop reference (each group alone
    through the decoder, as the official code loops over groups), with the ratio;
  - peak memory: CUDA max_memory_allocated, CPU ru_maxrss growth during the measured runs.

Each thread count of --threads (torch.set_num_threads) runs in its own process. --reference runs
the pixel decoder's explicit reference path; --both runs the fast and the reference path in the same
process (one model per T, its path switched before each pass, every (T, path) round-robin) and prints
the reference / fast ratio per T and stage. --before DIR measures DIR's `eclipse_seg` (a checkout
of an earlier revision, e.g. `git worktree add DIR <commit>`) with this same benchmark, alternated
with this checkout --rounds times, and prints before/after tables.

  python -m benchmarks.inference [--quick] [--json out.json] [--device cpu|cuda]
                                 [--attention auto|fused|explicit]
                                 [--threads 1,2] [--reference | --both] [--before DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from benchmarks._common import (
    Timer,
    describe,
    maxrss_mb,
    median_ms,
    memory_method,
    p90_ms,
    peak_mb,
    reset_peak,
    run_child,
    sync,
    table,
    write_json,
)

STEPS = (0, 1, 5, 10)
# --attention -> Mask2Former.set_fast_attention (None: the model's own default; a checkout from
# before it existed runs its explicit default then)
ATTENTION = {"auto": None, "fused": True, "explicit": False}
PROMPTS = 10


def build(T: int, device: torch.device, sdpa: bool | None, reference: bool = False):
    from eclipse_seg.continual import add_step, set_deltas
    from eclipse_seg.model.mask2former import Mask2Former, ModelConfig

    torch.manual_seed(0)
    model = Mask2Former(ModelConfig(base_classes=100))
    for _ in range(T):
        add_step(model, 5, PROMPTS)
    set_deltas(model, [0.4] + [0.6] * T)
    model.set_fast_attention(sdpa)
    if hasattr(model, "set_fast_pixel_decoder"):  # revisions before it had only the reference
        model.set_fast_pixel_decoder(not reference)
    return model.to(device).eval()


def loop_decoder(dec, multi_scale, mask_features):
    """Reference: every group alone through the decoder, outputs concatenated, then the logit
    manipulation (which needs every group's logits) on the final prediction."""
    from eclipse_seg.model.decoder import manipulate_logits

    outs = [
        dec(multi_scale, mask_features, groups=(g,), manipulate=False)
        for g in range(dec.num_groups)
    ]
    logits = torch.cat([o.pred_logits for o in outs], 1)
    masks = torch.cat([o.pred_masks for o in outs], 1)
    if dec.num_groups > 1:
        groups = tuple(range(dec.num_groups))
        # (revisions before the decoder helpers were public: group_indices, deltas_for)
        indices = getattr(dec, "group_indices", None) or dec.group_indices
        deltas = getattr(dec, "deltas_for", None) or dec.deltas_for
        idx = indices(groups, logits.device)
        logits = manipulate_logits(logits, idx["query_group"], idx["col_group"], deltas(groups))
    return logits, masks


def _prepare(
    T: int, size: int, device: torch.device, sdpa: bool | None, reference: bool = False, model=None
) -> dict:
    """One (T, path): `model` (built if None) runs its pixel decoder's reference path if
    `reference` (switched before every pass, so one model may serve both paths)."""
    from eclipse_seg.inference import postprocess

    model = model if model is not None else build(T, device, sdpa, reference)

    def set_path():
        if hasattr(model, "set_fast_pixel_decoder"):
            model.set_fast_pixel_decoder(not reference)

    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    dec = model.decoder

    def full_pass(timer):
        set_path()
        batch = timer.run("backbone", lambda: model.backbone(model.preprocess([image])))
        mf, ms = timer.run("pixel_decoder", model.sem_seg_head.pixel_decoder, batch)  # unpacks
        out = timer.run("decoder", dec, ms, mf)
        padded = (out.pred_masks.shape[-2] * 4, out.pred_masks.shape[-1] * 4)
        return timer.run(
            "postprocess",
            postprocess,
            out.pred_logits[0],
            out.pred_masks[0],
            padded,
            (size, size),
            (size, size),
            model.thing_mask,
        )

    c, s = dec.cfg.hidden_dim, size // 4
    multi_scale = [
        torch.randn(1, c, s // 8, s // 8, generator=g).to(device),
        torch.randn(1, c, s // 4, s // 4, generator=g).to(device),
        torch.randn(1, c, s // 2, s // 2, generator=g).to(device),
    ]
    mask_features = torch.randn(1, c, s, s, generator=g).to(device)
    return {
        "T": T,
        "path": "reference" if reference else "fast",
        "set_path": set_path,
        "model": model,
        "image": image,
        "dec": dec,
        "full_pass": full_pass,
        "multi_scale": multi_scale,
        "mask_features": mask_features,
    }


def child_time(
    steps: list[int],
    size: int,
    runs: int,
    warmup: int,
    device: torch.device,
    sdpa: bool | None,
    reference: bool = False,
    both: bool = False,
) -> list[dict]:
    """Every T's model in one process, measured round-robin (run r of T=0, of T=1, ...), so that
    load from other processes on a shared machine hits every T alike; with `both`, every T twice
    (fast, then reference path, the same model). Returns raw samples (s)."""
    import time

    preps = []
    for T in steps:
        fast = _prepare(T, size, device, sdpa, False if both else reference)
        preps.append(fast)
        if both:
            preps.append(_prepare(T, size, device, sdpa, True, model=fast["model"]))
    timers = {(p["T"], p["path"]): Timer(device) for p in preps}
    diffs = {}
    with torch.inference_mode():
        for p in preps:  # warm-up, and the check that the split path is Mask2Former.predict's
            dec, ms, mf = p["dec"], p["multi_scale"], p["mask_features"]
            for _ in range(warmup):
                res = p["full_pass"](Timer(device))
                dec(ms, mf)
                loop_decoder(dec, ms, mf)
            p["set_path"]()
            ref = p["model"].predict([p["image"]])[0]
            assert torch.equal(ref["panoptic_seg"], res["panoptic_seg"]), "split path != predict()"
            grouped = dec(ms, mf)
            loop_logits, loop_masks = loop_decoder(dec, ms, mf)
            diffs[p["T"], p["path"]] = max(
                float((grouped.pred_logits - loop_logits).abs().max()),
                float((grouped.pred_masks - loop_masks).abs().max()),
            )
        for _ in range(runs):
            for p in preps:
                timer, dec = timers[p["T"], p["path"]], p["dec"]
                ms, mf = p["multi_scale"], p["mask_features"]
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                p["full_pass"](timer)
                sync(device)
                timer.times.setdefault("total", []).append(time.perf_counter() - t0)
                timer.cpu_times.setdefault("total", []).append(time.process_time() - c0)
                timer.run("decoder_alone", dec, ms, mf)
                timer.run("decoder_loop", loop_decoder, dec, ms, mf)
    out = []
    for p in preps:
        timer = timers[p["T"], p["path"]]
        out.append(
            {
                "T": p["T"],
                "path": p["path"],
                "queries": sum(p["dec"].group_size(i) for i in range(p["dec"].num_groups)),
                "samples": timer.times,
                "cpu_samples": timer.cpu_times,
                "grouped_vs_loop_max_abs_diff": diffs[p["T"], p["path"]],
                "device": describe(device),
                "threads": torch.get_num_threads(),
            }
        )
    return out


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Per T, the samples of every round together, summarised: wall median / p90, CPU min / median."""
    out = []
    for per_t in zip(*rounds):
        r = dict(per_t[0])
        wall = {k: [x for q in per_t for x in q["samples"][k]] for k in r["samples"]}
        cpu = {k: [x for q in per_t for x in q["cpu_samples"][k]] for k in r["cpu_samples"]}
        r["stats"] = {
            k: {
                "median_ms": median_ms(v),
                "p90_ms": p90_ms(v),
                "cpu_min_ms": 1000 * min(cpu[k]),
                "cpu_median_ms": 1000 * statistics.median(cpu[k]),
            }
            for k, v in wall.items()
        }
        del r["samples"], r["cpu_samples"]
        out.append(r)
    return out


def child_mem(T: int, size: int, runs: int, device: torch.device, sdpa: bool | None) -> dict:
    """Peak memory of end-to-end inference of one T, alone in a fresh process."""
    p = _prepare(T, size, device, sdpa)
    sync(device)
    reset_peak(device)
    rss0 = maxrss_mb()  # after building the model, before any forward pass
    with torch.inference_mode():
        for _ in range(1 + runs):
            p["full_pass"](Timer(device))
        return {"T": T, "peak_mb": peak_mb(device, rss0), "peak_rss_mb": maxrss_mb()}


STAGES = ("backbone", "pixel_decoder", "decoder", "postprocess")


def stage_table(results: list[dict], runs: int, before: list[dict] | None = None) -> str:
    """Latency per T and stage (wall median) plus the process CPU time of the whole pass (min)."""
    rows = []
    for r in results:
        s = r["stats"]
        rows.append(
            [
                r["T"],
                r["queries"],
                s["total"]["median_ms"],
                s["total"]["p90_ms"],
                *[s[k]["median_ms"] for k in STAGES],
                s["total"]["cpu_min_ms"],
                r.get("peak_mb", "-"),
                s["decoder_alone"]["median_ms"],
                s["decoder_loop"]["median_ms"],
                f"{s['decoder_loop']['median_ms'] / s['decoder_alone']['median_ms']:.2f}x",
            ]
        )
    return table(
        [
            "T",
            "queries",
            "total med ms",
            "total p90 ms",
            "backbone",
            "pixel dec",
            "decoder",
            "postproc",
            "total CPU min",
            "peak MB",
            "decoder alone",
            "decoder loop",
            "loop/grouped",
        ],
        rows,
    )


def before_after_table(before: list[dict], after: list[dict]) -> str:
    """Per T and stage: before / after (wall median ms, CPU min ms of the total) and the speed-up."""
    rows = []
    for b, a in zip(before, after):
        sb, sa = b["stats"], a["stats"]
        for k in ("total",) + STAGES:
            rows.append(
                [
                    a["T"],
                    k,
                    sb[k]["median_ms"],
                    sa[k]["median_ms"],
                    f"{sb[k]['median_ms'] / sa[k]['median_ms']:.2f}x",
                    sb[k]["cpu_min_ms"],
                    sa[k]["cpu_min_ms"],
                    f"{sb[k]['cpu_min_ms'] / sa[k]['cpu_min_ms']:.2f}x",
                ]
            )
    return table(
        [
            "T",
            "stage",
            "before med ms",
            "after med ms",
            "speed-up",
            "before CPU min",
            "after CPU min",
            "CPU speed-up",
        ],
        rows,
    )


def paths_table(results: list[dict]) -> str:
    """--both: per T and stage, the reference and the fast path (wall median, CPU min) and the
    reference / fast ratio (the fast path's speed-up)."""
    fast = {r["T"]: r["stats"] for r in results if r.get("path", "fast") == "fast"}
    ref = {r["T"]: r["stats"] for r in results if r.get("path") == "reference"}
    rows = []
    for T in fast:
        for k in ("total",) + STAGES:
            a, b = ref[T][k], fast[T][k]
            rows.append(
                [
                    T,
                    k,
                    a["median_ms"],
                    b["median_ms"],
                    f"{a['median_ms'] / b['median_ms']:.2f}x",
                    a["cpu_min_ms"],
                    b["cpu_min_ms"],
                    f"{a['cpu_min_ms'] / b['cpu_min_ms']:.2f}x",
                ]
            )
    return table(
        [
            "T",
            "stage",
            "reference med ms",
            "fast med ms",
            "ref / fast",
            "reference CPU min",
            "fast CPU min",
            "CPU ref / fast",
        ],
        rows,
    )


def t_over_t0(results: list[dict]) -> list[str]:
    """'T=k: total / T=0 = r (CPU r)' for every T after the first (results ordered by T)."""
    base = results[0]["stats"]["total"]
    return [
        f"T={r['T']}: total / T=0 = {r['stats']['total']['median_ms'] / base['median_ms']:.3f} "
        f"(CPU {r['stats']['total']['cpu_min_ms'] / base['cpu_min_ms']:.3f})"
        for r in results[1:]
    ]


def summary(results: list[dict]) -> dict:
    """The JSON fields of one set of results (keyed by T as a string)."""

    def key(r):
        return str(r["T"])

    return {
        "total_ms": {key(r): r["stats"]["total"]["median_ms"] for r in results},
        "total_p90_ms": {key(r): r["stats"]["total"]["p90_ms"] for r in results},
        "stages_ms": {key(r): {k: r["stats"][k]["median_ms"] for k in STAGES} for r in results},
        "cpu_ms": {
            key(r): {k: r["stats"][k]["cpu_min_ms"] for k in ("total",) + STAGES} for r in results
        },
        "decoder_ms": {key(r): r["stats"]["decoder_alone"]["median_ms"] for r in results},
        "decoder_loop_ms": {key(r): r["stats"]["decoder_loop"]["median_ms"] for r in results},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="256x256, 3 runs, 1 thread (a couple of minutes on CPU)",
    )
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--size", type=int, default=None, help="square input size (default 512; quick 256)"
    )
    ap.add_argument("--runs", type=int, default=None, help="measured runs (default 10; quick 3)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--steps", default=",".join(map(str, STEPS)))
    ap.add_argument(
        "--attention",
        choices=sorted(ATTENTION),
        default="auto",
        help="decoder attention: the model's default (auto: fused in eval mode), always fused "
        "(scaled_dot_product_attention) or the explicit reference",
    )
    ap.add_argument(
        "--threads", default=None, help="thread counts, one process each (default 1,2; quick 1)"
    )
    ap.add_argument("--reference", action="store_true", help="the pixel decoder's reference path")
    ap.add_argument(
        "--both",
        action="store_true",
        help="the fast and the reference pixel-decoder path in the same process",
    )
    ap.add_argument("--before", default=None, help="directory of another checkout to compare with")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of before/after runs")
    ap.add_argument("--child-time", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-mem", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    size = a.size or (256 if a.quick else 512)
    runs = a.runs or (3 if a.quick else 10)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    device = torch.device(a.device)
    steps = [int(t) for t in a.steps.split(",")]
    threads = [int(t) for t in (a.threads or ("1" if a.quick else "1,2")).split(",")]
    mem_runs = 1 if a.quick else 2
    if a.child_time:
        print(
            json.dumps(
                child_time(
                    steps, size, runs, warmup, device, ATTENTION[a.attention], a.reference, a.both
                )
            )
        )
        return 0
    if a.child_mem is not None:
        print(json.dumps(child_mem(a.child_mem, size, mem_runs, device, ATTENTION[a.attention])))
        return 0
    common = (
        [
            "--size",
            str(size),
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
            "--device",
            a.device,
            "--steps",
            a.steps,
        ]
        + ["--attention", a.attention]
        + (["--quick"] if a.quick else [])
    )
    after = common + (["--reference"] if a.reference else []) + (["--both"] if a.both else [])
    by_threads, before_by_threads, both_by_threads = {}, {}, {}
    for n in threads:
        rounds, before_rounds = [], []
        for _ in range(a.rounds if a.before else 1):
            if a.before:
                before_rounds.append(
                    run_child(
                        "benchmarks.inference",
                        ["--child-time"] + common,
                        eclipse_seg_from=a.before,
                        threads=n,
                    )
                )
            rounds.append(run_child("benchmarks.inference", ["--child-time"] + after, threads=n))
        merged = merge_rounds(rounds)
        by_threads[n] = [r for r in merged if r.get("path") != "reference" or not a.both]
        if a.both:
            both_by_threads[n] = merged
        if a.before:
            before_by_threads[n] = merge_rounds(before_rounds)
        print(f"timing with {n} thread(s) done", file=sys.stderr, flush=True)
    results = by_threads[threads[0]]
    for r in results:
        r.update(
            run_child(
                "benchmarks.inference",
                ["--child-mem", str(r["T"])] + [x for x in after if x != "--both"],
                threads=threads[0],
            )
        )
        print(f"T={r['T']}: peak {r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    print(
        f"device {results[0]['device'].split(' (')[0]}, input {size}x{size}, batch 1, {runs} runs after "
        f"{warmup} warm-up, every T measured round-robin in one process; attention "
        f"{a.attention}; pixel decoder "
        f"{'fast and reference' if a.both else 'reference' if a.reference else 'fast'} "
        f"path; wall: median / p90, CPU: process CPU time (summed over threads), min; peak memory "
        f"({1 + mem_runs} passes, one process per T, from after the model is built, "
        f"{threads[0]} thread(s)): {memory_method(device)}"
    )
    for n, res in by_threads.items():
        print(f"\n{n} thread(s):")
        print(stage_table(res, runs))
        for r, ratio in zip(res[1:], t_over_t0(res)):
            print(f"{ratio}; grouped vs loop max |diff| = {r['grouped_vs_loop_max_abs_diff']:.2e}")
        if a.both:
            ref = [r for r in both_by_threads[n] if r["path"] == "reference"]
            print(f"\n{n} thread(s), pixel decoder reference path (same process):")
            print(stage_table(ref, runs))
            print(f"\nreference / fast path, {n} thread(s), same process:")
            print(paths_table(both_by_threads[n]))
            for ratio in t_over_t0(ref):
                print(f"reference path {ratio}")
        if a.before:
            print(f"\nbefore ({a.before}) / after, {n} thread(s), {a.rounds} alternated round(s):")
            print(before_after_table(before_by_threads[n], res))
    write_json(
        a.json,
        {
            "device": results[0]["device"],
            "size": size,
            "runs": runs,
            "sdpa": a.attention != "explicit",  # the decoder ran the fused kernel
            "attention": a.attention,
            "memory": memory_method(device),
            **summary(results),
            "peak_mb": {str(r["T"]): r["peak_mb"] for r in results},
            "threads": threads,
            "pixel_decoder": "reference" if a.reference else "fast",
            **(
                {
                    "reference_path": {
                        str(n): summary([r for r in res if r["path"] == "reference"])
                        for n, res in both_by_threads.items()
                    }
                }
                if a.both
                else {}
            ),
            "by_threads": {str(n): summary(res) for n, res in by_threads.items()},
            **(
                {
                    "before": {
                        "eclipse_seg_from": a.before,
                        "by_threads": {
                            str(n): summary(res) for n, res in before_by_threads.items()
                        },
                    }
                }
                if a.before
                else {}
            ),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
