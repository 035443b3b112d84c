"""Panoptic quality (PQ / SQ / RQ) with the exact semantics of COCO panopticapi ``pq_compute``.

Why a re-implementation: panopticapi is not on PyPI, loops over segments in Python and cannot
report class groups (old / new classes of a continual scenario).  This module gives the same
numbers (a vectorised per-image step, streaming accumulation, optional process pool) and turns
every data problem into a :class:`~eclipse_seg.errors.DataError` that names the file.

Semantics (identical to panopticapi ``evaluation.py``):

* a PNG encodes segment id ``R + 256*G + 256**2*B``; id 0 is VOID;
* a gt / pred pair matches when both have the same category, the gt is not crowd and
  ``IoU > 0.5`` (strict), with ``IoU = inter / (pred_area + gt_area - inter - void_inter)``
  where ``void_inter`` is the part of the prediction lying on gt VOID;
* every unmatched non-crowd gt segment is a false negative; crowd gt segments are never
  matched nor counted;
* an unmatched prediction is a false positive unless more than half of it lies on gt VOID plus
  the crowd segment of its own category (panopticapi keeps the *last* crowd segment of a
  category listed in ``segments_info``), in which case it is ignored;
* per class ``PQ = iou_sum / (tp + fp/2 + fn/2)``, ``SQ = iou_sum / tp`` (0 if ``tp == 0``),
  ``RQ = tp / (tp + fp/2 + fn/2)``; classes with ``tp + fp + fn == 0`` are left out of every
  average (All / Things / Stuff / groups) and ``n`` counts the classes averaged.

Deliberate differences from panopticapi, all on inconsistent data only: segment areas are pixel
counts of the PNGs (panopticapi reads the gt ``area`` field of the JSON); a gt PNG id missing
from ``segments_info``, an unknown gt category, a duplicate segment id, a listed id 0 or a
duplicate ``image_id`` raise :class:`DataError` instead of being silently tolerated; an average
over zero classes is 0.0 instead of a ``ZeroDivisionError``.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eclipse_seg.data.files import is_file
from eclipse_seg.data.panoptic_ids import read_panoptic_png
from eclipse_seg.errors import ConfigError, DataError

__all__ = [
    "OFFSET",
    "VOID",
    "PQStat",
    "PQStatCat",
    "PanopticEvaluator",
    "format_pq_table",
    "parse_class_groups",
    "pq_compute",
    "pq_stat_single",
]

VOID = 0
OFFSET = 256**3  # ids are < 256**3, so gt * OFFSET + pred packs a (gt, pred) pair in a uint64


# ----------------------------------------------------------------------------------------------
# accumulators


@dataclass
class PQStatCat:
    """Counts of one category: true / false positives, false negatives, sum of matched IoUs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


