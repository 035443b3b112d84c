"""Reliability: the dataset checker reports every corruption (naming the file) without touching a
file; output-directory safety; SIGTERM checkpoints and exits 130; a non-finite loss is a
TrainingError naming the iteration and the loss terms."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eclipse_seg.cli import main
from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.engine.check_data import (
    Problem,
    check_config_data,
    check_dataset,
    format_problems,
    preflight,
)
from eclipse_seg.engine.outputs import LOCK_NAME, claim_output_dir
from eclipse_seg.errors import DataError, TrainingError

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny synthetic dataset (tests corrupt it)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def _split(root: Path, split: str = "train"):
    return root / split / "panoptic.json", root / split / "panoptic", root / split / "images"


def _doc(root: Path, split: str = "train") -> dict:
    return json.loads((root / split / "panoptic.json").read_text())


def _write_doc(root: Path, doc: dict, split: str = "train") -> None:
    (root / split / "panoptic.json").write_text(json.dumps(doc))


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _cfg(root: Path, *extra: str):
    return load_config(resolve_config("synthetic/base"), [f"data.root={root}", *extra])


def _files(problems: list[Problem]) -> list[str]:
    return [p.file for p in problems]


# --------------------------------------------------------------------------------------------------
# dataset checks
# --------------------------------------------------------------------------------------------------
def test_clean_dataset_has_no_problem(data):
    assert check_dataset(*_split(data)) == []
    assert check_config_data(_cfg(data)) == []
    preflight(_cfg(data))  # no raise
    assert format_problems([]) == "no problems found"


def test_missing_image(data):
    name = _doc(data)["images"][2]["file_name"]
    (data / "train" / "images" / name).unlink()
    for deep in (False, True):
        problems = check_dataset(*_split(data), deep=deep)
        assert len(problems) == 1
        assert problems[0].file == str(data / "train" / "images" / name)
        assert "not found" in problems[0].problem


def test_truncated_png_found_by_deep_check_only(data):
    name = _doc(data)["annotations"][1]["file_name"]
    png = data / "train" / "panoptic" / name
    png.write_bytes(png.read_bytes()[:60])
    assert check_dataset(*_split(data), deep=False) == []
    problems = check_dataset(*_split(data))
    assert _files(problems) == [str(png)]
    assert "corrupt or truncated" in problems[0].problem


def test_corrupt_json(data):
    json_path = data / "train" / "panoptic.json"
    json_path.write_text(json_path.read_text()[:-40])
    problems = check_dataset(*_split(data))
    assert _files(problems) == [str(json_path)]
    assert "invalid JSON" in problems[0].problem
    with pytest.raises(DataError, match="invalid JSON"):
        preflight(_cfg(data))


def test_png_id_not_in_segments_info(data):
    doc = _doc(data)
    ann = doc["annotations"][3]
    dropped = ann["segments_info"].pop()
    _write_doc(data, doc)
    problems = check_dataset(*_split(data))
    png = str(data / "train" / "panoptic" / ann["file_name"])
    assert _files(problems) == [png]
    assert (
        f"[{dropped['id']}]" in problems[0].problem
        and "not in segments_info" in problems[0].problem
    )


def test_listed_segment_absent_from_png(data):
    doc = _doc(data)
    ann = doc["annotations"][0]
    ann["segments_info"].append({"id": 4000, "category_id": 1, "iscrowd": 0})
    _write_doc(data, doc)
    problems = check_dataset(*_split(data))
    assert _files(problems) == [str(data / "train" / "panoptic" / ann["file_name"])]
    assert "[4000]" in problems[0].problem and "no pixel" in problems[0].problem


def test_unknown_category(data):
    doc = _doc(data)
    doc["annotations"][5]["segments_info"][0]["category_id"] = 777
    _write_doc(data, doc)
    problems = check_dataset(*_split(data), deep=False)
    assert _files(problems) == [str(data / "train" / "panoptic.json")]
    assert "annotations[5].segments_info[0].category_id" in problems[0].problem
    assert "777" in problems[0].problem


def test_size_mismatch_image_and_png(data):
    from PIL import Image

    doc = _doc(data)
    img_name = doc["images"][4]["file_name"]
    img_path = data / "train" / "images" / img_name
    Image.open(img_path).convert("RGB").resize((32, 48)).save(img_path)
    doc["images"][7]["height"] = 65  # JSON differs from both image and PNG of image 7
    _write_doc(data, doc)
    problems = check_dataset(*_split(data))
    by_file = {}
    for p in problems:
        by_file.setdefault(p.file, []).append(p.problem)
    assert "32x48" in by_file[str(img_path)][0]
    ann7 = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][7]["id"])
    assert any(
        "64x65" in m
        for m in by_file[str(data / "train" / "images" / doc["images"][7]["file_name"])]
    )
    assert any("64x65" in m for m in by_file[str(data / "train" / "panoptic" / ann7["file_name"])])
    assert len(problems) == 3


def test_empty_step_split_and_unknown_order_class(data):
    # scenario 6-2 over 12 classes: step 3 = classes 11 (stuff) and 12 (thing); relabel them away
    doc = _doc(data)
    for ann in doc["annotations"]:
        for seg in ann["segments_info"]:
            seg["category_id"] = {11: 9, 12: 10}.get(seg["category_id"], seg["category_id"])
    _write_doc(data, doc)
    problems = check_config_data(_cfg(data, "continual.scenario=6-2"), deep=False)
    assert len(problems) == 1
    assert problems[0].file == str(data / "train" / "panoptic.json")
    assert "step 3" in problems[0].problem and "empty" in problems[0].problem
    problems = check_config_data(
        _cfg(data, "continual.scenario=6,1,1", "continual.order=[1,2,3,4,5,6,7,99]")
    )
    assert any("[99]" in p.problem for p in problems)
    with pytest.raises(DataError, match="step 3"):
        preflight(_cfg(data, "continual.scenario=6-2"))


def test_many_problems_reported_together_and_nothing_modified(data, capsys):
    doc = _doc(data)
    (data / "train" / "images" / doc["images"][0]["file_name"]).unlink()
    png1 = data / "train" / "panoptic" / doc["annotations"][1]["file_name"]
    png1.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    doc["annotations"][2]["segments_info"][0]["category_id"] = 555
    doc["images"][3]["width"] = "wide"
    del doc["annotations"][4]["segments_info"][0]["id"]
    _write_doc(data, doc)
    (data / "val" / "panoptic" / _doc(data, "val")["annotations"][0]["file_name"]).unlink()
    before = _tree_hash(data)
    problems = check_config_data(_cfg(data))
    assert _tree_hash(data) == before  # checking never writes, moves or deletes
    text = format_problems(problems)
    assert len(problems) >= 6, text
    assert str(png1) in text and "555" in text and "images[3].width" in text
    assert "annotations[4].segments_info[0].id" in text and str(data / "val") in text
    with pytest.raises(DataError) as e:
        preflight(_cfg(data))
    assert "555" in str(e.value) and "images[3].width" in str(e.value)
    assert main(["check-data", "synthetic/base", f"data.root={data}"]) == 1
    out = capsys.readouterr().out
    assert "555" in out and str(png1) in out
    assert main(["check-data", "synthetic/base", f"data.root={data}", "--quick"]) == 1
    assert _tree_hash(data) == before


def test_check_data_main_clean(data, capsys):
    before = _tree_hash(data)
    assert main(["check-data", "synthetic/base", f"data.root={data}"]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert _tree_hash(data) == before


# --------------------------------------------------------------------------------------------------
# output-directory safety
# --------------------------------------------------------------------------------------------------
def _claim(out: Path, cfg, **kw):
    with claim_output_dir(out, cfg, **kw):
        assert (out / LOCK_NAME).read_text() == str(os.getpid())


def test_output_dir_locked_by_live_process(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(str(sleeper.pid))
        with pytest.raises(TrainingError, match=f"pid {sleeper.pid}"):
            _claim(out, cfg)
        (out / LOCK_NAME).write_text(str(os.getppid()))
        with pytest.raises(TrainingError, match="in use"):
            _claim(out, cfg)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (out / LOCK_NAME).exists()  # another job's lock is left alone


def test_output_dir_stale_lock_is_taken_over(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(str(dead.pid))
    _claim(out, cfg)
    assert not (out / LOCK_NAME).exists()
    assert (out / "config.yaml").exists()


def test_output_dir_not_writable(tiny_cfg, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: chmod does not remove write access")
        with pytest.raises(TrainingError, match="not writable"):
            _claim(out, tiny_cfg())
    finally:
        out.chmod(0o700)


def test_output_dir_of_another_config_and_nothing_deleted(tiny_cfg, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    _claim(out, tiny_cfg())
    before = _tree_hash(out)
    other = tiny_cfg("solver.lr=0.123")
    with pytest.raises(TrainingError, match="different config"):
        _claim(out, other)
    assert _tree_hash(out) == before
    _claim(out, tiny_cfg())  # same config: fine
    _claim(out, other, overwrite=True)
    after = _tree_hash(out)
    assert (
        after["results.json"] == before["results.json"]
        and after["notes.txt"] == before["notes.txt"]
    )
    assert set(before) <= set(after)
    assert not (out / LOCK_NAME).exists()


# --------------------------------------------------------------------------------------------------
# training: SIGTERM and a non-finite loss
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_exits_130(tiny_data, tmp_path):
    from eclipse_seg.engine.checkpoint import load_checkpoint
    from tests.conftest import TINY_MODEL

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "eclipse_seg",
        "train",
        "synthetic/base",
        "--step",
        "0",
        "--no-progress",
        *TINY_MODEL,
        f"data.root={tiny_data}",
        "solver.iterations=2000",
        "solver.checkpoint_period=100000",
        "solver.log_period=1",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = out / "eclipse" / "step_0" / "log.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not log.exists():
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.communicate()[1].decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("training wrote no log within 120 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "checkpoint saved" in err.decode()
    payload = load_checkpoint(out / "eclipse" / "step_0" / "last.pt")
    assert payload["manifest"]["iteration"] > 0
    assert payload["manifest"]["complete"] is False
    assert not (out / "eclipse" / "step_0" / "final.pt").exists()
    assert not (out / LOCK_NAME).exists()


def test_non_finite_loss_names_iteration_and_terms(tiny_cfg, tmp_path, monkeypatch):
    from eclipse_seg.engine import train as train_mod
    from eclipse_seg.engine.build import build_datasets, build_model, build_scenario, manifest_for

    cfg = tiny_cfg("solver.iterations=5", "solver.checkpoint_period=100")
    train_ds, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train_ds)
    things = {c["id"] for c in train_ds.categories if c["isthing"]}
    model = build_model(cfg, scenario, "eclipse", 0, things)
    manifest = manifest_for(cfg, scenario, 0, "eclipse", model)
    calls = {"n": 0}
    real = train_mod.SetCriterion.__call__

    def nan_on_third(self, *args, **kwargs):
        loss, terms = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms = {**terms, "loss_mask": float("nan")}
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(train_mod.SetCriterion, "__call__", nan_on_third)
    plan = train_mod.plan_step(cfg, scenario, 0, "eclipse")
    with pytest.raises(TrainingError) as e:
        train_mod.train_step(
            model, cfg, scenario, plan, train_ds, tmp_path / "step", manifest, progress=False
        )
    msg = str(e.value)
    assert "iteration 2" in msg and "non-finite loss" in msg
    for term in ("loss_ce", "loss_mask=nan", "loss_dice"):
        assert term in msg
