"""Run an exported eclipse-seg ONNX model with ONNX Runtime, without PyTorch.

`Segmenter(path).predict(image)` does what `eclipse-seg predict` does with a checkpoint: the test
resize of the metadata (shortest edge, Pillow bilinear, as detectron2), one forward pass, the
post-processing of `model.predict` (NumPy port), predictions at the original image size.
Each image runs alone (batch 1), so a result equals `model.predict([image])` of that image;
`model.predict` on a list pads every image to the largest one, which changes the outputs a little
(no padding mask, official behaviour).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eclipse_seg.errors import CheckpointError, ConfigError, DataError
from eclipse_seg.runtime.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAMES,
    decode_metadata,
    thing_flags,
)
from eclipse_seg.runtime.postprocess import postprocess


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError(
            "the eclipse-seg runtime needs ONNX Runtime: pip install "
            "'eclipse-seg[runtime]' (or onnxruntime-gpu)"
        ) from e
    return onnxruntime


def shortest_edge_size(h: int, w: int, short: int, max_size: int = 0) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output size (the rule of `data.transforms`, torch-free):
    short side to `short`, then the long side capped at `max_size` (0 = no cap), each side
    rounded as int(x + 0.5); `short` 0 = unchanged."""
    if short <= 0:
        return h, w
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max_size > 0 and max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; DataError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image (corrupt or truncated?): {e}") from e


class Segmenter:
    """An exported model (ONNX file with eclipse-seg metadata) in an ONNX Runtime session.

    `providers`: ONNX Runtime execution providers (default CPU); `threads`: intra-op threads
    (default: ONNX Runtime's choice)."""

    def __init__(
        self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None
    ):
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: not every constant it cannot fold
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as e:
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load it ({e})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = decode_metadata(props.get(METADATA_KEY), str(self.path))
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or any(n not in outputs for n in OUTPUT_NAMES):
            raise CheckpointError(
                f"{self.path}: expected input {INPUT_NAME!r} and outputs "
                f"{list(OUTPUT_NAMES)}, the graph has {inputs} -> {outputs}"
            )
        self.thing_flags = thing_flags(self.metadata)

    @property
    def categories(self) -> list[dict]:
        """One {"label", "id", "name", "isthing"} per model label."""
        return self.metadata["categories"]

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, H, W) float32 RGB 0..255 (one size) -> pred_logits (B, Q, C+1), pred_masks
        (B, Q, H_pad/4, W_pad/4): the raw graph outputs."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        spec = self.metadata["input"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"input images must be (B, 3, H, W), got shape {images.shape}")
        h, w = images.shape[-2:]
        if spec["height"] is not None and (h, w) != (spec["height"], spec["width"]):
            raise DataError(
                f"{self.path} was exported for {spec['height']}x{spec['width']} images "
                f"(after the test resize); got {h}x{w}. Export with a dynamic size "
                f"(eclipse-seg export --dynamic) to serve any size"
            )
        if spec["height"] is None and min(h, w) < spec["min_side"]:
            raise DataError(
                f"{self.path}: images need sides of at least {spec['min_side']} pixels "
                f"(after the test resize), got {h}x{w}; export at that fixed size "
                f"(--height/--width) to serve such small images"
            )
        logits, masks = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return logits, masks

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, H', W') float32 after the metadata's test resize."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
            )
        test = self.metadata["test"]
        h, w = image.shape[:2]
        new_h, new_w = shortest_edge_size(h, w, int(test["min_size"]), int(test["max_size"]))
        if (new_h, new_w) != (h, w):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)

    def predict(
        self,
        image: np.ndarray,
        output_size: tuple[int, int] | None = None,
        object_mask_threshold: float | None = None,
        overlap_threshold: float | None = None,
    ) -> dict:
        """(H, W, 3) uint8 RGB image -> the dict of `model.predict` (NumPy arrays) at
        `output_size` (default: the image's size). Thresholds default to the metadata's."""
        test = self.metadata["test"]
        x = self.model_input(image)
        logits, masks = self.run(x[None])
        size = tuple(x.shape[-2:])
        padded = (
            masks.shape[-2] * self.metadata["mask_stride"],
            masks.shape[-1] * self.metadata["mask_stride"],
        )
        return postprocess(
            logits[0],
            masks[0],
            padded,
            size,
            tuple(output_size) if output_size is not None else tuple(image.shape[:2]),
            self.thing_flags,
            test["object_mask_threshold"]
            if object_mask_threshold is None
            else object_mask_threshold,
            test["overlap_threshold"] if overlap_threshold is None else overlap_threshold,
        )
