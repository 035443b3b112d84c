"""The demo's verdict (each claim checked on the run's numbers) and the joint model's start from the
step-0 weights."""

from __future__ import annotations

import copy

import pytest
import torch

from eclipse_seg.config import load_config
from eclipse_seg.demo import check_claims, format_verdict, incremental_class_pq, load_widened
from eclipse_seg.engine.build import build_model
from eclipse_seg.errors import CheckpointError
from eclipse_seg.scenarios import parse_scenario
from tests.conftest import TINY_MODEL


def _results(
    step0=70.0,
    new=(45.0, 60.0, 40.0),
    old_last=65.0,
    new_last=40.0,
    all_last=62.0,
    ft_old=0.0,
    joint_all=68.0,
) -> dict:
    """A 3-1 scenario (classes 1..3, then 4, 5, 6) as the runner writes it."""
    ecl = [
        {
            "step": 0,
            "pq_old": None,
            "pq_new": step0,
            "pq_all": step0,
            "per_class": {"1": step0, "2": step0, "3": step0},
        }
    ]
    for t, pq in enumerate(new, start=1):
        ecl.append(
            {
                "step": t,
                "pq_old": step0,
                "pq_new": pq,
                "pq_all": step0,
                "per_class": {str(3 + t): pq},
            }
        )
    ecl[-1].update(pq_old=old_last, pq_new=new_last, pq_all=all_last)
    ft = [
        {
            "step": t,
            "pq_old": ft_old if t else None,
            "pq_new": 50.0,
            "pq_all": 10.0,
            "per_class": {},
        }
        for t in range(4)
    ]
    joint = [
        {"step": t, "pq_old": None, "pq_new": 0.0, "pq_all": joint_all, "per_class": {}}
        for t in range(4)
    ]
    return {
        "scenario": "3-1",
        "classes_per_step": [3, 1, 1, 1],
        "class_order": [1, 2, 3, 4, 5, 6],
        "methods": {
            "eclipse": {"steps": ecl},
            "finetune": {"steps": ft},
            "joint": {"steps": joint},
        },
    }


def test_every_claim_holds_on_good_numbers():
    claims = check_claims(_results())
    assert len(claims) == 1 + 3 + 4 and all(c.holds for c in claims)
    assert "All 8 claims hold" in format_verdict(claims)
    assert incremental_class_pq(_results()) == [(1, 4, 45.0), (2, 5, 60.0), (3, 6, 40.0)]


@pytest.mark.parametrize(
    "change, failing",
    [
        ({"step0": 50.0, "old_last": 46.0}, "step-0 PQ"),
        ({"new": (45.0, 29.9, 40.0)}, "class 5 (step 2)"),
        ({"old_last": 62.9}, "keeps the old classes"),  # 90% of 70 is 63
        ({"new_last": 20.0, "new": (45.0, 60.0, 20.0)}, "new-class PQ after step 3"),
        ({"ft_old": 10.5}, "fine-tuning forgets"),
        ({"joint_all": 61.9}, "joint is the ceiling"),
    ],
)
def test_a_failing_claim_is_named(change, failing):
    claims = check_claims(_results(**change))
    failed = [c for c in claims if not c.holds]
    assert failed and all(failing in c.text or "class 6" in c.text for c in failed)
    assert any(failing in c.text for c in failed)
    text = format_verdict(claims)
    assert "[FAIL]" in text and "FAIL on this run" in text


def test_missing_class_value_fails_the_claim():
    results = _results()
    results["methods"]["eclipse"]["steps"][2]["per_class"] = {"5": None}
    failed = [c for c in check_claims(results) if not c.holds]
    assert [c.value for c in failed] == [None]


@pytest.mark.parametrize("deep_cls", [False, True])
def test_joint_starts_from_the_step0_weights(tiny_cfg, deep_cls):
    cfg = tiny_cfg("continual.scenario=9-1", f"model.decoder.deep_cls={str(deep_cls).lower()}")
    scenario = parse_scenario("9-1", list(range(1, 13)))
    things = {2, 4, 6, 8, 10, 12}
    base = build_model(cfg, scenario, "eclipse", 0, things)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn_like(p))
    joint = build_model(cfg, scenario, "joint", 0, things)
    fresh = copy.deepcopy(joint.state_dict())
    load_widened(joint, base.state_dict(), "base.pt")
    state = joint.state_dict()
    widened = []
    for key, value in base.state_dict().items():
        if key == "thing_mask":
            continue
        if state[key].shape != value.shape:  # base rows copied, 3 new classes keep their init
            widened.append(key)
            assert torch.equal(state[key][:9], value)
            assert torch.equal(state[key][9:], fresh[key][9:])
        else:
            assert torch.equal(state[key], value), key
    last = "layers.2." if deep_cls else ""
    head = f"sem_seg_head.predictor.class_embed.cls.1.{last}"
    assert sorted(widened) == [head + "bias", head + "weight"]
    assert joint.thing_mask.tolist() == [c in things for c in range(1, 13)]


def test_joint_refuses_a_checkpoint_of_another_model(tiny_cfg):
    scenario = parse_scenario("9-1", list(range(1, 13)))
    joint = build_model(tiny_cfg(), scenario, "joint", 0, set())
    other = load_config("configs/synthetic/base.yaml", TINY_MODEL + ["model.decoder.hidden_dim=16"])
    state = build_model(other, scenario, "eclipse", 0, set()).state_dict()
    with pytest.raises(CheckpointError, match="shape"):
        load_widened(joint, state, "other.pt")
