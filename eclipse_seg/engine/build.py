"""Everything a run is built from, in one place: the datasets of a config, its scenario, the model
of a (method, step), the manifest a checkpoint carries, and a model rebuilt from a checkpoint alone.

The runner, evaluation, prediction, the demo and the official import all call these; none of them
builds a model or reads a manifest another way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch

from eclipse_seg.config import DATASETS, Config, config_from_dict
from eclipse_seg.continual import grow_for_step, set_deltas
from eclipse_seg.data.coco_panoptic import CocoPanopticDataset
from eclipse_seg.data.paths import data_path, data_root, root_note
from eclipse_seg.data.semantic import SemanticAsPanoptic, SemanticDataset, semantic_categories
from eclipse_seg.data.synthetic import make_synthetic
from eclipse_seg.engine import distributed as dist
from eclipse_seg.engine.checkpoint import load_checkpoint
from eclipse_seg.errors import CheckpointError, ConfigError, DataError
from eclipse_seg.inference import Thresholds
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import Scenario, class_order, parse_scenario

__all__ = [
    "Dataset",
    "LoadedModel",
    "build_datasets",
    "build_model",
    "build_scenario",
    "load_model",
    "load_run",
    "load_state",
    "manifest_for",
    "resolve_device",
    "thing_ids_of",
]

Dataset = CocoPanopticDataset | SemanticAsPanoptic  # semantic data seen as panoptic


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA, else MPS, else CPU; a named device must exist in this torch build."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(
            f"device {name!r} is not a device name (cpu, cuda, cuda:1, mps, auto): {e}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "has no CUDA" if torch.version.cuda is None else "finds no CUDA GPU"
        raise ConfigError(
            f"CUDA was requested (--device {name}) but this torch build {build}; "
            "install a CUDA build of torch (pytorch.org) or use --device cpu"
        )
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"MPS was requested (--device {name}) but it is not available here "
                "(Apple silicon with an MPS build of torch only); use --device cpu"
            )
    return device


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """Train and val datasets (paths from `data.root`, see `eclipse_seg.data.paths`); the synthetic
    one is generated on first use."""
    d = cfg.data
    if d.dataset == "synthetic" and not data_path(d.root, d.val_json).exists():
        if dist.rank() == 0:
            make_synthetic(
                data_root(d.root),
                seed=d.synthetic_seed,
                num_train=d.synthetic_train,
                num_val=d.synthetic_val,
                height=d.synthetic_size,
                width=d.synthetic_size,
            )
        dist.barrier()
    elif d.dataset not in DATASETS:  # a Config built in code, not loaded (loading checks it)
        raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}, got {d.dataset!r}")
    try:
        return _split(cfg, "train"), _split(cfg, "val")
    except DataError as e:
        raise DataError(f"{e}\n({root_note(d.root)})") from e


def _split(cfg: Config, split: str) -> Dataset:
    d = cfg.data
    images = data_path(d.root, getattr(d, f"{split}_image_dir"))
    pngs = data_path(d.root, getattr(d, f"{split}_png_dir"))
    if d.dataset == "semantic":
        categories = semantic_categories(d.catalog, d.num_classes)
        reader = SemanticDataset(
            images, pngs, label_offset=d.label_offset, num_classes=len(categories)
        )
        return SemanticAsPanoptic(reader, categories)
    return CocoPanopticDataset(data_path(d.root, getattr(d, f"{split}_json")), pngs, images)


def scenario_for(cfg: Config, categories: list[dict]) -> Scenario:
    """The scenario of a config over a dataset's categories (class order: see `class_order`)."""
    order = class_order(
        categories,
        order=cfg.continual.order,
        catalog=cfg.data.catalog,
        json_ids=cfg.data.dataset != "semantic",
    )
    return parse_scenario(cfg.continual.scenario or str(len(order)), order)


def build_scenario(cfg: Config, dataset: Dataset) -> Scenario:
    return scenario_for(cfg, dataset.categories)


def thing_ids_of(categories: list[dict]) -> set[int]:
    return {c["id"] for c in categories if c.get("isthing")}


