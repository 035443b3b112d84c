"""Reading a backbone weight file (torch `.pth` or detectron2-style pickle) into a state dict."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from eclipse_seg.errors import CheckpointError


def read_weight_file(path: str | Path) -> dict:
    """`.pkl` (pickled {name: ndarray}, e.g. detectron2's `R-50.pkl`) or a torch file; an outer
    {"model": ...} is unwrapped. A missing or unreadable file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                raw = pickle.load(f, encoding="latin1")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read backbone weights {path}: {e}") from e
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(raw).__name__}")
    return raw
