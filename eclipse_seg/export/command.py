"""`eclipse-seg export`: a checkpoint to ONNX, a torch.export program (.pt2) or safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from eclipse_seg.errors import ConfigError
from eclipse_seg.export.exporters import DEFAULT_OPSET, ExportResult, export_onnx, export_program
from eclipse_seg.export.metadata import deploy_metadata
from eclipse_seg.export.weights import checkpoint_manifest, load_safetensors, save_safetensors

FORMATS = ("onnx", "exported-program", "safetensors")


def load_for_export(weights: str | Path):
    """(model, cfg, scenario, step, method) of an eclipse-seg checkpoint (.pt, e.g. from `train`
    or `import-official`) or of a `.safetensors` file written by this command."""
    if str(weights).endswith(".safetensors"):
        return load_safetensors(weights)
    from eclipse_seg.engine.build import load_model

    return load_model(weights)


def export_checkpoint(
    weights: str | Path,
    fmt: str,
    output: str | Path,
    image_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    verify: bool = True,
) -> ExportResult | Path:
    """Export `weights` as `fmt` ("onnx", "exported-program", "safetensors") to `output`;
    `image_size` (H, W) fixes the image size of a graph (None = dynamic)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, cfg, scenario, step, method = load_for_export(weights)
    metadata = deploy_metadata(model, cfg, scenario, step, method, image_size)
    if fmt == "safetensors":
        manifest = checkpoint_manifest(model, cfg, scenario, step, method)
        return save_safetensors(model, output, manifest, metadata)
    if fmt == "onnx":
        return export_onnx(
            model, output, metadata, image_size, opset=opset, optimize=optimize, verify=verify
        )
    return export_program(model, output, metadata, image_size, verify=verify)


def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="eclipse-seg export",
        description="Export a continual model with every prompt group: ONNX or torch.export "
        "(.pt2) of the whole inference graph (normalisation, backbone, pixel decoder, "
        "grouped decoder, logit manipulation), or its weights as safetensors. The "
        "file carries the metadata needed to run it (classes, thresholds, input "
        "format). Batch and (ResNet) image size are dynamic; the query groups are "
        "fixed.",
    )
    p.add_argument(
        "--weights",
        required=True,
        help="eclipse-seg checkpoint (.pt from train / import-official, or .safetensors)",
    )
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="file to write (.onnx, .pt2, .safetensors)")
    p.add_argument("--height", type=int, help="fixed image height (with --width)")
    p.add_argument("--width", type=int, help="fixed image width (with --height)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="any image size (the default without --height/--width)",
    )
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    p.add_argument(
        "--no-optimize", action="store_true", help="skip the ONNX graph optimiser (faster export)"
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="do not compare the exported graph with eager PyTorch",
    )
    args = p.parse_args(argv)
    if (args.height is None) != (args.width is None):
        p.error("--height and --width go together")
    if args.dynamic and args.height is not None:
        p.error("--dynamic and --height/--width exclude each other")
    size = None if args.height is None else (args.height, args.width)
    result = export_checkpoint(
        args.weights,
        args.format,
        args.output,
        size,
        opset=args.opset,
        optimize=not args.no_optimize,
        verify=not args.no_verify,
    )
    if isinstance(result, ExportResult):
        print(result.summary())
    else:
        print(
            f"wrote {result} (safetensors weights + manifest; load with "
            f"eclipse_seg.export.load_safetensors, no unpickling)"
        )
    return 0
