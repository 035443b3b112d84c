"""ONNX Runtime vs eager PyTorch on the R50 ADE 100-5 model (random weights): 100 base classes and
queries, T prompt groups of 10 prompts x 5 classes (deep prompts, per-group mask MLPs, MLP class
heads, as the official ADE 100-5 model), at T = 0 and T = 10, one 512x512 image, CPU.

Per T: the model exported to ONNX at a fixed 512x512 (`eclipse_seg.export`, opset 20, ONNX graph
optimiser on), then, round-robin in one process (load from other processes hits every variant
alike), the median latency of
  - the graph: eager PyTorch (explicit attention, the default), eager with SDPA attention
    (`model.set_fast_attention(True)`), ONNX Runtime (CPUExecutionProvider);
  - the post-processing: `eclipse_seg.inference.postprocess` (torch) vs the runtime's NumPy port;
the parity: max |ONNX Runtime - eager| of logits and masks on the benchmark image; the export
time, the ONNX Runtime session creation time and the file size.
Threads: torch and ONNX Runtime both get `--threads` (default: $OMP_NUM_THREADS, else 1).

  OMP_NUM_THREADS=1 python -m benchmarks.export [--quick] [--json out.json] [--dynamic]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import describe, table, write_json

PROMPTS, CLASSES_PER_STEP = 10, 5


def build(T: int, quick: bool):
    from eclipse_seg.continual import add_step, set_deltas
    from eclipse_seg.model.backbone.resnet import ResNetConfig
    from eclipse_seg.model.decoder import DecoderConfig
    from eclipse_seg.model.mask2former import Mask2Former, ModelConfig
    from eclipse_seg.model.pixel_decoder import PixelDecoderConfig

    torch.manual_seed(0)
    if quick:  # the structure of the R50 model with the widths of the tests
        cfg = ModelConfig(
            backbone=ResNetConfig(stem_out_channels=8, res2_out_channels=16, width_per_group=4),
            pixel_decoder=PixelDecoderConfig(
                conv_dim=32, mask_dim=32, num_layers=1, ffn_dim=64, num_heads=2, num_groups=8
            ),
            decoder=DecoderConfig(
                hidden_dim=32, num_heads=2, ffn_dim=64, num_layers=3, num_queries=20, deep_cls=True
            ),
            base_classes=20,
        )
    else:
        cfg = ModelConfig(decoder=DecoderConfig(deep_cls=True), base_classes=100)
    model = Mask2Former(cfg)
    for _ in range(T):
        add_step(model, CLASSES_PER_STEP, PROMPTS)
    set_deltas(model, [0.4] + [0.6] * T)
    return model.eval()


def _median_ms(xs: list[float]) -> float:
    return 1000.0 * statistics.median(xs)


def measure(
    T: int, size: int, runs: int, threads: int, quick: bool, dynamic: bool, workdir: Path
) -> dict:
    import onnxruntime as ort

    from eclipse_seg.export import export_onnx
    from eclipse_seg.inference import postprocess as torch_postprocess
    from eclipse_seg.runtime.metadata import INPUT_NAME, OUTPUT_NAMES
    from eclipse_seg.runtime.postprocess import postprocess as numpy_postprocess

    model = build(T, quick)
    metadata = _bench_metadata(model)
    path = workdir / f"r50_ade_T{T}.onnx"
    t0 = time.perf_counter()
    result = export_onnx(model, path, metadata, None if dynamic else (size, size), verify=False)
    export_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session_s = time.perf_counter() - t0

    image = torch.randint(
        0, 256, (3, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    batch = image.float()[None]
    feed = {INPUT_NAME: batch.numpy()}

    def eager(sdpa: bool):
        model.set_fast_attention(sdpa)
        with torch.inference_mode():
            out = model([image])
        return out.pred_logits, out.pred_masks

    variants = {
        "eager": lambda: eager(False),
        "eager_sdpa": lambda: eager(True),
        "onnxruntime": lambda: session.run(list(OUTPUT_NAMES), feed),
    }
    outputs = {name: fn() for name, fn in variants.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    logits, masks = outputs["eager"]
    padded = (masks.shape[-2] * 4, masks.shape[-1] * 4)
    post = {"torch": [], "numpy": []}
    for _ in range(max(1, runs // 2)):
        t = time.perf_counter()
        with torch.inference_mode():
            torch_postprocess(
                logits[0], masks[0], padded, (size, size), (size, size), model.thing_mask
            )
        post["torch"].append(time.perf_counter() - t)
        t = time.perf_counter()
        numpy_postprocess(
            outputs["onnxruntime"][0][0],
            outputs["onnxruntime"][1][0],
            padded,
            (size, size),
            (size, size),
            model.thing_mask.tolist(),
        )
        post["numpy"].append(time.perf_counter() - t)
    ort_logits, ort_masks = outputs["onnxruntime"]
    return {
        "T": T,
        "queries": sum(model.decoder.group_size(g) for g in range(model.decoder.num_groups)),
        "ms": {k: _median_ms(v) for k, v in times.items()},
        "postprocess_ms": {k: _median_ms(v) for k, v in post.items()},
        "max_abs_diff": {
            "pred_logits": float(np.abs(ort_logits - logits.numpy()).max()),
            "pred_masks": float(np.abs(ort_masks - masks.numpy()).max()),
        },
        "export_s": export_s,
        "session_s": session_s,
        "onnx_mb": path.stat().st_size / 2**20,
        "dynamic": result.dynamic,
    }


def _bench_metadata(model) -> dict:
    """Metadata for a model built in code (no config / scenario): ADE-like placeholders."""
    from eclipse_seg.config import Config
    from eclipse_seg.export import deploy_metadata
    from eclipse_seg.scenarios import Scenario

    classes = model.decoder.class_embed.classes_per_step
    scenario = Scenario(
        f"{classes[0]}-{CLASSES_PER_STEP}", tuple(range(1, sum(classes) + 1)), tuple(classes)
    )
    return deploy_metadata(model, Config(), scenario, len(classes) - 1, "eclipse")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny widths, 128x128, T = 0 and 2, 3 runs (two minutes, mostly exporting)",
    )
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--size", type=int, default=None, help="square input size (default 512)")
    ap.add_argument("--runs", type=int, default=None, help="measured runs (default 5)")
    ap.add_argument("--steps", default=None, help="comma-separated T values (default 0,10)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--dynamic", action="store_true", help="export with a dynamic image size")
    a = ap.parse_args(argv)
    size = a.size or (128 if a.quick else 512)
    runs = a.runs or (3 if a.quick else 5)
    steps = [int(t) for t in (a.steps or ("0,2" if a.quick else "0,10")).split(",")]
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(T, size, runs, a.threads, a.quick, a.dynamic, Path(tmp)) for T in steps]
    rows = []
    for r in results:
        ms = r["ms"]
        rows.append(
            [
                r["T"],
                r["queries"],
                ms["eager"],
                ms["eager_sdpa"],
                ms["onnxruntime"],
                f"{ms['eager'] / ms['onnxruntime']:.2f}x",
                f"{ms['eager_sdpa'] / ms['onnxruntime']:.2f}x",
                r["postprocess_ms"]["torch"],
                r["postprocess_ms"]["numpy"],
                f"{r['max_abs_diff']['pred_logits']:.1e}",
                f"{r['max_abs_diff']['pred_masks']:.1e}",
                f"{r['export_s']:.0f}",
                f"{r['session_s']:.1f}",
                f"{r['onnx_mb']:.0f}",
            ]
        )
    print(
        f"device {describe(torch.device('cpu'))}, onnxruntime {a.threads} intra-op thread(s); "
        f"input {size}x{size}, batch 1; {'quick (tiny widths)' if a.quick else 'R50 ADE 100-5'}; "
        f"ONNX {'dynamic' if a.dynamic else 'fixed'}-size export, opset 20; median of {runs} "
        f"runs after 1 warm-up, variants round-robin"
    )
    print(
        table(
            [
                "T",
                "queries",
                "eager ms",
                "eager SDPA ms",
                "ORT ms",
                "eager/ORT",
                "SDPA/ORT",
                "post torch ms",
                "post numpy ms",
                "|d logits|",
                "|d masks|",
                "export s",
                "ORT load s",
                "ONNX MB",
            ],
            rows,
        )
    )
    write_json(a.json, {"size": size, "runs": runs, "threads": a.threads, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
