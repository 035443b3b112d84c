"""Pretrained backbone weight files: where a configured file is, reading it safely, and loading it
into a backbone with a report of what fitted.

Accepted files: detectron2 model-zoo pickles (`R-50.pkl`: {"model": {name: ndarray}, "__author__",
"matching_heuristics"}), torch files (`resnet50-*.pth`: a state dict; Swin's ImageNet `.pth`:
{"model": state dict}), with or without a `backbone.` prefix on the names. Pickles are read with an
unpickler that only rebuilds arrays and tensors, so a weight file cannot run code.

Where a relative path is looked for (first hit wins): `$ECLIPSE_WEIGHTS/<path>` when that variable
names a folder of weight files, then `<working directory>/<path>` (as `data.root` resolves against
`$ECLIPSE_DATA`). "none" means random initialisation, on purpose.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eclipse_seg.errors import CheckpointError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

__all__ = [
    "WEIGHTS_ENV",
    "LoadReport",
    "WeightFile",
    "WeightsLookup",
    "find_weights",
    "load_matching",
    "open_weight_file",
    "read_weight_file",
]

WEIGHTS_ENV = "ECLIPSE_WEIGHTS"


# ----------------------------------------------------------------------------------------------
# where


@dataclass(frozen=True)
class WeightsLookup:
    """A configured weight file resolved: `path` is the file found (None when `spec` is "none" or
    nothing was found), `searched` the places tried, in order."""

    spec: str
    path: Path | None
    searched: tuple[Path, ...] = ()

    @property
    def requested(self) -> bool:
        return self.spec.strip().lower() != "none"

    @property
    def found(self) -> bool:
        return self.path is not None

    def missing_message(self, key: str) -> str:
        """Why step 0 cannot start: which file, where it was looked for, how to go on."""
        env = os.environ.get(WEIGHTS_ENV, "")
        places = "; ".join(str(p) for p in self.searched)
        env_note = (
            f"{WEIGHTS_ENV}={env}"
            if env
            else f"{WEIGHTS_ENV} is not set (it may name a folder of weight files)"
        )
        return (
            f"{key}: pretrained backbone weights {self.spec!r} not found; looked in: {places} "
            f"({env_note}). Put the file there (docs/training.md says where to download it), or "
            f"set {key}=none to train step 0 from random weights on purpose."
        )


def find_weights(spec: str) -> WeightsLookup:
    """Resolve a `weights` value: "none", an absolute path, or a path relative to `$ECLIPSE_WEIGHTS`
    (when set) and then to the working directory."""
    if spec.strip().lower() == "none":
        return WeightsLookup(spec, None)
    if not spec.strip():
        raise CheckpointError("backbone weights: empty path; give a file or 'none'")
    p = Path(spec).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        env = os.environ.get(WEIGHTS_ENV, "")
        candidates = ([Path(env).expanduser() / p] if env else []) + [Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return WeightsLookup(spec, c, tuple(candidates))
    return WeightsLookup(spec, None, tuple(candidates))


# ----------------------------------------------------------------------------------------------
# reading


def _tensor_from_bytes(data: bytes) -> torch.Tensor:
    """Replaces torch's storage unpickling hook, which would call torch.load(weights_only=False)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# the only callables a weight-file pickle may name: array, tensor and container constructors
_UNPICKLE_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _tensor_from_bytes,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays / scalars, torch tensors and plain containers; refuses anything else."""

    def find_class(self, module: str, name: str):
        try:
            return _UNPICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: a weight file holds only arrays"
            ) from None


@dataclass
class WeightFile:
    """A weight file's tensors by name (outer {"model": ...} unwrapped) and its SHA-256."""

    path: Path
    state: dict
    sha256: str
    author: str = ""


def open_weight_file(path: str | Path) -> WeightFile:
    """Read a `.pkl` (detectron2 model zoo, arrays only) or a torch file (`weights_only`). A missing,
    unreadable or non-dict file is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    try:
        data = path.read_bytes()
        if path.suffix == ".pkl":
            raw = _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
        else:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read backbone weights {path}: {e}") from e
    author = ""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        author = str(raw.get("__author__", ""))
        raw = raw["model"]
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(
            f"{path}: expected a dict of named tensors, got "
            f"{type(raw).__name__ if not isinstance(raw, dict) else 'an empty dict'}"
        )
    return WeightFile(path, raw, hashlib.sha256(data).hexdigest(), author)


def read_weight_file(path: str | Path) -> dict:
    """The named tensors of a weight file (see `open_weight_file`)."""
    return open_weight_file(path).state


def as_tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


# ----------------------------------------------------------------------------------------------
# loading


@dataclass
class LoadReport:
    """What a weight file gave a backbone. `loaded`: model keys set from the file; `missing`: model
    keys the file lacks; `unexpected`: file keys the model lacks; `mismatched`: same key, other
    shape; `initialised`: keys the file is not expected to hold (left at initialisation)."""

    path: Path
    sha256: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors from {self.path} (sha256 {self.sha256[:12]})"]
        for name in ("missing", "unexpected", "mismatched", "initialised"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name} {len(keys)}: {_first(keys)}")
        return "; ".join(parts)


def _first(keys: list[str], n: int = 10) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n})" if len(keys) > n else "")


def load_matching(
    module: torch.nn.Module,
    weights: WeightFile,
    state: dict[str, torch.Tensor],
    *,
    what: str,
    optional: Iterable[str] = (),
    skip: Iterable[str] = (),
    allow_partial: bool = False,
) -> LoadReport:
    """Load `state` (already renamed to `module`'s keys) into `module`.

    `optional`: model keys the file need not hold (left at initialisation); `skip`: model keys never
    taken from a file (buffers rebuilt from the config). Any missing, unexpected or mis-shaped key
    is a CheckpointError listing them, and nothing is loaded, unless `allow_partial` (then the keys
    that fit are loaded and the report lists the rest). A file none of whose keys fits is always
    an error."""
    own = {k: v for k, v in module.state_dict().items() if k not in set(skip)}
    optional = set(optional)
    report = LoadReport(weights.path, weights.sha256)
    report.missing = sorted(set(own) - set(state) - optional)
    report.unexpected = sorted(set(state) - set(own))
    report.mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    fits = sorted(k for k in set(own) & set(state) if own[k].shape == state[k].shape)
    report.initialised = sorted((set(own) & optional) - set(state))
    if not fits:
        raise CheckpointError(
            f"{weights.path} holds no tensor of this {what} (its first names: "
            f"{_first(sorted(state), 5)}; expected names like {_first(sorted(own), 3)}): a weight "
            f"file for another backbone or depth?"
        )
    if not report.complete and not allow_partial:
        raise CheckpointError(
            f"{weights.path} does not fit this {what}: missing keys ({len(report.missing)}) "
            f"[{_first(report.missing)}], unexpected keys ({len(report.unexpected)}) "
            f"[{_first(report.unexpected)}], shape mismatches ({len(report.mismatched)}) "
            f"[{_first(report.mismatched)}]. Nothing was loaded; pass allow_partial "
            f"(config: allow_partial_weights=true) to load the tensors that fit."
        )
    module.load_state_dict({k: state[k].to(own[k].dtype) for k in fits}, strict=False)
    report.loaded = fits
    return report
