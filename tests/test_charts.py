"""Tests for xreport.charts: structure, translated strings, fonts, literal names, saving."""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

from xreport import charts
from xreport.errors import OutputError, ReportError

ROOT = Path(__file__).resolve().parents[1]
I18N = ROOT / "templates" / "i18n"
LANGS = ("en", "zh-TW", "zh-CN")
EN_NAMES = ["NORMAL", "PNEUMONIA"]
ZH_NAMES = ["正常", "肺炎"]
ZH3_NAMES = ["正常", "細菌性肺炎", "病毒性肺炎"]


# ---------------------------------------------------------------- realistic fake data

def fake_t(key: str) -> str:
    return f"<<{key}>>"


def catalog(lang: str) -> dict[str, str]:
    return json.loads((I18N / lang / "charts.json").read_text(encoding="utf-8"))


def catalog_t(lang: str) -> Callable[[str], str]:
    table = {**catalog("en"), **catalog(lang)}
    return lambda key: table[key]


def _v(x: float, half: float = 0.03) -> dict[str, Any]:
    return {"value": float(x), "ci95": [max(0.0, x - half), min(1.0, x + half)]}


def _thin(a: np.ndarray, k: int = 200) -> list[float]:
    idx = np.unique(np.linspace(0, len(a) - 1, min(k, len(a))).round().astype(int))
    return a[idx].tolist()


