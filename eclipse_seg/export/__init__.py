"""Deploying a continual model: the whole inference graph with every prompt group to ONNX and to
`torch.export` (`.pt2`), weights as safetensors, each file carrying its metadata. The torch-free
consumer of the ONNX file is `eclipse_seg.runtime`.

    from eclipse_seg.export import export_checkpoint
    export_checkpoint("ade_100_5.pt", "onnx", "ade_100_5.onnx")  # dynamic batch and image size
"""

from eclipse_seg.export.command import export_checkpoint, export_main, load_for_export
from eclipse_seg.export.exporters import (
    ExportResult,
    export_onnx,
    export_program,
    load_program,
    read_onnx_metadata,
    trace,
)
from eclipse_seg.export.graph import InferenceGraph, check_exportable
from eclipse_seg.export.metadata import deploy_metadata
from eclipse_seg.export.weights import checkpoint_manifest, load_safetensors, save_safetensors

__all__ = [
    "ExportResult",
    "InferenceGraph",
    "check_exportable",
    "checkpoint_manifest",
    "deploy_metadata",
    "export_checkpoint",
    "export_main",
    "export_onnx",
    "export_program",
    "load_for_export",
    "load_program",
    "load_safetensors",
    "read_onnx_metadata",
    "save_safetensors",
    "trace",
]
