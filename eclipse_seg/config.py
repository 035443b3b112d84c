"""Experiment configuration: plain dataclasses, loaded from YAML, overridden by `key=value` pairs.

Unknown keys and values of the wrong type are errors that name the dotted key, so a typo never
silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eclipse_seg.errors import ConfigError
from eclipse_seg.losses import LossConfig
from eclipse_seg.model.mask2former import ModelConfig


@dataclass
class DataConfig:
    """Where the data lives and how training images are augmented."""

    # "synthetic" (generated into `root` when absent), "coco_panoptic" or "semantic" (image + PNG of
    # class indices; `*_png_dir` are the label folders, `*_json` unused)
    dataset: str = "synthetic"
    root: str = "data/synthetic"  # relative: under $ECLIPSE_DATA when set, else the working dir
    train_json: str = "train/panoptic.json"  # paths relative to `root` unless absolute
    train_png_dir: str = "train/panoptic"
    train_image_dir: str = "train/images"
    val_json: str = "val/panoptic.json"
    val_png_dir: str = "val/panoptic"
    val_image_dir: str = "val/images"
    catalog: str = ""  # "ade20k" / "coco": official class order and thing flags; "" = from the JSON
    num_classes: int = 0  # semantic: class count; 0 = the catalog's
    label_offset: int = -1  # semantic: class index = PNG value + offset (ADE: 0 = other, ignored)
    synthetic_train: int = 400
    synthetic_val: int = 100
    synthetic_size: int = 64
    synthetic_seed: int = 0
    # training augmentation: "synthetic" (the small recipe of the keys below), or the official
    # Mask2Former training mapper of a dataset: "ade20k_panoptic", "ade20k_semantic",
    # "coco_panoptic" (docs/data_pipelines.md; the ADE20K ones need the extra `train`, OpenCV)
    pipeline: str = "synthetic"
    # official pipelines only; [] / 0 = the pipeline's official value
    train_short_sides: list = field(default_factory=list)  # short-side choices
    train_max_size: int = 0  # cap on the long side
    train_crop_size: int = 0  # square crop (and, for ADE20K, padding) side
    # pipeline "synthetic" only: short side scale x U(min_scale, max_scale) of base_size, crop,
    # mild colour jitter
    base_size: int = 640
    min_scale: float = 0.5
    max_scale: float = 2.0
    crop_size: int = 640
    color_jitter: bool = True
    flip: bool = True  # horizontal flip with probability 1/2 (every pipeline)
    max_val_images: int = 0  # 0 = all

    def __post_init__(self):
        # a key the chosen pipeline does not read is an error, not silently ignored
        if self.pipeline == "synthetic":
            unused = ("train_short_sides", "train_max_size", "train_crop_size")
            used_by = "the official pipelines"
        else:
            unused = ("base_size", "min_scale", "max_scale", "crop_size", "color_jitter")
            used_by = "data.pipeline=synthetic"
        for key in unused:
            f = DataConfig.__dataclass_fields__[key]
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if getattr(self, key) != default:
                raise ConfigError(
                    f"config key 'data.{key}' is not used by data.pipeline="
                    f"{self.pipeline} (only by {used_by}); remove it"
                )


@dataclass
class SolverConfig:
    """Step-0 optimisation (official: AdamW 1e-4, wd 0.05, backbone x0.1, poly 0.9, clip 0.01)."""

    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    iterations: int = 160000
    schedule: str = "poly"  # lr over a step: "poly" (ADE20K) or "constant" (COCO), every step
    poly_power: float = 0.9
    clip_grad_norm: float = 0.01
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA, off on CPU), "off", "bf16", "fp16"
    seed: int = 0
    log_period: int = 20
    checkpoint_period: int = 1000
    eval_period: int = 0  # 0 = evaluate only at the end of a step
    compile: bool = False


@dataclass
class ContinualConfig:
    """The scenario and ECLIPSE's prompt-tuning settings for steps >= 1."""

    scenario: str = ""  # "100-5", "6,2,2,2", ...; "" = one step with every class
    order: list = field(default_factory=list)  # class order (category ids); [] = catalog/official
    method: str = "eclipse"  # "eclipse", "finetune", "joint"
    num_prompts: int = 10
    deltas: list = field(default_factory=lambda: [0.0])
    lr: float = 5e-4
    iterations: int = 12000
    finetune_iterations: int = 0  # fine-tuning baseline's iterations per step; 0 = `iterations`
    joint_iterations: int = 0  # joint-training baseline's iterations; 0 = solver.iterations
    batch_size: int = 0  # 0 = solver.batch_size
    class_weight: float = 10.0
    train_no_object_head: bool = True  # official quirk: the shared no-object head stays trainable
    # precision of the frozen trunk at prompt-tuning steps: "auto" = as solver.amp; "off" =
    # float32; "bf16" / "fp16" = the backbone under that autocast, on CPU too (bf16 is fast on CPUs
    # with AMX / AVX512-BF16); the pixel decoder always computes in float32 (official)
    trunk_amp: str = "auto"