def _scores(n_per_class: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a decent but imperfect classifier."""
    rng = np.random.default_rng(seed)
    k = len(n_per_class)
    y = np.repeat(np.arange(k), n_per_class)
    logits = rng.normal(0.0, 1.0, (y.size, k))
    logits[np.arange(y.size), y] += 1.8
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def _calibration(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        count = int(inside.sum())
        acc = float(correct[inside].mean()) if count else None
        mean_conf = float(conf[inside].mean()) if count else None
        if count:
            ece += count / y.size * abs(acc - mean_conf)
        bins.append({"lo": float(lo), "hi": float(hi), "count": count, "confidence": mean_conf,
                     "accuracy": acc})
    return {"ece": _v(ece, 0.01), "brier": _v(0.12, 0.01), "bins": bins}


def _operating_points(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    fpr, tpr, thr = roc_curve(y, p)
    choices = {"default_0.5": 0.5, "youden": float(thr[np.argmax(tpr - fpr)]),
               "sens_90": float(thr[np.argmax(tpr >= 0.90)]),
               "sens_95": float(thr[np.argmax(tpr >= 0.95)])}
    points = []
    for name, threshold in choices.items():
        pred = p >= threshold
        tp, fn = int((pred & (y == 1)).sum()), int((~pred & (y == 1)).sum())
        tn, fp = int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())
        points.append({"name": name, "threshold": min(threshold, 1.0),
                       "chosen_on": "fixed" if name == "default_0.5" else "val",
                       "sensitivity": _v(tp / (tp + fn)), "specificity": _v(tn / (tn + fp), 0.04),
                       "ppv": _v(tp / max(tp + fp, 1)), "npv": _v(tn / max(tn + fn, 1)),
                       "confusion_matrix": [[tn, fp], [fn, tp]]})
    return points


def fake_metrics(class_names: list[str], *, seed: int = 0) -> dict[str, Any]:
    """A metrics dict shaped like metrics.compute_all's, computed from simulated scores."""
    k = len(class_names)
    counts = [234, 390] if k == 2 else [150 + 40 * i for i in range(k)]
    y, probs = _scores(counts, seed)
    roc, pr, per_class = [], [], []
    for c, name in enumerate(class_names):
        if k == 2 and c == 0:
            continue
        target = (y == c).astype(int)
        fpr, tpr, _ = roc_curve(target, probs[:, c])
        prec, rec, _ = precision_recall_curve(target, probs[:, c])
        roc.append({"class": name, "fpr": _thin(fpr), "tpr": _thin(tpr),
                    "auc": float(roc_auc_score(target, probs[:, c]))})
        pr.append({"class": name, "precision": _thin(prec), "recall": _thin(rec),
                   "ap": float(average_precision_score(target, probs[:, c]))})
    for c, name in enumerate(class_names):
        per_class.append({"class": name, "index": c, "support": int((y == c).sum()),
                          "auc": _v(roc_auc_score((y == c).astype(int), probs[:, c]))})
    pred = probs.argmax(axis=1)
    raw = [[int(((y == i) & (pred == j)).sum()) for j in range(k)] for i in range(k)]
    by_true = [[v / max(sum(row), 1) for v in row] for row in raw]
    return {
        "task": "binary" if k == 2 else "multiclass", "class_names": list(class_names),
        "n": int(y.size), "roc_auc": _v(roc[-1]["auc"]) if k == 2 else _v(0.9),
        "average_precision": _v(pr[-1]["ap"]), "per_class": per_class,
        "confusion_matrix": {"labels": list(class_names), "raw": raw, "by_true": by_true},
        "curves": {"roc": roc, "pr": pr},
        "calibration": _calibration(y, probs),
        "operating_points": _operating_points(y, probs[:, 1]) if k == 2 else [],
    }


def fake_history(epochs: int = 30, *, seed: int = 0, offset: float = 0.0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        decay = np.exp(-e / 8.0)
        noise = rng.normal(0.0, 0.01, 4)
        train_loss = 0.15 + 0.55 * decay + noise[0] + offset
        val_loss = 0.25 + 0.45 * decay + 0.004 * max(0, e - 15) + noise[1] + offset
        rows.append({"epoch": e, "train_loss": train_loss, "val_loss": val_loss,
                     "train_acc": min(0.99, 0.97 - 0.3 * decay + noise[2]),
                     "val_acc": min(0.99, 0.92 - 0.3 * decay + noise[3] - offset),
                     "train_f1": min(0.99, 0.96 - 0.35 * decay + noise[2]),
                     "val_f1": min(0.99, 0.90 - 0.35 * decay + noise[3] - offset),
                     "val_auc": min(0.999, 0.96 - 0.2 * decay - offset),
                     "lr": 1e-3 * 0.5 * (1 + np.cos(np.pi * e / epochs))})
    return rows


def fake_distribution(class_names: list[str]) -> dict[str, Any]:
    base = [[1214, 3494], [135, 388], [234, 390]] if len(class_names) == 2 else None
    if base is None:
        base = [[300 + 50 * i for i in range(len(class_names))],
                [40 + 5 * i for i in range(len(class_names))],
                [80 + 9 * i for i in range(len(class_names))]]
    return {"class_names": list(class_names), "splits": dict(zip(("train", "val", "test"), base))}


def fake_image(size: int, *, seed: int, lesion: bool) -> np.ndarray:
    """A chest-radiograph-like phantom: bright body, two dark lungs, optional bright lesion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.75 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    for cx in (0.32, 0.68):
        lung = ((xx - cx) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img[lung] -= 0.45
    if lesion:
        img += 0.35 * np.exp(-(((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.004))
    img += rng.normal(0.0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def fake_cam(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.exp(-(((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.02))


def fake_faithfulness(steps: int = 21) -> dict[str, Any]:
    x = np.linspace(0.0, 1.0, steps)
    deletion = {"cam": (0.92 * np.exp(-5 * x)).tolist(), "random": (0.92 * (1 - x) ** 0.8).tolist()}
    insertion = {"cam": (0.92 * (1 - np.exp(-6 * x))).tolist(),
                 "random": (0.92 * x ** 1.3).tolist()}
    return {"n": 64, "deletion_curve": deletion, "insertion_curve": insertion,
            "deletion_auc": {"cam": 0.18, "random": 0.51},
            "insertion_auc": {"cam": 0.77, "random": 0.40}}


def all_figures(t: Callable[[str], str], names: list[str]) -> dict[str, Figure]:
    """Every chart once, binary task with ``names``."""
    metrics = fake_metrics(names)
    images = np.stack([fake_image(64, seed=i, lesion=i % 2 == 1) for i in range(12)])[:, None]
    labels = [i % 2 for i in range(12)]
    pairs = [(fake_image(96, seed=20 + i, lesion=i == 1)[8:88, :],
              fake_image(64, seed=20 + i, lesion=i == 1)) for i in range(3)]
    image = fake_image(64, seed=3, lesion=True)
    return {
        "class_distribution": charts.class_distribution(fake_distribution(names), t=t),
        "training_curves": charts.training_curves(fake_history(), selected_epoch=17, t=t),
        "roc_curves": charts.roc_curves(metrics, t=t),
        "pr_curves": charts.pr_curves(metrics, t=t),
        "confusion_counts": charts.confusion_matrix(metrics["confusion_matrix"]["raw"], names,
                                                    normalized=False, t=t),
        "confusion_normalized": charts.confusion_matrix(metrics["confusion_matrix"]["by_true"],
                                                        names, normalized=True, t=t),
        "reliability": charts.reliability_diagram(metrics["calibration"], t=t),
        "operating_points": charts.operating_point_chart(metrics, t=t),
        "example_grid": charts.example_grid(images, labels, names, t=t, per_class=4),
        "preprocessing": charts.preprocessing_before_after(pairs, t=t),
        "cam_overlay": charts.cam_overlay(image, fake_cam(64)),
        "cam_panel": charts.cam_panel(image, fake_cam(64)),
        "faithfulness": charts.faithfulness_curves(fake_faithfulness(), t=t),
        "compare_training": charts.compare_training_curves(
            {"chest_r18": fake_history(), "chest_r50": fake_history(seed=1, offset=0.03)}, t=t),
        "compare_roc": charts.compare_roc(
            {"chest_r18": metrics["curves"]["roc"][-1],
             "chest_r50": fake_metrics(names, seed=1)["curves"]["roc"][-1]}, t=t),
    }


# ---------------------------------------------------------------- helpers

def drawn_texts(fig: Figure) -> list[str]:
    """Every non-empty visible text after a full draw, tick labels of in-view ticks included."""
    FigureCanvasAgg(fig).draw()
    tick_labels: set[int] = set()
    shown_ticks: list[Text] = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.majorTicks + axis.minorTicks:
                tick_labels.update((id(tick.label1), id(tick.label2)))
            # get_ticklabels() keeps only the ticks inside the view limits, i.e. those drawn.
            shown_ticks += axis.get_ticklabels() + axis.get_ticklabels(minor=True)
    texts = [obj for obj in fig.findobj(Text) if id(obj) not in tick_labels] + shown_ticks
    return [obj.get_text() for obj in texts if obj.get_visible() and obj.get_text().strip()]


EXPECTED_AXES = {
    "class_distribution": 1, "training_curves": 4, "roc_curves": 1, "pr_curves": 1,
    "confusion_counts": 2, "confusion_normalized": 2, "reliability": 2, "operating_points": 1,
    "example_grid": 8, "preprocessing": 6, "cam_overlay": 2, "cam_panel": 3, "faithfulness": 2,
    "compare_training": 3, "compare_roc": 1,
}
LANGUAGE_NEUTRAL = {"cam_overlay", "cam_panel"}


@pytest.fixture(scope="module")
def en_figures() -> dict[str, Figure]:
    return all_figures(fake_t, EN_NAMES)


@pytest.fixture(scope="module")
def en_texts(en_figures: dict[str, Figure]) -> dict[str, list[str]]:
    return {name: drawn_texts(fig) for name, fig in en_figures.items()}


# ---------------------------------------------------------------- structure and strings

def test_every_chart_is_a_figure_with_the_expected_axes(en_figures: dict[str, Figure]) -> None:
    assert set(en_figures) == set(EXPECTED_AXES)
    for name, fig in en_figures.items():
        assert isinstance(fig, Figure), name
        assert len(fig.axes) == EXPECTED_AXES[name], (name, len(fig.axes))


def test_titles_and_labels_come_from_t(en_figures: dict[str, Figure],
                                       en_texts: dict[str, list[str]]) -> None:
    for name, texts in en_texts.items():
        if name in LANGUAGE_NEUTRAL:
            assert set(texts) <= {"0", "0.5", "1"}, (name, texts)
            continue
        assert any("<<chart." in text for text in texts), name
    roc = en_figures["roc_curves"].axes[0]
    assert roc.get_title() == "<<chart.roc.title_binary>>"
    assert roc.get_xlabel() == "<<chart.roc.xlabel>>"
    cm = en_figures["confusion_counts"].axes[0]
    assert (cm.get_xlabel(), cm.get_ylabel()) == ("<<chart.cm.predicted>>", "<<chart.cm.true>>")
    titles = [ax.get_title() for ax in en_figures["training_curves"].axes]
    # Validation AUC has its own panel, not a line in the macro-F1 one.
    assert titles == ["<<chart.training.loss>>", "<<chart.training.accuracy>>",
                      "<<chart.training.f1>>", "<<chart.training.val_auc>>"]
    f1_labels = {line.get_label() for line in en_figures["training_curves"].axes[2].get_lines()}
    assert f1_labels == {"<<chart.training.train>>", "<<chart.training.val>>", "<<chart.training.selected>>"}
    assert en_figures["faithfulness"].axes[0].get_title() == "<<chart.faith.deletion_title>>"


def test_no_english_word_is_drawn_except_through_t(en_texts: dict[str, list[str]]) -> None:
    allowed = EN_NAMES + ["chest_r18", "chest_r50"]
    for name, texts in en_texts.items():
        for text in texts:
            rest = re.sub(r"<<chart\.[\w.]+>>", "", text)
            for word in allowed:
                rest = rest.replace(charts._lit(word), "")
            assert not re.search(r"[A-Za-z]{2,}", rest), (name, text)


def _charts_source() -> str:
    """The code of every module of the charts package."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(Path(charts.__file__).parent.glob("*.py")))


def test_every_key_used_exists_in_all_catalogs_with_the_same_keys() -> None:
    source = _charts_source()
    used = set(re.findall(r"""(?<![\w.])t\(\s*["'](chart\.[\w.]+)["']\s*\)""", source))
    calls = re.findall(r"(?<![\w.])t\(", source)
    assert used and len(calls) == len(re.findall(r"""(?<![\w.])t\(\s*["']chart\.""", source)), \
        "every t(...) call in xreport/charts/ must use a literal chart.* key"
    keys = {lang: set(catalog(lang)) for lang in LANGS}
    assert keys["en"] == keys["zh-TW"] == keys["zh-CN"]
    assert used <= keys["en"], used - keys["en"]
    assert not keys["en"] - used, f"unused keys: {keys['en'] - used}"
    for lang in LANGS:
        assert all(isinstance(v, str) and v.strip() for v in catalog(lang).values()), lang


def test_chinese_catalogs_use_their_own_script() -> None:
    simplified, traditional = "类数图测验练据阵预实际该随选确损归处还显机", "類數圖測驗練據陣預實際該隨選確損歸處還顯機"
    zh_tw, zh_cn = " ".join(catalog("zh-TW").values()), " ".join(catalog("zh-CN").values())
    assert not set(simplified) & set(zh_tw)
    assert not set(traditional) & set(zh_cn)
    assert re.search(r"[\u4e00-\u9fff]", zh_tw) and re.search(r"[\u4e00-\u9fff]", zh_cn)


def test_charts_leave_global_state_alone() -> None:
    before = dict(matplotlib.rcParams)
    all_figures(fake_t, EN_NAMES)
    after = dict(matplotlib.rcParams)
    assert before == after
    source = _charts_source()
    assert not re.search(r"import pyplot|matplotlib\.pyplot|plt\.|matplotlib\.use\(", source)


def test_import_neither_picks_a_backend_nor_loads_pyplot(tmp_path: Path) -> None:
    code = ("import sys, matplotlib; import xreport.charts as c; "
            "fig = c.roc_curves({'task': 'binary', 'class_names': ['a', 'b'], "
            "'curves': {'roc': [{'class': 'b', 'fpr': [0, 1], 'tpr': [0, 1], "
            "'auc': 0.5}]}}, t=str); "
            f"c.save_figure(fig, {str(tmp_path / 'x.png')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------- fonts and literal names

needs_cjk = pytest.mark.skipif(not charts.has_cjk_font(),
                               reason="Noto Sans CJK not installed (fonts-noto-cjk)")


@needs_cjk
@pytest.mark.parametrize("lang", ["zh-TW", "zh-CN"])
def test_chinese_charts_render_without_missing_glyphs(lang: str) -> None:
    # zh-TW with the default font order, zh-CN with its own glyph forms first.
    context = charts.chart_language(lang) if lang == "zh-CN" else contextlib.nullcontext()
    with warnings.catch_warnings(record=True) as caught, context:
        warnings.simplefilter("always")
        figures = all_figures(catalog_t(lang), ZH_NAMES)
        figures["multiclass_roc"] = charts.roc_curves(fake_metrics(ZH3_NAMES), t=catalog_t(lang))
        for fig in figures.values():
            fig.set_dpi(50)  # glyphs are looked up at any resolution; a small canvas is quicker
            FigureCanvasAgg(fig).draw()
    glyphs = [str(w.message) for w in caught if "missing from" in str(w.message)
              or "Glyph" in str(w.message)]
    assert not glyphs, glyphs[:3]


def test_font_list_prefers_cjk_then_dejavu() -> None:
    families = charts.font_families()
    assert families[-1] == "DejaVu Sans"
    assert set(families[:-1]) <= set(charts.CJK_FAMILIES)
    assert charts.font_families("en") == families


@needs_cjk
def test_chart_language_puts_its_own_glyph_forms_first() -> None:
    with charts.chart_language("zh-CN"):
        fig = charts.roc_curves(fake_metrics(ZH_NAMES), t=catalog_t("zh-CN"))
    assert fig.axes[0].title.get_fontfamily()[0] == "Noto Sans CJK SC"
    with charts.chart_language("zh-TW"):
        assert charts.font_families("zh-TW")[0] == "Noto Sans CJK TC"
    fig = charts.roc_curves(fake_metrics(ZH_NAMES), t=catalog_t("zh-CN"))
    assert fig.axes[0].title.get_fontfamily()[0] == charts.font_families()[0]


def test_without_a_cjk_font_charts_fall_back_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts.style, "_installed_cjk", lambda: ())
    assert charts.font_families("zh-TW") == ("DejaVu Sans",)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*findfont.*")
        fig = charts.roc_curves(fake_metrics(EN_NAMES), t=fake_t)
        FigureCanvasAgg(fig).draw()
    assert fig.axes[0].title.get_fontfamily() == ["DejaVu Sans"]


def test_class_names_with_dollars_and_html_draw_literally(tmp_path: Path) -> None:
    # "$\\alpha_{$" would be a mathtext parse error if it were interpreted.
    names = ["$x$ <script>alert(1)</script>", "$\\alpha_{$ & <b>"]
    metrics = fake_metrics(names)
    figs = [charts.confusion_matrix(metrics["confusion_matrix"]["raw"], names, normalized=False,
                                    t=fake_t),
            charts.roc_curves(metrics, t=fake_t),
            charts.class_distribution(fake_distribution(names), t=fake_t),
            charts.compare_roc({"$run$": metrics["curves"]["roc"][0]}, t=fake_t)]
    for fig in figs:
        texts = drawn_texts(fig)
        charts.save_figure(fig, tmp_path / "x.png")
        assert not any(cbook.is_math_text(text) for text in texts)
        # What matplotlib draws for a text that is not mathtext: escaped dollars unescaped.
        shown = [text.replace(r"\$", "$") for text in texts]
        assert any(name in text for text in shown for name in names + ["$run$"])
    cm_texts = drawn_texts(figs[0])
    assert names[0] in [text.replace(r"\$", "$") for text in cm_texts]


# ---------------------------------------------------------------- single charts

def test_training_curves_accepts_a_dataframe_and_marks_the_selected_epoch() -> None:
    fig = charts.training_curves(pd.DataFrame(fake_history(12)), selected_epoch=7, t=fake_t)
    for ax in fig.axes:
        marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [7, 7]]
        assert marks, "selected epoch line missing"
    legend_texts = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert "<<chart.training.selected>>" in legend_texts
    assert fig.axes[3].get_title() == "<<chart.training.val_auc>>"


def test_training_curves_skip_missing_columns() -> None:
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in range(1, 6)]
    fig = charts.training_curves(history, selected_epoch=None, t=fake_t)
    assert len(fig.axes[0].get_lines()) == 2
    assert len(fig.axes[1].get_lines()) == 0
    with pytest.raises(ReportError, match="empty"):
        charts.training_curves([], selected_epoch=None, t=fake_t)


