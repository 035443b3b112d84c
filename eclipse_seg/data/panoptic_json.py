"""The COCO-panoptic JSON schema, checked in one place for two callers.

The dataset reader wants the first problem as a :class:`DataError` (fail fast); ``check-data``
wants every problem of a file at once. Both walk the same rules here: ``problems=None`` raises at
the first violation, a list collects them all (each naming the file and the JSON path, e.g.
``annotations[3].segments_info[1].category_id``) and the walk keeps whatever is usable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eclipse_seg.data.files import is_file, is_int
from eclipse_seg.data.panoptic_ids import MAX_ID
from eclipse_seg.errors import DataError

__all__ = ["PanopticIndex", "Problem", "index_panoptic_json", "read_panoptic_json"]


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset: the file it is in and what is wrong."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


@dataclass
class PanopticIndex:
    """The usable part of a panoptic JSON: categories by id and the annotated images in
    ``annotations`` order, as ``(image entry, annotation, JSON path of the annotation)``."""

    categories: list[dict] = field(default_factory=list)
    category_by_id: dict[int, dict] = field(default_factory=dict)
    images: dict[Any, dict] = field(default_factory=dict)
    entries: list[tuple[dict, dict, str]] = field(default_factory=list)


class _Report:
    """Raise at the first problem (``problems`` is None) or collect them all."""

    def __init__(self, json_path: Path, problems: list[Problem] | None):
        self.json_path = json_path
        self.problems = problems

    def file(self, problem: str) -> None:
        if self.problems is None:
            raise DataError(f"{self.json_path}: {problem}")
        self.problems.append(Problem(str(self.json_path), problem))

    def field(self, where: str, problem: str) -> None:
        self.file(f"{where}: {problem}")

    def check(self, obj: dict, where: str, key: str, ok, expected: str) -> tuple[bool, Any]:
        """(valid, value) of ``obj[key]``, reporting a missing key or a value ``ok`` rejects."""
        if key not in obj:
            self.field(f"{where}.{key}", "missing required field")
            return False, None
        value = obj[key]
        if not ok(value):
            self.field(f"{where}.{key}", f"expected {expected}, got {_short(value)}")
            return False, value
        return True, value

    def is_object(self, obj: Any, where: str) -> bool:
        if isinstance(obj, dict):
            return True
        self.field(where, f"expected a JSON object, got {type(obj).__name__}")
        return False


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _id(v: Any) -> bool:
    return is_int(v) or isinstance(v, str)


def _name(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def read_panoptic_json(path: str | os.PathLike, problems: list[Problem] | None = None) -> Any:
    """The parsed JSON document (None when it cannot be read and ``problems`` collects)."""
    path = Path(path)
    report = _Report(path, problems)
    if not is_file(path):
        report.file("panoptic JSON file not found")
        return None
    try:
        raw = path.read_bytes()
    except OSError as e:
        report.file(f"cannot read panoptic JSON: {e}")
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        report.file(f"not UTF-8 text ({e})")
    except json.JSONDecodeError as e:
        report.file(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except (ValueError, RecursionError) as e:  # integers over 4300 digits, absurd nesting
        report.file(f"invalid JSON ({type(e).__name__}: {e})")
    return None


def index_panoptic_json(
    doc: Any, json_path: str | os.PathLike, problems: list[Problem] | None = None
) -> PanopticIndex:
    """Check ``doc`` against the schema and index it (see the module docstring for the modes)."""
    report = _Report(Path(json_path), problems)
    index = PanopticIndex()
    if not report.is_object(doc, "(top level)"):
        return index
    lists = {}
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            report.field(key, "missing required field")
        elif not isinstance(doc[key], list):
            report.field(key, f"expected a list, got {type(doc[key]).__name__}")
        else:
            lists[key] = doc[key]
    _categories(report, lists.get("categories", []), index)
    _images(report, lists.get("images", []), index)
    _annotations(report, lists.get("annotations", []), index, "categories" in lists)
    return index


def _categories(report: _Report, categories: list, index: PanopticIndex) -> None:
    for i, cat in enumerate(categories):
        p = f"categories[{i}]"
        if not report.is_object(cat, p):
            continue
        ok, cid = report.check(cat, p, "id", is_int, "an integer")
        report.check(cat, p, "name", lambda v: isinstance(v, str), "a string")
        report.check(cat, p, "isthing", lambda v: v in (0, 1), "0 or 1 (or a boolean)")
        if "color" in cat:
            col = cat["color"]
            if not (
                isinstance(col, list)
                and len(col) == 3
                and all(is_int(c) and 0 <= c <= 255 for c in col)
            ):
                report.field(
                    f"{p}.color", f"expected a list of 3 integers in [0, 255], got {_short(col)}"
                )
        if not ok:
            continue
        if cid in index.category_by_id:
            report.field(f"{p}.id", f"duplicate category id {cid}")
            continue
        index.categories.append(cat)
        index.category_by_id[cid] = cat


def _images(report: _Report, images: list, index: PanopticIndex) -> None:
    for i, img in enumerate(images):
        p = f"images[{i}]"
        if not report.is_object(img, p):
            continue
        ok, iid = report.check(img, p, "id", _id, "an integer or string")
        report.check(img, p, "file_name", _name, "a non-empty string")
        for k in ("height", "width"):
            report.check(img, p, k, lambda v: is_int(v) and v > 0, "a positive integer")
        if not ok:
            continue
        if iid in index.images:
            report.field(f"{p}.id", f"duplicate image id {iid!r}")
        else:
            index.images[iid] = img


def _annotations(
    report: _Report, annotations: list, index: PanopticIndex, have_categories: bool
) -> None:
    seen: set = set()
    for i, ann in enumerate(annotations):
        p = f"annotations[{i}]"
        if not report.is_object(ann, p):
            continue
        ok_id, iid = report.check(ann, p, "image_id", _id, "an integer or string")
        ok_name, _ = report.check(ann, p, "file_name", _name, "a non-empty string")
        ok_segs, segs = report.check(
            ann, p, "segments_info", lambda v: isinstance(v, list), "a list"
        )
        if ok_id:
            if iid not in index.images:
                report.field(f"{p}.image_id", f"image id {iid!r} is not in 'images'")
                ok_id = False
            elif iid in seen:
                report.field(f"{p}.image_id", f"second annotation for image id {iid!r}")
                ok_id = False
            seen.add(iid)
        ok_segments = ok_segs and _segments(report, segs, p, index, have_categories)
        if ok_id and ok_name and ok_segments:
            index.entries.append((index.images[iid], ann, p))


def _segments(
    report: _Report, segments: list, where: str, index: PanopticIndex, have_categories: bool
) -> bool:
    ok_all = True
    seg_ids: set[int] = set()
    for j, seg in enumerate(segments):
        q = f"{where}.segments_info[{j}]"
        if not report.is_object(seg, q):
            ok_all = False
            continue
        ok_s, sid = report.check(
            seg, q, "id", lambda v: is_int(v) and 0 < v <= MAX_ID, f"an integer in [1, {MAX_ID}]"
        )
        ok_c, cid = report.check(seg, q, "category_id", is_int, "an integer")
        ok_all &= ok_s and ok_c
        if "iscrowd" in seg and seg["iscrowd"] not in (0, 1):
            report.field(f"{q}.iscrowd", f"expected 0 or 1, got {_short(seg['iscrowd'])}")
        if ok_c and have_categories and cid not in index.category_by_id:
            report.field(f"{q}.category_id", f"unknown category id {cid} (not in 'categories')")
        if ok_s:
            if sid in seg_ids:
                report.field(f"{q}.id", f"duplicate segment id {sid} in this annotation")
                ok_all = False
            seg_ids.add(sid)
    return ok_all
