"""Property-based fuzzing (hypothesis) of the user-facing parsers: every failure caused by bad input
is an EclipseSegError subclass with a message, never another exception.

* COCO-panoptic reader: random JSON values, mutated valid documents (missing fields, wrong types,
  huge / zero / negative sizes), raw text; PNGs with random ids, modes, shapes and bytes.
* PQ evaluator: invariant to segment-id relabelling and to image order; malformed
  segments_info / categories -> DataError only.
* Config: ``load_config`` on random YAML text, ``parse_overrides`` on random key=value strings.

``EXAMPLES`` counts the examples each property ran (printed at the end of the module with -s).
"""

from __future__ import annotations

import copy
import io
import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from eclipse_seg.config import Config, load_config, parse_overrides
from eclipse_seg.data.coco_panoptic import CocoPanopticDataset, write_panoptic_png
from eclipse_seg.errors import ConfigError, DataError, EclipseSegError
from eclipse_seg.metrics.panoptic_quality import OFFSET, PanopticEvaluator

EXAMPLES: Counter = Counter()
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print(f"\nfuzz examples run: {dict(EXAMPLES)} total {sum(EXAMPLES.values())}")


def _expect_project_error(fn, *args, **kwargs):
    """Run ``fn``; an exception must be an EclipseSegError with a non-empty message."""
    try:
        return fn(*args, **kwargs)
    except EclipseSegError as e:
        assert str(e).strip(), f"{type(e).__name__} with an empty message"
        return e


# --------------------------------------------------------------------------------------------------
# COCO-panoptic reader
# --------------------------------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "x.png", "../x.png", "a" * 300, "img_0.png", "\x00"]),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "images",
                    "annotations",
                    "categories",
                    "file_name",
                    "height",
                    "width",
                    "segments_info",
                    "category_id",
                    "isthing",
                    "name",
                    "image_id",
                    "iscrowd",
                    "color",
                ]
            )
            | st.text(max_size=4),
            kids,
            max_size=4,
        ),
    ),
    max_leaves=12,
)

_WORK = Path(tempfile.mkdtemp(prefix="eclipse_fuzz_"))
H, W = 4, 5


def _valid_doc() -> dict:
    return {
        "images": [
            {"id": i, "file_name": f"img_{i}.png", "height": H, "width": W} for i in range(2)
        ],
        "annotations": [
            {
                "image_id": i,
                "file_name": f"img_{i}.png",
                "segments_info": [
                    {"id": 1, "category_id": 1, "iscrowd": 0},
                    {"id": 2, "category_id": 2, "iscrowd": 0},
                ],
            }
            for i in range(2)
        ],
        "categories": [
            {"id": 1, "name": "a", "isthing": 1, "color": [1, 2, 3]},
            {"id": 2, "name": "b", "isthing": 0},
        ],
    }


def _setup_files() -> None:
    (_WORK / "img").mkdir(exist_ok=True)
    (_WORK / "png").mkdir(exist_ok=True)
    ids = np.ones((H, W), dtype=np.int64)
    ids[:, 2:] = 2
    for i in range(2):
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(
            _WORK / "img" / f"img_{i}.png"
        )
        write_panoptic_png(_WORK / "png" / f"img_{i}.png", ids)


_setup_files()


def _read_all(json_path: Path, png_dir: Path = _WORK / "png", image_dir: Path = _WORK / "img"):
    ds = CocoPanopticDataset(json_path, png_dir, image_dir)
    len(ds), ds.image_ids, ds.thing_ids, ds.stuff_ids
    ds.image_ids_with_any_category([1, 2])
    return [ds[i] for i in range(len(ds))]