def _curve_legend(fig: Figure) -> Any:
    """The ROC/PR legend: below the plot (a figure legend) when the figure prints paired,
    beside it (the axes' legend) when it prints page-wide."""
    return fig.axes[0].get_legend() or fig.legends[0]


def test_binary_roc_shows_only_the_positive_class(en_figures: dict[str, Figure]) -> None:
    labels = [text.get_text() for text in _curve_legend(en_figures["roc_curves"]).get_texts()]
    assert len(labels) == 2 and labels[0].startswith("PNEUMONIA (<<chart.roc.auc>> = 0.")
    assert labels[1] == "<<chart.chance>>"


def test_multiclass_roc_and_pr_have_one_curve_per_class() -> None:
    names = ["a", "b", "c"]
    metrics = fake_metrics(names)
    roc_fig = charts.roc_curves(metrics, t=fake_t)
    roc = roc_fig.axes[0]
    assert len(_curve_legend(roc_fig).get_texts()) == 4
    assert roc.get_title() == "<<chart.roc.title_ovr>>"
    pr_fig = charts.pr_curves(metrics, t=fake_t)
    pr = pr_fig.axes[0]
    assert [t.get_text().split(" ")[0] for t in _curve_legend(pr_fig).get_texts()][:3] == names
    # Each class's AP interval, when metrics.json has it, sits beside its AP as the AUC's does.
    for row in metrics["per_class"]:
        row["ap"] = {"value": 0.8, "ci95": [0.71, 0.88]}
    labels = [t.get_text() for t in _curve_legend(charts.pr_curves(metrics, t=fake_t)).get_texts()]
    assert all("<<chart.ci95>> 0.710–0.880" in label for label in labels[:3])
    with pytest.raises(ReportError, match="binary"):
        charts.operating_point_chart(metrics, t=fake_t)


