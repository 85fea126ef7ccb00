"""Kaggle-style data through the real CLI: labelled train/val, an unlabelled test split.

The report shows the validation metrics (labelled as validation) and the test predictions'
class counts; `evaluate --data` writes to its own folder and never touches the run's files;
predictions.csv names the predicted class.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from html_facts import HtmlFacts
from xreport.data import phantom
from xreport.runs import sha256_file

CLASSES = ("normal", "lesion")


def xreport(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def write_manifest(root: Path, *, n: dict[str, int], seed: int, unlabelled: tuple[str, ...]) -> Path:
    """Phantom PNGs and one CSV per split; the splits in ``unlabelled`` have no label column."""
    images, labels, _ = phantom.generate(sum(n.values()), size=32, seed=seed)
    (root / "img").mkdir(parents=True)
    start = 0
    for split, count in n.items():
        lines = ["path" if split in unlabelled else "path,label"]
        for i in range(start, start + count):
            Image.fromarray(images[i, 0]).save(root / "img" / f"{i:04d}.png")
            lines.append(f"img/{i:04d}.png" + ("" if split in unlabelled else f",{CLASSES[labels[i]]}"))
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        start += count
    return root


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("kaggle")
    data = write_manifest(work / "data", n={"train": 64, "val": 32, "test": 24}, seed=3, unlabelled=("test",))
    (work / "run.toml").write_text(f'''name = "kg"
image_size = 32
[data]
dataset = "{data}"
class_names = ["normal", "lesion"]
[model]
arch = "resnet18"
small_input_stem = "off"
[train]
epochs = 1
batch_size = 32
''', encoding="utf-8")
    proc = xreport("train", "--config", "run.toml", cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = xreport("build", "--run", "kg", "--format", "html", "--lang", "en,zh-TW", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work


def test_unlabelled_test_gets_a_named_submission_and_the_report_shows_validation(kaggle):
    report = kaggle / "reports" / "kg"
    header, *rows = (report / "predictions.csv").read_text().splitlines()
    assert header.split(",")[:3] == ["id", "y_pred", "y_pred_name"] and len(rows) == 24
    assert all(r.split(",")[2] == CLASSES[int(r.split(",")[1])] for r in rows)
    test_eval = json.loads((report / "metrics.json").read_text())
    assert test_eval["split"] == "test" and test_eval["metrics"] is None
    assert sum(test_eval["predicted_counts"]) == 24

    val_eval = json.loads((report / "val" / "metrics.json").read_text())
    assert val_eval["split"] == "val" and val_eval["metrics"]["n"] == 32
    assert (report / "val" / "viewer.json").is_file()
    # the figures stage drew one overlay per gallery map from the maps evaluate kept
    assert (report / "val" / "cams.npz").is_file()
    maps = sum(len(g["maps"]) for g in val_eval["explain"]["gallery"])
    assert maps and len(list((report / "val" / "cams").glob("*.png"))) == maps

    html = (report / "report.html").read_text(encoding="utf-8")
    assert "Results on the validation split" in html and "驗證集結果" in html
    assert "Results on the test split" not in html
    # The split table has the test split: its size, unlabelled, and the predicted class counts.
    assert "Test (no labels)" in html and "Test (predicted)" in html
    counts = test_eval["predicted_counts"]
    assert f"{counts[0]}<span class=\"share\"> ({100 * counts[0] / 24:.1f}%)" in html
    # CAMs and the viewer come from the validation split.
    viewer = json.loads(HtmlViewerData.of(html))
    assert viewer["split"] == "val" and {it["y"] for it in viewer["items"]} == {0, 1}
    parser = HtmlFacts()
    parser.feed(html)
    assert "en-viewer" in parser.ids and "en-explain-gallery" in parser.ids


class HtmlViewerData:
    @staticmethod
    def of(html: str) -> str:
        start = html.index('id="xr-viewer-data">') + len('id="xr-viewer-data">')
        return html[start:html.index("</script>", start)]


def test_a_second_build_reuses_both_evaluations(kaggle):
    proc = xreport("build", "--run", "kg", "--format", "html", "--lang", "en", cwd=kaggle)
    assert proc.returncode == 0, proc.stderr
    assert "cached predictions" in proc.stdout


def test_build_split_val_reports_on_validation(kaggle):
    own = kaggle / "reports" / "kg" / "predictions.csv"
    before = sha256_file(own)
    proc = xreport("build", "--run", "kg", "--split", "val", "--format", "html", "--lang", "en", cwd=kaggle)
    assert proc.returncode == 0, proc.stderr
    html = (kaggle / "reports" / "kg" / "report.html").read_text(encoding="utf-8")
    assert "Results on the validation split" in html and "Validation split" in html
    assert sha256_file(own) == before            # the test submission is left alone


def test_external_evaluation_goes_to_its_own_folder(kaggle):
    other = write_manifest(kaggle / "other_site", n={"test": 16}, seed=9, unlabelled=())
    report = kaggle / "reports" / "kg"
    own = {name: sha256_file(report / name) for name in ("predictions.csv", "metrics.json")}
    proc = xreport("evaluate", "--run", "kg", "--data", str(other), "--no-cam", cwd=kaggle)
    assert proc.returncode == 0, proc.stderr
    external = report / "external-other_site"
    assert json.loads((external / "metrics.json").read_text())["data"]["external"] is True
    assert (external / "predictions.csv").read_text().splitlines()[0].startswith("id,y_true,y_pred,y_pred_name")
    assert {name: sha256_file(report / name) for name in own} == own

    proc = xreport("evaluate", "--run", "kg", "--data", str(other), "--no-cam", "--out", "elsewhere", cwd=kaggle)
    assert proc.returncode == 0, proc.stderr
    assert (kaggle / "elsewhere" / "metrics.json").is_file() and "elsewhere" in proc.stdout
    assert {name: sha256_file(report / name) for name in own} == own

    (kaggle / "a_file").write_text("x")
    proc = xreport("evaluate", "--run", "kg", "--data", str(other), "--out", "a_file", cwd=kaggle)
    assert proc.returncode == 2 and "a_file" in proc.stderr and "Traceback" not in proc.stderr
