"""Our model computes what the official ECLIPSE / Mask2Former inference computes.

detectron2 and the official code cannot run here, so `official_reference.py` is a second,
independent implementation of the official inference (plain functions over an official-layout state
dict, written from the official code's facts, importing nothing of ours). A small random model in the
official key layout (2 prompt groups, deep prompts, per-group mask MLPs, deep classifier, every weight
and FrozenBN statistic perturbed) is loaded with `load_official` and both run on two uint8 images of
different sizes (so both are zero-padded, differently). Decisions whose margin is below 1e-4 in the
reference (a pixel's owner or its >= 0.5 test) are excluded from the exact comparisons; label
decisions and attention masks are asserted to be far from their thresholds.
"""

from __future__ import annotations

import official_reference as ref
import pytest
import torch
from official_fixtures import TINY_OPTS, eval_opts, write_official_configs

from eclipse_seg.compat.official_checkpoint import build_official, load_official
from eclipse_seg.inference import postprocess
from eclipse_seg.model.decoder import manipulate_logits

NAME = "ade_ps 50-20"  # 50 base queries, 20 prompts per step
# step 2: base + 2 prompt groups; 5 decoder layers (levels wrap around), 2 encoder layers
BASE_OPTS = (
    eval_opts(NAME)
    + TINY_OPTS
    + [
        "CONT.TASK",
        "2",
        "MODEL.MASK_FORMER.DEC_LAYERS",
        "6",
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
        "2",
    ]
)
# the other official options: linear class heads without bias, one prompt embedding for all layers,
# the decoder's 1x1 input projections, a ResNeXt-style grouped 3x3 conv
SHALLOW_OPTS = [
    "CONT.DEEP_CLS",
    "False",
    "CONT.USE_BIAS",
    "False",
    "CONT.PROMPT_DEEP",
    "False",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ",
    "True",
    "MODEL.RESNETS.NUM_GROUPS",
    "2",
]
NUM_HEADS = 2  # MODEL.MASK_FORMER.NHEADS of TINY_OPTS
IMAGE_SIZES = [(61, 83), (45, 70)]  # -> padded to 64 x 96
OUTPUT_SIZES = [(75, 101), (45, 70)]  # the first resized after cropping (sem_seg_postprocess)

# ECLIPSE register_myade20k_panoptic.py: ADE20K ids (0-based, before its `id += 1`) of thing classes;
# panoptic_inference tests `label + 1 in thing_dataset_id_to_contiguous_id.values()` = these ids + 1
ADE_THINGS_0BASED = [
    7,
    8,
    10,
    12,
    14,
    15,
    18,
    19,
    20,
    22,
    23,
    24,
    27,
    30,
    31,
    32,
    33,
    35,
    36,
    37,
    38,
    39,
    41,
    42,
    43,
    44,
    45,
    47,
    49,
    50,
    53,
    55,
    56,
    57,
    58,
    62,
    64,
    65,
    66,
    67,
    69,
    70,
    71,
    72,
    73,
    74,
    75,
    76,
    78,
    80,
    81,
    82,
    83,
    85,
    86,
    87,
    88,
    89,
    90,
]
ADE_THING_IDS = {i + 1 for i in ADE_THINGS_0BASED}

LOGIT_TOL, MASK_TOL = 1e-4, 2e-4  # float32 model against the float64 reference
F64_TOL = 1e-6  # float64 model (see test_float64_model_matches_reference_tightly)
MARGIN = 1e-4

# no-object, base, step-1, step-2 class heads: output scale and bias shift, so that sigmoid class
# scores are mostly small as in a trained model (the delta > 0 evidence sum stays below its clamp
# at 1 and is observable) while every group keeps queries; mask MLP outputs scaled for crisper masks
HEAD_SHIFT = (8.0, 0.0, 6.0, 6.0)
HEAD_SCALE, MASK_SCALE = 8.0, 4.0


def _perturb(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor perturbed (so prompts differ and FrozenBN statistics are not identity)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        n = torch.randn(v.shape, generator=g)
        if k.endswith("running_var"):
            out[k] = v * torch.exp(0.3 * n)
        elif k.endswith("running_mean"):
            out[k] = v + 0.1 * n
        else:
            out[k] = v + 0.05 * n
    p = "sem_seg_head.predictor."
    for h, shift in enumerate(HEAD_SHIFT):
        last = p + (
            f"class_embed.cls.{h}.layers.2."
            if p + f"class_embed.cls.{h}.layers.2.weight" in out
            else f"class_embed.cls.{h}."
        )
        out[last + "weight"] = out[last + "weight"] * HEAD_SCALE
        if last + "bias" in out:
            out[last + "bias"] = out[last + "bias"] - shift
    return {
        k: v * MASK_SCALE if "mask_embed" in k and ".layers.2." in k else v for k, v in out.items()
    }


def _make_case(root, opts: list[str]) -> dict:
    """An official-layout checkpoint (.pth) of a perturbed random model, its config and images."""
    cfg = write_official_configs(root)["ade_ps"]
    torch.manual_seed(0)
    model, *_ = build_official(cfg, opts)
    state = _perturb({k: v for k, v in model.state_dict().items() if k != "thing_mask"}, seed=5)
    pth = root / "model_final.pth"
    torch.save({"model": state, "iteration": 1}, pth)
    g = torch.Generator().manual_seed(2)
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in IMAGE_SIZES
    ]
    return {"cfg": cfg, "opts": opts, "pth": pth, "state": state, "images": images}


