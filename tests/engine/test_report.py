"""`eclipse-seg report`: one valid, self-contained HTML page with the run's tables, figures and
step-by-step strips of ground truth and every method that was run."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from eclipse_seg.cli import main
from eclipse_seg.engine.report import write_report
from tests.engine.conftest import orders_args

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}


class _Checker(HTMLParser):
    """Tag nesting, <img> sources and every URL-like attribute of a page."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v and tag != "img"]
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def _check_page(path) -> _Checker:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and not checker.open, (checker.errors, checker.open)
    assert not re.search(r"https?://", text)  # nothing is fetched from the network
    assert not checker.urls and "<script" not in text and "<link" not in text
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    return checker


@pytest.fixture(scope="module")
def run_with_baseline(orders_run, tmp_path_factory):
    """The configured order's run of `orders_run` plus the fine-tuning baseline on it."""
    data, orders = orders_run
    out = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(orders / "order_0", out)
    assert main(orders_args(data, out, "--method", "finetune")) == 0
    return data, out


@pytest.mark.slow
def test_report_has_tables_figures_and_a_strip_per_step(run_with_baseline, tmp_path, capsys):
    _, run = run_with_baseline
    page = tmp_path / "r" / "report.html"
    assert main(["report", str(run), "--output", str(page), "--images", "2", "--threads", "1"]) == 0
    checker = _check_page(page)
    text = page.read_text(encoding="utf-8")
    assert "PQ old" in text and "avg" in text and "forgetting" in text and "sky" in text
    assert text.count('class="strip"') == 2 * 2  # 2 images x 2 steps
    assert "panels: ground truth, eclipse, finetune" in text
    # the PQ plot and the heat map, then the strips: ground truth | eclipse | finetune
    strips = [
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in checker.images[2:]
    ]
    assert len(strips) == 4
    assert all(s.size == (3 * 256 + 2 * 4, 256) for s in strips)  # 32x32 images shown at 256


@pytest.mark.slow
def test_report_of_an_orders_run_shows_the_spread(orders_run, tmp_path):
    _, run = orders_run
    page = tmp_path / "orders.html"
    assert main(["report", str(run), "--output", str(page), "--images", "1", "--threads", "1"]) == 0
    text = page.read_text(encoding="utf-8")
    _check_page(page)
    assert "Spread over 3 class orders" in text and "order_2" in text and "±" in text


@pytest.mark.slow
def test_report_without_the_data_leaves_a_note(run_with_baseline, tmp_path):
    _, run = run_with_baseline
    page = tmp_path / "nodata.html"
    assert (
        main(
            [
                "report",
                str(run),
                "--output",
                str(page),
                "--data-root",
                str(tmp_path / "moved"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    checker = _check_page(page)
    assert "Validation images are not shown" in page.read_text(encoding="utf-8")
    assert "--data-root" in page.read_text(encoding="utf-8")
    assert len(checker.images) == 2  # the figures only


def test_report_of_older_results_computes_the_metrics(tmp_path):
    """results.json of a version without forgetting / avg, a method never run, no checkpoint."""
    rows = [
        {"step": 0, "pq_old": None, "pq_new": 40.0, "pq_all": 40.0, "per_class": {"1": 40.0}},
        {
            "step": 1,
            "pq_old": 10.0,
            "pq_new": 70.0,
            "pq_all": 25.0,
            "per_class": {"1": 10.0, "2": 70.0},
        },
    ]
    (tmp_path / "results.json").write_text(
        json.dumps(
            {
                "scenario": "1,1",
                "classes_per_step": [1, 1],
                "class_order": [1, 2],
                "methods": {"eclipse": {"steps": rows}, "finetune": {}},
            }
        )
    )
    page = write_report(tmp_path)
    assert page == tmp_path / "report.html"
    _check_page(page)
    text = page.read_text(encoding="utf-8")
    assert "<td>32.50</td><td>30.00</td>" in text  # avg (40 + 25) / 2, forgetting 40 - 10
    assert "No checkpoint" in text


def test_report_of_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_in_a_headless_browser(run_with_baseline, tmp_path):
    _, run = run_with_baseline
    page = tmp_path / "report.html"
    assert main(["report", str(run), "--output", str(page), "--images", "1", "--threads", "1"]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    low, high = image.getextrema()
    assert high - low > 100  # something was drawn, not a blank page
