"""Export a model to `torch.export`'s ExportedProgram (`.pt2`) and to ONNX, metadata included, and
check the exported graph against eager PyTorch on the tracing example.

Both formats come from one trace (`torch.export.export`, non-strict) of `InferenceGraph`; the ONNX
file is that program translated by `torch.onnx.export` (dynamo exporter, opset 20 by default).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.export.graph import (
    MIN_DYNAMIC_SIDE,
    InferenceGraph,
    check_exportable,
    export_copy,
    export_friendly,
)
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.runtime.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAMES,
    decode_metadata,
    encode_metadata,
)

DEFAULT_OPSET = 20
PROGRAM_METADATA_FILE = "eclipse_seg.json"  # extra file inside a .pt2 archive
_DYNAMIC_EXAMPLE = (72, 104)  # padded inside the graph; unequal sides so no dimension specialises


@dataclass
class Traced:
    """A traced model: the program, its example input and the eager outputs on that input."""

    program: torch.export.ExportedProgram
    example: torch.Tensor  # (2, 3, H, W) float32 0..255
    reference: tuple[torch.Tensor, torch.Tensor]  # eager (pred_logits, pred_masks)
    dynamic: bool


@dataclass
class ExportResult:
    path: Path
    format: str
    dynamic: bool
    seconds: float
    # max |exported - eager| per output on the tracing example (None: not checked)
    max_abs_diff: dict[str, float] | None = field(default=None)

    def summary(self) -> str:
        size = "dynamic batch and image size" if self.dynamic else "dynamic batch, fixed image size"
        line = f"wrote {self.path} ({self.format}, {size}) in {self.seconds:.0f} s"
        if self.max_abs_diff is not None:
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
            line += f"; max |exported - eager| on the tracing example: {diffs}"
        return line


@contextlib.contextmanager
def _quiet_exporters():
    """The ONNX optimiser logs one line per constant it does not fold and torch's pytree code warns
    about its own deprecations; keep the console readable."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _example(image_size: tuple[int, int] | None) -> torch.Tensor:
    h, w = image_size if image_size is not None else _DYNAMIC_EXAMPLE
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, h, w), generator=g).float()


def _dynamic_shapes(image_size: tuple[int, int] | None) -> dict[str, dict[int, Any]]:
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if image_size is None:
        dims[2] = torch.export.Dim("height", min=MIN_DYNAMIC_SIDE, max=16384)
        dims[3] = torch.export.Dim("width", min=MIN_DYNAMIC_SIDE, max=16384)
    return {INPUT_NAME: dims}


MIN_TORCH = (2, 6)  # torch.export with dynamic shapes + the dynamo ONNX exporter (tested: 2.13)


def _check_torch_version() -> None:
    version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise ConfigError(
            f"export needs torch >= {'.'.join(map(str, MIN_TORCH))} (torch.export "
            f"with dynamic shapes), this is torch {torch.__version__}"
        )


def trace(model: Mask2Former, image_size: tuple[int, int] | None = None) -> Traced:
    """`torch.export` of the model's whole inference graph; `image_size` (H, W) fixes the image
    size, None keeps it dynamic. The model itself is not changed (a copy is traced)."""
    _check_torch_version()
    check_exportable(model, image_size)
    clone = export_copy(model)
    graph = InferenceGraph(clone).eval()
    example = _example(image_size)
    with torch.no_grad():
        reference = graph(example)  # eager, unpatched; also fills the decoder's index cache
    # traced without autograd: the decoder's no_grad block would otherwise become a higher-order
    # op that torch.export.load cannot read back
    with export_friendly(clone), torch.no_grad(), _quiet_exporters():
        try:
            program = torch.export.export(
                graph, (example,), dynamic_shapes=_dynamic_shapes(image_size), strict=False
            )
        except Exception as e:
            raise ConfigError(
                f"torch.export could not trace this model ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}). Model options: "
                f"backbone {model.cfg.backbone_type}, image size "
                f"{'dynamic' if image_size is None else image_size}; a fixed --height/--width "
                f"avoids size-dependent Python branches"
            ) from e
    return Traced(program, example, tuple(t.detach() for t in reference), image_size is None)


def _max_diff(reference, outputs) -> dict[str, float]:
    return {
        name: float((torch.as_tensor(o).float() - r).abs().max())
        for name, r, o in zip(OUTPUT_NAMES, reference, outputs)
    }


def export_program(
    model: Mask2Former,
    path: str | Path,
    metadata: dict[str, Any],
    image_size: tuple[int, int] | None = None,
    traced: Traced | None = None,
    verify: bool = True,
) -> ExportResult:
    """Write the ExportedProgram to `path` (.pt2) with the metadata as the extra file
    `eclipse_seg.json`; load it back with `load_program`."""
    start = time.perf_counter()
    traced = traced or trace(model, image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_exporters():
        torch.export.save(
            traced.program, path, extra_files={PROGRAM_METADATA_FILE: encode_metadata(metadata)}
        )
    diff = None
    if verify:
        program, _ = load_program(path)
        with torch.no_grad():
            diff = _max_diff(traced.reference, program.module()(traced.example))
    return ExportResult(path, "exported-program", traced.dynamic, time.perf_counter() - start, diff)


def load_program(path: str | Path) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """(ExportedProgram, metadata) of a `.pt2` written by `export_program`; `program.module()` is
    callable on (B, 3, H, W) float32 0..255 images and returns (pred_logits, pred_masks)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported program not found: {path}")
    extra = {PROGRAM_METADATA_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable torch.export archive ({e})") from e
    return program, decode_metadata(extra[PROGRAM_METADATA_FILE], str(path))


def export_onnx(
    model: Mask2Former,
    path: str | Path,
    metadata: dict[str, Any],
    image_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    traced: Traced | None = None,
    verify: bool = True,
) -> ExportResult:
    """Write an ONNX file (input `images`, outputs `pred_logits`, `pred_masks`) with the metadata
    in `metadata_props["eclipse_seg"]`. `verify` runs it with ONNX Runtime on the tracing example
    (skipped when onnxruntime is not installed)."""
    check_exportable(model, image_size, opset)
    try:
        import onnx  # noqa: F401 - the exporter needs both
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            "ONNX export needs onnx and onnxscript: pip install 'eclipse-seg[export]'"
        ) from e
    start = time.perf_counter()
    traced = traced or trace(model, image_size)
    with _quiet_exporters():
        program = torch.onnx.export(
            traced.program,
            (traced.example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            optimize=optimize,
            verbose=False,
        )
    program.model.metadata_props[METADATA_KEY] = encode_metadata(metadata)
    program.model.metadata_props["eclipse_seg_version"] = metadata["eclipse_seg_version"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path)
    diff = None
    if verify:
        try:
            import onnxruntime
        except ImportError:
            onnxruntime = None
        if onnxruntime is not None:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            diff = _max_diff(
                traced.reference,
                session.run(list(OUTPUT_NAMES), {INPUT_NAME: traced.example.numpy()}),
            )
    return ExportResult(path, "onnx", traced.dynamic, time.perf_counter() - start, diff)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The eclipse-seg metadata of an ONNX file (needs the `onnx` package)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return decode_metadata(props.get(METADATA_KEY), str(path))