@pytest.fixture(scope="module")
def deep_case(tmp_path_factory):
    return _make_case(tmp_path_factory.mktemp("deep"), BASE_OPTS)


@pytest.fixture(scope="module")
def shallow_case(tmp_path_factory):
    return _make_case(tmp_path_factory.mktemp("shallow"), BASE_OPTS + SHALLOW_OPTS)


def _load(case: dict, deltas: str):
    return load_official(
        case["pth"], case["cfg"], case["opts"] + ["CONT.LOGIT_MANI_DELTAS", deltas]
    )


def _reference(case: dict, deltas: list[float], batch=None) -> dict:
    return ref.official_inference(
        case["images"],
        case["state"],
        num_heads=NUM_HEADS,
        deltas=deltas,
        thing_ids=ADE_THING_IDS,
        output_sizes=OUTPUT_SIZES,
        batch=batch,
    )


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, atol: float, what: str) -> None:
    diff = (ours.double() - theirs.double()).abs().max().item()
    assert ours.shape == theirs.shape and diff <= atol, (
        f"{what}: max |ours - official| = {diff:.3g} > {atol}"
    )


def _assert_predictions(ours_out, reference: dict, logit_tol: float, mask_tol: float) -> None:
    """Every layer's prediction (the first on the learnable queries), logits after manipulation."""
    ours = [(p.pred_logits, p.pred_masks) for p in ours_out.aux_outputs] + [
        (ours_out.pred_logits, ours_out.pred_masks)
    ]
    assert len(ours) == len(reference["predictions"])
    for i, ((ol, om), (rl, rm)) in enumerate(zip(ours, reference["predictions"])):
        _assert_close(ol, rl, logit_tol, f"layer {i} pred_logits")
        _assert_close(om, rm, mask_tol, f"layer {i} pred_masks")


def _assert_decisions_are_clear(reference: dict) -> None:
    """The inputs keep every thresholded decision of the forward pass away from its threshold, so
    float rounding cannot flip one: attention-mask bits (sigmoid < 0.5) and every query's label."""
    assert reference["attn_margin"] > 1e-5, reference["attn_margin"]
    for r in reference["results"]:
        assert r["label_margin"].min() > 2 * LOGIT_TOL, r["label_margin"].min()


def _assert_panoptic(ours: list[dict], reference: dict) -> None:
    """Identical segments_info; identical panoptic and semantic maps except where the reference's
    pixel decision margin is below 1e-4."""
    for i, (o, r) in enumerate(zip(ours, reference["results"])):
        clear = r["pixel_margin"] >= MARGIN
        assert clear.float().mean() > 0.95, f"image {i}: too many pixels near a decision boundary"
        assert o["panoptic_seg"].shape == r["panoptic_seg"].shape == OUTPUT_SIZES[i]
        bad = (o["panoptic_seg"] != r["panoptic_seg"]) & clear
        assert not bad.any(), f"image {i}: panoptic ids differ at {int(bad.sum())} pixels"
        keys = ("id", "category_id", "isthing")
        assert [{k: s[k] for k in keys} for s in o["segments_info"]] == [
            {k: s[k] for k in keys} for s in r["segments_info"]
        ], f"image {i}: segments_info"
        for so, sr in zip(o["segments_info"], r["segments_info"]):
            assert so["score"] == pytest.approx(sr["score"], abs=1e-5)
        # official semantic output: one-hot of label + 1, channel 0 = unassigned; ours 255 there
        ours_sem = torch.where(o["sem_seg"] == 255, -1, o["sem_seg"])
        bad = (ours_sem != r["sem_seg"].argmax(0) - 1) & clear
        assert not bad.any(), f"image {i}: semantic labels differ at {int(bad.sum())} pixels"


# every sign of delta among the groups; a short list (padded with its last value); a long one (cut)
DELTAS = [
    ("[0.5,0.0,-0.6]", [0.5, 0.0, -0.6]),
    ("[0.3,-0.5]", [0.3, -0.5]),
    ("[-0.2,0.7,0.0,0.9]", [-0.2, 0.7, 0.0, 0.9]),
]