def test_confusion_matrix_annotations_and_readable_colours() -> None:
    fig = charts.confusion_matrix([[100, 0], [3, 97]], ["a", "b"], normalized=False, t=fake_t)
    cells = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert cells["100"] == "white" and cells["0"] != "white"
    fig = charts.confusion_matrix([[0.875, 0.125], [None, None]], ["a", "b"], normalized=True,
                                  t=fake_t)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["87.5%", "12.5%", "–", "–"]
    with pytest.raises(ReportError, match="fractions"):
        charts.confusion_matrix([[5, 1], [2, 9]], ["a", "b"], normalized=True, t=fake_t)
    with pytest.raises(ReportError, match="3 class names"):
        charts.confusion_matrix([[5, 1], [2, 9]], ["a", "b", "c"], normalized=False, t=fake_t)


def test_reliability_diagram_title_has_the_ece(en_figures: dict[str, Figure]) -> None:
    title = en_figures["reliability"].axes[0].get_title()
    assert re.match(r"<<chart\.calibration\.title>> "
                    r"\(<<chart\.calibration\.ece>> = 0\.\d{3}", title)
    assert en_figures["reliability"].axes[1].get_ylabel() == "<<chart.calibration.count>>"


def test_operating_points_are_marked(en_figures: dict[str, Figure]) -> None:
    labels = [t.get_text() for t in en_figures["operating_points"].axes[0].get_legend().get_texts()]
    for key in ("default", "youden", "sens_90", "sens_95"):
        assert any(label.startswith(f"<<chart.op.{key}>> (<<chart.op.threshold>> = ")
                   for label in labels), key