def _paths_of(doc, prefix=()):
    """Every (path) into a JSON document, containers included."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths_of(v, prefix + (i,))


@st.composite
def mutated_docs(draw):
    doc = _valid_doc()
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths_of(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["delete", "replace", "replace", "size", "dup", "name"]))
        if action == "name":
            entry = (
                draw(st.sampled_from(doc["images"] + doc["annotations"]))
                if isinstance(doc.get("images"), list)
                and isinstance(doc.get("annotations"), list)
                and doc["images"] + doc["annotations"]
                else None
            )
            if isinstance(entry, dict):
                entry["file_name"] = draw(
                    st.sampled_from(
                        ["a" * 300, "\x00.png", "..", "/", "img_1.png", "missing.png", "img/", " "]
                    )
                )
        elif action == "delete":
            del parent[path[-1]]
        elif action == "size":
            parent[path[-1]] = draw(
                st.sampled_from(
                    [0, -1, -5, 1, 3, H, W, 10**9, 2**63, 1.5, True, "4", 16777216, 16777215]
                )
            )
        elif action == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def _write_json(name: str, doc) -> Path:
    path = _WORK / name
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


@settings(FUZZ, max_examples=60)
@given(doc=json_values)
def test_reader_random_json_values(doc):
    EXAMPLES["reader_random_json"] += 1
    _expect_project_error(_read_all, _write_json("random.json", doc))


@FUZZ
@given(doc=mutated_docs())
@example(
    doc={
        **_valid_doc(),
        "images": [{"id": 0, "file_name": "a" * 300, "height": H, "width": W}],
        "annotations": [{"image_id": 0, "file_name": "b" * 300, "segments_info": []}],
    }
)
def test_reader_mutated_documents(doc):
    EXAMPLES["reader_mutated_json"] += 1
    _expect_project_error(_read_all, _write_json("mutated.json", doc))


@settings(FUZZ, max_examples=60)
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from(
            [
                b"[" * 100000,
                b"1" * 5000,
                b'{"images": ' + b"9" * 5000 + b"}",
                b"",
                b"\xef\xbb\xbf{}",
                b"NaN",
                b'{"images": [], "annotations": [], "categories": []}',
            ]
        ),
    )
)
@example(raw=b"[" * 100000)
@example(raw=b"1" * 5000)
def test_reader_raw_bytes(raw):
    EXAMPLES["reader_raw_bytes"] += 1
    path = _WORK / "raw.json"
    path.write_bytes(raw)
    _expect_project_error(_read_all, path)


PNG_MODES = ["RGB", "RGBA", "L", "P", "I;16", "1", "LA"]


@FUZZ
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    mode=st.sampled_from(PNG_MODES),
    ids=st.lists(st.integers(0, 2**24 - 1) | st.integers(0, 4), min_size=1, max_size=5),
    listed=st.lists(st.integers(1, 5), max_size=4, unique=True),
    corruption=st.sampled_from(["none", "none", "truncate", "flip", "garbage"]),
    cut=st.integers(0, 200),
    seed=st.integers(0, 2**16),
)
def test_reader_random_pngs(h, w, mode, ids, listed, corruption, cut, seed):
    EXAMPLES["reader_random_png"] += 1
    rng = np.random.default_rng(seed)
    id_map = rng.choice(np.array(ids, dtype=np.int64), size=(h, w))
    rgb = np.stack([id_map % 256, id_map // 256 % 256, id_map // 65536], -1).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = buf.getvalue()
    if corruption == "truncate":
        data = data[: cut % max(1, len(data))]
    elif corruption == "flip" and data:
        b = bytearray(data)
        b[cut % len(b)] ^= 0xFF
        data = bytes(b)
    elif corruption == "garbage":
        data = data[:16] + rng.bytes(cut)
    png_dir = _WORK / "png_fuzz"
    png_dir.mkdir(exist_ok=True)
    (png_dir / "img_0.png").write_bytes(data)
    doc = _valid_doc()
    doc["images"] = doc["images"][:1]
    doc["annotations"] = doc["annotations"][:1]
    doc["annotations"][0]["segments_info"] = [{"id": s, "category_id": 1 + s % 2} for s in listed]
    out = _expect_project_error(_read_all, _write_json("png.json", doc), png_dir=png_dir)
    if not isinstance(out, EclipseSegError):  # read: sizes and ids agree with the JSON
        assert out[0].id_map.shape == (H, W)
        present = set(np.unique(out[0].id_map).tolist()) - {0}
        assert present == set(listed)


# --------------------------------------------------------------------------------------------------
# PQ evaluator
# --------------------------------------------------------------------------------------------------
CATS = [
    {"id": 1, "isthing": 1, "name": "a"},
    {"id": 2, "isthing": 1, "name": "b"},
    {"id": 3, "isthing": 0, "name": "c"},
]


@st.composite
def pq_images(draw, n_max=3):
    """Small gt / pred pairs with consistent segments_info."""
    images = []
    for _ in range(draw(st.integers(1, n_max))):
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        seed = draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        gt = rng.integers(0, draw(st.integers(1, 5)), size=(h, w))
        pred = gt.copy() if draw(st.booleans()) else rng.integers(0, 5, size=(h, w))
        noise = rng.random((h, w)) < draw(st.floats(0, 0.5))
        pred[noise] = rng.integers(0, 5, size=int(noise.sum()))
        gsegs = [
            {
                "id": int(s),
                "category_id": int(rng.integers(1, 4)),
                "iscrowd": int(rng.random() < 0.2),
            }
            for s in np.unique(gt)
            if s
        ]
        psegs = [
            {"id": int(s), "category_id": int(rng.integers(1, 4))} for s in np.unique(pred) if s
        ]
        images.append((gt, gsegs, pred, psegs))
    return images


def _relabel(ids: np.ndarray, segs: list[dict], mapping: dict[int, int]):
    out = np.zeros_like(ids, dtype=np.int64)
    for old, new in mapping.items():
        out[ids == old] = new
    return out, [{**s, "id": mapping[s["id"]]} for s in segs]


def _summary(images):
    ev = PanopticEvaluator(CATS)
    for gt, gs, pr, ps in images:
        ev.add(gt, gs, pr, ps)
    return ev.summarize({"g": [1, 3]})


def _assert_same(a, b):
    for k in ("All", "Things", "Stuff"):
        assert a[k]["n"] == b[k]["n"]
        for m in ("pq", "sq", "rq"):
            assert math.isclose(a[k][m], b[k][m], rel_tol=1e-9, abs_tol=1e-12)
    assert a["groups"]["g"]["n"] == b["groups"]["g"]["n"]
    assert math.isclose(a["groups"]["g"]["pq"], b["groups"]["g"]["pq"], rel_tol=1e-9, abs_tol=1e-12)
    for c, r in a["per_class"].items():
        for m in ("tp", "fp", "fn"):
            assert r[m] == b["per_class"][c][m]


@FUZZ
@given(images=pq_images(), data=st.data())
def test_pq_invariant_to_relabelling_and_order(images, data):
    EXAMPLES["pq_relabel_order"] += 1
    ref = _summary(images)
    relabelled = []
    for gt, gs, pr, ps in images:
        new_ids = st.lists(st.integers(1, OFFSET - 1), min_size=5, max_size=5, unique=True)
        gmap = dict(zip(range(1, 6), data.draw(new_ids)))
        pmap = dict(zip(range(1, 6), data.draw(new_ids)))
        relabelled.append((*_relabel(gt, gs, gmap), *_relabel(pr, ps, pmap)))
    _assert_same(ref, _summary(relabelled))
    order = data.draw(st.permutations(range(len(images))))
    _assert_same(ref, _summary([images[i] for i in order]))


malformed_segment = st.one_of(
    json_values,
    st.fixed_dictionaries({"id": json_values, "category_id": json_values}),
    st.fixed_dictionaries(
        {
            "id": st.integers(-2, 6) | st.sampled_from([OFFSET, 2**70, 1.5]),
            "category_id": st.integers(0, 4) | st.sampled_from([2**70, "1", None]),
            "iscrowd": st.integers(-1, 2) | json_scalars,
        }
    ),
)


@FUZZ
@given(
    gsegs=st.lists(malformed_segment, max_size=3) | json_values,
    psegs=st.lists(malformed_segment, max_size=3) | json_values,
    seed=st.integers(0, 2**16),
)
def test_pq_malformed_segments_info_is_data_error(gsegs, psegs, seed):
    EXAMPLES["pq_malformed_segments"] += 1
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, size=(3, 3))
    pred = rng.integers(0, 4, size=(3, 3))
    ev = PanopticEvaluator(CATS)
    try:
        ev.add(gt, gsegs, pred, psegs, where="img.png")
    except DataError as e:
        assert str(e).startswith("img.png: ")
    ev.summarize()


@settings(FUZZ, max_examples=60)
@given(
    cats=st.lists(
        st.fixed_dictionaries(
            {"id": st.integers(0, 4) | json_scalars}, optional={"isthing": json_values}
        ),
        max_size=4,
    )
    | json_values
)
@example(cats=[{"id": 1, "isthing": None}])
@example(cats=[{"id": float("inf")}])
def test_pq_malformed_categories_is_data_error(cats):
    EXAMPLES["pq_malformed_categories"] += 1

    def run():
        ev = PanopticEvaluator(cats)
        ev.add(
            np.ones((2, 2), dtype=np.int64),
            [{"id": 1, "category_id": 1}],
            np.ones((2, 2), dtype=np.int64),
            [{"id": 1, "category_id": 1}],
        )
        return ev.summarize()

    try:
        run()
    except DataError as e:
        assert str(e).strip()


# --------------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------------
KEYS = [
    "solver.lr",
    "solver.iterations",
    "solver.amp",
    "solver.compile",
    "data.root",
    "continual.order",
    "continual.deltas",
    "model.decoder.hidden_dim",
    "model.backbone",
    "model",
    "loss.num_points",
    "output_dir",
    "test",
    "solver",
    "nope",
    "solver.nope",
    "",
    ".",
    "a..b",
    "_base_",
    "model.decoder.hidden_dim.x",
    "continual.scenario",
]
yaml_values = st.one_of(
    st.sampled_from(
        [
            "1",
            "-1",
            "1e-3",
            "1e999",
            "-1e999",
            "nan",
            ".inf",
            "true",
            "yes",
            "null",
            "~",
            "[1, 2]",
            "{a: 1}",
            "'x'",
            "[",
            "{",
            "}",
            "- a",
            "a: b: c",
            "2020-13-45",
            "2001-12-14",
            "0000-00-00",
            "1" * 5000,
            "1" + "0" * 400,
            "0x1F",
            "!!python/object:os.system ls",
            "&a [*a]",
            "!!binary 123",
            "[" * 300,
            "[" * 300 + "]" * 300,
            "*x",
            "!!float abc",
            "? [1]\n: 2",
            "",
        ]
    ),
    st.text(max_size=12),
)


@FUZZ
@given(
    items=st.lists(
        st.tuples(st.sampled_from(KEYS) | st.text(max_size=8), yaml_values).map(
            lambda kv: f"{kv[0]}={kv[1]}"
        )
        | st.text(max_size=12),
        max_size=4,
    )
)
@example(items=["model=1", "model.decoder=2"])
@example(items=["solver.lr=1" + "0" * 400])
@example(items=["solver.lr=2020-13-01"])
def test_parse_overrides_and_load_config(items):
    EXAMPLES["config_overrides"] += 1
    try:
        cfg = load_config(None, items)
    except ConfigError as e:
        assert str(e).strip()
    else:
        assert isinstance(cfg, Config)
        cfg.fingerprint()
    try:
        parse_overrides(items)
    except ConfigError as e:
        assert str(e).strip()


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "model",
                        "solver",
                        "data",
                        "continual",
                        "_base_",
                        "test",
                        "output_dir",
                        "lr",
                        "x",
                    ]
                ),
                yaml_values,
            ),
            max_size=4,
        ).map(lambda kvs: "\n".join(f"{k}: {v}" for k, v in kvs)),
        st.lists(
            st.tuples(
                st.sampled_from(["lr", "iterations", "amp", "compile", "seed", "bogus"]),
                yaml_values,
            ),
            max_size=3,
        ).map(lambda kvs: "solver:\n" + "\n".join(f"  {k}: {v}" for k, v in kvs)),
        st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
    ),
    raw=st.binary(max_size=8),
)
@example(text="solver:\n  lr: 2020-13-01", raw=b"")
@example(text="_base_: [1]", raw=b"")
@example(text="", raw=b"\xff\xfe")
def test_load_config_random_yaml(text, raw):
    EXAMPLES["config_yaml"] += 1
    path = _WORK / "cfg.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if raw[:1] != b"\xff" else raw)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        assert str(e).strip()
    else:
        assert isinstance(cfg, Config)
