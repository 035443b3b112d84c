"""Training-iteration speed and peak memory: a step-0 iteration (the whole Mask2Former, deep
supervision on every layer) versus an ECLIPSE prompt-tuning iteration (frozen trunk without autograd,
only the new group through the decoder, official aux = first prediction only), plus trainable
parameters per step.

The iteration is train_step's inner loop (eclipse_seg.engine.train): preprocess, forward, the real
SetCriterion, backward, grad-norm clip, AdamW step; on random images/targets so data loading is
not timed. Each (model, mode, thread count) runs in a fresh subprocess, so CPU peak memory
(ru_maxrss growth from just before the first iteration: activations + gradients + optimizer state)
is its own. Per iteration, the breakdown: trunk forward (backbone + pixel decoder; step 0: the whole
forward), decoder, loss, backward, optimizer (clip + step); wall-clock medians, and the process CPU
time of the iteration (min; on a shared machine far less disturbed than wall clock).

--before DIR measures DIR's `eclipse_seg` (a checkout of an earlier revision) with this benchmark,
alternated with this checkout --rounds times. --trunk-amp MODE also runs the prompt iterations with
continual.trunk_amp=MODE (e.g. bf16) from the same initial weights and data, and prints its speed
and its losses next to the default's. --reference also runs the prompt iterations with the pixel
decoder's explicit reference path (`set_fast_pixel_decoder(False)`; the rest of this checkout as is).

  python -m benchmarks.train [--quick] [--json out.json] [--device cpu|cuda] [--threads 1,2]
      [--models R50] [--modes prompt] [--size 640] [--batch 2] [--before DIR] [--trunk-amp bf16]
      [--reference]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    peak_mb,
    reset_peak,
    run_child,
    sync,
    table,
    write_json,
)

MODELS = {
    # name: (config file or None = R50 ADE defaults, overrides, base classes, new classes, prompts)
    "tiny-synthetic": ("synthetic/base", [], 6, 2, 5),
    "R50": (None, [], 100, 5, 10),
}


def _setup(
    name: str, mode: str, size: int, batch: int, device: torch.device, overrides: list[str] = ()
):
    from eclipse_seg.config import load_config
    from eclipse_seg.continual import add_step, count_parameters, freeze_for_step
    from eclipse_seg.engine.train import StepPlan, build_optimizer
    from eclipse_seg.losses import LossConfig, SetCriterion, Target
    from eclipse_seg.model.mask2former import Mask2Former

    path, model_overrides, base, new, prompts = MODELS[name]
    cfg = load_config(path, [*model_overrides, *overrides])
    torch.manual_seed(0)
    model = Mask2Former(dataclasses.replace(cfg.model, base_classes=base))
    prompt = mode == "prompt"
    if prompt:
        add_step(model, new, prompts)
        params = freeze_for_step(model, 1, cfg.continual.train_no_object_head)
        lr, cw, lo, hi = cfg.continual.lr, cfg.continual.class_weight, base, base + new
    else:
        params = list(model.parameters())
        lr, cw, lo, hi = cfg.solver.lr, cfg.loss.class_weight, 0, base
    model.to(device).train()
    plan = StepPlan(int(prompt), "eclipse", tuple(range(lo, hi)), 1, lr, batch, cw, prompt)
    optimizer = build_optimizer(model, plan, cfg)
    criterion = SetCriterion(LossConfig(**{**cfg.loss.__dict__, "class_weight": cw}))
    g = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(batch)
    ]
    targets = []
    for _ in range(batch):
        n = 4
        masks = torch.zeros(n, size, size)
        for k in range(n):
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[k, y : y + size // 2, x : x + size // 2] = 1.0
        labels = torch.randint(lo, hi, (n,), generator=g)
        targets.append(Target(labels.to(device), masks.to(device)))
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return (
        model,
        optimizer,
        criterion,
        images,
        targets,
        params,
        cfg,
        trainable,
        count_parameters(model),
    )


def _trunk(model, batch_t, cfg):
    """The frozen trunk as train_step runs it (revisions without `frozen_trunk_features` ran it
    under no_grad in the step's autocast)."""
    try:
        from eclipse_seg.engine.train import frozen_trunk_features
    except ImportError:
        with torch.no_grad():
            return tuple(model.features(batch_t))
    return tuple(frozen_trunk_features(model, batch_t, cfg))


BREAKDOWN = ("trunk", "decoder", "loss", "backward", "optimizer")


def child(
    name: str,
    mode: str,
    size: int,
    batch: int,
    iters: int,
    warmup: int,
    device,
    trunk_amp: str | None = None,
    reference: bool = False,
) -> dict:
    from eclipse_seg.engine.train import autocast_context

    overrides = [f"continual.trunk_amp={trunk_amp}"] if trunk_amp else []
    model, optimizer, criterion, images, targets, params, cfg, trainable, total = _setup(
        name, mode, size, batch, device, overrides
    )
    if reference:
        model.set_fast_pixel_decoder(False)
    prompt = mode == "prompt"

    def iteration(timer: Timer) -> float:
        with autocast_context(cfg, device):
            batch_t = model.preprocess(images)
            if prompt:
                mask_features, multi_scale = timer.run("trunk", _trunk, model, batch_t, cfg)
                out = timer.run(
                    "decoder", model.decoder, multi_scale, mask_features, groups=(1,), aux="first"
                )
            else:
                out = timer.run("trunk", model, batch_t, groups=(0,), aux="all")
        num_masks = float(sum(t.labels.numel() for t in targets))
        loss, _ = timer.run("loss", criterion, out, targets, num_masks)
        optimizer.zero_grad(set_to_none=True)
        timer.run("backward", loss.backward)

        def step():
            if cfg.solver.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.solver.clip_grad_norm)
            optimizer.step()

        timer.run("optimizer", step)
        return float(loss)

    sync(device)
    reset_peak(device)
    rss0 = maxrss_mb()
    losses = [iteration(Timer(device)) for _ in range(warmup)]
    timer = Timer(device)
    for _ in range(iters):
        losses.append(timer.run("iteration", iteration, timer))
    times = timer.times["iteration"]
    return {
        "model": name,
        "mode": mode,
        "iter_ms": median_ms(times),
        "it_per_s": 1000 / median_ms(times),
        "peak_mb": peak_mb(device, rss0),
        "trainable": trainable,
        "total": total,
        "device": describe(device),
        "threads": torch.get_num_threads(),
        "trunk_amp": trunk_amp or "auto",
        "pixel_decoder": "reference" if reference else "fast",
        "iter_cpu_min_ms": 1000 * min(timer.cpu_times["iteration"]),
        "breakdown_ms": {k: median_ms(timer.times[k]) for k in BREAKDOWN if k in timer.times},
        "breakdown_cpu_ms": {
            k: 1000 * statistics.median(timer.cpu_times[k])
            for k in BREAKDOWN
            if k in timer.cpu_times
        },
        "losses": losses,
    }


