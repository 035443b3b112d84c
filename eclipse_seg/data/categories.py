"""Category lists in COCO's format: one ``{"id", "name", "isthing"[, "color"]}`` entry per class.

A *categories file* is a JSON list of such entries, or a JSON object holding them under
``"categories"`` (e.g. a COCO panoptic JSON, whose images and annotations are ignored here). It
fixes, for a dataset of your own, each class's id, name and thing flag; the position of an entry
in the list (1-based) is its *contiguous id*, the number official ECLIPSE configs use for a class
(``CONT.ORDER``).

Example::

    [{"id": 7, "name": "road", "isthing": 0},
     {"id": 3, "name": "sky", "isthing": 0},
     {"id": 42, "name": "car", "isthing": 1},
     {"id": 11, "name": "person", "isthing": 1}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eclipse_seg.data.files import is_int
from eclipse_seg.errors import DataError

__all__ = ["load_categories", "validate_categories"]


def load_categories(source: str | os.PathLike | Sequence[Mapping]) -> list[dict]:
    """The validated categories of a categories file (see the module docstring), or of an
    in-memory list of entries. Entries come back as fresh dicts with ``isthing`` as 0 / 1."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            doc = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: categories file not found") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read the categories file: {e}") from e
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise DataError(f"{path}: not a valid JSON file ({e})") from e
        where = str(path)
    else:
        doc, where = source, "categories"
    if isinstance(doc, dict):
        if "categories" not in doc:
            raise DataError(
                f"{where}: expected a list of categories or an object with a "
                f"'categories' list (e.g. a COCO panoptic JSON); no 'categories' key"
            )
        doc = doc["categories"]
    return validate_categories(doc, where)


def validate_categories(entries: Any, where: str = "categories") -> list[dict]:
    """Check a list of category entries; every problem is a DataError naming ``where`` and the
    field (``categories[2].isthing``)."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise DataError(f"{where}: expected a non-empty list of categories, got {_short(entries)}")
    out: list[dict] = []
    seen: dict[int, int] = {}
    for i, cat in enumerate(entries):
        p = f"{where}: categories[{i}]"
        if not isinstance(cat, Mapping):
            raise DataError(f"{p}: expected an object with id, name, isthing, got {_short(cat)}")
        for key in ("id", "name", "isthing"):
            if key not in cat:
                raise DataError(f"{p}.{key}: missing required field")
        cid, name, thing = cat["id"], cat["name"], cat["isthing"]
        if not is_int(cid):
            raise DataError(f"{p}.id: expected an integer, got {_short(cid)}")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{p}.name: expected a non-empty string, got {_short(name)}")
        if thing not in (0, 1):  # True / False compare equal to 1 / 0
            raise DataError(f"{p}.isthing: expected 0 or 1 (or a boolean), got {_short(thing)}")
        if cid in seen:
            raise DataError(f"{p}.id: duplicate category id {cid} (also categories[{seen[cid]}])")
        seen[cid] = i
        entry = {**cat, "id": int(cid), "name": name, "isthing": int(thing)}
        if "color" in cat:
            col = cat["color"]
            if not (
                isinstance(col, (list, tuple))
                and len(col) == 3
                and all(is_int(c) and 0 <= c <= 255 for c in col)
            ):
                raise DataError(f"{p}.color: expected 3 integers in [0, 255], got {_short(col)}")
            entry["color"] = [int(c) for c in col]
        out.append(entry)
    return out


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."
