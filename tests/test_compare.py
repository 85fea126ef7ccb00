"""`xreport compare`: runs side by side, paired tests stated plainly, HTML and PDF."""
from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from xreport import compare
from xreport import config as xconfig
from xreport import metrics as xmetrics
from xreport import render, runs, study
from xreport.compare import EvaluatedRun
from xreport.errors import ConfigError, ReportError, RunError

from html_facts import HtmlFacts

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["NORMAL", "PNEUMONIA"]
N_BOOT = 200


# ---------------------------------------------------------------- synthetic runs

def _probs(y: np.ndarray, *, separation: float, seed: int, k: int = 2) -> np.ndarray:
    """Scores that favour the true class by ``separation`` logits (higher: a better model)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (len(y), k))
    logits[np.arange(len(y)), y] += separation
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.round(e / e.sum(axis=1, keepdims=True), 6)


def _history(epochs: int, *, level: float) -> list[dict]:
    return [{"epoch": e, "train_loss": 0.8 / e, "val_loss": 0.6 / e + 0.1, "train_acc": level - 0.1 / e,
             "val_acc": level - 0.15 / e, "train_f1": level - 0.12 / e, "val_f1": level - 0.17 / e,
             "val_auc": min(0.99, level + 0.05), "lr": 1e-3, "seconds": 41.5} for e in range(1, epochs + 1)]


def _meta(name: str, arch: str, *, class_names: list[str], pretrained: bool, cfg: xconfig.RunConfig) -> dict:
    return {"arch": arch, "num_classes": len(class_names), "class_names": class_names,
            "class_names_i18n": {"zh-TW": ["正常", "肺炎"]} if len(class_names) == 2 else {}, "task": "binary" if len(class_names) == 2 else "multiclass",
            "in_channels": 1, "image_size": 32, "small_input_stem": True, "dropout": 0.0,
            "head": "linear", "loss": "cross_entropy",
            "pretrained": pretrained, "mean": [0.5], "std": [0.25], "data": {"dataset": "phantom", "kind": "phantom"},
            "data_fingerprint": "cd" * 32, "epoch": 4, "selected_by": "val_auc", "seed": 0,
            "config": xconfig.to_dict(cfg), "params": 11_170_000 if arch == "resnet18" else 23_500_000,
            "versions": {"xreport": "0.1.0"}, "created": "2025-01-02T03:04:05", "command": ["xreport", "train"]}


def _config(name: str, n_test: int, classes: int = 2) -> xconfig.RunConfig:
    return xconfig.RunConfig(
        name=name, image_size=32,
        data=xconfig.DataConfig(dataset="phantom", phantom_size=32, phantom_train=16, phantom_val=8,
                                phantom_test=n_test, phantom_classes=classes,
                                # the names the checkpoint records (classes match by name)
                                class_names=tuple(CLASSES) if classes == 2 else ()),
        train=xconfig.TrainConfig(epochs=6, batch_size=8))


def memory_run(root: Path, name: str, *, y: np.ndarray, ids: list[str], separation: float, seed: int,
               arch: str = "resnet18", class_names: list[str] | None = None, pretrained: bool = False,
               epochs: int = 5) -> EvaluatedRun:
    """An evaluated run held in memory (no checkpoint file): what compare_context consumes."""
    class_names = class_names or CLASSES
    probs = _probs(y, separation=separation, seed=seed, k=len(class_names))
    task = "binary" if len(class_names) == 2 else "multiclass"
    metrics = xmetrics.compute_all(y, probs, class_names=class_names, task=task, n_boot=N_BOOT, seed=0)
    evaluation = {"schema": 1, "run": name, "split": "test", "created": "2025-01-03T10:00:00",
                  "checkpoint": {"sha256": f"{seed:02d}" * 32}, "data": {"source": "phantom(seed=1234)",
                                                                      "fingerprint": "cd" * 32, "n": len(y)},
                  "metrics": metrics, "explain": None, "architecture": None}
    paths = runs.RunPaths(name, checkpoints_root=root / "checkpoints", reports_root=root / "reports")
    cfg = _config(name, len(y), len(class_names))
    return EvaluatedRun(paths=paths, meta=_meta(name, arch, class_names=class_names, pretrained=pretrained, cfg=cfg),
                        evaluation=evaluation, ids=list(ids), y_true=y, probs=probs,
                        history=_history(epochs, level=0.7 + separation / 10))


def _labels(n: int, seed: int = 7, k: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, n)


def _text(html: str) -> str:
    """Visible text without tags and data URIs, whitespace collapsed."""
    html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _body(html: str, lang: str) -> str:
    start = html.index(f'id="body-{lang}"')
    end = html.find('<div class="langbody"', start + 1)
    return html[start:end if end > 0 else len(html)]


# ---------------------------------------------------------------- three runs, in memory

def three_memory_runs(root: Path) -> list[EvaluatedRun]:
    """r18, a clearly better pretrained r50 and r18.b (nearly r18) on the same 300 images:
    the compare and study tests' three runs."""
    y = _labels(300)
    ids = [f"img-{i:04d}.png" for i in range(300)]
    return [memory_run(root, "r18", y=y, ids=ids, separation=1.0, seed=1),
            memory_run(root, "r50_pre", y=y, ids=ids, separation=3.0, seed=2, arch="resnet50",
                       pretrained=True),
            memory_run(root, "r18.b", y=y, ids=ids, separation=1.05, seed=3)]


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    root = tmp_path_factory.mktemp("cmp3")
    evaluated = three_memory_runs(root)
    ctx = compare.compare_context(evaluated, name="compare-r18-r50_pre-r18.b", reports_root=root / "reports",
                                  langs=["en", "zh-TW"], command="xreport compare --runs r18 r50_pre r18.b",
                                  n_boot=N_BOOT)
    html = compare.render_compare_html(ctx, langs=["en", "zh-TW"])
    (root / "reports" / "compare-r18-r50_pre-r18.b" / "report.html").write_text(html, encoding="utf-8")
    return ctx, html, root