@pytest.mark.parametrize("text,deltas", DELTAS)
def test_float32_model_matches_reference(deep_case, text, deltas):
    case = deep_case
    model = _load(case, text)
    reference = _reference(case, deltas)
    _assert_decisions_are_clear(reference)
    with torch.no_grad():
        out = model(case["images"])
    _assert_predictions(out, reference, LOGIT_TOL, MASK_TOL)
    ours = model.predict(case["images"], output_sizes=OUTPUT_SIZES)
    _assert_panoptic(ours, reference)


def test_test_inputs_exercise_the_official_rules(deep_case):
    """The chosen model and images reach the cases the comparison is meant to cover."""
    reference = _reference(deep_case, [0.5, 0.0, -0.6])
    assert reference["qdims"] == [0, 50, 70, 90] and reference["classes"] == [50, 20, 20]
    assert len(reference["predictions"]) == 6  # queries + 5 layers
    logits = reference["pred_logits"]
    # delta 0.5 on the base group: its no-object logit is logit(0.5 * evidence) with an evidence sum
    # strictly inside (0, 1), so the sum itself (not only its clamp) is compared
    evidence = logits[:, :50, -1].sigmoid() / 0.5
    assert 0.001 < evidence.min() and evidence.max() < 0.999
    for r in reference["results"]:
        groups = torch.bucketize(r["kept"], torch.tensor([50, 70]), right=True)
        assert set(groups.tolist()) == {0, 1, 2}  # every group keeps queries
    segments = [s for r in reference["results"] for s in r["segments_info"]]
    assert {s["isthing"] for s in segments} == {True, False}
    assert sum(r["merged"] for r in reference["results"]) > 0  # stuff merging happens
    # masked attention does mask, and the "a row that blocks everything sees everything" rule fires
    assert all(0.05 < f < 0.95 for f in reference["blocked"]) and reference["unblocked_rows"] > 0


def test_float64_model_matches_reference_tightly(deep_case, monkeypatch):
    """The same comparison in float64, stage by stage, within 1e-6.

    Our pixel decoder, like the official one, casts its inputs with `.float()` (deformable attention
    has no half-precision path); for this run that cast keeps float64 tensors as they are. What is
    left above float64 rounding: the official code builds deformable reference points in float32
    (we in the working dtype) and our deltas buffer holds float32 values (the official ones are Python
    floats) - both ~1e-7 here and exactly equal in float32."""
    case = deep_case
    deltas = [0.5, 0.0, -0.6]
    model = _load(case, "[0.5,0.0,-0.6]").double()
    reference = _reference(case, deltas)
    to_float = torch.Tensor.float
    # (kept for the rest of the test: our post-processing's `.float()` stays in float64 too)
    monkeypatch.setattr(
        torch.Tensor,
        "float",
        lambda self, *a, **k: self if self.dtype == torch.float64 else to_float(self, *a, **k),
    )
    with torch.no_grad():
        batch = reference["batch"]  # preprocessing: see test_preprocessing_matches_reference
        features = model.backbone(batch)
        mask_features, multi_scale = model.features(batch)
        out = model(batch)
    for name, theirs in reference["features"].items():
        _assert_close(features[name], theirs, 1e-9 * float(theirs.abs().max()), f"backbone {name}")
    _assert_close(mask_features, reference["mask_features"], F64_TOL, "mask_features")
    for i, (a, b) in enumerate(zip(multi_scale, reference["multi_scale"])):
        _assert_close(a, b, F64_TOL, f"multi-scale feature {i} (coarsest first)")
    _assert_predictions(out, reference, F64_TOL, F64_TOL)
    padded = tuple(batch.shape[-2:])
    ours = [
        postprocess(
            out.pred_logits[i],
            out.pred_masks[i],
            padded,
            IMAGE_SIZES[i],
            OUTPUT_SIZES[i],
            model.thing_mask,
        )
        for i in range(len(IMAGE_SIZES))
    ]
    _assert_panoptic(ours, reference)


def test_shallow_options_match_reference(shallow_case):
    """Linear class heads without bias, one prompt embedding for every layer, decoder input
    projections and a grouped 3x3 conv, through the same comparison."""
    case = shallow_case
    model = _load(case, "[0.5,0.0,-0.6]")
    assert "sem_seg_head.predictor.prompt_embed.0.weight" in case["state"]
    assert "sem_seg_head.predictor.input_proj.0.weight" in case["state"]
    reference = _reference(case, [0.5, 0.0, -0.6])
    assert reference["attn_margin"] > 1e-5
    with torch.no_grad():
        out = model(case["images"])
    _assert_predictions(out, reference, LOGIT_TOL, MASK_TOL)


