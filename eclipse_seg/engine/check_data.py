"""Dataset checks: scan a COCO-panoptic dataset (or both splits of a config) and report every
problem at once, each naming the file, instead of failing at the first one during training.

* :func:`check_dataset` - one JSON + PNG folder + image folder. ``deep=False`` checks the JSON
  structure and that every file exists (cheap: no decoding); ``deep=True`` also decodes every
  image and PNG (corrupt / truncated files, sizes image vs JSON vs PNG, PNG ids vs
  ``segments_info``).
* :func:`check_semantic_split` - the same for semantic data: an image folder and a label-PNG
  folder paired by file stem (``deep=True`` decodes every pair: corrupt files, sizes, label
  values).
* :func:`check_config_data` - both splits of a :class:`~eclipse_seg.config.Config` (paths
  resolved from ``data.root`` like the runner, see :mod:`eclipse_seg.data.paths`) plus the
  scenario: class-order ids that are not categories of the dataset, and steps whose training
  split is empty (semantic data: only with ``deep``, which reads every label map).
* :func:`preflight` - the cheap config check, raising one :class:`DataError` listing every problem.

The JSON schema itself is :mod:`eclipse_seg.data.panoptic_json`, shared with the dataset reader.

Checking only reads: it never writes, moves or deletes a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eclipse_seg.config import DATASETS
from eclipse_seg.data.files import is_file, is_int, read_image_rgb
from eclipse_seg.data.panoptic_ids import read_panoptic_png
from eclipse_seg.data.panoptic_json import Problem, index_panoptic_json, read_panoptic_json
from eclipse_seg.data.paths import data_path, root_note
from eclipse_seg.data.semantic import SemanticDataset, pair_files, semantic_categories
from eclipse_seg.engine.build import scenario_for
from eclipse_seg.errors import DataError, EclipseSegError, ScenarioError

__all__ = [
    "Problem",
    "check_config_data",
    "check_dataset",
    "check_semantic_split",
    "format_problems",
    "preflight",
    "split_paths",
    "synthetic_pending",
]


SCENARIO_PROBLEM = "config continual.scenario / continual.order"  # the "file" of scenario problems


def format_problems(problems: Sequence[Problem], limit: int | None = None) -> str:
    """One line per problem (``file: problem``); at most ``limit`` lines plus a count of the rest."""
    if not problems:
        return "no problems found"
    shown = list(problems) if limit is None else list(problems)[:limit]
    lines = [f"  {p}" for p in shown]
    if len(shown) < len(problems):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    n = len(problems)
    return f"{n} problem{'s' if n != 1 else ''}:\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# one dataset
# --------------------------------------------------------------------------------------------------
def _size_ok(img: dict) -> bool:
    return all(is_int(img.get(k)) and img[k] > 0 for k in ("height", "width"))


def _decoded(problems: list[Problem], path: Path, read) -> Any:
    """`read(path)`, or None with its DataError recorded as a problem of `path`."""
    try:
        return read(path)
    except DataError as e:
        problems.append(Problem(str(path), str(e).removeprefix(f"{path}: ")))
        return None


def check_dataset(
    json_path: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    deep: bool = True,
) -> list[Problem]:
    """Every problem of one COCO-panoptic dataset, each naming its file (JSON, image or PNG).

    ``deep=False``: JSON structure and file existence only. ``deep=True``: also decodes every
    image and panoptic PNG of the annotated images and compares sizes (image vs JSON vs PNG) and
    segment ids (PNG vs ``segments_info``). An empty list means :class:`CocoPanopticDataset`
    will read every sample without error. Never modifies a file.
    """
    json_path, png_dir, image_dir = Path(json_path), Path(png_dir), Path(image_dir)
    problems: list[Problem] = []
    jf = str(json_path)
    doc = read_panoptic_json(json_path, problems)
    if doc is None:
        return problems
    index = index_panoptic_json(doc, json_path, problems)

    def add(path: Path, problem: str) -> None:
        problems.append(Problem(str(path), problem))

    for img, ann, where in index.entries:
        image_path = None  # a bad images[].file_name is already reported
        if isinstance(img.get("file_name"), str) and img["file_name"]:
            image_path = image_dir / img["file_name"]
            if not is_file(image_path):
                add(
                    image_path,
                    f"image file not found (images entry of image id {img['id']!r} in {jf})",
                )
                image_path = None
        png_path = png_dir / ann["file_name"]
        if not is_file(png_path):
            add(png_path, f"panoptic PNG file not found ({where} of {jf})")
            png_path = None
        if not deep:
            continue
        json_hw = (img["height"], img["width"]) if _size_ok(img) else None
        image_hw = png_hw = ids = None
        if image_path is not None:
            image_hw = _decoded(
                problems, image_path, lambda p: read_image_rgb(p, "image").shape[:2]
            )
        if png_path is not None:
            ids = _decoded(problems, png_path, read_panoptic_png)
            png_hw = ids.shape if ids is not None else None
        for path, kind, hw in ((image_path, "image", image_hw), (png_path, "panoptic PNG", png_hw)):
            if hw is not None and json_hw is not None and tuple(hw) != json_hw:
                add(
                    path,
                    f"{kind} size {hw[1]}x{hw[0]} (WxH) differs from the JSON's "
                    f"{json_hw[1]}x{json_hw[0]} for image id {img['id']!r} in {jf}",
                )
        if image_hw is not None and png_hw is not None and json_hw is None and image_hw != png_hw:
            add(
                png_path,
                f"panoptic PNG size {png_hw[1]}x{png_hw[0]} differs from the image "
                f"{image_path} ({image_hw[1]}x{image_hw[0]})",
            )
        if ids is None:
            continue
        present = {int(v) for v in np.unique(ids) if v != 0}
        listed = [int(s["id"]) for s in ann["segments_info"]]
        extra = sorted(present - set(listed))
        if extra:
            add(
                png_path,
                f"segment ids {extra[:20]} in the PNG are not in segments_info of image id "
                f"{img['id']!r} ({where} of {jf})",
            )
        absent = [s for s in listed if s not in present]
        if absent:
            add(
                png_path,
                f"segments_info ids {absent[:20]} of image id {img['id']!r} ({where} of "
                f"{jf}) have no pixel in this PNG",
            )
    return problems


def check_semantic_split(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    *,
    deep: bool = True,
    label_offset: int = -1,
    num_classes: int = 150,
) -> tuple[list[Problem], set[int] | None]:
    """Every problem of one semantic split (``<stem>.jpg`` images paired with ``<stem>.png`` label
    maps), each naming its file, and with ``deep`` the category ids (class index + 1) present in
    the label maps, for the scenario check (None without ``deep``). ``deep=False``: folders and
    pairing only. Never modifies a file."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    problems = [
        Problem(str(d), f"{what} folder not found")
        for d, what in ((image_dir, "image"), (label_dir, "label"))
        if not d.is_dir()
    ]
    if problems:
        return problems, None
    pairs, no_label, no_image = pair_files(image_dir, label_dir)
    if not pairs and not no_label:
        problems.append(Problem(str(image_dir), "no '*.jpg' image files"))
    problems += [
        Problem(
            str(label_dir / (Path(n).stem + ".png")),
            f"label PNG not found for image {image_dir / n}",
        )
        for n in no_label
    ]
    problems += [
        Problem(
            str(label_dir / n), f"no image '{Path(n).stem}.jpg' in {image_dir} for this label PNG"
        )
        for n in no_image
    ]
    if not deep or not pairs:
        return problems, None
    reader = SemanticDataset(
        image_dir, label_dir, label_offset=label_offset, num_classes=num_classes, skip_unpaired=True
    )
    present: set[int] = set()
    for i in range(len(reader)):
        image_path, label_path = reader.image_path(i), reader.label_path(i)
        image = labels = None
        image = _decoded(problems, image_path, lambda p: read_image_rgb(p, "image"))
        labels = _decoded(problems, label_path, lambda _, i=i: reader.load_label(i))
        if labels is None:
            continue
        if image is not None and image.shape[:2] != labels.shape:
            problems.append(
                Problem(
                    str(label_path),
                    f"label size {labels.shape[1]}x"
                    f"{labels.shape[0]} (WxH) differs from the image {image_path} "
                    f"({image.shape[1]}x{image.shape[0]})",
                )
            )
        present.update(int(v) + 1 for v in np.unique(labels) if v != reader.ignore_index)
    return problems, present


