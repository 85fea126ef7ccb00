"""Pictures that read right and print legibly (issue 20): class labels that identify one
class in every chart and column head, reliability gaps visible in both directions,
operating points that do not hide each other, text no smaller than 6 pt on the printed A4
page, CAM scales said to be per map, and language-independent pictures embedded once."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from test_charts import (catalog_t, fake_distribution, fake_history, fake_image, fake_metrics)
from xreport import charts, labels

# Seven names that differ only after their first 40 characters, and eight long ordinal ones.
SHARED = ["Pleural effusion with blunted costophrenic angle on the left side",
          "Pleural effusion with blunted costophrenic angle on the right side",
          "Pleural effusion with blunted costophrenic angle on both sides",
          "Solitary pulmonary nodule in the left upper lobe",
          "Solitary pulmonary nodule in the right upper lobe",
          "Airspace opacity or consolidation in the left lung",
          "Normal chest radiograph without acute findings"]
GRADES = [f"Grade {g} - {w}" for g, w in enumerate(
    ["no visible abnormality on the film", "minimal faint haziness in one zone",
     "mild patchy opacity in one lung", "moderate opacity in both lower zones",
     "marked bilateral airspace opacity", "severe diffuse opacity most zones",
     "near-complete white-out of one lung", "complete bilateral white-out of lungs"])]
ZH_GRADES = [f"第{g}級－{w}" for g, w in enumerate(
    ["影像上無可見異常", "單一區域輕微模糊", "單側肺輕度斑片狀陰影", "雙下肺中度陰影",
     "雙側明顯氣腔陰影", "多數區域重度瀰漫性陰影", "單側肺幾乎全白", "雙側肺完全白化"])]


# ---------------------------------------------------------------- labels identify

@pytest.mark.parametrize("names", [SHARED, GRADES, ZH_GRADES,
                                   ["x" * 45 + " alpha", "x" * 45 + " beta"],
                                   ["same start " * 6 + "A", "same start " * 6 + "B"]])
def test_short_labels_are_unique_and_fit(names: list[str]) -> None:
    for width in (labels.CHART_WIDTH, 16):
        shown = labels.short_labels(names, width)
        assert len(set(shown)) == len(names), shown
        assert all(labels.text_width(s) <= width for s in shown), shown
    heads = labels.column_labels(names)
    assert len(set(heads)) == len(names)
    assert all(labels.text_width(h) <= labels.COLUMN_WIDTH for h in heads)


def test_column_labels_keep_the_grade_names() -> None:
    # Column k of a graded task must read as grade k, never as a 1-based number.
    assert labels.column_labels(GRADES) == [f"Grade {g}" for g in range(8)]
    assert labels.column_labels(ZH_GRADES) == [f"第{g}級" for g in range(8)]
    assert labels.column_labels(SHARED) == list("ABCDEFG")   # letters, never numbers
    assert labels.short_labels(["NORMAL", "PNEUMONIA"]) == ["NORMAL", "PNEUMONIA"]


def _texts(fig: Figure) -> list[Text]:
    FigureCanvasAgg(fig).draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _legend_texts(fig: Figure) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("chart", ["roc", "pr", "distribution", "cm", "examples"])
def test_every_chart_gives_each_class_its_own_label(chart: str) -> None:
    t = catalog_t("en")
    names = SHARED
    expected = labels.short_labels(names)
    if chart in ("roc", "pr"):
        fig = (charts.roc_curves if chart == "roc" else charts.pr_curves)(fake_metrics(names), t=t)
        shown = [text.split(" (")[0] for text in _legend_texts(fig)][:len(names)]
    elif chart == "distribution":
        fig = charts.class_distribution(fake_distribution(names), t=t)
        shown = [tick.get_text() for tick in fig.axes[0].get_xticklabels()]
    elif chart == "cm":
        m = fake_metrics(names)
        fig = charts.confusion_matrix(m["confusion_matrix"]["raw"], names, normalized=False, t=t)
        ax = fig.axes[0]
        columns = [tick.get_text() for tick in ax.get_xticklabels()]
        rows = [tick.get_text() for tick in ax.get_yticklabels()]
        assert columns == rows   # the head of column k is the label of row k
        shown = columns
    else:
        imgs = [fake_image(32, seed=i, lesion=False) for i in range(2 * len(names))]
        fig = charts.example_grid(imgs, [i % len(names) for i in range(len(imgs))], names, t=t)
        shown = [x.get_text() for x in _texts(fig) if x.get_text() in expected]
    assert shown == expected
    assert len(set(shown)) == len(names)


def test_confusion_matrix_heads_match_rows_for_grades() -> None:
    m = fake_metrics(GRADES)
    fig = charts.confusion_matrix(m["confusion_matrix"]["by_true"], GRADES, normalized=True,
                                  t=catalog_t("en"))
    ax = fig.axes[0]
    columns = [tick.get_text() for tick in ax.get_xticklabels()]
    rows = [tick.get_text() for tick in ax.get_yticklabels()]
    assert columns == rows
    assert all(c.startswith(f"Grade {k}") for k, c in enumerate(columns))


# ---------------------------------------------------------------- legible in print

def _printed_scale(fig: Figure, *, paired: bool) -> float:
    # A PNG at 150 dpi has a natural CSS size 150/96 of its inches; print.css shrinks it
    # into the figure box (max-width 100%, max-height 92 mm) and never enlarges it further.
    box_w, box_h = charts.print_box(paired=paired)
    w, h = fig.get_size_inches()
    return min(150 / 96, box_w / w, box_h / h)


def _smallest_pt(fig: Figure) -> tuple[float, str]:
    texts = _texts(fig)
    smallest = min(texts, key=lambda x: x.get_fontsize())
    return smallest.get_fontsize(), smallest.get_text()


def _calibration(over: bool) -> dict[str, Any]:
    bins = []
    for k in range(10):
        lo, hi = k / 10, (k + 1) / 10
        conf = lo + 0.05
        acc = max(0.0, conf - 0.15) if over else min(1.0, conf + 0.15)
        bins.append({"lo": lo, "hi": hi, "count": 3 if k == 9 else 40, "confidence": conf,
                     "accuracy": acc})
    return {"ece": {"value": 0.15, "ci95": [0.1, 0.2]}, "bins": bins}


def _all_charts(names: list[str]) -> dict[str, tuple[Figure, bool]]:
    """Every report chart for ``names`` (zh-TW wording), with whether it prints paired."""
    t = catalog_t("zh-TW")
    m = fake_metrics(names)
    paired = len(names) <= charts.PAIRED_MAX_CLASSES
    imgs = [fake_image(32, seed=i, lesion=i % 2 == 1) for i in range(4 * len(names))]
    out = {
        "distribution": (charts.class_distribution(fake_distribution(names), t=t), False),
        "training": (charts.training_curves(fake_history(), selected_epoch=12, t=t), False),
        "roc": (charts.roc_curves(m, t=t), paired),
        "pr": (charts.pr_curves(m, t=t), paired),
        "cm": (charts.confusion_matrix(m["confusion_matrix"]["by_true"], names, normalized=True, t=t), paired),
        "reliability": (charts.reliability_diagram(_calibration(True), t=t), False),
        "examples": (charts.example_grid(imgs, [i % len(names) for i in range(len(imgs))], names, t=t), False),
        "before_after": (charts.preprocessing_before_after([(imgs[0], imgs[1][:28, :28])] * 4, t=t), False),
    }
    if len(names) == 2:
        out["operating_points"] = (charts.operating_point_chart(m, t=t), False)
        import torch

        from xreport.models import architecture_summary, build_model

        with torch.device("meta"):   # the tallest block there is: ResNet's bottleneck
            arch = architecture_summary(build_model("resnet50", num_classes=2), 64, 3)
        out["block_diagram"] = (charts.block_diagram(arch["blocks"], t=t), False)
    return out


@pytest.mark.parametrize("names", [["NORMAL", "PNEUMONIA"], SHARED[:4], GRADES],
                         ids=["2", "4-long", "8-long"])
def test_no_chart_text_prints_under_6pt(names: list[str]) -> None:
    small = []
    for name, (fig, paired) in _all_charts(names).items():
        pt, text = _smallest_pt(fig)
        printed = pt * _printed_scale(fig, paired=paired)
        if printed < charts.MIN_PRINT_PT - 1e-6:
            small.append(f"{name}: {text!r} prints at {printed:.1f} pt")
    assert not small, small


def test_print_box_matches_print_css() -> None:
    css = (Path(__file__).resolve().parents[1] / "templates" / "css" / "print.css").read_text()
    page = re.search(r"@page\s*{[^}]*?margin:\s*([\d.]+)mm\s+([\d.]+)mm\s+([\d.]+)mm\s+([\d.]+)mm", css)
    assert page, "print.css @page margins"
    assert charts.PRINT_WIDTH == pytest.approx((210 - float(page[2]) - float(page[4])) / 25.4)
    assert re.search(r"figure\.fig img { max-height: 92mm", css)
    assert re.search(r"\.fig-row > figure\.fig img { max-height: 80mm", css)
    assert charts.PRINT_HEIGHT == pytest.approx(92 / 25.4)
    assert charts.print_box(paired=True)[1] == pytest.approx(80 / 25.4)


# ---------------------------------------------------------------- scales read right

def _gap_patches(fig: Figure, gid: str) -> list[Any]:
    return [p for p in fig.axes[0].patches if p.get_gid() == gid]


@pytest.mark.parametrize("over", [True, False])
def test_reliability_draws_the_gap_in_its_direction(over: bool) -> None:
    fig = charts.reliability_diagram(_calibration(over), t=catalog_t("en"))
    FigureCanvasAgg(fig).draw()
    mine, other = ("over", "under") if over else ("under", "over")
    assert len(_gap_patches(fig, mine)) == 10 and not _gap_patches(fig, other)
    acc = {round(p.get_x(), 3): p.get_height() for p in fig.axes[0].patches if p.get_gid() == "accuracy"}
    for p in _gap_patches(fig, mine):
        # over: the gap sits on top of the accuracy bar; under: it covers the bar's top.
        bottom, top = p.get_y(), p.get_y() + p.get_height()
        bar = acc[round(p.get_x(), 3)]
        assert (bottom == pytest.approx(bar)) if over else (top == pytest.approx(bar))
    hatch = {p.get_hatch() for p in _gap_patches(fig, mine)}
    colour = {tuple(np.round(p.get_edgecolor(), 3)) for p in _gap_patches(fig, mine)}
    assert len(hatch) == 1 and len(colour) == 1
    legend = " ".join(_legend_texts(fig))
    assert ("Over-confident" in legend) == over and ("Under-confident" in legend) != over
    assert "fewer than" in legend   # the 3-image bin is pale and said so
    assert any(x.get_text() == "n=3" for x in _texts(fig))


def test_over_and_under_gaps_look_different() -> None:
    cal = _calibration(True)
    for b in cal["bins"][:5]:
        b["accuracy"] = min(1.0, b["confidence"] + 0.2)
    fig = charts.reliability_diagram(cal, t=catalog_t("en"))
    over, under = _gap_patches(fig, "over"), _gap_patches(fig, "under")
    assert over and under
    assert over[0].get_hatch() != under[0].get_hatch()
    assert tuple(over[0].get_edgecolor()) != tuple(under[0].get_edgecolor())


def test_coinciding_operating_points_stay_visible() -> None:
    m = fake_metrics(["NORMAL", "PNEUMONIA"])
    ops = m["operating_points"]
    for op in ops[1:]:   # every point on the first one
        op["sensitivity"], op["specificity"] = ops[0]["sensitivity"], ops[0]["specificity"]
    fig = charts.operating_point_chart(m, t=catalog_t("en"))
    FigureCanvasAgg(fig).draw()
    markers = [line for line in fig.axes[0].lines if line.get_marker() in ("o", "s", "D", "^", "v", "P", "X")]
    sizes = [line.get_markersize() for line in markers]
    assert len(sizes) == len(ops)
    # Drawn first is largest: each later marker sits inside the earlier ones as a ring.
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert min(a - b for a, b in zip(sizes, sizes[1:])) >= 3


def test_marker_sizes_leave_separate_points_alone() -> None:
    assert charts.marker_sizes([(0.0, 0.0), (0.5, 0.5)], near=0.01) == [6.0, 6.0]
    assert charts.marker_sizes([(0.1, 0.9), (0.1, 0.9), (0.105, 0.9)], near=0.01) == [13.0, 9.5, 6.0]


# ---------------------------------------------------------------- the confusion-matrix table

def test_wide_confusion_table_heads_are_the_row_labels(tmp_path: Path) -> None:
    from report_fixture import make_run
    from xreport import render
    from xreport.build import report_context

    paths = make_run(tmp_path, name="grades", class_names=tuple(GRADES), n_test=6,
                     class_names_zh=tuple(ZH_GRADES))
    ctx = report_context(paths, langs=["en", "zh-TW"])
    html = render.render_html(ctx, langs=["en", "zh-TW"])
    for lang, names, heads in (("en", GRADES, [f"Grade {g}" for g in range(8)]),
                               ("zh-TW", ZH_GRADES, [f"第{g}級" for g in range(8)])):
        body = html[html.index(f'id="body-{lang}"'):]
        cm = body[body.index('class="num-table cm-table cm-numbered"'):]
        cm = cm[:cm.index("</table>")]
        head = cm[:cm.index("</thead>")]
        assert re.findall(r'<th title="[^"]*">([^<]*)</th>', head) == heads   # 0-based, as named
        rows = re.findall(r'<tr><th><span class="cls-no">([^<]*)</span>([^<]*)</th>', cm)
        assert [label for label, _ in rows] == heads
        assert [label + rest for label, rest in rows] == names   # the row reads as the full name


# ---------------------------------------------------------------- pictures embedded once

def test_report_html_embeds_each_picture_once(tmp_path: Path) -> None:
    from html_facts import HtmlFacts
    from report_fixture import make_run
    from xreport import render
    from xreport.build import report_context

    paths = make_run(tmp_path, name="twice")
    langs = ["en", "zh-TW", "zh-CN"]
    ctx = report_context(paths, langs=langs)
    html = render.render_html(ctx, langs=langs)
    payloads = Counter(re.findall(r'data:image/(?:png|jpeg|gif);base64,([A-Za-z0-9+/=]+)', html))
    assert payloads and max(payloads.values()) == 1, "a picture is embedded more than once"
    # Every gallery map still shows in every language: drawn from the one embedded copy.
    uses = Counter(re.findall(r'<use href="#(xr-pic-[0-9a-f]{16})"/>', html))
    defined = set(re.findall(r'<image id="(xr-pic-[0-9a-f]{16})"', html))
    assert uses and set(uses) == defined and min(uses.values()) >= len(langs)
    facts = HtmlFacts()
    facts.feed(html)
    assert all(src.startswith("data:image/") for src in facts.srcs)
    assert "xr-pic:" not in html   # no placeholder left behind


# ---------------------------------------------------------------- sizes written W × H

def test_sizes_are_written_width_by_height_everywhere(tmp_path: Path) -> None:
    from report_fixture import make_run
    from xreport.data.base import Dataset
    from xreport.build import report_context

    wide = np.zeros((240, 320), dtype=np.uint8)   # H 240, W 320
    fig = charts.preprocessing_before_after([(wide, wide[:, :240])], t=catalog_t("en"))
    assert [ax.get_xlabel() for ax in fig.axes] == ["320 × 240", "240 × 240"]
    paths = make_run(tmp_path, name="sizes")
    data = Dataset(name="x", source="x", kind="folder", class_names=["NORMAL", "PNEUMONIA"],
                   task="binary", splits={}, fingerprint="0", original_size=(240, 320),
                   original_channels=1)
    ctx = report_context(paths, langs=["en"], dataset=data)
    assert ctx["data"]["original_size"] == labels.size_text(320, 240) == "320 × 240"


# ---------------------------------------------------------------- no cell cut or wrapped into fragments

@pytest.fixture(scope="module")
def binary_context(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from report_fixture import make_run
    from xreport.build import report_context

    root = tmp_path_factory.mktemp("binary")
    paths = make_run(root, name="binary", class_names_zh=("正常", "肺炎"))
    return report_context(paths, langs=["en", "zh-TW"])


def _pdf_lines(pdf: Path) -> list[list[str]]:
    """The words of each printed line, from ``pdftotext -bbox`` (grouped by page and yMin)."""
    import subprocess
    from html import unescape

    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True,
                         check=True).stdout
    lines: dict[tuple[int, float], list[str]] = {}
    for page, chunk in enumerate(out.split("<page ")[1:]):
        for y, word in re.findall(r'<word [^>]*yMin="([\d.]+)"[^>]*>([^<]*)</word>', chunk):
            lines.setdefault((page, round(float(y))), []).append(unescape(word))
    return list(lines.values())


@pytest.mark.skipif(not __import__("shutil").which("pdftotext"), reason="poppler-utils absent")
@pytest.mark.parametrize("lang", ["en", "zh-TW"])
def test_pdf_keeps_intervals_and_counts_on_one_line(binary_context: Any, lang: str,
                                                    tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    from xreport import render

    pdf = render.render_pdf(binary_context, lang=lang, out_path=tmp_path / f"r.{lang}.pdf")
    lines = _pdf_lines(pdf)
    words = [w for line in lines for w in line]
    # An interval cut after its dash ("(0.930–" | "1.000)") leaves a word ending in "–".
    cut = [w for w in words if re.fullmatch(r"[(\[]?-?\d+\.\d+–", w)]
    assert not cut, cut
    # Each pair of operating-point counts ("TN 97 · FP 3") prints on one line.
    text_lines = [" ".join(line) for line in lines]
    for op in binary_context["results"]["operating_points"]:
        (tn, fp), (fn, tp) = op["cm"]
        for pair in (f"TN {tn} · FP {fp}", f"FN {fn} · TP {tp}"):
            assert any(pair in line for line in text_lines), pair
    # A probability in a gallery caption stays whole: "p = 0.912", never "p" | "= 0.912".
    assert not [line for line in lines if line and line[0].startswith("=")]


@pytest.mark.skipif(not __import__("browser").available(), reason="chromium absent")
def test_html_at_1280px_cuts_no_table_and_splits_no_unit(binary_context: Any, tmp_path: Path) -> None:
    import browser
    from xreport import render

    path = tmp_path / "report.html"
    path.write_text(render.render_html(binary_context, langs=["en", "zh-TW"]), encoding="utf-8")
    with browser.Browser(width=1280, height=1000) as b:
        b.open(path)
        for lang in ("en", "zh-TW"):
            b.js(f"document.getElementById('lang-{lang}').click()")
            body = f"document.getElementById('body-{lang}')"
            # No table wider than its box (a cut column hidden behind a scroll bar).
            cut = b.js(f"[...{body}.querySelectorAll('.table-wrap')].filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.textContent.slice(0, 60))")
            assert cut == [], (lang, cut)
            # An interval, a count pair or a "p = …" keeps to one line.
            split = b.js(f"[...{body}.querySelectorAll('.ci, .nw, .metric-ci')].filter(e => e.getClientRects().length > 1 || (e.getBoundingClientRect().height > 2.2 * parseFloat(getComputedStyle(e).fontSize))).map(e => e.textContent)")
            assert split == [], (lang, split)
            # Pictures shown from the one embedded copy are drawn at a real size.
            sizes = b.js(f"[...{body}.querySelectorAll('svg.pic')].map(s => s.getBoundingClientRect().width)")
            assert sizes and min(sizes) > 20, sizes


# ---------------------------------------------------------------- CAM scale and lesion outlines

def test_cam_overlay_outlines_the_known_lesion() -> None:
    image = fake_image(32, seed=0, lesion=True)
    cam = np.random.default_rng(0).random((32, 32))
    mask = np.zeros((32, 32), dtype=bool)
    mask[18:22, 8:12] = True

    def outlines(fig: Figure) -> list[Any]:
        return fig.findobj(lambda a: a.get_gid() == "lesion")

    assert outlines(charts.cam_overlay(image, cam, colorbar=False, lesion=mask))
    assert not outlines(charts.cam_overlay(image, cam, colorbar=False))
    assert not outlines(charts.cam_overlay(image, cam, colorbar=False, lesion=np.zeros_like(mask)))


def test_draw_cam_gallery_outlines_lesions_where_masks_exist(tmp_path: Path) -> None:
    """evaluate saves the gallery's maps (cams.npz) and says which overlays outline a lesion;
    the figures stage draws them, one PNG per map."""
    import torch

    from xreport import runs
    from xreport.data.base import Split
    from xreport.evaluate import _save_gallery_cams
    from xreport.figures import draw_cam_gallery

    images = torch.from_numpy(np.stack([fake_image(32, seed=i, lesion=True) for i in range(2)]))[:, None]
    masks = torch.zeros((2, 32, 32), dtype=torch.bool)
    masks[1, 18:22, 8:12] = True
    gallery: list[Any] = [{"class": "lesion", "class_index": 1, "kind": "TP", "index": i, "target": 1,
                           "maps": [{"target": 1, "class": "lesion", "prob": 0.9}]} for i in range(2)]
    for with_masks, outlined in ((masks, [False, True]), (None, [False, False])):
        out = runs.EvaluationPaths(tmp_path / str(with_masks is None))
        entries = [dict(entry, maps=[dict(m) for m in entry["maps"]]) for entry in gallery]
        split = Split("test", images, torch.tensor([1, 1]), ["a", "b"], with_masks)
        _save_gallery_cams(entries, torch.rand(2, 32, 32), split, out=out)
        assert [entry["lesion_outline"] for entry in entries] == outlined
        assert [entry["id"] for entry in entries] == ["a", "b"] and not out.cams.exists()
        drawn = draw_cam_gallery(out, entries)
        assert drawn == [["cams/00_TP_c1_0_m1.png"], ["cams/01_TP_c1_1_m1.png"]]
        assert all((out.folder / f).is_file() for files in drawn for f in files)


@pytest.mark.parametrize("lang", ["en", "zh-TW", "zh-CN"])
def test_gallery_says_each_map_is_scaled_on_its_own(binary_context: Any, lang: str) -> None:
    from xreport import render

    t = render.translator(lang)
    html = render.render_html(binary_context, langs=[lang])
    gallery = html[html.index(f'id="{lang}-explain-gallery"'):html.index(f'id="{lang}-explain-faithfulness"')]
    assert t("explain.scale.per_map") in gallery
    # The fixture has no masks: the outline sentence appears only where outlines are drawn.
    assert t("explain.scale.lesion") not in gallery
