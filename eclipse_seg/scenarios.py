"""Continual scenarios: a class order split into steps, plus the overlap-mode data protocol.

A :class:`Scenario` holds category ids in class order and the number of classes of each step.
Model labels are positions in that order (0-based), so the classes of step t always get labels
``sum(steps[:t]) .. sum(steps[:t+1]) - 1``.

Overlap mode (the ECLIPSE protocol): the training images of step t are those with at least one
non-crowd segment of a class of step t; segments of every other class are dropped from the targets
(neither supervised nor "background"). Evaluation at step t uses all validation images and the full
ground truth; PQ is averaged over the class groups of :func:`eval_class_groups`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from eclipse_seg.data.catalogs import official_order, official_to_json_ids
from eclipse_seg.data.files import is_int
from eclipse_seg.errors import ConfigError, ScenarioError

if TYPE_CHECKING:  # pragma: no cover
    from eclipse_seg.data.coco_panoptic import CocoPanopticDataset, PanopticSample

__all__ = [
    "OFFICIAL_BENCHMARKS",
    "OFFICIAL_RECIPES",
    "OFFICIAL_SCENARIOS",
    "OfficialBenchmark",
    "OfficialRecipe",
    "Scenario",
    "class_order",
    "eval_class_groups",
    "official_benchmark_of",
    "official_scenario",
    "parse_scenario",
    "restrict_to_classes",
    "step_class_groups",
    "step_training_indices",
]


@dataclass(frozen=True)
class Scenario:
    name: str
    order: tuple[int, ...]
    steps: tuple[int, ...]
    _label: dict = field(default=None, init=False, repr=False, compare=False, hash=False)
    _starts: tuple = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        try:
            order = tuple(self.order)
            steps = tuple(self.steps)
        except TypeError as e:
            raise ScenarioError(f"scenario {self.name!r}: order and steps must be sequences") from e
        bad = [v for v in order if not is_int(v)]
        if bad:
            raise ScenarioError(f"scenario {self.name!r}: order: non-integer class ids {bad[:10]}")
        bad = [v for v in steps if not is_int(v)]
        if bad:
            raise ScenarioError(f"scenario {self.name!r}: steps: non-integer sizes {bad[:10]}")
        if not steps:
            raise ScenarioError(f"scenario {self.name!r}: steps: at least one step is required")
        nonpos = [v for v in steps if v <= 0]
        if nonpos:
            raise ScenarioError(
                f"scenario {self.name!r}: steps: every step size must be positive, got {list(steps)}"
            )
        seen, dups = set(), []
        for v in order:
            if v in seen and v not in dups:
                dups.append(v)
            seen.add(v)
        if dups:
            raise ScenarioError(f"scenario {self.name!r}: order: duplicate class ids {dups[:20]}")
        if sum(steps) != len(order):
            raise ScenarioError(
                f"scenario {self.name!r}: steps {list(steps)} sum to {sum(steps)} but the class order "
                f"has {len(order)} classes; they must be equal"
            )
        starts, s = [], 0
        for n in steps:
            starts.append(s)
            s += n
        starts.append(s)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "_label", {c: i for i, c in enumerate(order)})
        object.__setattr__(self, "_starts", tuple(starts))

    # ---- steps -----------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def num_classes(self) -> int:
        return len(self.order)

    def _check_step(self, t: int) -> int:
        if not is_int(t) or not 0 <= t < self.num_steps:
            raise ScenarioError(
                f"scenario {self.name!r}: step {t!r} out of range (0..{self.num_steps - 1})"
            )
        return t

    def labels_of_step(self, t: int) -> range:
        t = self._check_step(t)
        return range(self._starts[t], self._starts[t + 1])

    def classes_of_step(self, t: int) -> tuple[int, ...]:
        t = self._check_step(t)
        return self.order[self._starts[t] : self._starts[t + 1]]

    def new_classes(self, t: int) -> tuple[int, ...]:
        return self.classes_of_step(t)

    def seen_classes(self, t: int) -> tuple[int, ...]:
        t = self._check_step(t)
        return self.order[: self._starts[t + 1]]

    def old_classes(self, t: int) -> tuple[int, ...]:
        t = self._check_step(t)
        return self.order[: self._starts[t]]

    def num_seen(self, t: int) -> int:
        return self._starts[self._check_step(t) + 1]

    # ---- id <-> label ----------------------------------------------------------------------------
    def label_of(self, cat_id: int) -> int:
        try:
            return self._label[cat_id]
        except (KeyError, TypeError):
            raise ScenarioError(
                f"scenario {self.name!r}: category id {cat_id!r} is not in the class order"
            ) from None

    def category_of(self, label: int) -> int:
        if not is_int(label) or not 0 <= label < len(self.order):
            raise ScenarioError(
                f"scenario {self.name!r}: label {label!r} out of range (0..{len(self.order) - 1})"
            )
        return self.order[label]

    def step_of_label(self, label: int) -> int:
        self.category_of(label)
        for t in range(self.num_steps):
            if label < self._starts[t + 1]:
                return t
        raise AssertionError("unreachable")  # pragma: no cover

    def step_of_class(self, cat_id: int) -> int:
        return self.step_of_label(self.label_of(cat_id))

    def map_ids(self, mapping: Mapping[int, int], name: str | None = None) -> Scenario:
        """Same split with every category id translated through ``mapping`` (e.g. to JSON ids)."""
        missing = [c for c in self.order if c not in mapping]
        if missing:
            raise ScenarioError(f"scenario {self.name!r}: no mapping for class ids {missing[:20]}")
        return replace(
            self, name=name or self.name, order=tuple(int(mapping[c]) for c in self.order)
        )


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------
_BASE_INC = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_LIST = re.compile(r"^\s*(?:\[([^\[\]]*)\]|([^\[\]]*))\s*$")


def parse_scenario(spec: str, order: Sequence[int]) -> Scenario:
    """Build a scenario from ``"BASE-INC"`` or an explicit list of step sizes.

    * ``"100-5"``: BASE classes at step 0, then steps of INC classes until the order is used up;
      ``len(order) - BASE`` must be a multiple of INC.
    * ``"6,3,3"`` or ``"[100, 10, 5, 20]"``: explicit sizes; their sum must equal ``len(order)``
      exactly (a prefix of the order is not accepted: pass the shorter order instead).
    """
    if not isinstance(spec, str):
        raise ScenarioError(f"scenario spec must be a string like '100-5' or '6,3,3', got {spec!r}")
    try:
        order = tuple(order)
    except TypeError:
        raise ScenarioError(f"scenario {spec!r}: class order must be a sequence of ids") from None
    n = len(order)
    if n == 0:
        raise ScenarioError(f"scenario {spec!r}: the class order is empty")
    m = _BASE_INC.match(spec)
    if m:
        base, inc = int(m.group(1)), int(m.group(2))
        if base <= 0 or inc <= 0:
            raise ScenarioError(f"scenario {spec!r}: base and increment must be positive")
        if base > n:
            raise ScenarioError(
                f"scenario {spec!r}: base step of {base} classes exceeds the {n} classes of the order"
            )
        if (n - base) % inc:
            raise ScenarioError(
                f"scenario {spec!r}: the {n - base} classes after the base step do not divide into "
                f"steps of {inc}"
            )
        steps = (base,) + (inc,) * ((n - base) // inc)
        return Scenario(name=f"{base}-{inc}", order=order, steps=steps)
    m = _LIST.match(spec)
    body = ((m.group(1) if m.group(1) is not None else m.group(2)) or "").strip() if m else ""
    tokens = [t.strip() for t in body.split(",")] if body else []
    if not tokens or any(not re.fullmatch(r"[+-]?\d+", t) for t in tokens):
        raise ScenarioError(
            f"scenario spec {spec!r} is malformed: expected 'BASE-INC' (e.g. '100-5') or a "
            f"comma-separated list of step sizes (e.g. '6,3,3' or '[100,10,5,20]')"
        )
    steps = tuple(int(t) for t in tokens)
    if any(s <= 0 for s in steps):
        raise ScenarioError(f"scenario {spec!r}: step sizes must be positive, got {list(steps)}")
    if sum(steps) != n:
        raise ScenarioError(
            f"scenario {spec!r}: step sizes sum to {sum(steps)} but the class order has {n} classes; "
            f"they must be equal"
        )
    return Scenario(name=",".join(str(s) for s in steps), order=order, steps=steps)


# --------------------------------------------------------------------------------------------------
# official scenarios
# --------------------------------------------------------------------------------------------------
def _base_inc(total: int, base: int, inc: int) -> tuple[int, ...]:
    return (base,) + (inc,) * ((total - base) // inc)


OFFICIAL_SCENARIOS: dict[str, dict[str, tuple[int, ...]]] = {
    "ade20k": {
        name: _base_inc(150, b, i)
        for name, (b, i) in {
            "100-5": (100, 5),
            "100-10": (100, 10),
            "100-50": (100, 50),
            "50-10": (50, 10),
            "50-20": (50, 20),
            "50-50": (50, 50),
        }.items()
    },
    "coco": {"83-5": _base_inc(133, 83, 5), "83-10": _base_inc(133, 83, 10)},
}


def official_scenario(dataset: str, name: str, *, id_space: str = "official") -> Scenario:
    """An official split of ``dataset`` ('ade20k' or 'coco').

    ``id_space="official"``: ids of :func:`~eclipse_seg.data.catalogs.official_order` (ADE 1..150,
    COCO contiguous 1..133). ``id_space="json"``: the category ids of the datasets' panoptic JSONs
    (ADE 0..149 as written by Mask2Former's script, COCO category ids), for use with
    :class:`~eclipse_seg.data.coco_panoptic.CocoPanopticDataset`.
    """
    from eclipse_seg.data.catalogs import canonical_dataset, official_order, official_to_json_ids

    try:
        ds = canonical_dataset(dataset)
    except ConfigError as e:
        raise ScenarioError(str(e)) from None
    table = OFFICIAL_SCENARIOS[ds]
    key = str(name).strip().replace(" ", "")
    if key not in table:
        raise ScenarioError(
            f"scenario: {name!r} is not an official {ds} scenario; official: {sorted(table)}"
        )
    sc = Scenario(name=key, order=tuple(official_order(ds)), steps=table[key])
    if id_space == "official":
        return sc
    if id_space == "json":
        return sc.map_ids(official_to_json_ids(ds))
    raise ScenarioError(f"id_space: expected 'official' or 'json', got {id_space!r}")


# --------------------------------------------------------------------------------------------------
# official training recipes
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OfficialBenchmark:
    """Settings shared by every scenario of one official benchmark (its Mask2Former base config and
    the ECLIPSE scripts): backbone, ImageNet weight file, batch (total over processes), schedule."""

    name: str  # "ade20k-panoptic", "ade20k-semantic", "coco-panoptic"
    catalog: str  # "ade20k" / "coco"
    dataset: str  # `data.dataset`: "coco_panoptic" or "semantic"
    config: str  # the shipped config of its first scenario
    depth: int
    norm: str  # step-0 backbone norm
    weights: str  # detectron2 model-zoo name of the ImageNet weights
    batch_size: int
    schedule: str  # "poly" (power 0.9, no warm-up) or "constant"
    step0_lr: float = 1e-4
    step0_class_weight: float = 2.0
    class_weight: float = 10.0  # steps >= 1
    seed: int = 42


@dataclass(frozen=True)
class OfficialRecipe:
    """One official scenario as the ECLIPSE scripts train and evaluate it. `deltas`: the
    logit-manipulation deltas of the evaluation command, one per query group (base first)."""

    benchmark: str
    scenario: str
    base_queries: int
    step0_iterations: int
    prompts: int  # per step >= 1
    iterations: int  # per step >= 1
    lr: float  # steps >= 1
    deltas: tuple[float, ...]

    @property
    def config(self) -> str:
        """The shipped config that trains it (`eclipse-seg train <config>`)."""
        first = OFFICIAL_BENCHMARKS[self.benchmark].config
        return (
            first
            if self.scenario == _FIRST_SCENARIO[self.benchmark]
            else f"{first}_{self.scenario}"
        )


OFFICIAL_BENCHMARKS: dict[str, OfficialBenchmark] = {
    b.name: b
    for b in (
        OfficialBenchmark(
            "ade20k-panoptic",
            "ade20k",
            "coco_panoptic",
            "ade20k/panoptic_r50",
            50,
            "FrozenBN",
            "R-50.pkl",
            8,
            "poly",
        ),
        OfficialBenchmark(
            "ade20k-semantic",
            "ade20k",
            "semantic",
            "ade20k/semantic_r101",
            101,
            "SyncBN",
            "R-101.pkl",
            16,
            "poly",
        ),
        OfficialBenchmark(
            "coco-panoptic",
            "coco",
            "coco_panoptic",
            "coco/panoptic_r50",
            50,
            "FrozenBN",
            "R-50.pkl",
            16,
            "constant",
        ),
    )
}
_FIRST_SCENARIO = {"ade20k-panoptic": "100-5", "ade20k-semantic": "100-5", "coco-panoptic": "83-5"}


def _deltas(first: float, rest: float, steps: int) -> tuple[float, ...]:
    return (first,) + (rest,) * steps


OFFICIAL_RECIPES: dict[tuple[str, str], OfficialRecipe] = {
    (r.benchmark, r.scenario): r
    for r in (
        # benchmark, scenario, base queries, step-0 iterations, prompts, iterations, lr, deltas
        OfficialRecipe(
            "ade20k-panoptic", "100-5", 100, 160_000, 10, 12_000, 5e-4, _deltas(0.4, 0.6, 10)
        ),
        OfficialRecipe(
            "ade20k-panoptic", "100-10", 100, 160_000, 10, 16_000, 5e-4, _deltas(0.4, 0.5, 5)
        ),
        OfficialRecipe("ade20k-panoptic", "100-50", 100, 160_000, 50, 80_000, 5e-4, (-0.4, -0.6)),
        OfficialRecipe(
            "ade20k-panoptic", "50-10", 50, 80_000, 10, 24_000, 5e-4, _deltas(0.4, 0.5, 10)
        ),
        OfficialRecipe(
            "ade20k-panoptic", "50-20", 50, 80_000, 20, 32_000, 5e-4, _deltas(0.4, 0.5, 5)
        ),
        OfficialRecipe(
            "ade20k-panoptic", "50-50", 50, 80_000, 50, 120_000, 5e-4, (0.5, -0.4, -0.4)
        ),
        OfficialRecipe(
            "ade20k-semantic", "100-5", 100, 160_000, 5, 12_000, 1e-3, _deltas(0.1, 0.8, 10)
        ),
        OfficialRecipe(
            "ade20k-semantic", "100-10", 100, 160_000, 10, 24_000, 1e-3, _deltas(0.1, 0.7, 5)
        ),
        OfficialRecipe("ade20k-semantic", "100-50", 100, 160_000, 50, 120_000, 1e-3, (0.0, -0.1)),
        OfficialRecipe(
            "coco-panoptic", "83-5", 100, 240_000, 10, 8_000, 5e-4, _deltas(0.5, 0.6, 10)
        ),
        OfficialRecipe(
            "coco-panoptic", "83-10", 100, 240_000, 10, 32_000, 5e-4, _deltas(0.5, 0.6, 5)
        ),
    )
}


def official_benchmark_of(catalog: str, dataset: str) -> OfficialBenchmark | None:
    """The official benchmark a config's data belongs to (`data.catalog`, `data.dataset`), if any."""
    for b in OFFICIAL_BENCHMARKS.values():
        if b.catalog == catalog and b.dataset == dataset:
            return b
    return None


# --------------------------------------------------------------------------------------------------
# overlap mode and evaluation groups
# --------------------------------------------------------------------------------------------------
def step_training_indices(dataset: CocoPanopticDataset, scenario: Scenario, t: int) -> list[int]:
    """Indices of the images of ``dataset`` with a non-crowd segment of a class of step ``t``.

    Uses the JSON only. Class ids of the step that are not categories of the dataset raise
    ScenarioError (usually an id-space mismatch, e.g. ADE ids 1..150 against a 0-based JSON).
    """
    classes = scenario.classes_of_step(t)
    unknown = [c for c in classes if c not in dataset.category_by_id]
    if unknown:
        raise ScenarioError(
            f"scenario {scenario.name!r} step {t}: class ids {unknown[:20]} are not categories of "
            f"{getattr(dataset, 'json_path', 'the dataset')} (id space mismatch? see "
            f"official_scenario(..., id_space='json'))"
        )
    return dataset.image_ids_with_any_category(classes, include_crowd=False)


def restrict_to_classes(sample: PanopticSample, cat_ids: Iterable[int]) -> PanopticSample:
    """A copy of ``sample`` whose supervised segments are only those of ``cat_ids``.

    Other segments are dropped (their pixels are neither supervised nor background). The raw
    ``id_map`` and ``segments_info`` are kept unchanged for evaluation.
    """
    keep_ids = torch.tensor(sorted({int(c) for c in cat_ids}), dtype=torch.int64)
    keep = torch.isin(sample.category_ids, keep_ids)
    return replace(
        sample,
        masks=sample.masks[keep],
        category_ids=sample.category_ids[keep],
        segment_ids=sample.segment_ids[keep],
        isthing=sample.isthing[keep],
        iscrowd=sample.iscrowd[keep],
    )


def eval_class_groups(scenario: Scenario, t: int) -> dict[str, list[int]]:
    """Category-id groups for PQ at step ``t``: old (steps < t), new (step t), all (seen)."""
    return {
        "old": list(scenario.old_classes(t)),
        "new": list(scenario.new_classes(t)),
        "all": list(scenario.seen_classes(t)),
    }


def step_class_groups(scenario: Scenario, t: int, thing_ids: Iterable[int]) -> dict[str, list[int]]:
    """:func:`eval_class_groups` plus the seen things and the seen stuff (for PQ things / stuff)."""
    groups = eval_class_groups(scenario, t)
    things = set(thing_ids)
    groups["things"] = [c for c in groups["all"] if c in things]
    groups["stuff"] = [c for c in groups["all"] if c not in things]
    return groups


def class_order(
    categories: Sequence[Mapping],
    *,
    order: Sequence[int] = (),
    catalog: str = "",
    json_ids: bool = True,
) -> list[int]:
    """The class order of a run, as dataset category ids: ``order`` when given; else the catalog's
    official order (mapped to the ids of the dataset's panoptic JSON when ``json_ids``; semantic
    data numbers classes as the catalog does); else the order of ``categories``."""
    if order:
        return list(order)
    if catalog:
        official = official_order(catalog)
        if not json_ids:
            return official
        to_json = official_to_json_ids(catalog)
        return [to_json[c] for c in official]
    return [c["id"] for c in categories]