@dataclass
class TestConfig:
    """Inference and evaluation: the post-processing thresholds (official 0.0 / 0.0), the test-time
    resize and the mIoU convention. A checkpoint carries them, so `predict` shows what `evaluate`
    scores."""

    __test__ = False  # a config, not a pytest test class (its name starts with "Test")
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.0
    batch_size: int = 4
    # detectron2's ResizeShortestEdge before inference; predictions come back at the original size
    min_size: int = 0  # short side; 0 = no resize
    max_size: int = 0  # cap on the long side; 0 = none
    # semantic mIoU: pixels labelled "other" (ADE's 0) count as background, so predictions there
    # are false positives (official ECLIPSE evaluator); false = ignore them (detectron2's ADE20K)
    unlabeled_as_background: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    test: TestConfig = field(default_factory=TestConfig)
    output_dir: str = "runs/default"
    device: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes what is trained (not where it is written)."""
        d = self.to_dict()
        d.pop("output_dir", None)
        d.pop("device", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Coerce/validate one leaf value against its annotation."""
    origin = typing.get_origin(annotation)
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range
            raise ConfigError(f"config key '{key}': {value!r} is too large for a float") from None
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if annotation is str and isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans
        value = "on" if value else "off"
    if annotation in (int, str):
        if not isinstance(value, annotation) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected {annotation.__name__}, got {value!r}")
        return value
    if annotation is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return list(value)
    if origin in (typing.Union, types.UnionType):
        return value
    return value


DATASETS = ("synthetic", "coco_panoptic", "semantic")  # data.dataset: the readers we have
PIPELINES = ("synthetic", "ade20k_panoptic", "ade20k_semantic", "coco_panoptic")  # data.pipeline
METHODS = ("eclipse", "finetune", "joint")  # continual.method / --method
CHOICES = {  # string keys with a closed set of values
    "data.dataset": DATASETS,
    "data.pipeline": PIPELINES,
    "solver.amp": ("auto", "off", "bf16", "fp16"),
    "solver.schedule": ("poly", "constant"),
    "model.backbone.norm": ("FrozenBN", "BN", "SyncBN"),
    "continual.trunk_amp": ("auto", "off", "bf16", "fp16"),
    "continual.method": METHODS,
    "model.backbone_type": ("resnet", "swin"),
    "loss.class_loss": ("official", "focal"),
}


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"config section '{prefix or '<root>'}': expected a mapping, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"unknown config key '{dotted}' (known in this section: "
                f"{', '.join(sorted(fields))})"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, dotted + ".")
        else:
            kwargs[key] = _check_type(value, hint, dotted)
            if dotted in CHOICES and kwargs[key] not in CHOICES[dotted]:
                raise ConfigError(
                    f"config key '{dotted}': expected one of "
                    f"{', '.join(CHOICES[dotted])}, got {kwargs[key]!r}"
                )
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """["solver.lr=1e-3", "continual.deltas=[0.4,0.6]"] -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. solver.lr=1e-3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: bad date, huge int
            raise ConfigError(f"override '{item}': value is not valid YAML: {e}") from e
        node = tree
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override '{item}': '{'.'.join(parts[: i + 1])}' was set to a "
                    f"value ({node!r}) by an earlier override, not a section"
                )
        node[parts[-1]] = value
    return tree


CONFIG_DIR = Path(__file__).parent / "configs"  # the configs shipped with the package


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``synthetic/base``, ``ade20k/panoptic_r50``, ...)."""
    return sorted(
        str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml")
    )


def resolve_config(name: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (``synthetic/base``); a name that is neither
    is a ConfigError listing the shipped configs."""
    path = Path(name)
    if path.is_file():
        return path
    text = str(name)
    shipped = CONFIG_DIR / (text if text.endswith(".yaml") else text + ".yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"config {text!r} is neither a YAML file nor a shipped config; shipped: "
        f"{', '.join(shipped_configs())}"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file or shipped config name (optional `_base_: other.yaml`, relative to the file) +
    overrides -> Config."""
    data = _load_yaml_tree(resolve_config(path)) if path else {}
    data = _merge(data, parse_overrides(overrides or []))
    return _from_dict(Config, data)


def _load_yaml_tree(path: Path, seen: tuple = ()) -> dict:
    try:
        found = path.is_file()
    except OSError:  # e.g. a name longer than the OS allows
        found = False
    if not found:
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: bad date, huge int,
        # not UTF-8 (UnicodeDecodeError)
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    base = data.pop("_base_", None)
    if base and not isinstance(base, str):
        raise ConfigError(f"config file {path}: _base_ must be a file name, got {base!r}")
    if base:
        data = _merge(_load_yaml_tree(path.parent / base, seen + (path.resolve(),)), data)
    return data


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `key=value` overrides applied (validated like a config file)."""
    return _from_dict(Config, _merge(cfg.to_dict(), parse_overrides(overrides)))


# Keys older versions wrote into checkpoint manifests that no longer mean anything.
_RETIRED = {"test": ("panoptic_on", "semantic_on")}


def config_from_dict(data: dict) -> Config:
    """A Config from its dict form (a checkpoint manifest): retired keys are dropped, any other
    unknown key is an error."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, keys in _RETIRED.items():
        for key in keys:
            data.get(section, {}).pop(key, None)
    return _from_dict(Config, data)


def save_config(cfg: Config, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
