"""The metadata an exported model carries, so that a file alone says how to run it.

`eclipse-seg export` writes one JSON document under the key ``eclipse_seg`` (ONNX
``metadata_props``, an extra file ``eclipse_seg.json`` in a ``.pt2`` archive, the ``__metadata__``
of a ``.safetensors`` file). Its fields:

* ``format``: ``"eclipse-seg-deploy/1"`` (this schema); ``eclipse_seg_version``: the writer's version;
* ``task``: ``"panoptic"`` or ``"semantic"`` (a semantic model's outputs are label maps too);
* ``scenario``: ``{"name", "step", "method"}``; ``classes_per_step``; ``query_groups`` (queries per
  group, group 0 = base); ``deltas`` (the logit-manipulation delta of each group, as applied);
* ``categories``: one entry per model label (0-based, in class order):
  ``{"label", "id" (dataset category id), "name", "isthing"}``;
* ``test``: ``object_mask_threshold``, ``overlap_threshold`` (post-processing) and ``min_size``,
  ``max_size`` (the shortest-edge resize applied before inference; 0 = none);
* ``input``: the graph input (``name``, ``dtype``, ``layout``, RGB 0..255, ``height`` / ``width``
  (null = any size of at least ``min_side``), ``pixel_mean`` / ``pixel_std`` applied inside the graph,
  ``size_divisibility``: the graph zero-pads bottom/right after normalising);
* ``outputs``: names of the logits (B, Q, C+1; no-object last) and mask logits (B, Q, H_pad/4,
  W_pad/4); ``mask_stride`` 4.

Torch-free: the runtime reads it without PyTorch.
"""

from __future__ import annotations

import json
from typing import Any

from eclipse_seg.errors import CheckpointError

METADATA_KEY = "eclipse_seg"
FORMAT = "eclipse-seg-deploy/1"
INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_masks")
MASK_STRIDE = 4

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "eclipse_seg_version": str,
    "task": str,
    "scenario": dict,
    "classes_per_step": list,
    "query_groups": list,
    "deltas": list,
    "categories": list,
    "test": dict,
    "input": dict,
    "outputs": dict,
    "mask_stride": int,
}
_TEST_KEYS = ("object_mask_threshold", "overlap_threshold", "min_size", "max_size")
_INPUT_KEYS = ("name", "height", "width", "min_side", "size_divisibility")
_CATEGORY_KEYS = ("label", "id", "name", "isthing")


def encode_metadata(metadata: dict[str, Any]) -> str:
    """The JSON text stored in a file (validated first, so a writer cannot store a broken one)."""
    check_metadata(metadata, "metadata to write")
    return json.dumps(metadata, sort_keys=True)


def decode_metadata(text: str | bytes | None, source: str) -> dict[str, Any]:
    """Parse and check the metadata of `source` (a file name, for messages); CheckpointError if it
    is absent (a file not written by `eclipse-seg export`) or malformed."""
    if text is None or text == "" or text == b"":
        raise CheckpointError(
            f"{source} carries no eclipse-seg metadata (no {METADATA_KEY!r} entry): it was not "
            f"written by `eclipse-seg export`, so its classes, thresholds and input format are "
            f"unknown; export the checkpoint with `eclipse-seg export --weights W --format onnx "
            f"--output F`"
        )
    try:
        metadata = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{source}: the {METADATA_KEY!r} metadata is not valid JSON ({e})"
        ) from e
    check_metadata(metadata, source)
    return metadata


def check_metadata(metadata: Any, source: str) -> None:
    """CheckpointError naming the first missing or mistyped field."""

    def fail(what: str) -> None:
        raise CheckpointError(f"{source}: eclipse-seg metadata: {what}")

    if not isinstance(metadata, dict):
        fail(f"expected a JSON object, got {type(metadata).__name__}")
    if metadata.get("format") != FORMAT:
        fail(
            f"format is {metadata.get('format')!r}, this version reads {FORMAT!r} (re-export the "
            f"model with this eclipse-seg version)"
        )
    for key, kind in _REQUIRED.items():
        if key not in metadata:
            fail(f"field {key!r} is missing")
        if not isinstance(metadata[key], kind) or isinstance(metadata[key], bool):
            fail(
                f"field {key!r} should be a {getattr(kind, '__name__', kind)}, got "
                f"{type(metadata[key]).__name__}"
            )
    if metadata["task"] not in ("panoptic", "semantic"):
        fail(f"task must be 'panoptic' or 'semantic', got {metadata['task']!r}")
    for section, keys in (("test", _TEST_KEYS), ("input", _INPUT_KEYS)):
        missing = [k for k in keys if k not in metadata[section]]
        if missing:
            fail(f"{section} lacks {missing}")
    num_classes = sum(metadata["classes_per_step"])
    cats = metadata["categories"]
    if len(cats) != num_classes:
        fail(
            f"{len(cats)} categories for {num_classes} classes (classes_per_step "
            f"{metadata['classes_per_step']})"
        )
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or any(k not in c for k in _CATEGORY_KEYS) or c["label"] != i:
            fail(
                f"categories[{i}] must be an object with {list(_CATEGORY_KEYS)} and label {i}, "
                f"got {c!r}"
            )
    if len(metadata["deltas"]) != len(metadata["query_groups"]):
        fail(f"{len(metadata['deltas'])} deltas for {len(metadata['query_groups'])} query groups")
    for name in OUTPUT_NAMES:
        if name not in metadata["outputs"]:
            fail(f"outputs lacks {name!r}")


def thing_flags(metadata: dict[str, Any]) -> list[bool]:
    """Thing (True) / stuff (False) of every model label."""
    return [bool(c["isthing"]) for c in metadata["categories"]]