def test_example_grid_rows_per_class_and_blank_cells() -> None:
    images = [fake_image(32, seed=i, lesion=False) for i in range(5)]
    fig = charts.example_grid(images, [0, 0, 0, 1, 2], ["a", "b", "c"], t=fake_t, per_class=3)
    assert len(fig.axes) == 9
    # The class names are figure texts beside (or above) their rows, in class order.
    assert [x.get_text() for x in fig.texts] == ["a", "b", "c", "<<chart.examples.title>>"]
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 1, 1, 0, 0, 1, 0, 0]
    with pytest.raises(ReportError, match="labels"):
        charts.example_grid(images, [0, 1], ["a", "b"], t=fake_t)


def test_cam_overlay_uses_a_fixed_scale_and_is_small() -> None:
    image = np.dstack([fake_image(48, seed=1, lesion=True)] * 3)
    weak = fake_cam(12) * 0.3  # smaller than the image and never reaching 1
    fig = charts.cam_overlay(image, weak, alpha=0.5)
    ax = fig.axes[0]
    assert ax.images[0].get_cmap().name == "gray"
    assert ax.images[1].get_clim() == (0.0, 1.0)
    assert ax.images[1].get_extent() == ax.images[0].get_extent()
    ticks = [label.get_text() for label in fig.axes[1].get_yticklabels()]
    assert ticks == ["0", "0.5", "1"]
    width, height = fig.get_size_inches()
    assert 2.0 <= height <= 2.5 and width < 3.0
    with pytest.raises(ReportError, match="alpha"):
        charts.cam_overlay(image, weak, alpha=1.5)


