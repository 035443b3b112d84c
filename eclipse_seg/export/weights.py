"""Weights as `safetensors`, for users who must not unpickle files.

A `.safetensors` file holds the model's state dict and, in its text header, the checkpoint manifest
(`eclipse_seg_checkpoint`: config, scenario, step, method, thing ids) and the deploy metadata
(`eclipse_seg`, see `eclipse_seg.runtime.metadata`). `load_safetensors` rebuilds the model from
the manifest, as `load_model` does from a checkpoint, and loads the tensors strictly: nothing is
unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from eclipse_seg.config import Config, config_from_dict
from eclipse_seg.data.coco_panoptic import atomic_write_bytes
from eclipse_seg.errors import CheckpointError, ConfigError, EclipseSegError
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.runtime.metadata import METADATA_KEY, decode_metadata, encode_metadata
from eclipse_seg.scenarios import Scenario

MANIFEST_KEY = "eclipse_seg_checkpoint"


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ConfigError(
            "safetensors export and loading need the safetensors package: pip "
            "install 'eclipse-seg[export]'"
        ) from e
    return safetensors


def checkpoint_manifest(
    model: Mask2Former, cfg: Config, scenario: Scenario, step: int, method: str
) -> dict[str, Any]:
    """What `load_safetensors` needs to rebuild the model (the fields of a checkpoint manifest)."""
    flags = model.thing_mask.tolist()
    return {
        "config": cfg.to_dict(),
        "method": method,
        "step": int(step),
        "scenario": {
            "name": scenario.name,
            "order": list(scenario.order),
            "steps": list(scenario.steps),
        },
        "thing_ids": sorted(int(scenario.order[i]) for i, f in enumerate(flags) if f),
    }


def save_safetensors(
    model: Mask2Former, path: str | Path, manifest: dict[str, Any], metadata: dict[str, Any]
) -> Path:
    """Write the state dict (CPU, contiguous copies) with the manifest and metadata (atomic)."""
    st = _safetensors()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {
        MANIFEST_KEY: json.dumps(manifest, sort_keys=True),
        METADATA_KEY: encode_metadata(metadata),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, st.torch.save(tensors, metadata=header))
    return path


def read_safetensors(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(tensors, manifest, deploy metadata) of a file written by `save_safetensors`."""
    st = _safetensors()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"safetensors file not found: {path}")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if MANIFEST_KEY not in header:
        raise CheckpointError(
            f"{path}: no {MANIFEST_KEY!r} entry in the safetensors header; it "
            f"was not written by `eclipse-seg export --format safetensors`"
        )
    try:
        manifest = json.loads(header[MANIFEST_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the {MANIFEST_KEY!r} header is not valid JSON ({e})") from e
    return tensors, manifest, decode_metadata(header.get(METADATA_KEY), str(path))


def load_safetensors(
    path: str | Path, device: str = "cpu"
) -> tuple[Mask2Former, Config, Scenario, int, str]:
    """Rebuild the model of a `.safetensors` file: (model in eval mode, config, scenario, step,
    method), as `engine.build.load_model` returns for a checkpoint."""
    from eclipse_seg.engine.build import build_model

    tensors, m, _ = read_safetensors(path)
    missing = [k for k in ("config", "scenario", "step", "method") if k not in m]
    if missing:
        raise CheckpointError(f"{path}: the {MANIFEST_KEY!r} header lacks {missing}")
    try:
        cfg = config_from_dict(m["config"])
        sc = m["scenario"]
        scenario = Scenario(sc["name"], tuple(sc["order"]), tuple(sc["steps"]))
        model = build_model(cfg, scenario, m["method"], int(m["step"]), set(m.get("thing_ids", [])))
    except EclipseSegError as e:
        raise CheckpointError(f"{path}: its manifest does not describe a model ({e})") from e
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not fit the model of its manifest: missing "
            f"{missing[:8]}, unexpected {unexpected[:8]}, shape mismatches "
            f"{wrong[:8]}"
        )
    model.load_state_dict(tensors)
    model.to(device).eval()
    return model, cfg, scenario, int(m["step"]), m["method"]