class PQStat:
    """Per-category PQ accumulators, keyed by category id.

    Why a dict of small records: images touch a handful of categories, so merging a per-image
    stat into the running total is O(categories in the image).  ``+=`` merges two stats (for a
    process pool or a distributed gather); ``to_state`` / ``from_state`` give plain dicts of
    Python numbers that pickle or JSON-encode anywhere.
    """

    def __init__(self) -> None:
        self.per_cat: dict[int, PQStatCat] = {}

    def __getitem__(self, category_id: int) -> PQStatCat:
        cat = self.per_cat.get(category_id)
        if cat is None:
            cat = self.per_cat[category_id] = PQStatCat()
        return cat

    def __iadd__(self, other: PQStat) -> PQStat:
        if not isinstance(other, PQStat):
            return NotImplemented
        for category_id, o in other.per_cat.items():
            s = self[category_id]
            s.tp += o.tp
            s.fp += o.fp
            s.fn += o.fn
            s.iou += o.iou
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PQStat):
            return NotImplemented
        return self.to_state() == other.to_state()

    def __repr__(self) -> str:
        return f"PQStat({self.to_state()['per_cat']})"

    def to_state(self) -> dict[str, Any]:
        """``{"per_cat": {"<id>": {"tp", "fp", "fn", "iou"}}}`` with Python ints / floats."""
        return {
            "per_cat": {
                str(k): {"tp": int(v.tp), "fp": int(v.fp), "fn": int(v.fn), "iou": float(v.iou)}
                for k, v in sorted(self.per_cat.items())
            }
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PQStat:
        """Inverse of :meth:`to_state`."""
        stat = cls()
        try:
            for k, v in state["per_cat"].items():
                stat.per_cat[int(k)] = PQStatCat(
                    tp=int(v["tp"]), fp=int(v["fp"]), fn=int(v["fn"]), iou=float(v["iou"])
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"malformed PQStat state: {exc!r}") from exc
        return stat


# ----------------------------------------------------------------------------------------------
# one image


def _where(where: str) -> str:
    return f"{where}: " if where else ""


def _segment_table(
    segments: Sequence[Mapping[str, Any]], kind: str, where: str, *, with_crowd: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """segments_info -> (ids, category ids, iscrowd) int64 arrays of shape (S,)."""
    if not isinstance(segments, (list, tuple)):
        raise DataError(
            f"{_where(where)}{kind} segments_info must be a list, got {type(segments).__name__}"
        )
    n = len(segments)
    ids = np.empty(n, dtype=np.int64)
    cats = np.empty(n, dtype=np.int64)
    crowd = np.zeros(n, dtype=bool)
    for i, seg in enumerate(segments):
        try:
            ids[i] = int(seg["id"])
            cats[i] = int(seg["category_id"])
            if with_crowd:
                crowd[i] = int(seg.get("iscrowd", 0)) == 1
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise DataError(
                f"{_where(where)}{kind} segments_info[{i}] is malformed (needs integer 'id' and "
                f"'category_id'): {seg!r}"
            ) from exc
    if n:
        if ids.min() <= 0 or ids.max() >= OFFSET:
            bad = int(ids[(ids <= 0) | (ids >= OFFSET)][0])
            raise DataError(
                f"{_where(where)}{kind} segments_info lists segment id {bad}; ids must lie in "
                f"[1, {OFFSET - 1}] (0 is VOID)"
            )
        uniq, cnt = np.unique(ids, return_counts=True)
        if (cnt > 1).any():
            raise DataError(
                f"{_where(where)}{kind} segments_info lists segment id {int(uniq[cnt > 1][0])} "
                "more than once"
            )
    return ids, cats, crowd


def _check_id_map(arr: np.ndarray, kind: str, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise DataError(f"{_where(where)}{kind} id map must be 2-D (H, W), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise DataError(f"{_where(where)}{kind} id map must hold integers, got dtype {a.dtype}")
    if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
        raise DataError(f"{_where(where)}{kind} id map holds negative ids")
    return a.astype(np.uint64, copy=False)


def _lookup(sorted_ids: np.ndarray, order: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index into the unsorted table for each query id (all queries must be present)."""
    return order[np.searchsorted(sorted_ids, query)]


def pq_stat_single(
    gt_ids: np.ndarray,
    gt_segments: list[dict],
    pred_ids: np.ndarray,
    pred_segments: list[dict],
    categories: Mapping[int, Mapping[str, Any]],
    *,
    where: str = "",
) -> PQStat:
    """PQ counts of one image.

    ``gt_ids`` / ``pred_ids``: (H, W) non-negative integer segment-id maps (0 = VOID), already
    decoded from the PNGs.  ``gt_segments`` / ``pred_segments``: the ``segments_info`` lists
    (dicts with ``id``, ``category_id`` and, for gt, optional ``iscrowd``; ``area`` is ignored:
    areas are pixel counts).  ``categories``: category id -> category dict.  ``where`` (e.g.
    the file name) prefixes every error message.

    Why vectorised: a single ``np.unique`` over the packed ``gt * OFFSET + pred`` pixel pairs
    gives every intersection; areas, void overlaps, matches, FN and FP are then array ops over
    the (few) distinct pairs.  Raises :class:`DataError` on inconsistent input.
    """
    gt = _check_id_map(gt_ids, "gt", where)
    pred = _check_id_map(pred_ids, "pred", where)
    if gt.shape != pred.shape:
        raise DataError(
            f"{_where(where)}gt and pred id maps differ in size: gt {gt.shape} vs pred {pred.shape}"
        )
    if gt.size and (gt.max() >= OFFSET or pred.max() >= OFFSET):
        raise DataError(f"{_where(where)}id map holds ids >= {OFFSET}")
    g_ids, g_cat, g_crowd = _segment_table(gt_segments, "gt", where, with_crowd=True)
    p_ids, p_cat, _ = _segment_table(pred_segments, "pred", where, with_crowd=False)

    for kind, cats_arr, ids_arr in (("pred", p_cat, p_ids), ("gt", g_cat, g_ids)):
        for c, sid in zip(cats_arr.tolist(), ids_arr.tolist()):
            if c not in categories:
                raise DataError(f"{_where(where)}{kind} segment {sid} has unknown category_id {c}")

    # all distinct (gt, pred) pixel pairs with their pixel counts, sorted by (gt, pred)
    keys, inter = np.unique(gt * np.uint64(OFFSET) + pred, return_counts=True)
    pg = (keys // np.uint64(OFFSET)).astype(np.int64)
    pp = (keys % np.uint64(OFFSET)).astype(np.int64)
    inter = inter.astype(np.int64)

    g_order = np.argsort(g_ids, kind="stable")
    g_sorted = g_ids[g_order]
    p_order = np.argsort(p_ids, kind="stable")
    p_sorted = p_ids[p_order]

    # sanity checks: PNG ids <-> segments_info
    pred_present = np.unique(pp)
    pred_present = pred_present[pred_present != VOID]
    missing = pred_present[~np.isin(pred_present, p_sorted)]
    if missing.size:
        raise DataError(
            f"{_where(where)}segment with id {int(missing[0])} is present in the pred PNG but "
            "not listed in the pred segments_info"
        )
    absent = p_ids[~np.isin(p_ids, pred_present)]
    if absent.size:
        raise DataError(
            f"{_where(where)}pred segment {int(absent[0])} is listed in segments_info but "
            "absent from the pred PNG"
        )
    gt_present = np.unique(pg)
    gt_present = gt_present[gt_present != VOID]
    missing = gt_present[~np.isin(gt_present, g_sorted)]
    if missing.size:
        raise DataError(
            f"{_where(where)}segment with id {int(missing[0])} is present in the gt PNG but "
            "not listed in the gt segments_info"
        )

    n_g, n_p = len(g_ids), len(p_ids)
    has_g = pg != VOID
    has_p = pp != VOID
    gi = np.full(len(keys), -1, dtype=np.int64)
    pi = np.full(len(keys), -1, dtype=np.int64)
    gi[has_g] = _lookup(g_sorted, g_order, pg[has_g])
    pi[has_p] = _lookup(p_sorted, p_order, pp[has_p])

    g_area = np.zeros(n_g, dtype=np.int64)
    np.add.at(g_area, gi[has_g], inter[has_g])
    p_area = np.zeros(n_p, dtype=np.int64)
    np.add.at(p_area, pi[has_p], inter[has_p])
    p_void = np.zeros(n_p, dtype=np.int64)
    on_void = has_p & ~has_g
    p_void[pi[on_void]] = inter[on_void]  # pairs are unique, so plain assignment

    # matching
    both = has_g & has_p
    bg, bp, bi = gi[both], pi[both], inter[both]
    union = p_area[bp] + g_area[bg] - bi - p_void[bp]
    iou = bi / union
    match = (g_cat[bg] == p_cat[bp]) & ~g_crowd[bg] & (iou > 0.5)
    mg, mp, miou = bg[match], bp[match], iou[match]
    g_matched = np.zeros(n_g, dtype=bool)
    g_matched[mg] = True
    p_matched = np.zeros(n_p, dtype=bool)
    p_matched[mp] = True

    # false negatives: unmatched non-crowd gt
    fn_cat = g_cat[~g_matched & ~g_crowd]

    # false positives: unmatched pred unless > 50% on VOID + same-category crowd
    crowd_idx = np.flatnonzero(g_crowd)
    ignored = p_void.copy()
    if crowd_idx.size and n_p:
        # last crowd segment of each category in segments_info order (panopticapi semantics)
        crowd_cats = g_cat[crowd_idx]
        rev = crowd_idx[::-1]
        uc, first_in_rev = np.unique(crowd_cats[::-1], return_index=True)
        crowd_of_cat = g_ids[rev[first_in_rev]]  # (C,) aligned with uc
        pos = np.clip(np.searchsorted(uc, p_cat), 0, len(uc) - 1)
        has_crowd = uc[pos] == p_cat
        crowd_id = np.where(has_crowd, crowd_of_cat[pos], -1)
        # intersection of each pred with its category's crowd segment
        sel = both & g_crowd[np.maximum(gi, 0)]
        cand = crowd_id[pi[sel]] == pg[sel]
        np.add.at(ignored, pi[sel][cand], inter[sel][cand])
    unmatched = ~p_matched
    fp_mask = unmatched.copy()
    if n_p:
        fp_mask[unmatched] = ~(ignored[unmatched] / p_area[unmatched] > 0.5)
    fp_cat = p_cat[fp_mask]

    # per-category reduction (bincount sums in input order, i.e. sorted by (gt id, pred id))
    stat = PQStat()
    involved = np.concatenate([g_cat[mg], fn_cat, fp_cat])
    if involved.size == 0:
        return stat
    cats_u = np.unique(involved)
    k = len(cats_u)
    tp = np.bincount(np.searchsorted(cats_u, g_cat[mg]), minlength=k)
    iou_sum = np.bincount(np.searchsorted(cats_u, g_cat[mg]), weights=miou, minlength=k)
    fn = np.bincount(np.searchsorted(cats_u, fn_cat), minlength=k)
    fp = np.bincount(np.searchsorted(cats_u, fp_cat), minlength=k)
    for c, a, b, d, e in zip(
        cats_u.tolist(), tp.tolist(), fp.tolist(), fn.tolist(), iou_sum.tolist()
    ):
        stat.per_cat[c] = PQStatCat(tp=a, fp=b, fn=d, iou=e)
    return stat


# ----------------------------------------------------------------------------------------------
# averaging


def _class_metrics(s: PQStatCat) -> tuple[float, float, float]:
    denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
    pq = s.iou / denom
    sq = s.iou / s.tp if s.tp != 0 else 0.0
    rq = s.tp / denom
    return float(pq), float(sq), float(rq)


def _average(stat: PQStat, cat_ids: Iterable[int]) -> dict[str, Any]:
    """Mean PQ/SQ/RQ over ``cat_ids`` (in order), skipping classes with tp + fp + fn == 0."""
    pq = sq = rq = 0.0
    n = 0
    for c in cat_ids:
        s = stat.per_cat.get(c)
        if s is None or s.tp + s.fp + s.fn == 0:
            continue
        n += 1
        a, b, d = _class_metrics(s)
        pq += a
        sq += b
        rq += d
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}


def _categories_dict(categories: Sequence[Mapping[str, Any]], where: str) -> dict[int, dict]:
    if not isinstance(categories, (list, tuple)):
        raise DataError(f"{_where(where)}'categories' must be a list")
    out: dict[int, dict] = {}
    for i, c in enumerate(categories):
        try:
            cid = int(c["id"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise DataError(f"{_where(where)}categories[{i}] has no integer 'id': {c!r}") from exc
        if cid in out:
            raise DataError(f"{_where(where)}category id {cid} is listed twice")
        try:  # summarize() splits things / stuff with int(isthing)
            int(c.get("isthing", 0))
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"{_where(where)}categories[{i}].isthing must be 0 or 1, got {c.get('isthing')!r}"
            ) from exc
        out[cid] = dict(c)
    return out


class PanopticEvaluator:
    """Streaming PQ evaluator: feed images one at a time, summarise at the end.

    Why streaming: only the running :class:`PQStat` is kept, never the masks.  Several
    evaluators (processes, ranks) combine with :meth:`merge`.  ``categories``: the COCO-panoptic
    category dicts (``id``, ``isthing``, optional ``name``); their order sets the order classes
    are summed in, as in panopticapi.
    """

    def __init__(self, categories: list[dict]) -> None:
        self.categories: dict[int, dict] = _categories_dict(categories, "categories")
        self.stat = PQStat()
        self.num_images = 0

    def add(
        self,
        gt_ids: np.ndarray,
        gt_segments: list[dict],
        pred_ids: np.ndarray,
        pred_segments: list[dict],
        where: str = "",
    ) -> PQStat:
        """Accumulate one image ((H, W) id maps + segments_info lists); returns its PQStat."""
        s = pq_stat_single(
            gt_ids, gt_segments, pred_ids, pred_segments, self.categories, where=where
        )
        self.stat += s
        self.num_images += 1
        return s

    def merge(self, other: PanopticEvaluator | PQStat | Mapping[str, Any]) -> None:
        """Add another evaluator, a PQStat, or a ``PQStat.to_state()`` dict."""
        if isinstance(other, PanopticEvaluator):
            self.stat += other.stat
            self.num_images += other.num_images
        elif isinstance(other, PQStat):
            self.stat += other
        else:
            self.stat += PQStat.from_state(other)

    def summarize(self, groups: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """Final metrics as fractions in [0, 1] (multiply by 100 for the usual percentages).

        Returns ``{"All"|"Things"|"Stuff": {"pq","sq","rq","n"}, "per_class": {"<id>":
        {"pq","sq","rq","tp","fp","fn"}}, "groups": {"<name>": {"pq","sq","rq","n"}}}``.
        Group averages, like All / Things / Stuff, skip classes with ``tp + fp + fn == 0`` and
        ids that are not categories (so ranges like ``1-200`` over sparse COCO ids work).
        """
        cat_ids = list(self.categories)
        things = [c for c in cat_ids if int(self.categories[c].get("isthing", 0)) == 1]
        stuff = [c for c in cat_ids if int(self.categories[c].get("isthing", 0)) != 1]
        per_class: dict[str, dict[str, Any]] = {}
        for c in cat_ids:
            s = self.stat.per_cat.get(c, PQStatCat())
            if s.tp + s.fp + s.fn == 0:
                pq = sq = rq = 0.0
            else:
                pq, sq, rq = _class_metrics(s)
            per_class[str(c)] = {
                "pq": pq,
                "sq": sq,
                "rq": rq,
                "tp": int(s.tp),
                "fp": int(s.fp),
                "fn": int(s.fn),
            }
        out_groups: dict[str, dict[str, Any]] = {}
        for name, ids in (groups or {}).items():
            members = {int(i) for i in ids}
            out_groups[name] = _average(self.stat, [c for c in cat_ids if c in members])
        return {
            "All": _average(self.stat, cat_ids),
            "Things": _average(self.stat, things),
            "Stuff": _average(self.stat, stuff),
            "per_class": per_class,
            "groups": out_groups,
        }


# ----------------------------------------------------------------------------------------------
# files


def _load_json(path: Path, kind: str) -> dict:
    path = Path(path)
    if not is_file(path):
        raise DataError(f"{path}: {kind} JSON not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError,
        # integers over 4300 digits, absurd nesting
        raise DataError(f"{path}: cannot parse {kind} JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: {kind} JSON must be an object, got {type(data).__name__}")
    if not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: {kind} JSON has no 'annotations' list")
    return data


def _annotations_by_image(data: dict, path: Path, kind: str) -> dict[Any, dict]:
    out: dict[Any, dict] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{i}] is not an object")
        for key, typ in (("image_id", (int, str)), ("file_name", str), ("segments_info", list)):
            if key not in ann:
                raise DataError(f"{path}: annotations[{i}] has no '{key}' field")
            if not isinstance(ann[key], typ) or isinstance(ann[key], bool):
                raise DataError(
                    f"{path}: annotations[{i}] field '{key}' has wrong type "
                    f"{type(ann[key]).__name__}"
                )
        if ann["image_id"] in out:
            raise DataError(f"{path}: image_id {ann['image_id']!r} is annotated more than once")
        out[ann["image_id"]] = ann
    return out


_Task = tuple[str, list, str, list]


def _image_task(task: _Task, categories: dict[int, dict]) -> PQStat:
    gt_png, gt_segs, pred_png, pred_segs = task
    gt = read_panoptic_png(gt_png, panopticapi=True)
    pred = read_panoptic_png(pred_png, panopticapi=True)
    if gt.shape != pred.shape:
        raise DataError(
            f"{pred_png}: pred PNG size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from gt "
            f"{gt_png} size {gt.shape[1]}x{gt.shape[0]}"
        )
    return pq_stat_single(
        gt, gt_segs, pred, pred_segs, categories, where=f"{pred_png} (gt {gt_png})"
    )


_WORKER_CATEGORIES: dict[int, dict] = {}


def _worker_init(categories: dict[int, dict]) -> None:
    global _WORKER_CATEGORIES
    _WORKER_CATEGORIES = categories


def _worker_run(task: _Task) -> dict[str, Any]:
    return _image_task(task, _WORKER_CATEGORIES).to_state()


def pq_compute(
    gt_json: Path,
    gt_folder: Path,
    pred_json: Path,
    pred_folder: Path,
    groups: dict[str, list[int]] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """panopticapi ``pq_compute`` on COCO-panoptic files -> :meth:`PanopticEvaluator.summarize`.

    Annotations are matched by ``image_id``; every gt image needs a prediction (extra
    predictions are ignored); categories come from the gt JSON.  Images are read one by one
    (``workers > 1``: a process pool, forked where possible, each worker reading its own PNGs;
    per-image stats are merged in gt order, so the result does not depend on ``workers``).
    Any data problem raises :class:`DataError` naming the file.
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder, pred_folder = Path(gt_folder), Path(pred_folder)
    gt_data = _load_json(gt_json, "gt")
    pred_data = _load_json(pred_json, "pred")
    if not isinstance(gt_data.get("categories"), list):
        raise DataError(f"{gt_json}: gt JSON has no 'categories' list")
    try:
        evaluator = PanopticEvaluator(gt_data["categories"])
    except DataError as exc:
        raise DataError(f"{gt_json}: {exc}") from exc
    gt_anns = _annotations_by_image(gt_data, gt_json, "gt")
    pred_anns = _annotations_by_image(pred_data, pred_json, "pred")
    for image_id in gt_anns:
        if image_id not in pred_anns:
            raise DataError(
                f"{pred_json}: no prediction for the image with id {image_id!r} "
                f"({gt_anns[image_id]['file_name']})"
            )

    def tasks() -> Iterator[_Task]:
        for image_id, g in gt_anns.items():
            p = pred_anns[image_id]
            yield (
                str(gt_folder / g["file_name"]),
                g["segments_info"],
                str(pred_folder / p["file_name"]),
                p["segments_info"],
            )

    if workers <= 1 or len(gt_anns) <= 1:
        for task in tasks():
            evaluator.merge(_image_task(task, evaluator.categories))
            evaluator.num_images += 1
    else:
        # fork (where the OS has it) needs no ``if __name__ == "__main__"`` guard in the
        # caller's script: with spawn an unguarded script re-runs itself in every worker.
        # Workers only run numpy / Pillow code, so forking a process with threads is safe here.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        chunk = max(1, min(64, len(gt_anns) // (4 * workers)))
        with ctx.Pool(workers, initializer=_worker_init, initargs=(evaluator.categories,)) as pool:
            for state in pool.imap(_worker_run, tasks(), chunksize=chunk):
                evaluator.merge(PQStat.from_state(state))
                evaluator.num_images += 1
    return evaluator.summarize(groups)


# ----------------------------------------------------------------------------------------------
# class groups, table, CLI

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_class_groups(spec: str) -> dict[str, list[int]]:
    """Parse ``"old:1-100,new:101-150"`` / ``"a:1-3+7+9-10"`` -> ``{name: sorted unique ids}``.

    Groups are comma-separated ``name:items``; items are ``+``-separated ids or inclusive
    ``lo-hi`` ranges.  Groups may overlap.  Raises ConfigError on a malformed spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"class groups spec is empty: {spec!r} (expected e.g. 'old:1-100,new:101-150')"
        )
    out: dict[str, list[int]] = {}
    for part in spec.split(","):
        part = part.strip()
        if ":" not in part:
            raise ConfigError(
                f"class group {part!r} in {spec!r} lacks 'name:' (expected e.g. 'old:1-100')"
            )
        name, _, items = part.partition(":")
        name = name.strip()
        if not name:
            raise ConfigError(f"class group {part!r} in {spec!r} has an empty name")
        if name in out:
            raise ConfigError(f"class group {name!r} appears twice in {spec!r}")
        ids: set[int] = set()
        for item in items.split("+"):
            m = _RANGE.match(item.strip())
            if not m:
                raise ConfigError(
                    f"class group {name!r}: bad item {item.strip()!r} in {spec!r} "
                    "(expected an id like 7 or a range like 1-100)"
                )
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise ConfigError(
                    f"class group {name!r}: range {item.strip()!r} is empty (end {hi} < start {lo})"
                )
            ids.update(range(lo, hi + 1))
        out[name] = sorted(ids)
    return out


_GROUP_NAMES = {
    "old": "old classes",
    "new": "new classes",
    "all": "all seen",
    "things": "seen things",
    "stuff": "seen stuff",
}


def format_pq_table(
    result: dict[str, Any],
    *,
    per_class: bool = False,
    names: Mapping[int, str] | None = None,
    overall: bool = True,
) -> str:
    """Text table of a :meth:`PanopticEvaluator.summarize` result, in points (0-100).

    Rows: All / Things / Stuff over every category (unless not ``overall``), then one per class
    group (a continual step's: old classes / new classes / all seen / seen things / seen stuff).
    With ``per_class`` a second table lists every class (name from ``names`` when given); a class
    with no segment in the ground truth nor the predictions shows "-"."""
    lines = [f"{'':>14} | {'PQ':>6} {'SQ':>6} {'RQ':>6} | {'N':>4}", "-" * 44]
    rows = [(k, result[k]) for k in ("All", "Things", "Stuff") if overall and k in result]
    rows += [(_GROUP_NAMES.get(k, k), r) for k, r in (result.get("groups") or {}).items()]
    for name, r in rows:
        values = (
            f"{100 * r['pq']:6.2f} {100 * r['sq']:6.2f} {100 * r['rq']:6.2f}"
            if r["n"]
            else f"{'-':>6} {'-':>6} {'-':>6}"
        )
        lines.append(f"{str(name)[:14]:>14} | {values} | {r['n']:>4d}")
    if per_class and result.get("per_class"):
        lines += [
            "",
            f"{'class':>24} | {'PQ':>6} {'SQ':>6} {'RQ':>6} | {'TP':>6} {'FP':>6} {'FN':>6}",
            "-" * 70,
        ]
        for cid, r in result["per_class"].items():
            label = f"{cid}"
            if names and int(cid) in names:
                label = f"{cid} {names[int(cid)]}"
            values = (
                f"{100 * r['pq']:6.2f} {100 * r['sq']:6.2f} {100 * r['rq']:6.2f}"
                if r["tp"] + r["fp"] + r["fn"]
                else f"{'-':>6} {'-':>6} {'-':>6}"
            )
            lines.append(f"{label[:24]:>24} | {values} | {r['tp']:6d} {r['fp']:6d} {r['fn']:6d}")
    return "\n".join(lines)


_SCORES = ("pq", "sq", "rq", "miou")


def in_points(summary: Any) -> Any:
    """A copy of an evaluation summary with every score (PQ, SQ, RQ, mIoU, per-class IoU) in points
    (0-100), as the console shows them; counts are left as they are. Files written for people use
    this, with ``"unit": "points"`` beside."""
    if isinstance(summary, dict):
        out = {}
        for k, v in summary.items():
            if k in _SCORES and isinstance(v, (int, float)):
                out[k] = round(100 * v, 4)
            elif (
                k == "per_class"
                and isinstance(v, dict)
                and all(x is None or isinstance(x, float) for x in v.values())
            ):
                out[k] = {c: None if x is None else round(100 * x, 4) for c, x in v.items()}
            else:
                out[k] = in_points(v)
        return out
    if isinstance(summary, list):
        return [in_points(v) for v in summary]
    return summary