def build_model(
    cfg: Config, scenario: Scenario, method: str, step: int, thing_ids: set[int]
) -> Mask2Former:
    """The model structure of `method` after `step`, initialised from `solver.seed`, with the
    config's deltas and test thresholds. Joint training has one head for every class."""
    torch.manual_seed(cfg.solver.seed)
    base = scenario.steps[0]
    if cfg.model.base_classes not in (0, base):
        raise ConfigError(
            f"model.base_classes={cfg.model.base_classes} but scenario "
            f"{scenario.name} has {base} base classes (leave model.base_classes at 0 "
            "to take it from the scenario)"
        )
    if method == "joint":
        base = scenario.num_classes
    model = Mask2Former(dataclasses.replace(cfg.model, base_classes=base))
    base_classes = scenario.order if method == "joint" else scenario.classes_of_step(0)
    model.thing_mask = torch.tensor([c in thing_ids for c in base_classes], dtype=torch.bool)
    if method != "joint":
        for t in range(1, step + 1):
            grow_for_step(
                model, scenario.classes_of_step(t), thing_ids, method, cfg.continual.num_prompts
            )
    set_deltas(model, cfg.continual.deltas)
    model.thresholds = Thresholds(cfg.test.object_mask_threshold, cfg.test.overlap_threshold)
    return model


def manifest_for(
    cfg: Config,
    scenario: Scenario,
    step: int,
    method: str,
    model: Mask2Former,
    categories: list[dict] | None = None,
) -> dict:
    """What a checkpoint needs to be rebuilt and used alone: config, scenario, step, method, query
    groups, thing ids and the dataset's categories (names and colours for `predict`)."""
    manifest = {
        "config_hash": cfg.fingerprint(),
        "config": cfg.to_dict(),
        "method": method,
        "step": step,
        "scenario": {
            "name": scenario.name,
            "order": list(scenario.order),
            "steps": list(scenario.steps),
        },
        "groups": [model.decoder.group_size(g) for g in range(model.decoder.num_groups)],
        "classes_per_step": model.decoder.class_embed.classes_per_step,
    }
    if categories is not None:
        manifest["thing_ids"] = sorted(thing_ids_of(categories))
        manifest["categories"] = [
            {k: c[k] for k in ("id", "name", "isthing", "color") if k in c} for c in categories
        ]
    return manifest


class LoadedModel(NamedTuple):
    model: Mask2Former
    cfg: Config
    scenario: Scenario
    step: int
    method: str


@dataclasses.dataclass
class Run:
    """A checkpoint rebuilt: the model in eval mode and everything its manifest says."""

    model: Mask2Former
    cfg: Config
    scenario: Scenario
    step: int
    method: str
    manifest: dict

    @property
    def categories(self) -> list[dict]:
        """The dataset's categories the checkpoint was trained on; older checkpoints without them
        get one entry per class of the scenario, named by id."""
        if self.manifest.get("categories"):
            return self.manifest["categories"]
        things = set(self.manifest.get("thing_ids", []))
        return [
            {"id": c, "name": f"class {c}", "isthing": int(c in things)}
            for c in self.scenario.order
        ]


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Rebuild the model a checkpoint holds from the checkpoint alone."""
    payload = load_checkpoint(Path(path))
    m = payload.get("manifest", {})
    missing = [k for k in ("config", "scenario", "step", "method") if k not in m]
    if missing:
        raise CheckpointError(
            f"{path}: manifest lacks {missing}; was it written by eclipse-seg train?"
        )
    cfg = config_from_dict(m["config"])
    sc = m["scenario"]
    scenario = Scenario(sc["name"], tuple(sc["order"]), tuple(sc["steps"]))
    model = build_model(cfg, scenario, m["method"], m["step"], set(m.get("thing_ids", [])))
    load_state(model, payload["model"], path)
    model.to(resolve_device(device))
    model.eval()
    return Run(model, cfg, scenario, m["step"], m["method"], m)


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """(model, cfg, scenario, step, method) of a checkpoint (see `load_run`)."""
    run = load_run(path, device)
    return LoadedModel(run.model, run.cfg, run.scenario, run.step, run.method)


def load_state(model: Mask2Former, state: dict, path) -> None:
    """Load weights that must fit the model exactly (a checkpoint of the same manifest)."""
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit the model of its manifest: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )
