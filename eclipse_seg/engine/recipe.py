"""The training recipe a config resolves to, for `eclipse-seg train CONFIG --dry-run`: the scenario,
the backbone weight file (found or not), each kind of step's parameter groups (tensors per lr
multiplier and weight-decay rule), lr schedule samples, iterations and batch, precision, the data
settings, and how the config compares with the official recipe of its scenario. Builds the model
with random weights; reads no dataset image and writes nothing."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from eclipse_seg.config import Config
from eclipse_seg.data.catalogs import official_order
from eclipse_seg.data.paths import data_path, data_root
from eclipse_seg.engine.build import build_model
from eclipse_seg.engine.pretrained import lookup_weights, weights_key
from eclipse_seg.engine.solver import lr_factor, param_rules
from eclipse_seg.engine.train import StepPlan, plan_step, set_trainable
from eclipse_seg.model.mask2former import Mask2Former
from eclipse_seg.scenarios import (
    OFFICIAL_BENCHMARKS,
    OFFICIAL_RECIPES,
    OfficialRecipe,
    Scenario,
    official_benchmark_of,
    parse_scenario,
)

_BASE_INC = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


# ----------------------------------------------------------------------------------------------
# the official recipe as config values


def official_settings(recipe: OfficialRecipe) -> dict[str, object]:
    """The config values (dotted keys) that train `recipe` as the official scripts do. Data
    pipeline keys are not included."""
    b = OFFICIAL_BENCHMARKS[recipe.benchmark]
    return {
        "data.catalog": b.catalog,
        "data.dataset": b.dataset,
        "model.backbone_type": "resnet",
        "model.backbone.depth": b.depth,
        "model.backbone.norm": b.norm,
        "model.backbone.freeze_at": 0,
        "model.backbone.weights": b.weights,
        "model.decoder.num_queries": recipe.base_queries,
        "model.decoder.deep_cls": True,
        "model.decoder.prompt_deep": True,
        "model.decoder.prompt_mask_mlp": True,
        "loss.class_weight": b.step0_class_weight,
        "loss.mask_weight": 5.0,
        "loss.dice_weight": 5.0,
        "loss.num_points": 12544,
        "solver.batch_size": b.batch_size,
        "solver.lr": b.step0_lr,
        "solver.iterations": recipe.step0_iterations,
        "solver.schedule": b.schedule,
        "solver.poly_power": 0.9,
        "solver.weight_decay": 0.05,
        "solver.weight_decay_norm": 0.0,
        "solver.weight_decay_embed": 0.0,
        "solver.backbone_multiplier": 0.1,
        "solver.clip_grad_norm": 0.01,
        "solver.amp": "fp16",
        "solver.seed": b.seed,
        "continual.scenario": recipe.scenario,
        "continual.order": [],
        "continual.method": "eclipse",
        "continual.num_prompts": recipe.prompts,
        "continual.iterations": recipe.iterations,
        "continual.lr": recipe.lr,
        "continual.batch_size": 0,
        "continual.class_weight": b.class_weight,
        "continual.train_no_object_head": True,
        "continual.deltas": list(recipe.deltas),
    }


def _get(cfg: Config, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _padded(deltas: list, n: int) -> list[float]:
    """Deltas as the model applies them to n groups: padded with the last value, or truncated."""
    deltas = [float(d) for d in deltas] or [0.0]
    return (deltas + [deltas[-1]] * n)[:n]


def official_recipe_for(cfg: Config) -> OfficialRecipe | None:
    """The official recipe of the config's benchmark and `continual.scenario`, if there is one."""
    bench = official_benchmark_of(cfg.data.catalog, cfg.data.dataset)
    if bench is None:
        return None
    return OFFICIAL_RECIPES.get((bench.name, cfg.continual.scenario.replace(" ", "")))


