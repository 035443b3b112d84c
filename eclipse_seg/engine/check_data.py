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
* :func:`check_data_main` - ``eclipse-seg check-data CONFIG [key=value ...]``.

Checking only reads: it never writes, moves or deletes a file.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eclipse_seg.config import DATASETS
from eclipse_seg.data.coco_panoptic import is_file, is_int, read_image_rgb
from eclipse_seg.data.panoptic_ids import MAX_ID
from eclipse_seg.data.paths import data_path, root_note
from eclipse_seg.errors import ConfigError, DataError, EclipseSegError

__all__ = ["Problem", "check_config_data", "check_data_main", "check_dataset",
           "check_semantic_split", "format_problems", "preflight"]


@dataclass(frozen=True)
class Problem:
    """One problem of the data: the file it is in and what is wrong."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


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
def _type(v: Any) -> str:
    return type(v).__name__


def _hashable_id(v: Any) -> bool:
    return is_int(v) or isinstance(v, str)


class _Scan:
    """The collected problems and the usable part of one dataset's JSON."""

    def __init__(self, json_path: Path):
        self.json_path = json_path
        self.jf = str(json_path)
        self.problems: list[Problem] = []
        self.categories: dict[int, dict] = {}
        self.images: dict[Any, dict] = {}  # image id -> image entry (with a usable id)
        self.annotations: list[tuple[str, dict]] = []  # (json path of the entry, annotation)

    def add(self, file: str | os.PathLike, problem: str) -> None:
        self.problems.append(Problem(str(file), problem))

    def bad(self, path: str, problem: str) -> None:
        self.add(self.jf, f"{path}: {problem}")

    def field(self, obj: dict, path: str, key: str, ok, expected: str) -> tuple[bool, Any]:
        if key not in obj:
            self.bad(f"{path}.{key}", "missing required field")
            return False, None
        v = obj[key]
        if not ok(v):
            self.bad(f"{path}.{key}", f"expected {expected}, got {_short(v)}")
            return False, v
        return True, v


