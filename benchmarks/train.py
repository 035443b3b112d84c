"""Training-iteration speed and peak memory: a step-0 iteration (the whole Mask2Former, deep
supervision on every layer) versus an ECLIPSE prompt-tuning iteration (frozen trunk under no_grad,
only the new group through the decoder, official aux = first prediction only), plus trainable
parameters per step.

The iteration is train_step's inner loop (eclipse_seg.engine.train): preprocess, forward, the real
SetCriterion, backward, grad-norm clip, AdamW step; on random images/targets so data loading is
not timed. Each (model, mode) runs in a fresh subprocess, so CPU peak memory (ru_maxrss growth from
just before the first iteration: activations + gradients + optimizer state) is its own.

  python -m benchmarks.train [--quick] [--json out.json] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from benchmarks._common import (
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


def _setup(name: str, mode: str, size: int, batch: int, device: torch.device):
    from eclipse_seg.config import load_config
    from eclipse_seg.continual import add_step, count_parameters, freeze_for_step
    from eclipse_seg.engine.train import StepPlan, build_optimizer
    from eclipse_seg.losses import LossConfig, SetCriterion, Target
    from eclipse_seg.model.mask2former import Mask2Former

    path, overrides, base, new, prompts = MODELS[name]
    cfg = load_config(path, overrides)
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
    images = [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        n = 4
        masks = torch.zeros(n, size, size)
        for k in range(n):
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[k, y: y + size // 2, x: x + size // 2] = 1.0
        labels = torch.randint(lo, hi, (n,), generator=g)
        targets.append(Target(labels.to(device), masks.to(device)))
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return model, optimizer, criterion, images, targets, params, cfg, trainable, count_parameters(model)


def child(name: str, mode: str, size: int, batch: int, iters: int, warmup: int, device) -> dict:
    from eclipse_seg.engine.train import autocast_context

    model, optimizer, criterion, images, targets, params, cfg, trainable, total = _setup(
        name, mode, size, batch, device)
    prompt = mode == "prompt"

    def iteration():
        with autocast_context(cfg, device):
            batch_t = model.preprocess(images)
            if prompt:
                with torch.no_grad():
                    mask_features, multi_scale = model.features(batch_t)
                out = model.decoder(multi_scale, mask_features, groups=(1,), aux="first")
            else:
                out = model(batch_t, groups=(0,), aux="all")
        num_masks = float(sum(t.labels.numel() for t in targets))
        loss, _ = criterion(out, targets, num_masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.solver.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.solver.clip_grad_norm)
        optimizer.step()
        return float(loss)

    sync(device)
    reset_peak(device)
    rss0 = maxrss_mb()
    for _ in range(warmup):
        iteration()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        iteration()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"model": name, "mode": mode, "iter_ms": median_ms(times), "it_per_s": 1000 / median_ms(times),
            "peak_mb": peak_mb(device, rss0), "trainable": trainable, "total": total,
            "device": describe(device)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="R50 at 128x128, 2 iterations")
    ap.add_argument("--json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=None, help="R50 input size (default 256; quick 128)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="measured iterations (default 5; quick 2)")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=None)
    a = ap.parse_args(argv)
    size = a.size or (128 if a.quick else 256)
    iters = a.iters or (2 if a.quick else 5)
    warmup = a.warmup if a.warmup is not None else 1
    device = torch.device(a.device)
    if a.child:
        name, mode = a.child
        s = 64 if name == "tiny-synthetic" else size
        print(json.dumps(child(name, mode, s, a.batch, iters, warmup, device)))
        return 0
    results = []
    for name in MODELS:
        for mode in ("step0", "prompt"):
            r = run_child("benchmarks.train", ["--child", name, mode, "--size", str(size), "--batch",
                                               str(a.batch), "--iters", str(iters), "--warmup",
                                               str(warmup), "--device", a.device])
            results.append(r)
            print(f"{name} {mode}: {r['iter_ms']:.0f} ms/iter", file=sys.stderr, flush=True)
    rows, ratios = [], {}
    for r in results:
        rows.append([r["model"], r["mode"], r["iter_ms"], f"{r['it_per_s']:.2f}", r["peak_mb"],
                     f"{r['trainable']:,}", f"{100 * r['trainable'] / r['total']:.2f}%"])
    for name in MODELS:
        s0 = next(r for r in results if r["model"] == name and r["mode"] == "step0")
        pt = next(r for r in results if r["model"] == name and r["mode"] == "prompt")
        ratios[name] = {"speedup": s0["iter_ms"] / pt["iter_ms"],
                        "memory_ratio": pt["peak_mb"] / s0["peak_mb"] if s0["peak_mb"] > 0 else None}
    print(f"device {results[0]['device']}; R50 {size}x{size}, tiny 64x64; batch {a.batch}; median of "
          f"{iters} iterations after {warmup} warm-up; peak memory: {memory_method(device)}")
    print(table(["model", "iteration", "ms/iter", "it/s", "peak MB", "trainable", "trainable %"], rows))
    for name, r in ratios.items():
        mem = f"{r['memory_ratio']:.2f}x" if r["memory_ratio"] is not None else "n/a"
        print(f"{name}: prompt-tuning iteration {r['speedup']:.2f}x faster, peak memory {mem} of step 0")
    write_json(a.json, {"device": results[0]["device"], "size": size, "batch": a.batch,
                        "memory": memory_method(device), "results": results, "ratios": ratios})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