def test_faithfulness_area_in_legend(en_figures: dict[str, Figure]) -> None:
    labels = [t.get_text() for t in en_figures["faithfulness"].axes[0].get_legend().get_texts()]
    assert labels == ["<<chart.faith.cam>>\n<<chart.faith.area>> = 0.180",
                      "<<chart.faith.random>>\n<<chart.faith.area>> = 0.510"]
    computed = charts.faithfulness_curves({"deletion_curve": {"cam": [1.0, 0.0]}}, t=fake_t)
    label = computed.axes[0].get_legend().get_texts()[0].get_text()
    assert label.endswith("= 0.500")
    with pytest.raises(ReportError, match="deletion_curve"):
        charts.faithfulness_curves({"deletion_curve": {}, "insertion_curve": {}}, t=fake_t)


def test_faithfulness_legends_sit_below_their_panels_not_on_the_curves() -> None:
    """ROAD's four curves leave no free corner: every panel's legend goes under its axis label,
    inside the figure (constrained layout makes room), never over the plotted data."""
    curve = {"cam": [0.9, 0.6, 0.4, 0.3], "random": [0.9, 0.8, 0.7, 0.6]}
    fig = charts.faithfulness_curves({"deletion_curve": curve, "insertion_curve": curve,
                                      "road_morf_curve": curve, "road_lerf_curve": curve}, t=fake_t)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    figure_box = fig.bbox
    assert len(fig.axes) == 3
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        label = ax.xaxis.label.get_window_extent(renderer)
        assert legend.y1 <= label.y0 + 0.5 and legend.y1 < ax.get_window_extent(renderer).y0
        assert legend.y0 >= figure_box.y0 - 0.5, "legend cut off at the foot of the figure"
    assert len(fig.axes[2].get_legend().get_texts()) == 4   # MoRF and LeRF, CAM and random