def _short(v: Any, n: int = 80) -> str:
    try:
        r = repr(v)
    except Exception:  # noqa: BLE001 - repr of a JSON value cannot really fail
        r = f"<{_type(v)}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _read_doc(scan: _Scan) -> Any | None:
    path = scan.json_path
    if not is_file(path):
        scan.add(path, "panoptic JSON file not found")
        return None
    try:
        raw = path.read_bytes()
    except OSError as e:
        scan.add(path, f"cannot read panoptic JSON: {e}")
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        scan.add(path, f"not UTF-8 text ({e})")
    except json.JSONDecodeError as e:
        scan.add(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except (ValueError, RecursionError) as e:  # huge integers, absurd nesting
        scan.add(path, f"invalid JSON: {type(e).__name__}: {e}")
    return None


def _scan_structure(scan: _Scan, doc: Any) -> None:
    """The reader's rules (``coco_panoptic._Index``), collecting every violation."""
    if not isinstance(doc, dict):
        scan.bad("(top level)", f"expected a JSON object, got {_type(doc)}")
        return
    lists = {}
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            scan.bad(key, "missing required field")
        elif not isinstance(doc[key], list):
            scan.bad(key, f"expected a list, got {_type(doc[key])}")
        else:
            lists[key] = doc[key]

    for i, cat in enumerate(lists.get("categories", [])):
        p = f"categories[{i}]"
        if not isinstance(cat, dict):
            scan.bad(p, f"expected a JSON object, got {_type(cat)}")
            continue
        ok, cid = scan.field(cat, p, "id", is_int, "an integer")
        scan.field(cat, p, "name", lambda v: isinstance(v, str), "a string")
        scan.field(cat, p, "isthing", lambda v: v in (0, 1), "0 or 1 (or a boolean)")
        if "color" in cat:
            col = cat["color"]
            if not (isinstance(col, list) and len(col) == 3
                    and all(is_int(c) and 0 <= c <= 255 for c in col)):
                scan.bad(f"{p}.color", f"expected a list of 3 integers in [0, 255], got {_short(col)}")
        if ok:
            if cid in scan.categories:
                scan.bad(f"{p}.id", f"duplicate category id {cid}")
            else:
                scan.categories[cid] = cat

    for i, img in enumerate(lists.get("images", [])):
        p = f"images[{i}]"
        if not isinstance(img, dict):
            scan.bad(p, f"expected a JSON object, got {_type(img)}")
            continue
        ok, iid = scan.field(img, p, "id", _hashable_id, "an integer or string")
        scan.field(img, p, "file_name", lambda v: isinstance(v, str) and v != "",
                   "a non-empty string")
        for k in ("height", "width"):
            scan.field(img, p, k, lambda v: is_int(v) and v > 0, "a positive integer")
        if ok:
            if iid in scan.images:
                scan.bad(f"{p}.id", f"duplicate image id {iid!r}")
            else:
                scan.images[iid] = img

    seen: set = set()
    for i, ann in enumerate(lists.get("annotations", [])):
        p = f"annotations[{i}]"
        if not isinstance(ann, dict):
            scan.bad(p, f"expected a JSON object, got {_type(ann)}")
            continue
        ok_id, iid = scan.field(ann, p, "image_id", _hashable_id, "an integer or string")
        ok_fn, _ = scan.field(ann, p, "file_name", lambda v: isinstance(v, str) and v != "",
                              "a non-empty string")
        ok_segs, segs = scan.field(ann, p, "segments_info", lambda v: isinstance(v, list), "a list")
        if ok_id:
            if iid not in scan.images:
                scan.bad(f"{p}.image_id", f"image id {iid!r} is not in 'images'")
                ok_id = False
            elif iid in seen:
                scan.bad(f"{p}.image_id", f"second annotation for image id {iid!r}")
                ok_id = False
            seen.add(iid)
        seg_ok = True
        if ok_segs:
            seg_ids: set[int] = set()
            for j, seg in enumerate(segs):
                q = f"{p}.segments_info[{j}]"
                if not isinstance(seg, dict):
                    scan.bad(q, f"expected a JSON object, got {_type(seg)}")
                    seg_ok = False
                    continue
                ok_s, sid = scan.field(seg, q, "id", lambda v: is_int(v) and 0 < v <= MAX_ID,
                                       f"an integer in [1, {MAX_ID}]")
                ok_c, cid = scan.field(seg, q, "category_id", is_int, "an integer")
                seg_ok &= ok_s and ok_c
                if "iscrowd" in seg and seg["iscrowd"] not in (0, 1):
                    scan.bad(f"{q}.iscrowd", f"expected 0 or 1, got {_short(seg['iscrowd'])}")
                if ok_c and "categories" in lists and cid not in scan.categories:
                    scan.bad(f"{q}.category_id", f"unknown category id {cid} (not in 'categories')")
                if ok_s:
                    if sid in seg_ids:
                        scan.bad(f"{q}.id", f"duplicate segment id {sid} in this annotation")
                        seg_ok = False
                    seg_ids.add(sid)
        if ok_id and ok_fn and ok_segs and seg_ok:
            scan.annotations.append((p, ann))


def _size_ok(img: dict) -> bool:
    return all(is_int(img.get(k)) and img[k] > 0 for k in ("height", "width"))


def _decode_image(scan: _Scan, path: Path) -> tuple[int, int] | None:
    from eclipse_seg.data.coco_panoptic import read_image_rgb

    try:
        arr = read_image_rgb(path, "image")
    except DataError as e:
        scan.add(path, _strip_path(str(e), path))
        return None
    return arr.shape[0], arr.shape[1]


def _decode_png(scan: _Scan, path: Path) -> np.ndarray | None:
    from eclipse_seg.data.coco_panoptic import _read_panoptic_png

    try:
        return _read_panoptic_png(path)
    except DataError as e:
        scan.add(path, _strip_path(str(e), path))
        return None


def _strip_path(msg: str, path: Path) -> str:
    prefix = f"{path}: "
    return msg.removeprefix(prefix)


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
    scan = _Scan(Path(json_path))
    png_dir, image_dir = Path(png_dir), Path(image_dir)
    doc = _read_doc(scan)
    if doc is None:
        return scan.problems
    _scan_structure(scan, doc)
    if not scan.problems:
        # belt and braces: the reader must accept what this scan accepts
        from eclipse_seg.data.coco_panoptic import _Index

        try:
            _Index(doc, scan.json_path)
        except DataError as e:
            scan.add(scan.json_path, _strip_path(str(e), scan.json_path))
    for where, ann in scan.annotations:
        img = scan.images[ann["image_id"]]
        image_path = None
        if isinstance(img.get("file_name"), str) and img["file_name"]:
            image_path = image_dir / img["file_name"]
            if not is_file(image_path):
                scan.add(image_path, f"image file not found (images entry of image id "
                                     f"{img['id']!r} in {scan.jf})")
                image_path = None
        png_path = png_dir / ann["file_name"]
        if not is_file(png_path):
            scan.add(png_path, f"panoptic PNG file not found ({where} of {scan.jf})")
            png_path = None
        if not deep:
            continue
        json_hw = (img["height"], img["width"]) if _size_ok(img) else None
        image_hw = _decode_image(scan, image_path) if image_path is not None else None
        ids = _decode_png(scan, png_path) if png_path is not None else None
        png_hw = ids.shape if ids is not None else None
        for path, kind, hw in ((image_path, "image", image_hw), (png_path, "panoptic PNG", png_hw)):
            if hw is not None and json_hw is not None and tuple(hw) != json_hw:
                scan.add(path, f"{kind} size {hw[1]}x{hw[0]} (WxH) differs from the JSON's "
                               f"{json_hw[1]}x{json_hw[0]} for image id {img['id']!r} in {scan.jf}")
        if (image_hw is not None and png_hw is not None and json_hw is None
                and tuple(image_hw) != tuple(png_hw)):
            scan.add(png_path, f"panoptic PNG size {png_hw[1]}x{png_hw[0]} differs from the image "
                               f"{image_path} ({image_hw[1]}x{image_hw[0]})")
        if ids is None:
            continue
        present = {int(v) for v in np.unique(ids) if v != 0}
        listed = [int(s["id"]) for s in ann["segments_info"]]
        extra = sorted(present - set(listed))
        if extra:
            scan.add(png_path, f"segment ids {extra[:20]} in the PNG are not in segments_info of "
                               f"image id {img['id']!r} ({where} of {scan.jf})")
        absent = [s for s in listed if s not in present]
        if absent:
            scan.add(png_path, f"segments_info ids {absent[:20]} of image id {img['id']!r} "
                               f"({where} of {scan.jf}) have no pixel in this PNG")
    return scan.problems


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
    from eclipse_seg.data.semantic import SemanticDataset, pair_files

    image_dir, label_dir = Path(image_dir), Path(label_dir)
    problems = [Problem(str(d), f"{what} folder not found")
                for d, what in ((image_dir, "image"), (label_dir, "label")) if not d.is_dir()]
    if problems:
        return problems, None
    pairs, no_label, no_image = pair_files(image_dir, label_dir)
    if not pairs and not no_label:
        problems.append(Problem(str(image_dir), "no '*.jpg' image files"))
    problems += [Problem(str(label_dir / (Path(n).stem + ".png")),
                         f"label PNG not found for image {image_dir / n}") for n in no_label]
    problems += [Problem(str(label_dir / n), f"no image '{Path(n).stem}.jpg' in {image_dir} for "
                                             "this label PNG") for n in no_image]
    if not deep or not pairs:
        return problems, None
    reader = SemanticDataset(image_dir, label_dir, label_offset=label_offset,
                             num_classes=num_classes, skip_unpaired=True)
    present: set[int] = set()
    for i in range(len(reader)):
        image_path, label_path = reader.image_path(i), reader.label_path(i)
        image = labels = None
        try:
            image = read_image_rgb(image_path, "image")
        except DataError as e:
            problems.append(Problem(str(image_path), _strip_path(str(e), image_path)))
        try:
            labels = reader.load_label(i)
        except DataError as e:
            problems.append(Problem(str(label_path), _strip_path(str(e), label_path)))
            continue
        if image is not None and image.shape[:2] != labels.shape:
            problems.append(Problem(str(label_path), f"label size {labels.shape[1]}x"
                                    f"{labels.shape[0]} (WxH) differs from the image {image_path} "
                                    f"({image.shape[1]}x{image.shape[0]})"))
        present.update(int(v) + 1 for v in np.unique(labels) if v != reader.ignore_index)
    return problems, present


# --------------------------------------------------------------------------------------------------
# a config: both splits and the scenario
# --------------------------------------------------------------------------------------------------
def _split_paths(cfg, split: str) -> tuple[Path, Path, Path]:
    """(JSON, PNG folder, image folder) of a split; semantic data: the PNGs are its label maps."""
    d = cfg.data
    return (data_path(d.root, getattr(d, f"{split}_json")),
            data_path(d.root, getattr(d, f"{split}_png_dir")),
            data_path(d.root, getattr(d, f"{split}_image_dir")))


def _synthetic_pending(cfg) -> bool:
    """The synthetic dataset is generated on first use (runner.build_datasets): absent is fine."""
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
    cats = [c for c in doc.get("categories", []) or [] if isinstance(c, dict) and is_int(c.get("id"))]
    anns = [a for a in doc.get("annotations", []) or [] if isinstance(a, dict)
            and isinstance(a.get("segments_info"), list)] if isinstance(doc.get("annotations"), list) else []
    return (cats if isinstance(doc.get("categories"), list) else []), anns


def _order_problems(cfg, categories: list[dict], present: set[int] | None, file: str,
                    what: str) -> tuple[list[Problem], Any]:
    """The scenario of the config over ``categories``: class-order ids that are not categories
    and, when ``present`` (category ids in the training split) is known, steps with no training
    image. Returns (problems, scenario or None)."""
    from eclipse_seg.engine.runner import class_order
    from eclipse_seg.scenarios import parse_scenario

    where = "config continual.scenario / continual.order"
    try:
        order = class_order(cfg, categories)
        scenario = parse_scenario(cfg.continual.scenario or str(len(order)), order)
    except EclipseSegError as e:
        return [Problem(where, str(e))], None
    problems: list[Problem] = []
    known = {c["id"] for c in categories}
    unknown = [c for c in scenario.order if c not in known]
    if unknown:
        problems.append(Problem(file, f"class ids {unknown[:20]} of the class order (scenario "
                                      f"{scenario.name}) are not categories of this {what} (id "
                                      f"space mismatch?)"))
    for t in range(scenario.num_steps if present is not None else 0):
        classes = [c for c in scenario.classes_of_step(t) if c in known]
        if classes and not present.intersection(classes):
            problems.append(Problem(file, f"step {t} of scenario {scenario.name}: no training "
                                          f"image contains a (non-crowd) segment of its classes "
                                          f"{sorted(classes)[:20]}: its training split is empty"))
    return problems, scenario


def _scenario_problems(cfg, train_json: Path, val_json: Path, splits: Iterable[str]) -> list[Problem]:
    parsed = _categories_of(train_json)
    if parsed is None:
        return []  # already reported by the dataset check
    cats, anns = parsed
    present: set[int] = set()
    for ann in anns:
        for seg in ann["segments_info"]:
            if isinstance(seg, dict) and is_int(seg.get("category_id")) and not seg.get("iscrowd", 0):
                present.add(seg["category_id"])
    problems, scenario = _order_problems(cfg, cats, present, str(train_json), "JSON")
    if scenario is not None and "val" in splits and val_json != train_json:
        vparsed = _categories_of(val_json)
        if vparsed is not None:
            vids = {c["id"] for c in vparsed[0]}
            vunknown = [c for c in scenario.order if c not in vids]
            if vunknown:
                problems.append(Problem(str(val_json), f"class ids {vunknown[:20]} of the class "
                                        f"order (scenario {scenario.name}) are not categories of "
                                        f"this JSON"))
    return problems


def _semantic_problems(cfg, *, deep: bool, splits: Sequence[str], scenario: bool) -> list[Problem]:
    from eclipse_seg.data.semantic import semantic_categories

    try:
        cats = semantic_categories(cfg.data.catalog, cfg.data.num_classes)
    except EclipseSegError as e:
        return [Problem("config data.catalog / data.num_classes", str(e))]
    problems: list[Problem] = []
    present = None
    for split in splits:
        _, labels, images = _split_paths(cfg, split)
        found, classes = check_semantic_split(images, labels, deep=deep,
                                              label_offset=cfg.data.label_offset,
                                              num_classes=len(cats))
        problems += found
        present = classes if split == "train" else present
    if scenario:
        problems += _order_problems(cfg, cats, present, str(_split_paths(cfg, "train")[1]),
                                    f"semantic dataset (ids 1..{len(cats)})")[0]
    return problems


def check_config_data(cfg, *, deep: bool = True, splits: Sequence[str] = ("train", "val"),
                      scenario: bool = True) -> list[Problem]:
    """Every data problem of a config: each split of ``splits`` (:func:`check_dataset` or
    :func:`check_semantic_split`, paths resolved from ``data.root``) and, with ``scenario``, the
    class order / steps against the training split. A synthetic dataset not generated yet is not
    a problem (it is made on first use)."""
    problems: list[Problem] = []
    if cfg.data.dataset == "semantic":
        return _semantic_problems(cfg, deep=deep, splits=splits, scenario=scenario)
    if cfg.data.dataset not in DATASETS:
        return [Problem("config data.dataset", f"must be one of {', '.join(DATASETS)}, got "
                                               f"{cfg.data.dataset!r}")]
    if _synthetic_pending(cfg):
        return problems
    for split in splits:
        problems += check_dataset(*_split_paths(cfg, split), deep=deep)
    if scenario:
        problems += _scenario_problems(cfg, _split_paths(cfg, "train")[0],
                                       _split_paths(cfg, "val")[0], splits)
    return problems


def preflight(cfg, *, splits: Sequence[str] = ("train", "val"), scenario: bool = True,
              limit: int = 30) -> None:
    """The cheap check (JSON structure, file existence, scenario): raises one DataError listing
    every problem found (at most ``limit`` lines). Call before long work starts."""
    problems = check_config_data(cfg, deep=False, splits=splits, scenario=scenario)
    if problems:
        raise DataError(
            "the data of this config has " + format_problems(problems, limit)
            + f"\n({root_note(cfg.data.root)})"
            + "\n(run `eclipse-seg check-data CONFIG [key=value ...]` for a full, deep check)")


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def check_data_main(argv: list[str] | None = None) -> int:
    """``eclipse-seg check-data CONFIG [key=value ...] [--quick]``: 0 if clean, 1 if not."""
    from eclipse_seg.cli import _resolve_config
    from eclipse_seg.config import load_config

    parser = argparse.ArgumentParser(
        prog="eclipse-seg check-data",
        description="Check both splits of a config's dataset (and its scenario) and report every "
                    "problem at once. Reads only; never modifies a file.")
    parser.add_argument("config", help="YAML config path or builtin name")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/ade")
    parser.add_argument("--quick", action="store_true",
                        help="JSON structure and file existence only (no image decoding)")
    parser.add_argument("--max-problems", type=int, default=200,
                        help="print at most this many problems (default 200; 0 = all)")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} must look like key=value")
    cfg = load_config(_resolve_config(args.config), args.overrides)
    if _synthetic_pending(cfg):
        print(f"synthetic dataset not generated yet under {cfg.data.root}: it is generated on "
              "first use; nothing to check")
        return 0
    problems = check_config_data(cfg, deep=not args.quick)
    print(root_note(cfg.data.root))
    for split in ("train", "val"):
        j, p, i = _split_paths(cfg, split)
        print(f"{split}: images {i}  labels {p}" if cfg.data.dataset == "semantic"
              else f"{split}: json {j}  png {p}  images {i}")
    print(format_problems(problems, args.max_problems or None))
    return 0 if not problems else 1
