"""HTML and PDF rendering: self-contained, escaped, every language, catalogs complete."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from report_fixture import EVIL_CLASS, shared_run
from xreport import render
from xreport.errors import ReportError

from html_facts import HtmlFacts

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
GOLDEN = Path(__file__).parent / "golden"
SECTION_IDS = ("summary", "data", "model", "training", "results", "explain", "discussion", "repro")
# Keys built from data in templates ("task." ~ s.task): every value they can take.
DYNAMIC = {
    "task": ("binary", "multiclass", "ordinal"), "split": ("train", "val", "test"),
    "imbalance": ("none", "sampler", "class_weights"), "normalize": ("dataset", "imagenet", "fixed"),
    "augment": ("hflip", "vflip", "rotation", "translate", "scale", "brightness", "contrast", "blur", "noise"),
    "stem": ("small", "standard"), "schedule": ("cosine", "step", "none"),
    "select": ("val_auc", "val_acc", "val_f1", "val_loss"), "metric.val": ("loss", "acc", "f1", "auc"),
    "results.avg": ("macro", "weighted"), "results.roc.hint": ("binary", "ovr"),
    "op": ("default_0.5", "youden", "sens_90", "sens_95"), "chosen_on": ("fixed", "val", "test", "evaluated"),
    "kind": ("TP", "TN", "FP", "FN"), "faith": ("deletion_auc", "insertion_auc"),
    "loc": ("pointing_game", "energy_inside"),
    "viewer.set": ("gallery", "confident", "uncertain"),
    "viewer.outcome": ("TP", "FP", "TN", "FN", "correct", "incorrect"),
    "pipeline": ("decode", "crop_black_border", "equalize", "clahe", "unsharp", "resize", "to_rgb", "normalize"),
}


@pytest.fixture(scope="module")
def html() -> str:
    _, ctx = shared_run()
    return render.render_html(ctx, langs=["en", "zh-TW"])


def test_html_is_self_contained_with_every_section_per_language(html: str) -> None:
    parser = HtmlFacts()
    parser.feed(html)
    assert parser.langs == ["en", "zh-TW"]
    for lang in ("en", "zh-TW"):
        for sec in SECTION_IDS:
            assert f"{lang}-{sec}" in parser.ids, f"{lang}-{sec}"
        assert f"lang-{lang}" in parser.ids          # the CSS-only switch
    assert len(parser.srcs) > 20 and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower()
    for leak in ("undefined", "None", "nan", "{{", "{%"):
        assert not re.search(rf"(?<![\w-]){re.escape(leak)}(?![\w-])", re.sub(r'src="data:[^"]*"', "", html)), leak
    assert "繁體中文" in html and "混淆矩陣 (Confusion Matrix)" in html


def test_discussion_links_point_at_existing_anchors(html: str) -> None:
    parser = HtmlFacts()
    parser.feed(html)
    for href in re.findall(r'href="#([^"]+)"', html):
        assert href in parser.ids, href


def test_user_strings_are_escaped() -> None:
    _, ctx = shared_run()
    evil = copy.deepcopy(ctx)
    evil["run"] = "run&<b>x</b>"
    evil["class_names"] = ["NORMAL", EVIL_CLASS]
    evil["class_names_i18n"] = {}
    evil["data"]["class_names"] = ["NORMAL", EVIL_CLASS]
    out = render.render_html(evil, langs=["en"])
    assert "<script>alert" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "run&amp;&lt;b&gt;x&lt;/b&gt;" in out and "<b>x</b>" not in out


def test_catalogs_have_identical_keys_and_cover_every_key_used() -> None:
    catalogs = {lang: render.load_catalog(lang) for lang in render.LANGS}
    for lang in ("zh-TW", "zh-CN"):
        assert set(catalogs[lang]) == set(catalogs["en"]), lang
        assert all(v.strip() for v in catalogs[lang].values())
    en = catalogs["en"]
    used: set[str] = set()
    for path in TEMPLATES.rglob("*.j2"):
        used |= set(re.findall(r"""(?<![\w.])t\(\s*["']([\w.\-]+)["']\s*[,)]""", path.read_text()))
        used |= set(re.findall(r"""["']((?:fig|data|results|explain|training)\.[\w.]+\.title|fig\.[\w.]+)["']""", path.read_text()))
    for path in (REPO / "xreport" / "report.py", REPO / "xreport" / "discussion.py"):
        used |= set(re.findall(r"""["']((?:discussion|metric|note)\.[a-z_0-9.]+)["']""", path.read_text()))
    used |= {f"{family}.{v}" if family not in ("metric.val", "results.avg", "results.roc.hint")
             else f"{family}_{v}" for family, values in DYNAMIC.items() for v in values}
    missing = sorted(k for k in used if k not in en)
    assert not missing, missing
    # Placeholders must match across languages.
    for key, text in en.items():
        for lang in ("zh-TW", "zh-CN"):
            assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", catalogs[lang][key])), (lang, key)


def test_t_falls_back_to_english_and_a_key_missing_in_english_raises(tmp_path: Path) -> None:
    (tmp_path / "i18n" / "en").mkdir(parents=True)
    (tmp_path / "i18n" / "en" / "extra.json").write_text(json.dumps({"x.only_en": "Only {n}"}))
    t = render.translator("zh-TW", tmp_path)
    assert t("x.only_en", n=3) == "Only 3" and t("section.data.title") == "資料"
    with pytest.raises(ReportError, match="no.such.key"):
        t("no.such.key")


def test_number_filters() -> None:
    assert str(render.fmt({"value": 0.91234, "ci95": [0.889, 0.934]})) == '0.912 <span class="ci">(0.889–0.934)</span>'
    assert str(render.fmt({"value": None, "reason": "no <positives>"})) == \
        '—<span class="reason"> (no &lt;positives&gt;)</span>'
    assert render.num(1234567) == "1,234,567" and render.num(None) == "—" and render.num(float("nan")) == "—"
    assert render.pct(0.912) == "91.2%" and render.ci({"value": 1.0}) == ""


def test_environment_is_sandboxed_strict_and_autoescaping(tmp_path: Path) -> None:
    env = render.make_environment(None)
    with pytest.raises(jinja2.exceptions.SecurityError):
        env.from_string("{{ x.__class__.__mro__[1].__subclasses__() }}").render(x=1)
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    assert env.from_string("{{ s }}").render(s="<i>") == "&lt;i&gt;"
    # A user's folder overrides single templates and catalog keys.
    (tmp_path / "i18n" / "en").mkdir(parents=True)
    (tmp_path / "i18n" / "en" / "mine.json").write_text(json.dumps({"report.title": "My lab"}))
    _, ctx = shared_run()
    assert "My lab" in render.render_html(ctx, langs=["en"], templates_dir=tmp_path)


def test_summary_card_matches_golden() -> None:
    ctx = {"class_names": ["NORMAL", "PNEUMONIA"], "class_names_i18n": {}, "report_dir": ".",
           "summary": {"task": "binary", "num_classes": 2, "dataset": "pneumoniamnist", "arch": "resnet18",
                       "pretrained": False, "imported": False, "n_test": 624, "date": "2025-01-02 03:04",
                       "versions": [("python", "3.11.9"), ("torch", "2.4.0")],
                       "headline": [{"key": "metric.accuracy", "value": {"value": 0.9123, "ci95": [0.89, 0.93]}},
                                    {"key": "metric.roc_auc", "value": {"value": None, "reason": "one class only"}}]}}
    env = render.make_environment(None)
    g = render._globals_for(ctx, "en", templates_dir=None, mode="data")
    out = env.get_template("partials/summary_card.html.j2").render(**g)
    golden = GOLDEN / "summary_card.html"
    if os.environ.get("XREPORT_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8"), "re-run with XREPORT_UPDATE_GOLDEN=1 if the change is wanted"


def test_url_fetcher_refuses_remote_and_outside_files(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    inside = tmp_path / "report" / "a.png"
    inside.parent.mkdir()
    inside.write_bytes(b"\x89PNG")
    fetch = render.make_url_fetcher([inside.parent])
    for url in ("http://example.com/x.png", "https://example.com/f.woff", "ftp://x/y",
                (tmp_path / "secret.txt").as_uri(), "file:///etc/passwd"):
        with pytest.raises(ReportError):
            fetch.fetch(url)
    assert fetch.fetch(inside.as_uri()).read() == b"\x89PNG"
    assert fetch.fetch("data:text/plain;base64,aGk=").read() == b"hi"


@pytest.mark.skipif(not (shutil.which("pdffonts") and shutil.which("pdftotext")), reason="poppler-utils absent")
def test_chinese_pdf_embeds_noto_cjk_and_holds_its_headings(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    _, ctx = shared_run()
    out = render.render_pdf(ctx, lang="zh-TW", out_path=tmp_path / "report.zh-TW.pdf")
    assert out.stat().st_size > 10_000 and not list(tmp_path.glob(".*.tmp"))
    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Noto-?Sans-?CJK-?TC.*yes", fonts), fonts
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True).stdout
    t = render.translator("zh-TW")
    for key in ("section.data.title", "section.model.title", "section.results.title", "results.confusion.title"):
        assert t(key) in text, key
    assert re.search(r"1 / \d+", text)                 # page numbers in the footer


def test_a_mixed_training_says_its_train_curves_are_on_blended_images(html: str) -> None:
    _, ctx = shared_run()
    assert ctx["training"]["mixing"] == [] and "-training-mixed" not in html
    mixed = copy.deepcopy(ctx)
    mixed["training"]["mixing"] = [("mixup", 0.2), ("cutmix", 1.0)]
    out = render.render_html(mixed, langs=["en", "zh-TW"])
    for lang in ("en", "zh-TW"):
        start = out.index(f'id="{lang}-training-mixed"')
        hint = out[start:out.index("</p>", start)]
        assert "mixup α 0.2, cutmix α 1.0" in hint and "augment.mixup" in hint
