"""Reports fit any class count: a 12-class run with 25-character names on A4 (issue 11).

A synthetic run folder (tests/report_fixture.py) is rendered to PDF; pdftotext says what is
on each page and where, so nothing cut off at the right edge can pass.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from html import unescape
from pathlib import Path
from xml.etree import ElementTree

import pytest

from report_fixture import make_run
from xreport import languages, render
from xreport.build import report_context
from xreport.report import layout

# 25 characters each, as the issue asks.
LONG_NAMES = ("Atypical lymphocyte cells", "Basophilic stippled cells", "Eosinophil granulocyte 03",
              "Small resting lymphocytes", "Activated large monocytes", "Segmented neutrophil band",
              "Immature myeloblast cells", "Granular promyelocytes 08", "Metamyelocyte kidney form",
              "Plasma cells eccentric 10", "Nucleated erythroblast 11", "Aggregated platelet clump")
assert all(len(n) == 25 for n in LONG_NAMES)
POPPLER = shutil.which("pdftotext") is not None


@pytest.fixture(scope="module")
def twelve(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("layout12")
    paths = make_run(root, name="twelve", class_names=LONG_NAMES, n_test=6)
    ctx = report_context(paths, langs=["en"])
    return paths.report_dir, ctx


def _bbox_pages(pdf: Path) -> list[tuple[float, list[tuple[str, float, float]]]]:
    """(page width, [(word, xMin, xMax)]) per page, from ``pdftotext -bbox``."""
    html = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    body = re.sub(r"<!DOCTYPE[^>]*>", "", html)
    body = re.sub(r"<head>.*?</head>", "", body, flags=re.S)
    tree = ElementTree.fromstring(body)
    pages = []
    for page in tree.iter("{http://www.w3.org/1999/xhtml}page"):
        words = [(unescape(w.text or ""), float(w.get("xMin")), float(w.get("xMax")))
                 for w in page.iter("{http://www.w3.org/1999/xhtml}word")]
        pages.append((float(page.get("width")), words))
    return pages


def test_layout_rule_switches_wide_tables_beyond_four_classes() -> None:
    assert layout(2)["transpose_splits"] is False and layout(4)["numbered_columns"] is False
    assert layout(5)["transpose_splits"] and layout(12)["numbered_columns"] and layout(8)["stack_figures"]


def test_twelve_class_html_tables_have_a_row_per_class(twelve) -> None:
    _, ctx = twelve
    html = render.render_html(ctx, langs=["en"])
    dist = html[html.index('class="num-table dist-table dist-by-class"'):]
    dist = dist[:dist.index("</table>")]
    assert dist.count("<tr>") == 1 + len(LONG_NAMES)  # header + one row per class (+ total row)
    cm = html[html.index('class="num-table cm-table cm-numbered"'):]
    cm = cm[:cm.index("</table>")]
    head = cm[:cm.index("</thead>")]
    # Columns headed by short labels (letters: these names share no short start), and the row
    # of class k starts with the label that heads column k, followed by its full name.
    keys = [chr(ord("A") + i) for i in range(12)]
    assert re.findall(r'<th title="[^"]*">([^<]*)</th>', head) == keys
    rows = re.findall(r'<tr><th><span class="cls-no">([^<]*)</span> ([^<]*)</th>', cm)
    assert rows == list(zip(keys, LONG_NAMES))


@pytest.mark.skipif(not POPPLER, reason="poppler-utils absent")
def test_twelve_class_pdf_shows_every_class_name_and_confusion_cell(twelve, tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    _, ctx = twelve
    pdf = render.render_pdf(ctx, lang="en", out_path=tmp_path / "report.en.pdf")
    pages = _bbox_pages(pdf)
    for width, words in pages:  # nothing runs off the right (or left) edge of a page
        outside = [w for w, x0, x1 in words if x1 > width + 0.5 or x0 < -0.5]
        assert not outside, outside[:10]
    text = " ".join(w for _, words in pages for w, _, _ in words)
    for name in LONG_NAMES:
        assert name in text, name
    # The confusion-matrix table: every cell (count and share of its row) on one page.
    cm_pages = [words for _, words in pages
                if "Each column is headed by the label" in " ".join(w for w, _, _ in words)]
    assert cm_pages, "confusion-matrix table not found"
    on_page = Counter(w for w, _, _ in cm_pages[0])
    raw, by_true = ctx["results"]["confusion"]["raw"], ctx["results"]["confusion"]["by_true"]
    assert len(raw) == 12 and all(len(row) == 12 for row in raw)
    wanted_counts = Counter(str(c) for row in raw for c in row)
    wanted_shares = Counter(f"({100 * v:.1f}%)" for row in by_true for v in row)
    for token, n in (wanted_counts + wanted_shares).items():
        assert on_page[token] >= n, (token, on_page[token], n)


# ---------------------------------------------------------------- wording by task

def _results_section(html: str, lang: str = "en") -> str:
    start = html.index(f'id="{lang}-results"')
    return html[start:html.index("</section>", start)]


def test_multiclass_results_speak_of_argmax_not_thresholds(twelve) -> None:
    _, ctx = twelve
    t = render.translator("en")
    results = _results_section(render.render_html(ctx, langs=["en"]))
    assert t("results.decision.argmax") in results
    assert "threshold" not in results.replace(t("results.decision.argmax"), "")
    assert t("metric.roc_auc_macro") in results


def test_binary_results_name_the_threshold_and_the_positive_class() -> None:
    from report_fixture import shared_run

    _, ctx = shared_run()
    t = render.translator("en")
    results = _results_section(render.render_html(ctx, langs=["en"]))
    assert t("results.decision.binary", cls="PNEUMONIA") in results
    assert t("results.decision.argmax") not in results


def test_results_sentence_claims_intervals_only_where_shown(twelve) -> None:
    """AP, ECE and Brier carry bootstrap intervals like every other metric, the tables show
    them, and the sentence says "every metric" only when every value shown has one."""
    from report_fixture import shared_run

    t = render.translator("en")
    assert "every" not in t("results.intro", n=1, split="test").lower()
    for ctx in (twelve[1], shared_run()[1]):
        r = ctx["results"]
        results = _results_section(render.render_html(ctx, langs=["en"]))
        ap, ece, brier = (dict(r["overall"])["metric.average_precision"], r["calibration"]["ece"],
                          r["calibration"]["brier"])
        for value in (ap, ece, brier):
            assert value["ci95"] and value["ci95"][0] <= value["value"] <= value["ci95"][1]
            assert f'{render.num(value["value"])} <span class="ci">({render.ci(value)})</span>' in results
        # Every number cell but an operating point's threshold (a setting, not an estimate).
        chosen = "|".join(re.escape(t(f"chosen_on.{c}")) for c in ("fixed", "val", "test"))
        metric_cells = re.sub(rf"<td>\d\.\d{{3}}</td><td>({chosen})</td>", "", results)
        cells = re.findall(r"<td>(\d\.\d{3})( <span class=\"ci\">)?", metric_cells)
        assert cells and r["every_value_has_interval"] == all(ci for _, ci in cells)
        intro = "results.intro_all_ci" if r["every_value_has_interval"] else "results.intro"
        assert t(intro, n=r["n"], split=t("split." + r["split"])) in results


def test_imbalance_sentence_follows_the_ratio(tmp_path: Path) -> None:
    from xreport.report import _imbalance

    balanced = _imbalance({}, {"class_names": ["a", "b", "c"], "splits": {"train": [40, 40, 40]}})
    assert balanced["balanced"] and balanced["ratio"] == 1.0
    skewed = _imbalance({}, {"class_names": ["a", "b", "c"], "splits": {"train": [10, 45, 30]}})
    assert not skewed["balanced"] and (skewed["majority"], skewed["n_majority"]) == ("b", 45)
    assert (skewed["minority"], skewed["n_minority"]) == ("a", 10)
    from report_fixture import make_run

    paths = make_run(tmp_path, name="even", class_names=("p", "q", "r"), n_test=4)
    import json
    dist = json.loads(paths.class_distribution.read_text())
    dist["splits"]["train"] = [50, 50, 50]
    paths.class_distribution.write_text(json.dumps(dist))
    ctx = report_context(paths, langs=["en"])
    html = render.render_html(ctx, langs=["en"])
    t = render.translator("en")
    assert t("data.imbalance.balanced", n=50) in html
    assert " : 1 (" not in html  # no "1.0 : 1 (p vs p)"


def test_chinese_sentences_set_class_names_without_spaces() -> None:
    for lang in ("zh-TW", "zh-CN"):
        t = render.translator(lang)
        text = t("data.imbalance.ratio", ratio="2.0", cls_major="甲", n_major=20, cls_minor="乙", n_minor=10)
        assert "甲" in text and " 甲" not in text and "甲 " not in text and " 乙" not in text
        assert render.translator("en")("data.imbalance.ratio", ratio="2.0", cls_major="A", n_major=20,
                                       cls_minor="B", n_minor=10).count("(A, 20 images") == 1
    assert render.tight_class_names("為 {cls}，以") == "為{cls}，以"
    assert render.tight_class_names("ratio {ratio} : 1") == "ratio {ratio} : 1"


def test_preprocessing_parameters_are_translated() -> None:
    from report_fixture import shared_run

    _, ctx = shared_run()
    html = render.render_html(ctx, langs=["zh-TW"])
    pipeline = html[html.index('<ol class="pipeline">'):]
    pipeline = pipeline[:pipeline.index("</ol>")]
    t = render.translator("zh-TW")
    assert t("pipeline.param.size") in pipeline and t("pipeline.param.keep_aspect") in pipeline
    assert "size=" not in pipeline and "keep_aspect" not in pipeline and "True" not in pipeline


def test_english_sentences_name_splits_in_lower_case() -> None:
    """"80 images of the test split", not "the Test split"; a table row still reads "Test"."""
    from report_fixture import shared_run

    _, ctx = shared_run()
    html = render.render_html(ctx, langs=["en"])
    assert not re.search(r"\b(the|of) (Test|Validation|Train) split", html)
    assert f"{ctx['results']['n']} images of the test split" in html
    data = html[html.index('id="en-data"'):]
    data = data[:data.index("</section>")]
    assert re.search(r"<th[^>]*>Test</th>", data) and re.search(r"<th[^>]*>Validation</th>", data)


# ---------------------------------------------------------------- pages (issue 11, item 6)

# A page other than the last is at least this full (top of its content to its lowest ink).
MIN_PAGE_FILL = 0.5
# Blocks that announce what follows: never the last thing on a page.
LEAD_INS = ("h2", "h3", "h4", "cam-scale")


def _document(html: str, report_dir: Path):
    """``html`` laid out by WeasyPrint as the PDF would be."""
    weasyprint = pytest.importorskip("weasyprint")
    return weasyprint.HTML(string=html, base_url=str(report_dir.resolve()) + "/",
                           url_fetcher=render.make_url_fetcher([report_dir, languages.templates_root()])).render()


def _layout(document) -> list[tuple[float, tuple[str, ...]]]:
    """Per page of a laid-out ``document``, how full it is and the tags and classes of the
    blocks around its lowest line or image."""
    from weasyprint.formatting_structure import boxes

    def ink(box, around: tuple[str, ...], out: list) -> None:
        if isinstance(box, boxes.MarginBox):   # running header and page number
            return
        if isinstance(box, boxes.BlockLevelBox) and box.element is not None:
            around = around + (box.element_tag, *(box.element.get("class") or "").split())
        if isinstance(box, (boxes.LineBox, boxes.ReplacedBox)):
            out.append((box.position_y + box.margin_height(), around))
            return
        for child in getattr(box, "children", []):
            ink(child, around, out)

    pages = []
    for page in document.pages:
        box = page._page_box
        found: list = []
        ink(box, (), found)
        bottom, around = max(found, key=lambda f: f[0], default=(box.content_box_y(), ()))
        pages.append(((bottom - box.content_box_y()) / box.height, around))
    return pages


def _page_problems(pages: list[tuple[float, tuple[str, ...]]]) -> list[str]:
    problems = [f"page {i} of {len(pages)} is {fill:.0%} full" for i, (fill, _) in enumerate(pages[:-1], 1)
                if fill < MIN_PAGE_FILL]
    problems += [f"page {i} ends with a lead-in ({' > '.join(around)})" for i, (_, around) in enumerate(pages, 1)
                 if set(around) & set(LEAD_INS)]
    return problems


def test_pdf_pages_are_filled_and_nothing_runs_out_of_its_box(twelve) -> None:
    """No near-empty page (tables break between rows, figures are sized so that two share a
    page), no heading or colour bar stranded at the foot of a page, and no block (a headline
    tile, a table) wider than the card or section that holds it: binary in every language
    (Chinese labels carry long English words in brackets) and 12 long class names."""
    from report_fixture import shared_run

    paths, binary = shared_run()
    cases = [("binary", binary, lang, paths.report_dir) for lang in binary["langs"]]
    cases.append(("twelve", twelve[1], "en", twelve[0]))
    for name, ctx, lang, report_dir in cases:
        document = _document(render.render_pdf_html(ctx, lang=lang), report_dir)
        pages = _layout(document)
        assert len(pages) > 5 and not _page_problems(pages), (name, lang, _page_problems(pages))
        overflowing = _overflowing_blocks(document)
        assert not overflowing, (name, lang, overflowing[:5])


def test_gallery_lead_in_travels_with_its_first_row() -> None:
    """Wherever the CAM gallery starts on a page, its heading, hint and colour bar are never
    left at the foot of a page while the first row of panels opens the next one."""
    from report_fixture import shared_run

    paths, ctx = shared_run()
    html = render.render_pdf_html(ctx, lang="en")
    head = html[:html.index("<body")]
    start = html.index('<h3 id="en-explain-gallery"')
    gallery = html[start:html.index("</p>", html.index("kinds-legend", start)) + 4]
    for spacer_mm in range(150, 250, 12):   # the lead-in at every height near a page foot
        pages = _layout(_document(f'{head}<body class="pdf"><div class="langbody pdfbody"><section class="section">'
                                  f'<div style="height: {spacer_mm}mm"></div>{gallery}</section></div></body></html>',
                                  paths.report_dir))
        assert len(pages) == 2 and not [p for p in _page_problems(pages) if "lead-in" in p], \
            (spacer_mm, _page_problems(pages))


def _overflowing_blocks(document) -> list[str]:
    """Block boxes whose right edge runs past their parent's content box (a tile pushed out
    of its card by a long word, a table wider than its section), per page."""
    from weasyprint.formatting_structure import boxes

    found: list[str] = []

    def walk(box, page: int) -> None:
        children = getattr(box, "children", [])
        if isinstance(box, boxes.BlockContainerBox) and not isinstance(box, boxes.MarginBox):
            right = box.content_box_x() + box.width
            for child in children:
                if isinstance(child, boxes.BlockLevelBox) and child.element is not None:
                    edge = child.position_x + child.margin_width()
                    if edge > right + 1:
                        found.append(f"page {page}: <{child.element_tag} class="
                                     f"{child.element.get('class')!r}> ends {edge - right:.0f}px past "
                                     f"<{box.element_tag} class={box.element.get('class')!r}>")
        for child in children:
            walk(child, page)

    for number, page in enumerate(document.pages, 1):
        walk(page._page_box, number)
    return found

