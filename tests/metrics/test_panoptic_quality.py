"""Panoptic quality: hand-computed cases, panopticapi semantics checked against a slow
reference, file round trips, CLI and error reporting."""

import json
import random

import numpy as np
import pytest
from PIL import Image

from eclipse_seg.cli import main
from eclipse_seg.errors import ConfigError, DataError
from eclipse_seg.metrics.panoptic_quality import (
    PanopticEvaluator,
    PQStat,
    format_pq_table,
    in_points,
    parse_class_groups,
    pq_compute,
    pq_stat_single,
)

CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 4, "name": "road", "isthing": 0},
]
CAT_DICT = {c["id"]: c for c in CATS}


def segs(*items):
    """segs((id, cat), (id, cat, crowd), ...) -> segments_info list."""
    return [{"id": t[0], "category_id": t[1], "iscrowd": t[2] if len(t) > 2 else 0} for t in items]


def evaluate(*images, groups=None):
    ev = PanopticEvaluator(CATS)
    for gt, gs, pred, ps in images:
        ev.add(np.asarray(gt), gs, np.asarray(pred), ps)
    return ev.summarize(groups)


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def test_perfect_match():
    gt = [[1, 1, 2, 2], [1, 1, 2, 2]]
    pred = [[5, 5, 9, 9], [5, 5, 9, 9]]
    r = evaluate((gt, segs((1, 1), (2, 3)), pred, segs((5, 1), (9, 3))))
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert r["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert r["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert r["per_class"]["1"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert r["per_class"]["2"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert set(r) == {"All", "Things", "Stuff", "per_class", "groups"}


GT_HALF = [[1, 1, 1, 1, 2, 2, 2, 2]]  # gt 1: cat 1 (4 px), gt 2: cat 3 (4 px)


def test_iou_exactly_half_is_not_a_match():
    # pred 7 (cat 1) covers 2 of gt 1's 4 px: IoU = 2 / (2 + 4 - 2) = 0.5 -> FP + FN
    # pred 8 (cat 3) covers px 2..7: IoU with gt 2 = 4 / (6 + 4 - 4) = 2/3 -> TP
    pred = [[7, 7, 8, 8, 8, 8, 8, 8]]
    r = evaluate(
        (GT_HALF, segs((1, 1), (2, 3)), pred, segs((7, 1), (8, 3))),
        groups={"a": [1, 2], "b": [3, 4, 99]},
    )
    c1, c3 = r["per_class"]["1"], r["per_class"]["3"]
    assert (c1["tp"], c1["fp"], c1["fn"]) == (0, 1, 1) and c1["pq"] == 0.0
    assert (c3["tp"], c3["fp"], c3["fn"]) == (1, 0, 0)
    assert c3["pq"] == pytest.approx(2 / 3) and c3["sq"] == pytest.approx(2 / 3)
    assert c3["rq"] == 1.0
    assert r["All"] == pytest.approx({"pq": 1 / 3, "sq": 1 / 3, "rq": 0.5, "n": 2})
    assert r["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    assert r["Stuff"] == pytest.approx({"pq": 2 / 3, "sq": 2 / 3, "rq": 1.0, "n": 1})
    # group averages skip classes with tp+fp+fn == 0 (cat 2, cat 4) and unknown ids (99)
    assert r["groups"]["a"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    assert r["groups"]["b"] == pytest.approx({"pq": 2 / 3, "sq": 2 / 3, "rq": 1.0, "n": 1})


def test_iou_just_above_half_matches():
    pred = [[7, 7, 7, 8, 8, 8, 8, 8]]  # IoU = 3 / (3 + 4 - 3) = 0.75
    r = evaluate((GT_HALF, segs((1, 1), (2, 3)), pred, segs((7, 1), (8, 3))))
    assert r["per_class"]["1"]["tp"] == 1
    assert r["per_class"]["1"]["pq"] == pytest.approx(0.75)


def test_void_pixels_leave_the_union():
    # gt 1 (cat 1) = px 2..7; pred 5 (cat 1) = px 0..5, 2 px on VOID:
    # IoU = 4 / (6 + 6 - 4 - 2) = 2/3 (it would be 0.5 if VOID counted) -> TP
    gt = [[0, 0, 1, 1, 1, 1, 1, 1]]
    pred = [[5, 5, 5, 5, 5, 5, 0, 0]]
    r = evaluate((gt, segs((1, 1)), pred, segs((5, 1))))
    assert r["per_class"]["1"]["tp"] == 1
    assert r["per_class"]["1"]["sq"] == pytest.approx(2 / 3)


def test_prediction_mostly_on_void_is_ignored():
    # pred 5 (cat 2) lies fully on VOID -> ignored; pred 6 (cat 2) half on VOID -> FP (strict >)
    gt = [[0, 0, 0, 0, 0, 0, 1, 1]]
    pred = [[5, 5, 5, 5, 5, 6, 6, 0]]
    r = evaluate((gt, segs((1, 1)), pred, segs((5, 2), (6, 2))))
    assert r["per_class"]["2"]["fp"] == 1
    assert r["per_class"]["1"]["fn"] == 1
    assert r["All"]["n"] == 2 and r["All"]["pq"] == 0.0


def test_crowd_regions():
    # gt 1: crowd of cat 1 (px 0..5), gt 2: cat 3 (px 6..7)
    # pred 5 (cat 1) fully on the crowd -> ignored, and never matched to the crowd segment
    # pred 6 (cat 2) on the crowd of another category -> FP
    # pred 7 (cat 3) -> TP; the crowd gt is no FN
    gt = [[1, 1, 1, 1, 1, 1, 2, 2]]
    pred = [[5, 5, 5, 5, 6, 6, 7, 7]]
    r = evaluate((gt, segs((1, 1, 1), (2, 3)), pred, segs((5, 1), (6, 2), (7, 3))))
    pc = r["per_class"]
    assert (pc["1"]["tp"], pc["1"]["fp"], pc["1"]["fn"]) == (0, 0, 0)
    assert (pc["2"]["tp"], pc["2"]["fp"], pc["2"]["fn"]) == (0, 1, 0)
    assert (pc["3"]["tp"], pc["3"]["fp"], pc["3"]["fn"]) == (1, 0, 0)
    assert r["All"] == {"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2}


def test_void_plus_crowd_together_ignore_a_prediction():
    # pred 5 (cat 1): 1 px VOID + 1 px crowd of cat 1 + 1 px gt 2 -> 2/3 ignored -> not an FP
    gt = [[0, 1, 2, 2, 2, 2]]
    pred = [[5, 5, 5, 0, 0, 0]]
    r = evaluate((gt, segs((1, 1, 1), (2, 1)), pred, segs((5, 1))))
    assert (r["per_class"]["1"]["fp"], r["per_class"]["1"]["fn"]) == (0, 1)


def test_empty_images_and_unused_classes():
    z = np.zeros((3, 4), dtype=np.int64)
    r = evaluate((z, [], z, []))
    assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    gt = [[1, 1, 2, 2], [1, 1, 2, 2]]
    pred = [[5, 5, 9, 9], [5, 5, 9, 9]]
    one = (gt, segs((1, 1), (2, 3)), pred, segs((5, 1), (9, 3)))
    assert evaluate((z, [], z, []), one, (z, [], z, [])) == evaluate(one)


def test_unmatched_segments_are_fp_and_fn():
    # pred 4 (cat 4) lies on gt 2 (cat 3): no match -> FP; gt 1 and gt 2 -> FN
    gt = [[1, 1, 2, 2]]
    pred = [[0, 0, 4, 4]]
    r = evaluate((gt, segs((1, 3), (2, 3)), pred, segs((4, 4))))
    assert (r["per_class"]["3"]["fn"], r["per_class"]["4"]["fp"]) == (2, 1)
    assert r["Stuff"]["n"] == 2 and r["Things"]["n"] == 0


def test_listed_but_absent_gt_segment_is_a_false_negative():
    gt = [[1, 1]]
    r = evaluate((gt, segs((1, 1), (2, 2)), [[3, 3]], segs((3, 1))))
    assert r["per_class"]["2"]["fn"] == 1 and r["per_class"]["1"]["tp"] == 1


# ---------------------------------------------------------------------------------------------
# slow reference (per-segment loops, panopticapi semantics, areas from pixel counts)


def reference_stat(gt, gsegs, pred, psegs):
    gt, pred = np.asarray(gt), np.asarray(pred)
    g_info = {s["id"]: s for s in gsegs}
    p_info = {s["id"]: s for s in psegs}
    g_area = {k: int((gt == k).sum()) for k in g_info}
    p_area = {k: int((pred == k).sum()) for k in p_info}
    inter = {}
    for a, b in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        inter[(a, b)] = inter.get((a, b), 0) + 1
    stat = {}

    def cat(c):
        return stat.setdefault(c, [0, 0, 0, 0.0])

    g_matched, p_matched = set(), set()
    for (g, p), n in sorted(inter.items()):
        if g not in g_info or p not in p_info:
            continue
        if g_info[g]["iscrowd"] == 1 or g_info[g]["category_id"] != p_info[p]["category_id"]:
            continue
        union = p_area[p] + g_area[g] - n - inter.get((0, p), 0)
        iou = n / union
        if iou > 0.5:
            cat(g_info[g]["category_id"])[0] += 1
            cat(g_info[g]["category_id"])[3] += iou
            g_matched.add(g)
            p_matched.add(p)
    crowd = {}
    for g, info in g_info.items():
        if g in g_matched:
            continue
        if info["iscrowd"] == 1:
            crowd[info["category_id"]] = g
            continue
        cat(info["category_id"])[2] += 1
    for p, info in p_info.items():
        if p in p_matched:
            continue
        n = inter.get((0, p), 0)
        if info["category_id"] in crowd:
            n += inter.get((crowd[info["category_id"]], p), 0)
        if n / p_area[p] > 0.5:
            continue
        cat(info["category_id"])[1] += 1
    return stat


def reference_summary(images, cats, groups):
    total = {}
    for img in images:
        for c, (tp, fp, fn, iou) in reference_stat(*img).items():
            t = total.setdefault(c, [0, 0, 0, 0.0])
            t[0] += tp
            t[1] += fp
            t[2] += fn
            t[3] += iou

    def cls(c):
        tp, fp, fn, iou = total.get(c, [0, 0, 0, 0.0])
        if tp + fp + fn == 0:
            return None
        d = tp + 0.5 * fp + 0.5 * fn
        return iou / d, (iou / tp if tp else 0.0), tp / d

    def avg(ids):
        pq = sq = rq = 0.0
        n = 0
        for c in ids:
            m = cls(c)
            if m is None:
                continue
            n += 1
            pq += m[0]
            sq += m[1]
            rq += m[2]
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}

    ids = [c["id"] for c in cats]
    per_class = {}
    for c in ids:
        m = cls(c) or (0.0, 0.0, 0.0)
        tp, fp, fn, _ = total.get(c, [0, 0, 0, 0.0])
        per_class[str(c)] = {"pq": m[0], "sq": m[1], "rq": m[2], "tp": tp, "fp": fp, "fn": fn}
    return {
        "All": avg(ids),
        "Things": avg([c["id"] for c in cats if c["isthing"] == 1]),
        "Stuff": avg([c["id"] for c in cats if c["isthing"] != 1]),
        "per_class": per_class,
        "groups": {k: avg([c for c in ids if c in set(v)]) for k, v in groups.items()},
    }


def random_image(rng, cats=CATS):
    """Random gt / pred pair with overlapping rectangles, VOID, crowd, shuffled segment lists."""
    h, w = rng.integers(12, 28, size=2)
    cat_ids = [c["id"] for c in cats]
    gt = np.zeros((h, w), dtype=np.int64)
    pred = np.zeros((h, w), dtype=np.int64)
    g_cat, p_cat, crowd = {}, {}, {}
    gid = int(rng.integers(1, 1000))
    pid = int(rng.integers(1, 1000))
    for _ in range(int(rng.integers(0, 8))):
        y, x = rng.integers(0, h), rng.integers(0, w)
        rh, rw = rng.integers(2, h // 2 + 3), rng.integers(2, w // 2 + 3)
        c = int(rng.choice(cat_ids))
        gid += int(rng.integers(1, 50))
        gt[y : y + rh, x : x + rw] = gid
        g_cat[gid] = c
        crowd[gid] = int(rng.random() < 0.25)
        if rng.random() < 0.8:  # a jittered prediction of the same (mostly) category
            dy, dx = rng.integers(-2, 3, size=2)
            pid += int(rng.integers(1, 50))
            pred[max(0, y + dy) : y + dy + rh, max(0, x + dx) : x + dx + rw] = pid
            p_cat[pid] = c if rng.random() < 0.85 else int(rng.choice(cat_ids))
    for _ in range(int(rng.integers(0, 3))):  # spurious predictions
        y, x = rng.integers(0, h), rng.integers(0, w)
        pid += int(rng.integers(1, 50))
        pred[y : y + int(rng.integers(1, 6)), x : x + int(rng.integers(1, 6))] = pid
        p_cat[pid] = int(rng.choice(cat_ids))
    if rng.random() < 0.5:  # VOID band in gt and/or pred
        y = int(rng.integers(0, h))
        gt[y : y + int(rng.integers(1, 5))] = 0
    if rng.random() < 0.3:
        x = int(rng.integers(0, w))
        pred[:, x : x + int(rng.integers(1, 4))] = 0
    g_present = [int(v) for v in np.unique(gt) if v != 0]
    p_present = [int(v) for v in np.unique(pred) if v != 0]
    gsegs = [{"id": k, "category_id": g_cat[k], "iscrowd": crowd[k]} for k in g_present]
    if g_cat and rng.random() < 0.2:  # a listed gt segment that was fully painted over
        k = next(iter(g_cat))
        if k not in g_present:
            gsegs.append({"id": k, "category_id": g_cat[k], "iscrowd": 0})
    psegs = [{"id": k, "category_id": p_cat[k]} for k in p_present]
    rng.shuffle(gsegs)
    rng.shuffle(psegs)
    return gt, gsegs, pred, psegs


GROUPS = {"old": [1, 2], "new": [3, 4], "odd": [1, 3, 5]}


def test_vectorised_equals_slow_reference_exactly():
    rng = np.random.default_rng(0)
    images = [random_image(rng) for _ in range(30)]
    got = evaluate(*images, groups=GROUPS)
    want = reference_summary(images, CATS, GROUPS)
    assert got == want  # exact, floats included
    # the random images do exercise every branch
    totals = [sum(v[k] for v in got["per_class"].values()) for k in ("tp", "fp", "fn")]
    assert all(t > 5 for t in totals)


def test_per_image_stat_equals_reference():
    rng = np.random.default_rng(1)
    for _ in range(30):
        img = random_image(rng)
        s = pq_stat_single(*img, CAT_DICT)
        ref = reference_stat(*img)
        got = {c: [v.tp, v.fp, v.fn, v.iou] for c, v in s.per_cat.items()}
        assert got == {c: v for c, v in ref.items() if v != [0, 0, 0, 0.0]}


def _relabel(img, rng):
    gt, gs, pred, ps = img
    out = []
    for ids, sg in ((gt, gs), (pred, ps)):
        keys = sorted({s["id"] for s in sg} | {int(v) for v in np.unique(ids) if v})
        new = rng.choice(256**3 - 1, size=len(keys), replace=False) + 1
        table = dict(zip(keys, new.tolist()))
        uniq, inv = np.unique(ids, return_inverse=True)
        ids2 = np.array([table.get(int(v), 0) for v in uniq], dtype=np.int64)[inv]
        ids2 = ids2.reshape(ids.shape)
        out += [ids2.astype(np.int64), [dict(s, id=table[s["id"]]) for s in sg]]
    return tuple(out)


def flat(result, prefix=""):
    """Nested result dict -> {"a/b/c": number} (pytest.approx does not nest)."""
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_invariant_to_segment_relabelling_and_image_order():
    rng = np.random.default_rng(2)
    images = [random_image(rng) for _ in range(12)]
    base = evaluate(*images, groups=GROUPS)
    relabelled = evaluate(*[_relabel(i, rng) for i in images], groups=GROUPS)
    shuffled = evaluate(*[images[i] for i in rng.permutation(len(images))], groups=GROUPS)
    assert base["All"]["n"] == 4
    for other in (relabelled, shuffled):
        # iou sums may add in another order: equal up to rounding; counts exactly
        assert flat(other) == pytest.approx(flat(base), rel=1e-12, abs=1e-15)


def test_pqstat_merge_and_state_round_trip():
    rng = np.random.default_rng(3)
    images = [random_image(rng) for _ in range(6)]
    a, b = PanopticEvaluator(CATS), PanopticEvaluator(CATS)
    for i, img in enumerate(images):
        (a if i < 3 else b).add(*img)
    whole = evaluate(*images)
    state = json.loads(json.dumps(b.stat.to_state()))
    a.merge(PQStat.from_state(state))
    assert flat(a.summarize()) == pytest.approx(flat(whole), rel=1e-12, abs=1e-15)
    assert PQStat.from_state(state) == b.stat
    total = PQStat()
    total += a.stat
    assert total == a.stat


def test_pq_stat_single_errors_name_the_source():
    gt = np.array([[1, 1, 0]])
    pred = np.array([[5, 5, 0]])
    ok = (gt, segs((1, 1)), pred, segs((5, 1)))
    pq_stat_single(*ok, CAT_DICT, where="img.png")
    bad = [
        (gt, segs((1, 1)), pred, segs((6, 1)), "present in the pred PNG"),
        (gt, segs((1, 1)), pred, segs((5, 1), (6, 1)), "absent from the pred PNG"),
        (gt, segs((1, 1)), pred, segs((5, 77)), "unknown category_id 77"),
        (gt, segs((1, 66)), pred, segs((5, 1)), "unknown category_id 66"),
        (gt, [], pred, segs((5, 1)), "present in the gt PNG"),
        (gt, segs((1, 1)), pred[:, :2], segs((5, 1)), "differ in size"),
        (gt, segs((1, 1), (1, 2)), pred, segs((5, 1)), "more than once"),
        (gt, [{"id": 1}], pred, segs((5, 1)), "malformed"),
    ]
    for g, gs, p, ps, msg in bad:
        with pytest.raises(DataError, match="img.png") as ei:
            pq_stat_single(g, gs, p, ps, CAT_DICT, where="img.png")
        assert msg in str(ei.value)


# ---------------------------------------------------------------------------------------------
# files, CLI


def id2rgb(ids):
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_dataset(root, images):
    """Write gt/pred PNG folders and JSONs for [(gt, gsegs, pred, psegs), ...]."""
    gdir, pdir = root / "gt", root / "pred"
    gdir.mkdir(parents=True, exist_ok=True)
    pdir.mkdir(parents=True, exist_ok=True)
    g_anns, p_anns = [], []
    for i, (gt, gs, pred, ps) in enumerate(images):
        name = f"img{i:03d}.png"
        Image.fromarray(id2rgb(gt)).save(gdir / name)
        Image.fromarray(id2rgb(pred)).save(pdir / name)
        g_anns.append({"image_id": i, "file_name": name, "segments_info": gs})
        p_anns.append({"image_id": i, "file_name": name, "segments_info": ps})
    rng = random.Random(0)
    rng.shuffle(p_anns)  # matching is by image_id, not by position
    (root / "gt.json").write_text(json.dumps({"annotations": g_anns, "categories": CATS}))
    (root / "pred.json").write_text(json.dumps({"annotations": p_anns}))
    return root / "gt.json", gdir, root / "pred.json", pdir


def test_pq_compute_round_trip_and_workers(tmp_path):
    rng = np.random.default_rng(4)
    images = [random_image(rng) for _ in range(5)]
    images.append(_relabel(random_image(rng), rng))  # ids using all three channels
    files = write_dataset(tmp_path, images)
    want = evaluate(*images, groups=GROUPS)
    assert pq_compute(*files, groups=GROUPS) == want
    assert pq_compute(*files, groups=GROUPS, workers=2) == want


def test_cli_writes_results_json(tmp_path, capsys):
    rng = np.random.default_rng(5)
    images = [random_image(rng) for _ in range(3)]
    gj, gd, pj, pd = write_dataset(tmp_path, images)
    out = tmp_path / "res" / "results.json"
    rc = main(
        [
            "evaluate-panoptic",
            "--gt-json",
            str(gj),
            "--gt-folder",
            str(gd),
            "--pred-json",
            str(pj),
            "--pred-folder",
            str(pd),
            "--class-groups",
            "old:1-2,new:3+4",
            "--output",
            str(out),
            "--per-class",
        ]
    )
    assert rc == 0
    saved = json.loads(out.read_text())
    expected = evaluate(*images, groups={"old": [1, 2], "new": [3, 4]})
    assert saved == {"unit": "points", **in_points(expected)}  # what the console shows
    assert saved["All"]["pq"] == pytest.approx(100 * expected["All"]["pq"], abs=1e-4)
    printed = capsys.readouterr().out
    for word in ("All", "Things", "Stuff", "old", "new", "person", "road"):
        assert word in printed


def _simple_image():
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    pred = np.array([[5, 5, 9, 9], [5, 5, 9, 9]])
    return gt, segs((1, 1), (2, 3)), pred, segs((5, 1), (9, 3))


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "case",
    [
        "missing_png",
        "corrupt_png",
        "size_mismatch",
        "unknown_category",
        "id_not_listed",
        "listed_not_in_png",
        "bad_json",
        "missing_field",
        "no_prediction",
        "no_categories",
    ],
)
def test_pq_compute_errors_name_the_file(tmp_path, case):
    gj, gd, pj, pd = write_dataset(tmp_path, [_simple_image()])
    png = pd / "img000.png"
    if case == "missing_png":
        png.unlink()
        culprit = png
    elif case == "corrupt_png":
        png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        culprit = png
    elif case == "size_mismatch":
        Image.fromarray(id2rgb(np.full((3, 4), 5))).save(png)
        culprit = png
    elif case == "unknown_category":
        _edit_json(pj, lambda d: d["annotations"][0]["segments_info"][0].update(category_id=42))
        culprit = png
    elif case == "id_not_listed":
        _edit_json(pj, lambda d: d["annotations"][0]["segments_info"].pop())
        culprit = png
    elif case == "listed_not_in_png":
        _edit_json(
            pj, lambda d: d["annotations"][0]["segments_info"].append({"id": 123, "category_id": 1})
        )
        culprit = png
    elif case == "bad_json":
        pj.write_text("{not json")
        culprit = pj
    elif case == "missing_field":
        _edit_json(gj, lambda d: d["annotations"][0].pop("segments_info"))
        culprit = gj
    elif case == "no_prediction":
        _edit_json(pj, lambda d: d["annotations"][0].update(image_id=99))
        culprit = pj
    else:
        _edit_json(gj, lambda d: d.pop("categories"))
        culprit = gj
    with pytest.raises(DataError) as ei:
        pq_compute(gj, gd, pj, pd)
    assert str(culprit) in str(ei.value)


def test_parse_class_groups():
    assert parse_class_groups("old:1-3,new:4-5") == {"old": [1, 2, 3], "new": [4, 5]}
    assert parse_class_groups(" a : 1-3+7+9-10 ") == {"a": [1, 2, 3, 7, 9, 10]}
    for bad in ["", "old", ":1-3", "a:3-1", "a:x", "a:1-", "a:1,a:2", "a:", "a:1++2"]:
        with pytest.raises(ConfigError):
            parse_class_groups(bad)


def test_format_pq_table():
    r = evaluate(_simple_image(), groups={"old": [1]})
    text = format_pq_table(r)
    assert "100.00" in text and "old" in text and "person" not in text
    text = format_pq_table(r, per_class=True, names={1: "person"})
    assert "person" in text
