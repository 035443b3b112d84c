"""Step 0 starts from the backbone weights the config names (`model.backbone.weights` for ResNet,
`model.swin.weights` for Swin): found before any work starts, loaded into the fresh model, and
recorded (file and SHA-256) in the step's checkpoint manifest."""

from __future__ import annotations

from pathlib import Path

from eclipse_seg.config import Config
from eclipse_seg.engine import distributed as dist
from eclipse_seg.errors import CheckpointError, ConfigError
from eclipse_seg.model.backbone.weights import WeightsLookup, find_weights
from eclipse_seg.model.mask2former import Mask2Former


def weights_key(cfg: Config) -> str:
    """The dotted config key naming the active backbone's weight file."""
    return "model.swin.weights" if cfg.model.backbone_type == "swin" else "model.backbone.weights"


def _section(cfg: Config):
    return cfg.model.swin if cfg.model.backbone_type == "swin" else cfg.model.backbone


def lookup_weights(cfg: Config) -> WeightsLookup:
    """Where the configured weight file is (or that none is wanted). A file named for the backbone
    the config does not use is an error, not silently ignored."""
    other = "model.backbone.weights" if cfg.model.backbone_type == "swin" else "model.swin.weights"
    other_spec = (
        cfg.model.backbone.weights if cfg.model.backbone_type == "swin" else cfg.model.swin.weights
    )
    if other_spec.strip().lower() != "none":
        raise ConfigError(
            f"{other}={other_spec!r} but model.backbone_type is "
            f"{cfg.model.backbone_type!r}: set {weights_key(cfg)} instead"
        )
    return find_weights(_section(cfg).weights)


def trains_step0(
    cfg: Config, method: str, steps: list[int] | None, init_from: Path | None = None
) -> bool:
    """Whether this run will train step 0 from scratch: step 0 is asked for, not adopted from
    another run (`init_from`) and not already finished in the output directory."""
    if (steps is not None and 0 not in steps) or init_from is not None:
        return False
    return not (Path(cfg.output_dir) / method / "step_0" / "final.pt").exists()


def require_step0_weights(
    cfg: Config, method: str, steps: list[int] | None, init_from: Path | None = None
) -> None:
    """Stop before any work when step 0 is to be trained and its weight file is missing."""
    if not trains_step0(cfg, method, steps, init_from):
        return
    found = lookup_weights(cfg)
    if found.requested and not found.found:
        raise CheckpointError(found.missing_message(weights_key(cfg)))


def load_step0_weights(model: Mask2Former, cfg: Config) -> dict:
    """Load the configured ImageNet weights into `model.backbone`; returns the manifest entry
    {"backbone_weights": {"file", "sha256", "tensors"} or None (random initialisation)}."""
    found = lookup_weights(cfg)
    if not found.requested:
        return {"backbone_weights": None}
    if not found.found:
        raise CheckpointError(found.missing_message(weights_key(cfg)))
    report = model.backbone.load_weights(
        found.path, allow_partial=_section(cfg).allow_partial_weights
    )
    dist.log(f"backbone: loaded {report.summary()}")
    return {
        "backbone_weights": {
            "file": str(found.path),
            "sha256": report.sha256,
            "tensors": len(report.loaded),
            "complete": report.complete,
        }
    }