def official_differences(cfg: Config, recipe: OfficialRecipe) -> list[str]:
    """'key: config value (official value)' for every setting that differs from `recipe`; deltas
    compare as applied (a shorter list is padded with its last value)."""
    out = []
    for key, want in official_settings(recipe).items():
        have = _get(cfg, key)
        if key == "continual.deltas":
            same = _padded(have, len(want)) == want
        elif isinstance(want, float):
            same = isinstance(have, (int, float)) and float(have) == want
        else:
            same = have == want
        if not same:
            out.append(f"{key}: {have!r} (official {want!r})")
    return out


# ----------------------------------------------------------------------------------------------
# resolving


@dataclass
class GroupRow:
    """Tensors sharing an lr multiplier and a weight-decay rule."""

    lr_multiplier: float
    weight_decay: float
    kind: str
    tensors: int = 0
    elements: int = 0


@dataclass
class StepRecipe:
    title: str
    plan: StepPlan
    rows: list[GroupRow]
    schedule: list[tuple[int, float]]  # (iteration, lr of a multiplier-1 tensor)

    @property
    def decayed(self) -> int:
        return sum(r.tensors for r in self.rows if r.weight_decay > 0)

    @property
    def undecayed(self) -> int:
        return sum(r.tensors for r in self.rows if r.weight_decay == 0)


@dataclass
class Recipe:
    method: str
    scenario: str
    steps: list[int]  # classes per step (the last entry repeats when `steps_known` is False)
    steps_known: bool
    order_source: str
    backbone: str
    weights_key: str
    weights_spec: str
    weights_path: str | None
    weights_searched: list[str]
    step_recipes: list[StepRecipe]
    optimizer: str
    schedule: str
    precision: str
    data: dict
    data_root: str
    official: str
    differences: list[str] = field(default_factory=list)


def _class_order(cfg: Config) -> tuple[list[int] | None, str]:
    """The class order without reading images: the config's, the catalog's, or the train JSON's
    categories when the file exists."""
    if cfg.continual.order:
        return list(cfg.continual.order), "continual.order"
    if cfg.data.catalog:
        return official_order(cfg.data.catalog), f"the official {cfg.data.catalog} order"
    if cfg.data.dataset == "semantic" and cfg.data.num_classes > 0:
        return list(range(1, cfg.data.num_classes + 1)), "data.num_classes"
    path = data_path(cfg.data.root, cfg.data.train_json)
    if cfg.data.dataset != "semantic" and path.is_file():
        try:
            cats = json.loads(path.read_text())["categories"]
            return [int(c["id"]) for c in cats], f"the categories of {path}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return None, f"unknown until the dataset exists ({path})"


def _scenario(cfg: Config) -> tuple[Scenario, bool, str]:
    """The scenario (or, without a class order, its first two steps) and whether the step count
    is known."""
    order, source = _class_order(cfg)
    spec = cfg.continual.scenario
    if order is not None:
        return parse_scenario(spec or str(len(order)), order), True, source
    m = _BASE_INC.match(spec or "")
    steps = (int(m.group(1)), int(m.group(2))) if m else tuple(int(s) for s in spec.split(","))
    return Scenario(spec, tuple(range(1, sum(steps) + 1)), steps), bool(not m), source


def _rows(model: Mask2Former, cfg: Config) -> list[GroupRow]:
    rows: dict[tuple, GroupRow] = {}
    for r in param_rules(model, cfg.solver):
        key = (r.lr_multiplier, r.weight_decay, r.kind)
        row = rows.setdefault(key, GroupRow(*key))
        row.tensors += 1
        row.elements += r.param.numel()
    return sorted(rows.values(), key=lambda g: (-g.lr_multiplier, -g.weight_decay, g.kind))