# ---------------------------------------------------------------- saving

def test_save_figure_writes_a_png_atomically(tmp_path: Path) -> None:
    target = tmp_path / "figs" / "roc.png"
    fig = charts.roc_curves(fake_metrics(EN_NAMES), t=fake_t)
    out = charts.save_figure(fig, target)
    assert out == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as im:
        # The figure's inches at 150 dpi (matplotlib may round a half pixel down).
        assert all(abs(px - x * 150) <= 1 for px, x in zip(im.size, fig.get_size_inches()))
    first = np.asarray(Image.open(target)).copy()
    charts.save_figure(fig, target)
    again = np.asarray(Image.open(target))
    assert first.shape == again.shape
    # The layout may move by a fraction of a pixel between saves, never by more.
    assert (first != again).any(axis=-1).mean() < 0.02
    assert sorted(p.name for p in target.parent.iterdir()) == ["roc.png"]


def test_save_figure_failure_keeps_the_old_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    fig = charts.cam_overlay(fake_image(16, seed=0, lesion=False), fake_cam(16))

    def broken(*args: Any, **kwargs: Any) -> None:
        Path(args[0]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    # The OS error becomes one line that names the file and says the old one is kept.
    with pytest.raises(OutputError, match=r"a\.png: cannot be written \(disk full\)"):
        charts.save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    with pytest.raises(ReportError, match="not supported"):
        charts.save_figure(fig, tmp_path / "a.gif")


def test_cam_overlay_keeps_colour_inputs_in_colour_and_grey_in_grey() -> None:
    rng = np.random.default_rng(0)
    colour = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    cam = fake_cam(24)
    fig = charts.cam_overlay(colour, cam, colorbar=False)
    base = fig.axes[0].images[0].get_array()
    assert base.shape == (24, 24, 3)  # drawn in colour, not converted to grey
    assert len(fig.axes) == 1  # no per-image colour bar: the report draws one scale
    grey = charts.cam_overlay(colour[..., 0], cam, colorbar=False)
    assert grey.axes[0].images[0].get_cmap().name == "gray"
    # The map is transparent where cold and most opaque where warm.
    alpha = np.asarray(fig.axes[0].images[1].get_alpha())
    assert alpha[np.unravel_index(cam.argmax(), cam.shape)] > alpha[np.unravel_index(cam.argmin(), cam.shape)]
    assert len(charts.cam_scale_colors()) >= 5


# ---------------------------------------------------------------- block diagram

def _summary(arch: str, size: int, *, small: bool) -> Any:
    import torch

    from xreport.models import architecture_summary, build_model

    with torch.device("meta"):
        return architecture_summary(build_model(arch, num_classes=2, small_input_stem=small), size, 3)


def test_block_diagram_draws_the_model_own_layers_in_every_language() -> None:
    from xreport.render import translator

    tiny = _summary("resnet_tiny", 28, small=True)
    texts = drawn_texts(charts.block_diagram(tiny["blocks"], t=translator("en")))
    # resnet_tiny's first block is 8 channels wide: the boxes say so, not a stock 64.
    assert texts.count("3×3 conv, 8 → 8 channels") == 2
    assert "identity shortcut" in texts and "input 8 × 28 × 28" in texts and "+" in texts
    assert "Basic block\nlayer1.0 · 4 in the model" in texts
    r50 = _summary("resnet50", 64, small=False)
    texts = drawn_texts(charts.block_diagram(r50["blocks"], t=translator("zh-TW")))
    assert "1×1 卷積，64 → 256 通道" in texts and "投影捷徑" in texts
    # BatchNorm + ReLU pairs share a box; the ReLU after the sum stands alone.
    assert texts.count("批次正規化（64）→ ReLU") == 2 and texts.count("ReLU") == 1
    dense = _summary("densenet121", 32, small=True)
    for lang, concat in (("zh-CN", "拼接：64 + 32 = 96 通道"), ("en", "concatenate: 64 + 32 = 96 channels")):
        texts = drawn_texts(charts.block_diagram(dense["blocks"], t=translator(lang)))
        assert concat in texts
    # Every word goes through t.
    words = [x for x in drawn_texts(charts.block_diagram(dense["blocks"], t=fake_t)) if x != "+"]
    assert words and all(x.startswith("<<") and x.endswith(">>") for x in words), [x for x in words if not x.startswith("<<")]
    with pytest.raises(ReportError):
        charts.block_diagram([], t=fake_t)
