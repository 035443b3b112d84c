"""CUDA checks for a GPU machine (CI has none): the CUDA model equals the CPU model, and training
with each precision mode (fp32, bf16 and fp16 autocast, bf16 + torch.compile) learns the synthetic
data through step 0 and one ECLIPSE step.

  python -m benchmarks.cuda_check [--out DIR] [--iterations 300] [--prompt-iterations 100]

Parity: the same random weights (perturbed so that every prompt differs) and the same uint8
images of two sizes (so the batch is padded) on the CPU and on CUDA with TF32 off; max |diff| of
the logits after logit manipulation and of the mask logits, and the share of equal panoptic pixels;
also the SDPA attention path against the explicit one on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch


def _model(base: int, new: int, prompts: int, tiny: bool):
    from eclipse_seg.config import load_config
    from eclipse_seg.continual import add_step, set_deltas
    from eclipse_seg.model.mask2former import Mask2Former, ModelConfig

    torch.manual_seed(0)
    cfg = load_config("synthetic/base").model if tiny else ModelConfig()
    cfg.base_classes = base
    model = Mask2Former(cfg)
    add_step(model, new, prompts)
    add_step(model, new, prompts)
    set_deltas(model, [0.4, 0.6, -0.3])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def parity(name: str, model, sizes: list[tuple[int, int]]) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]
    gpu = copy.deepcopy(model).cuda()
    with torch.inference_mode():
        ref = model(images)
        out = gpu(images)
        pred_ref = model.predict(images)
        pred_gpu = gpu.predict(images)
        gpu.set_fast_attention(False)  # the explicit reference, against the default fused kernel
        explicit = gpu(images)
    equal = sum(
        int((a["panoptic_seg"] == b["panoptic_seg"].cpu()).sum())
        for a, b in zip(pred_ref, pred_gpu)
    )
    same_sem = sum(
        int((a["sem_seg"] == b["sem_seg"].cpu()).sum()) for a, b in zip(pred_ref, pred_gpu)
    )
    total = sum(h * w for h, w in sizes)
    return {
        "model": name,
        "logits_max_abs": float((ref.pred_logits - out.pred_logits.cpu()).abs().max()),
        "masks_max_abs": float((ref.pred_masks - out.pred_masks.cpu()).abs().max()),
        "panoptic_equal": equal / total,
        "semantic_equal": same_sem / total,
        "sdpa_logits_max_abs": float((out.pred_logits - explicit.pred_logits).abs().max()),
        "sdpa_masks_max_abs": float((out.pred_masks - explicit.pred_masks).abs().max()),
    }


def train_variant(
    name: str, overrides: list[str], data: Path, out: Path, iters: int, prompt_iters: int
) -> dict:
    from eclipse_seg.config import load_config
    from eclipse_seg.engine.runner import run

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = load_config(
        "synthetic/base",
        [
            f"data.root={data}",
            f"output_dir={out / name}",
            "device=cuda",
            f"solver.iterations={iters}",
            f"continual.iterations={prompt_iters}",
            "solver.checkpoint_period=100000",
            "solver.log_period=10",
            *overrides,
        ],
    )
    t0 = time.perf_counter()
    results = run(cfg, "eclipse", steps=[0, 1], progress=False)
    wall = time.perf_counter() - t0
    steps = results["methods"]["eclipse"]["steps"]
    log = [
        json.loads(line)
        for line in (out / name / "eclipse" / "step_0" / "log.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in log if "loss" in r]
    return {
        "variant": name,
        "wall_s": round(wall, 1),
        "step0_s_per_it": round(steps[0]["train_seconds"] / iters, 4),
        "step1_s_per_it": round(steps[1]["train_seconds"] / prompt_iters, 4),
        "first_loss": round(losses[0], 3),
        "last_loss": round(losses[-1], 3),
        "step0_pq": steps[0]["pq_all"],
        "step1_pq_old": steps[1]["pq_old"],
        "step1_pq_new": steps[1]["pq_new"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--prompt-iterations", type=int, default=100)
    a = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    from eclipse_seg.data.synthetic import make_synthetic

    print(f"device {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    report["parity"] = [
        parity(
            "tiny (synthetic config), 3 groups", _model(9, 2, 5, tiny=True), [(64, 64), (48, 80)]
        ),
        parity(
            "R50 100+5+5 classes, 3 groups",
            _model(100, 5, 10, tiny=False),
            [(256, 256), (192, 320)],
        ),
    ]
    for r in report["parity"]:
        print(json.dumps(r), flush=True)
    out = Path(a.out or tempfile.mkdtemp())
    data = out / "data"
    make_synthetic(data, seed=0, num_train=400, num_val=100, height=64, width=64)
    report["training"] = []
    for name, overrides in [
        ("fp32", ["solver.amp=off"]),
        ("bf16", ["solver.amp=bf16"]),
        ("fp16", ["solver.amp=fp16"]),
        ("bf16+compile", ["solver.amp=bf16", "solver.compile=true"]),
    ]:
        r = train_variant(name, overrides, data, out, a.iterations, a.prompt_iterations)
        report["training"].append(r)
        print(json.dumps(r), flush=True)
    (out / "cuda_check.json").write_text(json.dumps(report, indent=1))
    print(
        "\n| model | logits max abs | masks max abs | panoptic equal | semantic equal | SDPA logits | SDPA masks |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in report["parity"]:
        print(
            f"| {r['model']} | {r['logits_max_abs']:.2e} | {r['masks_max_abs']:.2e} | "
            f"{r['panoptic_equal']:.5f} | {r['semantic_equal']:.5f} | {r['sdpa_logits_max_abs']:.2e} | "
            f"{r['sdpa_masks_max_abs']:.2e} |"
        )
    print(
        f"\ntraining: synthetic 9-1, step 0 ({a.iterations} it, batch 8) + step 1 ({a.prompt_iterations} it)"
    )
    print(
        "| variant | wall s | step0 s/it | step1 s/it | first loss | last loss | step0 PQ | step1 PQ old | step1 PQ new |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["training"]:
        print(
            f"| {r['variant']} | {r['wall_s']} | {r['step0_s_per_it']} | {r['step1_s_per_it']} | "
            f"{r['first_loss']} | {r['last_loss']} | {r['step0_pq']:.1f} | {r['step1_pq_old']:.1f} | "
            f"{r['step1_pq_new']:.1f} |"
        )


if __name__ == "__main__":
    main()