def _schedule(cfg: Config, plan: StepPlan) -> list[tuple[int, float]]:
    n = plan.iterations
    points = sorted({0, min(1, n - 1), n // 2, n - 1})
    return [(it, plan.lr * lr_factor(cfg.solver, it, n)) for it in points]


def _step_recipe(cfg: Config, scenario: Scenario, method: str, step: int, title: str) -> StepRecipe:
    model = build_model(cfg, scenario, method, step, set())
    plan = plan_step(cfg, scenario, step, method)
    set_trainable(model, plan, cfg)
    return StepRecipe(title, plan, _rows(model, cfg), _schedule(cfg, plan))


def _optimizer(cfg: Config) -> str:
    s = cfg.solver
    clip = (
        f"full-model gradient L2 norm clipped to {s.clip_grad_norm:g} (after AMP unscaling)"
        if s.clip_grad_norm > 0
        else "no gradient clipping"
    )
    return (
        f"AdamW betas (0.9, 0.999) eps 1e-8, weight decay {s.weight_decay:g} (norm layers "
        f"{s.weight_decay_norm:g}, nn.Embedding {s.weight_decay_embed:g}), lr x "
        f"{s.backbone_multiplier:g} in modules named *backbone*; {clip}"
    )


def _schedule_text(cfg: Config) -> str:
    if cfg.solver.schedule == "constant":
        return "constant lr, every step"
    return f"poly: lr x (1 - it / iterations) ^ {cfg.solver.poly_power:g}, no warm-up, every step"


def _precision(cfg: Config) -> str:
    amp = cfg.solver.amp
    cuda = {
        "off": "float32",
        "fp16": "fp16 autocast + GradScaler",
        "bf16": "bf16 autocast",
        "auto": "bf16 autocast where supported, else fp16 + GradScaler",
    }[amp]
    return (
        f"solver.amp={amp}: on CUDA {cuda}, the pixel decoder and the matcher always float32; "
        f"float32 on CPU"
    )


def resolve_recipe(
    cfg: Config, method: str | None = None, steps: list[int] | None = None
) -> Recipe:
    """What `eclipse-seg train` would do with `cfg` (`steps`: only these; default all)."""
    method = method or cfg.continual.method
    scenario, known, source = _scenario(cfg)
    wanted = set(range(scenario.num_steps) if steps is None else steps)
    if method == "joint":
        wanted &= {0}
    step_recipes = []
    if 0 in wanted:
        title = "step 0 (joint: every class)" if method == "joint" else "step 0 (base classes)"
        step_recipes.append(_step_recipe(cfg, scenario, method, 0, title))
    later = sorted(t for t in wanted if t >= 1)
    if later and method != "joint":
        last = f"{later[-1]}" if known else "T"
        kind = "prompt tuning" if method == "eclipse" else "fine-tuning"
        title = f"steps {later[0]}..{last} ({method}: {kind}; shown for step {later[0]})"
        step_recipes.append(_step_recipe(cfg, scenario, method, later[0], title))
    found = lookup_weights(cfg)
    bb = cfg.model
    backbone = (
        f"ResNet-{bb.backbone.depth}, norm {bb.backbone.norm}, freeze_at {bb.backbone.freeze_at}"
        if bb.backbone_type == "resnet"
        else f"Swin (embed {bb.swin.embed_dim}, depths {bb.swin.depths}), LayerNorm, "
        f"frozen_stages {bb.swin.frozen_stages}"
    )
    official = official_recipe_for(cfg)
    return Recipe(
        method=method,
        scenario=scenario.name,
        steps=list(scenario.steps),
        steps_known=known,
        order_source=source,
        backbone=backbone,
        weights_key=weights_key(cfg),
        weights_spec=found.spec,
        weights_path=str(found.path) if found.path else None,
        weights_searched=[str(p) for p in found.searched],
        step_recipes=step_recipes,
        optimizer=_optimizer(cfg),
        schedule=_schedule_text(cfg),
        precision=_precision(cfg),
        data=dataclasses.asdict(cfg.data),
        data_root=str(data_root(cfg.data.root)),
        official=(
            f"{official.benchmark} {official.scenario} (shipped config {official.config})"
            if official
            else "none for this dataset / scenario"
        ),
        differences=official_differences(cfg, official) if official else [],
    )


# ----------------------------------------------------------------------------------------------
# printing


def _steps_text(r: Recipe) -> str:
    if r.steps_known:
        text, i = [], 0
        while i < len(r.steps):
            j = i
            while j + 1 < len(r.steps) and r.steps[j + 1] == r.steps[i]:
                j += 1
            text.append(f"{r.steps[i]}" + (f" x{j - i + 1}" if j > i else ""))
            i = j + 1
        return f"[{', '.join(text)}] classes per step ({len(r.steps)} steps)"
    return f"{r.steps[0]} base classes, then steps of {r.steps[1]} (step count: from the dataset)"


def _weights_text(r: Recipe) -> list[str]:
    head = f"{r.weights_key} = {r.weights_spec}"
    if r.weights_spec.strip().lower() == "none":
        return [f"{head}: random initialisation (on purpose)"]
    if r.weights_path:
        mb = Path(r.weights_path).stat().st_size / 2**20
        return [f"{head}: found {r.weights_path} ({mb:.1f} MiB)"]
    where = "; ".join(r.weights_searched)
    return [f"{head}: NOT FOUND (looked in: {where}); training step 0 would stop before any work"]


def _step_text(s: StepRecipe) -> list[str]:
    p = s.plan
    head = (
        f"{s.title}: {len(p.classes)} classes, {p.iterations} iterations, batch "
        f"{p.batch_size} per process, lr {p.lr:g}, class weight {p.class_weight:g}"
    )
    lines = [
        *textwrap.wrap(head, 100, subsequent_indent="  "),
        "  parameter groups (AdamW, one group per tensor):",
        f"    {'lr x':>6} {'weight decay':>12}  {'rule':<14}{'tensors':>8}{'elements':>14}",
    ]
    for g in s.rows:
        lines.append(
            f"    {g.lr_multiplier:>6g} {g.weight_decay:>12g}  {g.kind:<14}{g.tensors:>8}"
            f"{g.elements:>14,}"
        )
    total = s.decayed + s.undecayed
    lines.append(
        f"    {total} tensors: {s.decayed} with weight decay, {s.undecayed} without; "
        f"{sum(g.elements for g in s.rows):,} trainable elements"
    )
    samples = ", ".join(f"it {it}: {lr:.6g}" for it, lr in s.schedule)
    lines.append(f"  lr (multiplier 1): {samples}")
    return lines


def format_recipe(r: Recipe) -> str:
    lines = [
        "eclipse-seg train: resolved recipe (dry run; nothing is trained or written)",
        *_field("method", r.method),
        *_field("scenario", f"{r.scenario}: {_steps_text(r)}; class order: {r.order_source}"),
        *_field("official", r.official),
    ]
    if r.differences:
        lines.append(f"{'':14}differs from it in:")
        lines += [f"{'':16}{d}" for d in r.differences]
    elif "none" not in r.official:
        lines.append(f"{'':14}this config matches it (model, solver and continual settings)")
    lines += _field("backbone", r.backbone)
    for w in _weights_text(r):
        lines += _field("weights", w)
    lines += _field("optimizer", r.optimizer)
    lines += _field("schedule", r.schedule)
    lines += _field("precision", r.precision)
    for s in r.step_recipes:
        lines += _step_text(s)
    lines += _wrapped(f"{'data':14}", [f"{k}={v}" for k, v in r.data.items()])
    lines += _field("pipeline", _pipeline_line(r.data))
    lines += _field("data root", r.data_root)
    return "\n".join(lines)


def _field(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        text, 100, initial_indent=f"{label:14}", subsequent_indent=" " * 14, break_on_hyphens=False
    ) or [label]


def _wrapped(head: str, items: list[str], width: int = 100) -> list[str]:
    lines, line = [], head
    for item in items:
        if len(line) + len(item) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = " " * len(head)
        line += item + " "
    lines.append(line.rstrip())
    return lines


def _pipeline_line(data: dict) -> str:
    """The training augmentation the data config selects, in words."""
    if data.get("pipeline", "synthetic") == "synthetic":
        return "synthetic recipe (resize by data.min_scale..max_scale of base_size, crop, flip)"
    from eclipse_seg.data.pipelines import pipeline_spec

    return pipeline_spec(
        data["pipeline"],
        short_sides=data.get("train_short_sides") or (),
        max_size=data.get("train_max_size", 0),
        crop_size=data.get("train_crop_size", 0),
    ).describe()