# --------------------------------------------------------------------------------------------------
# a config: both splits and the scenario
# --------------------------------------------------------------------------------------------------
def split_paths(cfg, split: str) -> tuple[Path, Path, Path]:
    """(JSON, PNG folder, image folder) of a split; semantic data: the PNGs are its label maps."""
    d = cfg.data
    return (
        data_path(d.root, getattr(d, f"{split}_json")),
        data_path(d.root, getattr(d, f"{split}_png_dir")),
        data_path(d.root, getattr(d, f"{split}_image_dir")),
    )


def synthetic_pending(cfg) -> bool:
    """The synthetic dataset is generated on first use (`build_datasets`): absent is fine."""
    d = cfg.data
    return d.dataset == "synthetic" and not data_path(d.root, d.val_json).exists()


def _categories_of(json_path: Path) -> tuple[list[dict], list[dict]] | None:
    """(categories, annotations) of a JSON that parsed well enough, else None."""
    try:
        doc = json.loads(Path(json_path).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    cats = [
        c for c in doc.get("categories", []) or [] if isinstance(c, dict) and is_int(c.get("id"))
    ]
    anns = (
        [
            a
            for a in doc.get("annotations", []) or []
            if isinstance(a, dict) and isinstance(a.get("segments_info"), list)
        ]
        if isinstance(doc.get("annotations"), list)
        else []
    )
    return (cats if isinstance(doc.get("categories"), list) else []), anns


def _order_problems(
    cfg, categories: list[dict], present: set[int] | None, file: str, what: str
) -> tuple[list[Problem], Any]:
    """The scenario of the config over ``categories``: class-order ids that are not categories
    and, when ``present`` (category ids in the training split) is known, steps with no training
    image. Returns (problems, scenario or None)."""
    try:
        scenario = scenario_for(cfg, categories)
    except EclipseSegError as e:
        return [Problem(SCENARIO_PROBLEM, str(e))], None
    problems: list[Problem] = []
    known = {c["id"] for c in categories}
    unknown = [c for c in scenario.order if c not in known]
    if unknown:
        problems.append(
            Problem(
                file,
                f"class ids {unknown[:20]} of the class order (scenario "
                f"{scenario.name}) are not categories of this {what} (id "
                f"space mismatch?)",
            )
        )
    for t in range(scenario.num_steps if present is not None else 0):
        classes = [c for c in scenario.classes_of_step(t) if c in known]
        if classes and not present.intersection(classes):
            problems.append(
                Problem(
                    file,
                    f"step {t} of scenario {scenario.name}: no training "
                    f"image contains a (non-crowd) segment of its classes "
                    f"{sorted(classes)[:20]}: its training split is empty",
                )
            )
    return problems, scenario


def _scenario_problems(
    cfg, train_json: Path, val_json: Path, splits: Iterable[str]
) -> list[Problem]:
    parsed = _categories_of(train_json)
    if parsed is None:
        return []  # already reported by the dataset check
    cats, anns = parsed
    present: set[int] = set()
    for ann in anns:
        for seg in ann["segments_info"]:
            if (
                isinstance(seg, dict)
                and is_int(seg.get("category_id"))
                and not seg.get("iscrowd", 0)
            ):
                present.add(seg["category_id"])
    problems, scenario = _order_problems(cfg, cats, present, str(train_json), "JSON")
    if scenario is not None and "val" in splits and val_json != train_json:
        vparsed = _categories_of(val_json)
        if vparsed is not None:
            vids = {c["id"] for c in vparsed[0]}
            vunknown = [c for c in scenario.order if c not in vids]
            if vunknown:
                problems.append(
                    Problem(
                        str(val_json),
                        f"class ids {vunknown[:20]} of the class "
                        f"order (scenario {scenario.name}) are not categories of "
                        f"this JSON",
                    )
                )
    return problems


def _semantic_problems(cfg, *, deep: bool, splits: Sequence[str], scenario: bool) -> list[Problem]:
    try:
        cats = semantic_categories(cfg.data.catalog, cfg.data.num_classes)
    except EclipseSegError as e:
        return [Problem("config data.catalog / data.num_classes", str(e))]
    problems: list[Problem] = []
    present = None
    for split in splits:
        _, labels, images = split_paths(cfg, split)
        found, classes = check_semantic_split(
            images, labels, deep=deep, label_offset=cfg.data.label_offset, num_classes=len(cats)
        )
        problems += found
        present = classes if split == "train" else present
    if scenario:
        problems += _order_problems(
            cfg,
            cats,
            present,
            str(split_paths(cfg, "train")[1]),
            f"semantic dataset (ids 1..{len(cats)})",
        )[0]
    return problems


def check_config_data(
    cfg, *, deep: bool = True, splits: Sequence[str] = ("train", "val"), scenario: bool = True
) -> list[Problem]:
    """Every data problem of a config: each split of ``splits`` (:func:`check_dataset` or
    :func:`check_semantic_split`, paths resolved from ``data.root``) and, with ``scenario``, the
    class order / steps against the training split. A synthetic dataset not generated yet is not
    a problem (it is made on first use)."""
    problems: list[Problem] = []
    if cfg.data.dataset == "semantic":
        return _semantic_problems(cfg, deep=deep, splits=splits, scenario=scenario)
    if cfg.data.dataset not in DATASETS:
        return [
            Problem(
                "config data.dataset",
                f"must be one of {', '.join(DATASETS)}, got {cfg.data.dataset!r}",
            )
        ]
    if synthetic_pending(cfg):
        return problems
    for split in splits:
        problems += check_dataset(*split_paths(cfg, split), deep=deep)
    if scenario:
        problems += _scenario_problems(
            cfg, split_paths(cfg, "train")[0], split_paths(cfg, "val")[0], splits
        )
    return problems


def preflight(
    cfg, *, splits: Sequence[str] = ("train", "val"), scenario: bool = True, limit: int = 30
) -> None:
    """The cheap check (JSON structure, file existence, scenario), before long work starts. A
    scenario that does not fit the dataset raises a ScenarioError listing the valid forms; data
    problems raise one DataError listing them all (at most ``limit`` lines)."""
    problems = check_config_data(cfg, deep=False, splits=splits, scenario=scenario)
    bad_scenario = [p.problem for p in problems if p.file == SCENARIO_PROBLEM]
    if bad_scenario:
        raise ScenarioError(
            f"{bad_scenario[0]}\n(continual.scenario / --scenario: 'B-I' = B base classes then "
            "steps of I, e.g. 9-1 or 100-5; or explicit step sizes summing to the number of "
            "classes, e.g. 6,3,3 or [100,10,5,20])"
        )
    if problems:
        raise DataError(
            "the data of this config has "
            + format_problems(problems, limit)
            + f"\n({root_note(cfg.data.root)})"
            + "\n(run `eclipse-seg check-data CONFIG [key=value ...]` for a full, deep check)"
        )