def test_html_is_self_contained_and_names_every_run_in_every_language(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    parser = HtmlFacts()
    parser.feed(html)
    parser.close()
    assert parser.srcs and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    # per language: training curves + ROC + one confusion matrix per run
    assert len(parser.srcs) == 2 * (2 + 3)
    assert not re.search(r"https?://", html)
    assert "undefined" not in html.lower() and "None" not in _text(html)
    for lang in ("en", "zh-TW"):
        body = _body(html, lang)
        for name in ("r18", "r50_pre", "r18.b"):
            assert name in body
        for section in ("cmp-summary", "cmp-metrics", "cmp-training", "cmp-roc", "cmp-confusion", "cmp-tests",
                        "cmp-repro"):
            assert f"{lang}-{section}" in parser.ids
    assert render.translator("zh-TW")("compare.title") in html
    assert "<title>Model comparison · compare-r18-r50_pre-r18.b</title>" in html


def test_metrics_table_has_intervals_and_setup_rows(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    en = _text(_body(html, "en"))
    assert [row["key"] for row in ctx["metric_rows"]] == [k for k, _, _ in compare.METRIC_ROWS]
    acc = ctx["metric_rows"][0]["values"]
    lo, hi = acc[1]["ci95"]
    assert f"{acc[1]['value']:.3f} ({lo:.3f}–{hi:.3f})" in en
    assert ctx["metric_rows"][0]["best"] == [False, True, False]          # the well-separated run wins
    assert ctx["metric_rows"][-1]["better"] == "min"                        # ECE: lower is better
    for text in ("resnet50", "ImageNet-pretrained", "From scratch", "11,170,000", "3 min 28 s", "32 × 32 px"):
        assert text in en, text
    assert [r["train_time"]["params"] for r in ctx["runs"]] == [{"m": 3, "s": 28}] * 3   # 5 epochs x 41.5 s


def test_paired_tests_each_against_the_reference_with_holm(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    t50, tb = ctx["tests"]
    assert (t50["run"], t50["ref"], tb["run"], tb["ref"]) == ("r50_pre", "r18", "r18.b", "r18")
    assert ctx["adjusted"] and ctx["n_paired"] == 2
    for test in (t50, tb):
        mc, auc = test["mcnemar"], test["auc"]
        assert auc["method"] == "delong" and mc["p_holm"] >= mc["p_value"] and auc["p_holm"] >= auc["p_value"]
    # the strong run is significantly better on both, the near-copy is not
    assert t50["mcnemar"]["c"] > t50["mcnemar"]["b"] and t50["mcnemar"]["significant"]
    assert t50["mcnemar"]["sentence"]["key"] == "compare.acc.better"
    assert t50["auc"]["sentence"]["key"] == "compare.auc.higher" and t50["auc"]["difference"] > 0
    assert not tb["mcnemar"]["significant"] and tb["mcnemar"]["sentence"]["key"].startswith("compare.acc.not_")
    en = _text(_body(html, "en"))
    assert "r50_pre is significantly more accurate than r18" in en
    assert re.search(r"r18\.b is not significantly (more|less) accurate than r18 \(accuracy [\d.]+ vs [\d.]+; "
                     r"McNemar p = [\d.]+, Holm-adjusted p = [\d.]+\)", en)
    assert compare.format_p(tb["mcnemar"]["p_value"]) in en
    assert compare.p_text(tb["auc"]["p_holm"]) in en
    assert "Several comparisons inflate false positives" in en
    zh = _text(_body(html, "zh-TW"))
    assert "r50_pre 的準確率顯著高於 r18" in zh and "Holm 校正後" in zh


def test_compare_json_summary_is_written_by_compare_runs_shape(three: tuple[dict, str, Path]) -> None:
    ctx, _, _ = three
    summary = compare._json_summary(ctx)
    text = json.dumps(summary, allow_nan=False)      # machine-readable, strict JSON
    assert summary["reference"] == "r18" and len(summary["tests"]) == 2
    assert set(summary["metrics"][0]["values"]) == {"r18", "r50_pre", "r18.b"} and "figures" not in text


# ---------------------------------------------------------------- pairing rules

def test_reordered_ids_are_realigned_and_give_the_same_tests(tmp_path: Path) -> None:
    y = _labels(120, seed=3)
    ids = [f"id{i}" for i in range(120)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y, ids=ids, separation=1.5, seed=2)
    perm = np.random.default_rng(0).permutation(120)
    b_shuffled = dataclasses.replace(b, ids=[ids[i] for i in perm], y_true=y[perm], probs=b.probs[perm])
    (plain,) = compare.paired_tests(a, [b], n_boot=50)
    (shuffled,) = compare.paired_tests(a, [b_shuffled], n_boot=50)
    assert shuffled["paired"] and shuffled["mcnemar"] == plain["mcnemar"]
    assert shuffled["auc"]["p_value"] == pytest.approx(plain["auc"]["p_value"])
    assert not plain["reason"] and plain["n"] == 120


def test_mismatched_ids_compare_metrics_without_paired_tests_and_say_why(tmp_path: Path) -> None:
    y = _labels(100, seed=4)
    a = memory_run(tmp_path, "a", y=y, ids=[f"x{i}" for i in range(100)], separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y[:90], ids=[f"x{i}" for i in range(10, 100)], separation=1.0, seed=2)
    ctx = compare.compare_context([a, b], name="cmp", reports_root=tmp_path / "reports", langs=["en"], n_boot=50)
    (test,) = ctx["tests"]
    assert not test["paired"] and test["mcnemar"] is None and test["auc"] is None
    assert test["reason"] == {"key": "compare.unpaired.ids",
                              "params": {"run": "b", "ref": "a", "n_run": 90, "n_ref": 100, "n_common": 90}}
    assert ctx["n_paired"] == 0 and not ctx["adjusted"]
    html = compare.render_compare_html(ctx, langs=["en"])
    text = _text(html)
    assert ("b has no paired tests against a: b was tested on 90 images and a on 100, 90 of them shared, "
            "but paired tests need exactly the same test images") in text
    assert "McNemar" not in text.replace("McNemar's test looks", "")   # no test tables
    assert "Metrics side by side" in text and "undefined" not in html


def test_other_labels_or_classes_rule_out_pairing_and_class_names_are_escaped(tmp_path: Path) -> None:
    y = _labels(60, seed=5)
    ids = [f"i{i}" for i in range(60)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1)
    flipped = y.copy()
    flipped[:3] = 1 - flipped[:3]
    b = memory_run(tmp_path, "b", y=flipped, ids=ids, separation=1.0, seed=2)
    evil = memory_run(tmp_path, "c", y=y, ids=ids, separation=1.0, seed=3,
                      class_names=["NORMAL", "<script>alert(1)</script>"])
    order, why = compare.align(a, b)
    assert order is None and why == {"key": "compare.unpaired.labels", "params": {"run": "b", "ref": "a", "n": 3}}
    ctx = compare.compare_context([a, evil], name="cmp-evil", reports_root=tmp_path / "reports", langs=["en"],
                                  n_boot=50)
    assert ctx["tests"][0]["reason"]["key"] == "compare.unpaired.classes"
    html = compare.render_compare_html(ctx, langs=["en"])
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_multiclass_uses_the_paired_bootstrap_and_a_macro_roc(tmp_path: Path) -> None:
    names = ["mild", "moderate", "severe"]
    y = _labels(150, seed=6, k=3)
    ids = [f"m{i}" for i in range(150)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1, class_names=names)
    b = memory_run(tmp_path, "b", y=y, ids=ids, separation=2.0, seed=2, class_names=names)
    (test,) = compare.paired_tests(a, [b], n_boot=100, seed=1)
    assert test["auc"]["method"] == "bootstrap" and test["auc"]["ci95"][0] < test["auc"]["difference"]
    assert test["auc"]["sentence"]["params"]["detail"]["params"]["method"] == {"key": "compare.method.bootstrap",
                                                                             "params": {}}
    roc = compare._roc_curve(b.metrics)
    assert len(roc["fpr"]) == 201 and roc["tpr"][0] == 0.0 and roc["tpr"][-1] == pytest.approx(1.0)


# ---------------------------------------------------------------- small pieces

def test_holm_adjustment_and_p_formatting() -> None:
    assert compare.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert compare.holm([0.5, None, 0.2]) == [pytest.approx(0.5), None, pytest.approx(0.4)]
    assert compare.holm([0.9, 0.8]) == [1.0, 1.0]
    assert [compare.format_p(p) for p in (0.41, 0.0492, 0.0004, None)] == [
        "p = 0.410", "p = 0.049", "p < 0.001", "p = —"]


def test_verdict_words_follow_the_direction_and_significance() -> None:
    words = ("better", "worse", "not_better", "not_worse", "same")
    assert compare._verdict(3, True, words) == "better"
    assert compare._verdict(-3, True, words) == "worse"
    assert compare._verdict(2, False, words) == "not_better"
    assert compare._verdict(-2, False, words) == "not_worse"
    assert compare._verdict(0, False, words) == "same"


def test_default_name_and_bad_inputs(tmp_path: Path) -> None:
    assert compare.default_name(["a", "b", "c"]) == "compare-a-b-c"
    long = compare.default_name(["x" * 60, "y" * 60, "z" * 60])
    assert long.startswith("compare-3runs-") and len(long) < 40
    one = [runs.RunPaths("a", reports_root=tmp_path)]
    with pytest.raises(ConfigError, match="at least 2"):
        study.compare_runs(one, None, tmp_path, ["en"], ["html"])
    with pytest.raises(ConfigError, match="twice"):
        study.compare_runs(one * 2, None, tmp_path, ["en"], ["html"])
    with pytest.raises(RunError, match="not allowed"):
        study.compare_runs(one + [runs.RunPaths("b", reports_root=tmp_path)], "../up", tmp_path, ["en"], ["html"])
    with pytest.raises(RunError, match="report folder of run 'b'"):
        study.compare_runs(one + [runs.RunPaths("b", reports_root=tmp_path)], "b", tmp_path, ["en"], ["html"])
    with pytest.raises(ConfigError, match="--lang 'fr'"):
        study.compare_runs(one * 2, None, tmp_path, ["fr"], ["html"])


def test_every_compare_message_key_exists_in_every_language() -> None:
    catalogs = {lang: render.load_catalog(lang) for lang in render.LANGS}
    mine = {lang: json.loads((REPO / "templates" / "i18n" / lang / "compare.json").read_text(encoding="utf-8"))
            for lang in render.LANGS}
    assert set(mine["zh-TW"]) == set(mine["en"]) == set(mine["zh-CN"])
    sources = [REPO / "xreport" / "compare.py", REPO / "templates" / "compare.html.j2",
               *sorted((REPO / "templates" / "partials").glob("compare_*.j2"))]
    used: set[str] = set()
    for path in sources:
        used |= set(re.findall(r"""["']((?:compare|metric)\.[\w.]+)["']""", path.read_text(encoding="utf-8")))
    # keys finished in code ("compare.acc." + verdict): every ending they can take
    used = {k for k in used if not k.endswith((".", ".j2", ".json"))}
    used |= {f"compare.acc.{v}" for v in ("better", "worse", "not_better", "not_worse", "same")}
    used |= {f"compare.auc.{v}" for v in ("higher", "lower", "not_higher", "not_lower", "same")}
    used |= {f"compare.method.{m}" for m in xmetrics.PAIRED_AUC_METHODS}
    for lang in render.LANGS:
        missing = sorted(k for k in used if k not in catalogs[lang])
        assert not missing, (lang, missing)


# ---------------------------------------------------------------- compare_runs on run folders

def _write_run_folder(root: Path, name: str, *, arch: str, separation: float | None, seed: int,
                      test_ids: list[str], test_y: np.ndarray, fingerprint: str) -> runs.RunPaths:
    """A run folder with a real checkpoint; with ``separation`` also fresh predictions + metrics."""
    from xreport.models import build_model

    paths = runs.RunPaths(name, checkpoints_root=root / "checkpoints", reports_root=root / "reports")
    cfg = _config(name, len(test_ids))
    runs.write_text(paths.config, xconfig.to_toml(cfg))
    meta = _meta(name, arch, class_names=CLASSES, pretrained=False, cfg=cfg)
    meta["data_fingerprint"] = fingerprint
    meta["preprocess"] = dataclasses.asdict(cfg.preprocess)
    meta["small_input_stem"] = False      # the standard stem: a 32 px forward pass costs little
    model = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=False)
    runs.save_checkpoint(paths.best, state_dict=model.state_dict(), meta=meta)
    rows = _history(4, level=0.8)
    with open(paths.history, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if separation is None:
        return paths
    probs = _probs(test_y, separation=separation, seed=seed)
    paths.report_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.predictions, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "y_true", "y_pred", "prob_0", "prob_1"])
        for ident, label, p in zip(test_ids, test_y, probs):
            writer.writerow([ident, int(label), int(p.argmax()), f"{p[0]:.6f}", f"{p[1]:.6f}"])
    metrics = xmetrics.compute_all(test_y, probs, class_names=CLASSES, task="binary", n_boot=N_BOOT, seed=0)
    runs.write_json(paths.metrics, {
        "schema": 1, "run": name, "split": "test", "created": "2025-01-03T10:00:00", "device": "cpu",
        "tta": False, "checkpoint": {"path": str(paths.best), "sha256": runs.sha256_file(paths.best), "epoch": 4},
        "data": {"source": "phantom(seed=1234)", "fingerprint": fingerprint, "n": len(test_ids)},
        "metrics": metrics, "explain": None, "timings": {}, "skipped": []})
    return paths


def test_compare_runs_reuses_fresh_runs_evaluates_stale_ones_and_locks(tmp_path: Path) -> None:
    from xreport.data import load_dataset

    cfg = _config("x", 40)
    ds = load_dataset(cfg.data, cfg.preprocess, image_size=32, splits=("test",))
    test = ds.splits["test"]
    y = test.labels.numpy()
    fresh = _write_run_folder(tmp_path, "fresh", arch="resnet18", separation=2.0, seed=1,
                              test_ids=test.ids, test_y=y, fingerprint=ds.fingerprint)
    stale = _write_run_folder(tmp_path, "stale", arch="resnet18", separation=None, seed=2,
                              test_ids=test.ids, test_y=y, fingerprint=ds.fingerprint)
    before = fresh.metrics.read_bytes()
    result = study.compare_runs([fresh, stale], None, tmp_path / "reports", ["en"], ["html"],
                                  device="cpu", command="xreport compare --runs fresh stale", n_boot=N_BOOT,
                                  progress=False)
    out = tmp_path / "reports" / "compare-fresh-stale"
    assert result.report_dir == out and result.evaluated == ["stale"]
    assert fresh.metrics.read_bytes() == before                     # a fresh run is not re-evaluated
    assert stale.metrics.is_file() and stale.predictions.is_file()
    # compare is the study without notes or CAMs: its summary is the study's study.json
    # (compare.json's keys and more), one file whichever command wrote the folder
    assert set(result.files) == {out / "report.html", out / "study.json"}
    summary = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert summary["kind"] == "study" and summary["reference"] == summary["best"]
    assert summary["tests"][0]["paired"] and summary["tests"][0]["mcnemar"]["b"] >= 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "fresh" in html and "stale" in html and "undefined" not in html
    assert not list(out.glob(".*.tmp")) and not list((out / "figures").glob(".*.tmp"))
    with runs.run_lock(out, what="comparison report"):
        with pytest.raises(RunError, match="another xreport process"):
            study.compare_runs([fresh, stale], None, tmp_path / "reports", ["en"], ["html"], device="cpu",
                                 progress=False)


def test_a_run_without_test_labels_cannot_be_compared(tmp_path: Path) -> None:
    paths = runs.RunPaths("nolabels", checkpoints_root=tmp_path / "c", reports_root=tmp_path / "r")
    from xreport import artifacts

    fixture = Path(__file__).parent / "fixtures" / "checkpoints" / "fixture_binary" / "best.pt"
    runs.save_checkpoint(paths.best, state_dict={}, meta=dict(artifacts.load_checkpoint_meta(fixture)))
    runs.write_json(paths.metrics, {"schema": 1, "split": "test", "metrics": None})
    with pytest.raises(ReportError, match="nolabels.*no test metrics"):
        compare.load_evaluated(paths)


# ---------------------------------------------------------------- PDF

@pytest.mark.skipif(not (shutil.which("pdffonts") and shutil.which("pdftotext")), reason="poppler-utils absent")
def test_chinese_pdf_holds_the_verdicts_and_embeds_cjk(three: tuple[dict, str, Path], tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    ctx, _, _ = three
    out = compare.render_compare_pdf(ctx, lang="zh-TW", out_path=tmp_path / "report.zh-TW.pdf")
    assert out.stat().st_size > 10_000 and not list(tmp_path.glob(".*.tmp"))
    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Noto-?Sans-?CJK-?TC.*yes", fonts), fonts
    text = re.sub(r"\s+", "", subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True,
                                             check=True).stdout)
    t = render.translator("zh-TW")
    for key in ("compare.title", "compare.metrics.title", "compare.tests.title"):
        assert t(key).replace(" ", "") in text, key
    assert "r50_pre的準確率顯著高於r18" in text


def test_graded_runs_are_compared_on_qwk_and_grade_error(tmp_path: Path) -> None:
    names = ["grade 0", "grade 1", "grade 2"]
    y = _labels(150, seed=6, k=3)
    ids = [f"g{i}" for i in range(150)]
    runs_ = [memory_run(tmp_path, n, y=y, ids=ids, separation=s, seed=i, class_names=names)
             for i, (n, s) in enumerate((("ce", 0.5), ("ordinal", 2.5)))]
    plain_keys = [row["key"] for row in compare._metric_rows(runs_)]
    assert "metric.qwk" not in plain_keys            # multiclass runs: no grade agreement rows
    for run in runs_:
        run.evaluation["metrics"] = xmetrics.compute_all(y, run.probs, class_names=names, task="ordinal",
                                                         n_boot=N_BOOT, seed=0)
    rows = {row["key"]: row for row in compare._metric_rows(runs_)}
    qwk, mae = rows["metric.qwk"], rows["metric.mae"]
    assert qwk["better"] == "max" and qwk["best"] == [False, True]
    assert mae["better"] == "min" and mae["best"] == [False, True]
    assert xmetrics.value_of(qwk["values"][1]) == runs_[1].metrics["ordinal"]["qwk"]["value"]
    # How each was trained stands beside the numbers: softmax on cross-entropy vs soft labels.
    runs_[1].meta["loss"] = "soft_ordinal"
    ctx = compare.compare_context(runs_, name="cmp-graded", reports_root=tmp_path / "reports",
                                  langs=["en", "zh-TW"], n_boot=50)
    text = _text(compare.render_compare_html(ctx, langs=["en", "zh-TW"]))
    assert "Head · loss softmax · cross-entropy softmax · soft ordinal labels" in text
    assert "輸出層 · 損失函數 softmax · 交叉熵 softmax · 軟序數標籤" in text
