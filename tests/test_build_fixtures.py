"""`xreport build` and `xreport compare` through the real CLI on the committed fixture runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from html_facts import HtmlFacts

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
SECTIONS = ("summary", "data", "model", "training", "results", "explain", "discussion", "repro")
ZH_TW_HEADINGS = ("摘要", "資料", "模型", "訓練")


def xreport(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixtures")
    shutil.copytree(FIXTURES, root / "checkpoints")
    return root


@pytest.fixture(scope="module")
def binary_report(workspace) -> Path:
    proc = xreport("build", "--run", "fixture_binary", "--lang", "en,zh-TW", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    return workspace / "reports" / "fixture_binary"


def test_fixture_checkpoints_stay_small():
    for path in FIXTURES.rglob("*"):
        if path.is_file():
            assert path.stat().st_size < 1_000_000, path


def test_html_holds_every_section_in_each_language(binary_report):
    html = (binary_report / "report.html").read_text(encoding="utf-8")
    parser = HtmlFacts()
    parser.feed(html)
    for lang in ("en", "zh-TW"):
        for section in SECTIONS:
            assert f"{lang}-{section}" in parser.ids, (lang, section)
    assert parser.srcs and all(src.startswith("data:image/") for src in parser.srcs)
    # Only the interactive viewer's own inline data and script: nothing loaded from elsewhere.
    assert parser.scripts == 2 and "<script src" not in html and html.count('id="xr-viewer-data"') == 1
    for lang in ("en", "zh-TW"):
        assert f"{lang}-viewer" in parser.ids
    for leak in ("jinja2.", "None</", ">nan<", "{{", "http://", "https://"):
        assert leak not in html, leak
    for heading in ZH_TW_HEADINGS:
        assert heading in html


def test_metrics_and_predictions_agree(binary_report):
    import numpy as np
    import pandas as pd
    from sklearn.metrics import accuracy_score, roc_auc_score

    metrics = json.loads((binary_report / "metrics.json").read_text())
    frame = pd.read_csv(binary_report / "predictions.csv")
    assert len(frame) == metrics["data"]["n"] == 80
    m = metrics["metrics"]
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(frame.y_true, frame.y_pred), abs=1e-9)
    assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(frame.y_true, frame.prob_1), abs=1e-4)
    assert np.allclose(frame[["prob_0", "prob_1"]].sum(axis=1), 1, atol=1e-4)
    gallery = metrics["explain"]["gallery"]
    # evaluate keeps the gallery's maps (cams.npz); the figures stage drew one overlay per map
    assert gallery and all(g.get("file") is None for g in gallery) and (binary_report / "cams.npz").is_file()
    assert len(list((binary_report / "cams").glob("*.png"))) == sum(len(g["maps"]) for g in gallery)
    assert metrics["explain"]["localisation"] is not None  # phantom lesions have masks
    # The predicted class is named beside its index.
    assert (frame.y_pred_name == frame.y_pred.map(dict(enumerate(metrics["class_names"])))).all()
    # The viewer holds every gallery image (and here all 80: fewer than the 100 most confident).
    view = json.loads((binary_report / "viewer.json").read_text())
    assert metrics["explain"]["viewer"] == {"file": "viewer.json", "n": len(view["items"])} and len(view["items"]) == 80
    assert {g["id"] for g in gallery} <= {it["id"] for it in view["items"]}


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="poppler-utils not installed")
def test_pdfs_embed_a_cjk_font_and_hold_chinese_headings(binary_report):
    for lang in ("en", "zh-TW"):
        assert (binary_report / f"report.{lang}.pdf").stat().st_size > 10_000
    fonts = subprocess.run(["pdffonts", str(binary_report / "report.zh-TW.pdf")],
                           capture_output=True, text=True).stdout
    cjk = [line for line in fonts.splitlines() if "CJK" in line]
    assert cjk and all(" yes " in line for line in cjk), fonts  # embedded
    text = subprocess.run(["pdftotext", str(binary_report / "report.zh-TW.pdf"), "-"],
                          capture_output=True, text=True).stdout
    for heading in ZH_TW_HEADINGS:
        assert heading in text, heading


def test_rebuild_reuses_predictions_and_is_quick(binary_report, workspace):
    before = (binary_report / "predictions.csv").stat().st_mtime_ns
    proc = xreport("build", "--run", "fixture_binary", "--lang", "en", "--format", "html", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert "cached predictions" in proc.stdout
    assert (binary_report / "predictions.csv").stat().st_mtime_ns == before


def test_three_class_report_in_simplified_chinese(workspace):
    proc = xreport("build", "--run", "fixture_3class", "--lang", "zh-CN", "--format", "html",
                   cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    report = workspace / "reports" / "fixture_3class"
    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics["class_names"]) == 3
    assert metrics["metrics"]["operating_points"] == []
    assert metrics["metrics"]["roc_auc"]["average"] == "macro-ovr"
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "zh-CN-results" in html and "混淆矩阵" in html


def test_compare_two_fixture_runs(workspace, binary_report):
    proc = xreport("compare", "--runs", "fixture_binary", "fixture_binary_b", "--lang", "en,zh-TW",
                   "--format", "html", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    out = workspace / "reports" / "compare-fixture_binary-fixture_binary_b"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "McNemar" in html and "DeLong" in html
    assert "fixture_binary_b" in html
