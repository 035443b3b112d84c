"""Atomic, checksummed checkpoints with a manifest.

A checkpoint is written to a temp file in the same folder, fsynced, then renamed over the target, so
a crash (SIGKILL included) leaves either the old or the new file, never half of one. The payload's
SHA-256 is stored in a sidecar `.sha256` file written after the rename; loading checks it, and a
truncated/corrupt file is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from eclipse_seg import __version__
from eclipse_seg.data.files import atomic_write_bytes
from eclipse_seg.errors import CheckpointError


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename (the data layer's writer), then fsync the folder so the rename
    itself survives a power cut."""
    atomic_write_bytes(path, data)
    dir_fd = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """`payload` must hold "manifest" (step, iteration, config hash, scenario, groups, ...)."""
    payload = dict(payload)
    payload["manifest"] = {**payload.get("manifest", {}), "library_version": __version__}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    # checksum first (pointing at the new content), then the data: a crash in between leaves a
    # mismatch that load_checkpoint reports, and resume falls back to the previous checkpoint.
    atomic_write(Path(str(path) + ".sha256"), digest.encode())
    atomic_write(Path(path), data)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    sidecar = Path(str(path) + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text().strip()
        if hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(
                f"checkpoint {path} is corrupt or truncated (checksum mismatch, {len(data)} bytes)"
            )
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path} is not an eclipse-seg checkpoint (no 'model' entry)")
    return payload