def breakdown_table(results: list[dict], label) -> str:
    rows = []
    for r in results:
        b = r["breakdown_ms"]
        rows.append(
            [label(r), r["iter_ms"], r["iter_cpu_min_ms"], *[b.get(k, "-") for k in BREAKDOWN]]
        )
    return table(
        ["run", "ms/iter", "CPU min", "trunk fwd", "decoder", "loss", "backward", "optimizer"], rows
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="R50 at 128x128, 2 iterations, 1 thread")
    ap.add_argument("--json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--size", type=int, default=None, help="R50 input size (default 256; quick 128)"
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument(
        "--iters", type=int, default=None, help="measured iterations (default 5; quick 2)"
    )
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument(
        "--threads", default=None, help="thread counts, one process each (default 1,2; quick 1)"
    )
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default="step0,prompt")
    ap.add_argument("--before", default=None, help="directory of another checkout to compare with")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of before/after runs")
    ap.add_argument(
        "--trunk-amp",
        default=None,
        help="also run prompt iterations with this continual.trunk_amp (e.g. bf16)",
    )
    ap.add_argument(
        "--reference",
        action="store_true",
        help="also run prompt iterations with the pixel decoder's reference path",
    )
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-reference", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-trunk-amp", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    size = a.size or (128 if a.quick else 256)
    iters = a.iters or (2 if a.quick else 5)
    warmup = a.warmup if a.warmup is not None else 1
    device = torch.device(a.device)
    threads = [int(t) for t in (a.threads or ("1" if a.quick else "1,2")).split(",")]
    if a.child:
        name, mode = a.child
        s = 64 if name == "tiny-synthetic" else size
        print(
            json.dumps(
                child(
                    name,
                    mode,
                    s,
                    a.batch,
                    iters,
                    warmup,
                    device,
                    a.child_trunk_amp,
                    a.child_reference,
                )
            )
        )
        return 0

    def run(name, mode, n, before=None, trunk_amp=None, reference=False):
        args = [
            "--child",
            name,
            mode,
            "--size",
            str(size),
            "--batch",
            str(a.batch),
            "--iters",
            str(iters),
            "--warmup",
            str(warmup),
            "--device",
            a.device,
        ]
        args += ["--child-trunk-amp", trunk_amp] if trunk_amp else []
        args += ["--child-reference"] if reference else []
        r = run_child("benchmarks.train", args, eclipse_seg_from=before, threads=n)
        r.setdefault("pixel_decoder", "fast")
        print(
            f"{'before ' if before else ''}{name} {mode} {n} thread(s)"
            f"{' trunk_amp=' + trunk_amp if trunk_amp else ''}"
            f"{' reference pixel decoder' if reference else ''}: {r['iter_ms']:.0f} ms/iter",
            file=sys.stderr,
            flush=True,
        )
        return r

    results, before, amp_runs, ref_runs = [], [], [], []
    for n in threads:
        for name in a.models.split(","):
            for mode in a.modes.split(","):
                for _ in range(a.rounds if a.before else 1):
                    if a.before:
                        before.append(run(name, mode, n, a.before))
                    if a.reference and mode == "prompt":
                        ref_runs.append(run(name, mode, n, reference=True))
                    results.append(run(name, mode, n))
                if a.trunk_amp and mode == "prompt":
                    amp_runs.append(run(name, mode, n, trunk_amp=a.trunk_amp))
    first = [r for r in results if r["threads"] == threads[0]]
    rows, ratios, by_threads = [], {}, {}
    for r in first:
        rows.append(
            [
                r["model"],
                r["mode"],
                r["iter_ms"],
                f"{r['it_per_s']:.2f}",
                r["peak_mb"],
                f"{r['trainable']:,}",
                f"{100 * r['trainable'] / r['total']:.2f}%",
            ]
        )
    for n in threads:
        for name in a.models.split(","):
            runs = {r["mode"]: r for r in results if r["model"] == name and r["threads"] == n}
            if "step0" in runs and "prompt" in runs:
                s0, pt = runs["step0"], runs["prompt"]
                by_threads.setdefault(str(n), {})[name] = {
                    "speedup": s0["iter_ms"] / pt["iter_ms"],
                    "memory_ratio": pt["peak_mb"] / s0["peak_mb"] if s0["peak_mb"] > 0 else None,
                }
    ratios = by_threads.get(str(threads[0]), {})
    print(
        f"device {first[0]['device'].split(' (')[0]}; R50 {size}x{size}, tiny 64x64; batch {a.batch}; "
        f"median of {iters} iterations after {warmup} warm-up; peak memory: {memory_method(device)}"
    )
    print(
        table(
            ["model", "iteration", "ms/iter", "it/s", "peak MB", "trainable", "trainable %"], rows
        )
    )
    for name, r in ratios.items():
        mem = f"{r['memory_ratio']:.2f}x" if r["memory_ratio"] is not None else "n/a"
        print(
            f"{name}: prompt-tuning iteration {r['speedup']:.2f}x faster, peak memory {mem} of step 0"
        )
    print(
        "\nper-iteration breakdown (wall medians, ms; CPU min = process CPU time of the iteration):"
    )
    print(
        breakdown_table(
            results + amp_runs + ref_runs,
            lambda r: (
                f"{r['model']} {r['mode']} {r['threads']}t"
                + (f" trunk_amp={r['trunk_amp']}" if r["trunk_amp"] != "auto" else "")
                + (" reference pixel decoder" if r["pixel_decoder"] == "reference" else "")
            ),
        )
    )
    for rr in ref_runs:
        fr = [
            r
            for r in results
            if (r["model"], r["mode"], r["threads"]) == (rr["model"], rr["mode"], rr["threads"])
        ]
        fw = statistics.median(r["iter_ms"] for r in fr)
        fc = min(r["iter_cpu_min_ms"] for r in fr)
        print(
            f"{rr['model']} prompt, {rr['threads']} thread(s): reference pixel decoder "
            f"{rr['iter_ms']:.0f} ms/iter vs fast {fw:.0f} ({rr['iter_ms'] / fw:.2f}x; CPU min "
            f"{rr['iter_cpu_min_ms']:.0f} vs {fc:.0f}, {rr['iter_cpu_min_ms'] / fc:.2f}x)"
        )
    if a.before:
        print(f"\nbefore ({a.before}):")
        print(breakdown_table(before, lambda r: f"{r['model']} {r['mode']} {r['threads']}t"))
        rows = []
        for n in threads:
            for name in a.models.split(","):
                for mode in a.modes.split(","):
                    b = [
                        r
                        for r in before
                        if (r["model"], r["mode"], r["threads"]) == (name, mode, n)
                    ]
                    f = [
                        r
                        for r in results
                        if (r["model"], r["mode"], r["threads"]) == (name, mode, n)
                    ]
                    bw, fw = (
                        statistics.median(r["iter_ms"] for r in b),
                        statistics.median(r["iter_ms"] for r in f),
                    )
                    bc, fc = (
                        min(r["iter_cpu_min_ms"] for r in b),
                        min(r["iter_cpu_min_ms"] for r in f),
                    )
                    rows.append(
                        [name, mode, n, bw, fw, f"{bw / fw:.2f}x", bc, fc, f"{bc / fc:.2f}x"]
                    )
        print(
            table(
                [
                    "model",
                    "iteration",
                    "threads",
                    "before ms",
                    "after ms",
                    "speed-up",
                    "before CPU min",
                    "after CPU min",
                    "CPU speed-up",
                ],
                rows,
            )
        )
    for amp in amp_runs:
        ref = next(
            r
            for r in results
            if (r["model"], r["mode"], r["threads"]) == (amp["model"], amp["mode"], amp["threads"])
        )
        diffs = [abs(x - y) / abs(y) for x, y in zip(amp["losses"], ref["losses"])]
        print(
            f"\n{amp['model']} prompt, {amp['threads']} thread(s): trunk_amp={amp['trunk_amp']} "
            f"{amp['iter_ms']:.0f} ms/iter vs {ref['iter_ms']:.0f} ({ref['iter_ms'] / amp['iter_ms']:.2f}x); "
            f"losses per iteration (same start, same data) default "
            f"{[round(x, 4) for x in ref['losses']]}, {amp['trunk_amp']} "
            f"{[round(x, 4) for x in amp['losses']]}; relative difference max {max(diffs):.2e}, "
            f"first iteration {diffs[0]:.2e}"
        )
    write_json(
        a.json,
        {
            "device": first[0]["device"],
            "size": size,
            "batch": a.batch,
            "memory": memory_method(device),
            "results": results,
            "ratios": ratios,
            "threads": threads,
            "ratios_by_threads": by_threads,
            **({"before": {"eclipse_seg_from": a.before, "results": before}} if a.before else {}),
            **({"trunk_amp": amp_runs} if amp_runs else {}),
            **({"reference_pixel_decoder": ref_runs} if ref_runs else {}),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