def test_preprocessing_matches_reference(deep_case):
    """Normalisation, then zero padding bottom/right to the batch maximum and to a multiple of 32."""
    case = deep_case
    model = _load(case, "[0.5,0.0,-0.6]")
    theirs, sizes = ref.preprocess(case["images"], torch.float32)
    ours = model.preprocess(case["images"])
    assert sizes == IMAGE_SIZES and tuple(ours.shape) == tuple(theirs.shape) == (2, 3, 64, 96)
    _assert_close(ours, theirs, 1e-6, "normalised, padded batch")
    assert (ours[1, :, 45:] == 0).all() and (ours[0, :, :, 83:] == 0).all()


@pytest.mark.parametrize(
    "deltas", [[0.5, 0.0, -0.6], [-0.3, 0.8, 0.2], [0.0, 0.0, 0.0], [0.9, -0.9, 0.4]]
)
def test_logit_manipulation_matches_official_rule(deltas):
    """Ours (vectorised) against the official in-place loop over groups, on logits whose evidence
    sums cover both the clamped (> 1) and the unclamped range."""
    g = torch.Generator().manual_seed(3)
    sizes, classes = [5, 3, 4], [6, 2, 3]
    logits = torch.randn(2, sum(sizes), sum(classes) + 1, generator=g, dtype=torch.float64) * 3 - 3
    theirs = ref.manipulate_logits(logits, [0, 5, 8, 12], classes, deltas)
    query_group = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    col_group = torch.repeat_interleave(torch.arange(3), torch.tensor(classes))
    ours = manipulate_logits(
        logits, query_group, col_group, torch.tensor(deltas, dtype=torch.float64)
    )
    _assert_close(ours, theirs, 1e-12, f"manipulated logits, deltas {deltas}")
    evidence_sums = [
        (logits[:, :5, 6:-1].sigmoid().sum(-1)),
        (logits[:, 5:8, :6].sigmoid().sum(-1)),
    ]
    assert any((s < 1).any() for s in evidence_sums) and any((s > 1).any() for s in evidence_sums)


def _blob_masks(g: torch.Generator, q: int, h: int, w: int) -> torch.Tensor:
    """(Q, h, w) mask logits of random discs: crisp, overlapping, varied sizes."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    cy, cx = torch.rand(q, 1, 1, generator=g) * h, torch.rand(q, 1, 1, generator=g) * w
    r = 1.5 + torch.rand(q, 1, 1, generator=g) * h / 4
    return (r - ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()) * 2.0


@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (0.3, 0.8)])
def test_postprocessing_matches_official_rules(thresholds):
    """Ours against the official panoptic / semantic inference on crafted predictions: duplicated
    stuff classes (merged), things, no-object winners, both thresholds active."""
    object_thr, overlap_thr = thresholds
    g = torch.Generator().manual_seed(5)
    q, c = 24, 6
    thing_mask = torch.tensor([True, True, True, False, False, False])
    logits = torch.full((q, c + 1), -6.0, dtype=torch.float64)
    labels = torch.randint(0, c + 1, (q,), generator=g)  # c = no-object wins
    logits[torch.arange(q), labels] = torch.rand(q, generator=g, dtype=torch.float64) * 5 - 1.5
    masks = _blob_masks(g, q, 12, 16)
    padded, image, output = (48, 64), (45, 59), (60, 80)
    thresh = {"object_mask_threshold": object_thr, "overlap_threshold": overlap_thr}
    theirs = ref.postprocess(
        logits[None],
        masks[None],
        padded,
        [image],
        [output],
        {i + 1 for i in range(c) if thing_mask[i]},
        **thresh,
    )
    ours = postprocess(logits, masks, padded, image, output, thing_mask, **thresh)
    r = theirs[0]
    assert len(r["segments_info"]) >= 3 and {s["isthing"] for s in r["segments_info"]} == {
        True,
        False,
    }
    if overlap_thr > 0:  # some queries fall to each threshold
        assert r["dropped_overlap"] > 0
        scores, labels = logits.sigmoid().max(-1)
        assert ((labels != c) & (scores <= object_thr)).any()
    else:
        assert r["merged"] > 0
    assert (r["label_margin"] > MARGIN).all()
    clear = r["pixel_margin"] >= MARGIN
    assert clear.float().mean() > 0.99
    assert not ((ours["panoptic_seg"] != r["panoptic_seg"]) & clear).any()
    keys = ("id", "category_id", "isthing")
    assert [{k: s[k] for k in keys} for s in ours["segments_info"]] == [
        {k: s[k] for k in keys} for s in r["segments_info"]
    ]
    ours_sem = torch.where(ours["sem_seg"] == 255, -1, ours["sem_seg"])
    assert not ((ours_sem != r["sem_seg"].argmax(0) - 1) & clear).any()
