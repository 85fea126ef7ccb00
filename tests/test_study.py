"""The study report (`build --runs ... --notes ...`): notes safety, split checks, the design
table, baselines, the discussion's key attribution, the CLAIM checklist, the CLI."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xreport import notes as notes_mod
from xreport import render, runs, study
from xreport.errors import ConfigError, ReportError, RunError

from test_compare import _body, _labels, _text, memory_run, three_memory_runs

REPO = Path(__file__).resolve().parents[1]
N_BOOT = 200


# ---------------------------------------------------------------- notes: safe by construction

GOOD_NOTES = """---
title: Pneumonia on small radiographs
authors: A. Student, B. Student
course: AI in Medical Imaging 2026
date: 2026-12-05
data source: MedMNIST v2, PneumoniaMNIST
ethics approval: not needed, public de-identified data
---
# Objectives
We ask whether **pretraining** helps. See [the paper](https://example.org/x) and `<script>` in code.

![our sketch](sketch.png)

## A detail
text

# Setup notes
- one
- two

# Conclusion
Pretraining helped.
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def good_notes(tmp_path: Path) -> Path:
    Image.new("RGB", (6, 6), "red").save(tmp_path / "sketch.png")
    return _write(tmp_path / "notes.en.md", GOOD_NOTES)


def test_notes_render_safely_and_are_placed_by_heading(good_notes: Path) -> None:
    loaded = notes_mod.load_notes([good_notes], ["en", "zh-TW"])
    assert loaded["zh-TW"] is None                       # no silent fallback to English
    en = loaded["en"]
    assert en["title"] == "Pneumonia on small radiographs" and en["affiliation"] == "AI in Medical Imaging 2026"
    assert [s["key"] for s in en["statements"]] == ["data_source", "ethics_approval"]
    assert [(s["title"], s["place"]) for s in en["sections"]] == [
        ("Objectives", "intro"), ("Setup notes", "other"), ("Conclusion", "conclusion")]
    html = en["sections"][0]["html"]
    assert "<a " not in html and "example.org/x" in html                # links shown as text
    assert "<code>&lt;script&gt;</code>" in html                         # code is escaped text
    assert 'src="data:image/png;base64,' in html                         # the image is embedded
    assert "<h4>A detail</h4>" in html                                   # below the report's h2/h3


def test_a_file_without_suffix_serves_every_language_without_its_own(tmp_path: Path) -> None:
    every = _write(tmp_path / "notes.md", "# 引言\n中文\n\n# 結論\n好\n")
    own = _write(tmp_path / "notes.en.md", "# Introduction\nEnglish\n")
    loaded = notes_mod.load_notes([every, own], ["en", "zh-TW", "zh-CN"])
    assert loaded["en"]["file"] == "notes.en.md" and loaded["zh-CN"]["file"] == "notes.md"
    assert [s["place"] for s in loaded["zh-TW"]["sections"]] == ["intro", "conclusion"]


@pytest.mark.parametrize("name, text, problem", [
    ("n.en.md", "# Intro\n<script>alert(1)</script>\n", "raw HTML is not allowed"),
    ("n.en.md", "Hello <b onclick=x>bold</b> text\n", "raw HTML is not allowed"),
    ("n.en.md", "![x](../secret.png)\n", "'..' is not allowed"),
    ("n.en.md", "![x](/etc/passwd)\n", "no absolute path"),
    ("n.en.md", "![x](https://tracker.example/p.png)\n", "no URL"),
    ("n.en.md", "![x](missing.png)\n", "no such file beside the notes"),
    ("n.en.md", "---\ntitle: x\n# never closed\n", "never closed"),
    ("n.en.md", "---\njust a line\n---\n", "not 'key: value'"),
    ("n.fr.md", "# Intro\n", "unknown language suffix 'fr'"),
    ("n.txt", "# Intro\n", "not a Markdown file"),
])
def test_bad_notes_are_refused_in_one_line_naming_the_file(tmp_path: Path, name: str, text: str,
                                                             problem: str) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(ConfigError) as err:
        notes_mod.load_notes([path], ["en"])
    message = str(err.value)
    assert problem in message and str(path) in message and "\n" not in message


def test_huge_notes_and_images_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.en.md"
    big.write_bytes(b"a" * (10 * 2**20))
    with pytest.raises(ConfigError, match="more than the limit"):
        notes_mod.load_notes([big], ["en"])
    (tmp_path / "fake.png").write_bytes(b"<svg onload=alert(1)></svg>")
    with pytest.raises(ConfigError, match="not a readable image"):
        notes_mod.load_notes([_write(tmp_path / "img.en.md", "![x](fake.png)\n")], ["en"])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("L", (4, 4)).save(outside / "o.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link.png").symlink_to(outside / "o.png")
    inner = _write(tmp_path / "sub" / "n.en.md", "![x](link.png)\n")
    with pytest.raises(ConfigError, match="leads outside the notes folder"):
        notes_mod.load_notes([inner], ["en"])


def test_two_files_for_one_language_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.en.md", "x\n")
    (tmp_path / "b").mkdir()
    b = _write(tmp_path / "b" / "a.en.md", "y\n")
    with pytest.raises(ConfigError, match="a second notes file for en"):
        notes_mod.load_notes([a, b], ["en"])


# ---------------------------------------------------------------- a study in memory

@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    root = tmp_path_factory.mktemp("study3")
    evaluated = three_memory_runs(root)
    folder = root / "notes"
    folder.mkdir()
    Image.new("RGB", (6, 6), "red").save(folder / "sketch.png")
    loaded = notes_mod.load_notes([_write(folder / "notes.en.md", GOOD_NOTES)], ["en", "zh-TW"])
    ctx = study.study_context(evaluated, name="st", reports_root=root / "reports", langs=["en", "zh-TW"],
                              notes=loaded, n_boot=N_BOOT, cams=False)
    html = render.render_html(ctx, langs=["en", "zh-TW"], kind=study._document_kind())
    return ctx, html, root


def test_design_table_lists_what_differs_and_the_shared_keys_once(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    differ = {row["key"]: row["values"] for row in ctx["design"]["differ"]}
    assert differ == {"model.arch": ["resnet18", "resnet50", "resnet18"],
                      "model.pretrained": ["false", "true", "false"]}
    shared = [row["key"] for row in ctx["design"]["shared"]]
    assert "train.epochs" in shared and "name" not in shared and "train.device" not in shared
    assert len(shared) == len(set(shared))
    table = re.search(r'id="en-study-design-table".*?</table>', html, re.S).group(0)
    assert "model.arch" in table and "train.epochs" not in table


def test_each_model_is_explained_stage_by_stage_with_its_own_block(three: tuple[dict, str, Path]) -> None:
    ctx, html, root = three
    models = {m["run"]: m for m in ctx["models"]}
    assert [b["kind"] for b in models["r18"]["architecture"]["blocks"]] == ["basic"]
    assert [b["kind"] for b in models["r50_pre"]["architecture"]["blocks"]] == ["bottleneck"]
    # Facts and table come from the same rebuild: the totals agree.
    for m in models.values():
        assert m["facts"]["params"] == m["architecture"]["params"] and m["facts"]["flops"] == m["architecture"]["flops"]
        assert set(m["block_diagram"]) == {"en", "zh-TW"}
        assert all((root / "reports" / "st" / rel).is_file() for rel in m["block_diagram"].values())
    for i in (1, 2, 3):
        assert f'id="en-study-arch-{i}-table"' in html and f'id="zh-TW-study-arch-{i}-block"' in html
    assert "r50_pre (resnet50) · Architecture, stage by stage" in html


def test_results_hold_baseline_chance_and_the_best_run(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    res = ctx["results"]
    kinds = [row["kind"] for row in res["rows"]]
    assert kinds == ["run", "run", "run", "baseline", "chance"]        # phantom: no published table
    acc = res["columns"].index("metric.accuracy")
    auc = res["columns"].index("metric.roc_auc")
    y = _labels(300)
    share = np.bincount(y).max() / len(y)
    base, chance = res["rows"][3], res["rows"][4]
    assert base["values"][acc] == pytest.approx(share) and base["values"][auc] == pytest.approx(0.5)
    assert chance["values"][acc] == 0.5 and chance["values"][auc] == 0.5
    assert ctx["best"] == "r50_pre" and ctx["reference"] == "r50_pre"
    assert all(t["ref"] == "r50_pre" for t in ctx["tests"])
    en = _text(_body(html, "en"))
    assert "Majority-class baseline (always" in en and "Chance level" in en


def test_published_references_need_the_known_data_set_and_its_test_size(tmp_path: Path) -> None:
    y = _labels(624)
    run = memory_run(tmp_path, "pm", y=y, ids=[f"t{i}" for i in range(624)], separation=1.0, seed=1)
    run.meta["data"] = {"dataset": "/data/pneumoniamnist.npz", "kind": "medmnist"}
    refs = study.published_references(run)
    assert refs is not None and refs["dataset"] == "PneumoniaMNIST" and "MedMNIST v2" in refs["citation"]
    assert {r["model"]: r["values"]["metric.roc_auc"] for r in refs["rows"]}["ResNet-18 (28)"] == 0.944
    short = dataclasses.replace(run, ids=run.ids[:600], y_true=run.y_true[:600], probs=run.probs[:600])
    assert study.published_references(short) is None             # a file of that name, another split


def test_discussion_names_the_design_keys_behind_each_difference(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    by_run = {item["params"]["run"]: item for item in ctx["discussion"]}
    strong = by_run["r18"]
    assert strong["key"] == "study.discussion.significant"
    assert strong["params"]["what"]["params"]["changes"] == (
        "model.arch resnet50 → resnet18; model.pretrained true → false")
    near = [i for i in ctx["discussion"] if i["params"]["run"] == "r18.b"]
    assert all(i["key"] == "study.discussion.significant" for i in near)   # r18.b is weak too
    en = _text(_body(html, "en"))
    assert re.search(r"model\.arch resnet50 → resnet18; model\.pretrained true → false: ROC-AUC −0\.\d+ "
                     r"\(r18 − r50_pre\), p (?:&lt;|=) [\d.]+: a significant difference", en)


def test_no_significant_difference_is_said_plainly(tmp_path: Path) -> None:
    y = _labels(200, seed=9)
    ids = [f"i{i}" for i in range(200)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y, ids=ids, separation=1.0, seed=1, arch="resnet34")
    b.probs[:] = a.probs   # the same scores: nothing to find
    ctx = study.study_context([a, b], name="ab", reports_root=tmp_path / "r", langs=["en"], n_boot=50,
                              cams=False)
    (item,) = ctx["discussion"]
    assert item["key"] == "study.discussion.none"
    assert item["params"]["what"]["params"]["changes"] in ("model.arch resnet18 → resnet34",
                                                          "model.arch resnet34 → resnet18")


def test_the_design_says_which_runs_averaged_test_time_views(tmp_path: Path) -> None:
    y = _labels(200, seed=9)
    ids = [f"i{i}" for i in range(200)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y, ids=ids, separation=1.0, seed=2)
    assert {r["key"] for r in study.design_table([a, b])["differ"]} == set()
    b.evaluation["tta_views"] = ["identity", "hflip"]
    design = study.design_table([a, b])
    assert design["differ"] == [{"key": "evaluate.tta_views", "values": ["[identity]", "[identity, hflip]"]}]
    assert study.changed_keys(a, b) == [{"key": "evaluate.tta_views", "a": "[identity]", "b": "[identity, hflip]"}]


def test_checklist_coverage_follows_the_report_and_the_notes(three: tuple[dict, str, Path]) -> None:
    ctx, html, _ = three
    en = {item["number"]: item for item in ctx["checklist"]["en"]}
    zh = {item["number"]: item for item in ctx["checklist"]["zh-TW"]}
    assert len(en) == 44
    assert en[7]["covered"] and en[7]["via"] == "statement"          # "data source" in the front matter
    assert not zh[7]["covered"]                                      # zh-TW has no notes
    assert en[11]["covered"] and not zh[11]["covered"]               # "ethics approval"
    assert en[1]["covered"] and not zh[1]["covered"]                 # the notes' title
    assert en[4]["via"] == "notes" and en[4]["anchor"] == "notes-1"  # the "Objectives" section
    assert en[39]["via"] == "notes"                                  # the conclusion
    assert en[38]["via"] == "report" and en[38]["anchor"] == "study-limitations"
    assert not en[42]["covered"] and not en[31]["covered"]           # funding; no CAMs in this study
    ids = set(re.findall(r'id="([^"]+)"', html))
    for lang, items in ctx["checklist"].items():
        for item in items:
            if item["covered"]:
                assert f"{lang}-{item['anchor']}" in ids, item
    zh_text = _text(_body(html, "zh-TW"))
    assert "未涵蓋 — 請加入你的筆記" in zh_text and "此語言沒有提供筆記" in zh_text
    assert "Pretraining helped" not in zh_text                        # never another language's notes
    en_text = _text(_body(html, "en"))
    assert "Pneumonia on small radiographs" in en_text and "Pretraining helped" in en_text


def test_every_study_message_key_exists_in_every_language() -> None:
    mine = {lang: json.loads((REPO / "templates" / "i18n" / lang / "study.json").read_text(encoding="utf-8"))
            for lang in render.LANGS}
    assert set(mine["zh-TW"]) == set(mine["en"]) == set(mine["zh-CN"])
    catalogs = {lang: render.load_catalog(lang) for lang in render.LANGS}
    sources = [REPO / "xreport" / "study.py", REPO / "templates" / "study.html.j2",
               *sorted((REPO / "templates" / "partials").glob("study_*.j2"))]
    used: set[str] = set()
    for path in sources:
        used |= set(re.findall(r"""["']((?:study|claim|chart\.study)\.[\w.]+)["']""",
                               path.read_text(encoding="utf-8")))
    used = {k for k in used if not k.endswith((".", "_", ".j2", ".json", ".py"))}
    # keys finished in code or templates: every ending they can take
    used |= {f"study.claim.via_{v}" for v in ("report", "notes", "statement")}
    used |= {f"study.discussion.metric_{v}" for v in ("auc", "acc")}
    used |= {f"study.results.baseline_hint_{v}" for v in ("train", "test")}
    used |= {f"study.verdict.{v}" for v in ("better", "not_distinguishable", "worse", "mixed", "below_margin", "pass", "inconclusive", "fail")}
    items = json.loads((REPO / "xreport" / "data" / "claim2024.json").read_text(encoding="utf-8"))["items"]
    used |= {item["key"] for item in items} | {f"claim.group.{item['group']}" for item in items}
    for lang in render.LANGS:
        missing = sorted(k for k in used if k not in catalogs[lang])
        assert not missing, (lang, missing)


# ---------------------------------------------------------------- refused runs

def test_runs_on_different_test_splits_are_refused_naming_them(tmp_path: Path) -> None:
    y = _labels(100, seed=4)
    a = memory_run(tmp_path, "a", y=y, ids=[f"x{i}" for i in range(100)], separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y[:90], ids=[f"x{i}" for i in range(10, 100)], separation=1.0, seed=2)
    c = memory_run(tmp_path, "c", y=y, ids=[f"x{i}" for i in range(100)], separation=1.0, seed=3)
    with pytest.raises(ReportError, match=r"different test splits: a, c \(100 images.*; b \(90 images"):
        study.check_same_split([a, b, c])
    relabelled = dataclasses.replace(c, y_true=1 - c.y_true)
    with pytest.raises(ReportError, match="different test splits"):
        study.check_same_split([a, relabelled])
    # the same images in another order (another preprocessing, another loader) are one split
    perm = np.random.default_rng(0).permutation(100)
    shuffled = dataclasses.replace(c, ids=[c.ids[i] for i in perm], y_true=c.y_true[perm], probs=c.probs[perm])
    assert study.check_same_split([a, shuffled]) == study.split_fingerprint(a)


def test_different_class_sets_are_refused(tmp_path: Path) -> None:
    y = _labels(60, seed=5)
    ids = [f"i{i}" for i in range(60)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y, ids=ids, separation=1.0, seed=2, class_names=["NORMAL", "COVID"])
    with pytest.raises(ReportError, match="runs 'a' and 'b' have different classes"):
        study.check_same_split([a, b])


def test_duplicate_missing_and_single_runs_are_refused_before_any_write(tmp_path: Path) -> None:
    a = runs.RunPaths("a", checkpoints_root=tmp_path / "c", reports_root=tmp_path / "r")
    b = runs.RunPaths("b", checkpoints_root=tmp_path / "c", reports_root=tmp_path / "r")
    with pytest.raises(ConfigError, match="names 'a' twice"):
        study.build_study([a, a], name="s", reports_root=tmp_path / "r")
    with pytest.raises(ConfigError, match="at least 2 runs"):
        study.build_study([a], name="s", reports_root=tmp_path / "r")
    with pytest.raises(RunError, match="run 'a' does not exist"):
        study.build_study([a, b], name="s", reports_root=tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- the CLI

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_builds_a_two_run_study_and_refuses_bad_notes(tmp_path: Path) -> None:
    from report_fixture import make_run

    make_run(tmp_path, name="fa", seed=0)
    make_run(tmp_path, name="fb", seed=1)
    (tmp_path / "notes").mkdir()
    bad = _write(tmp_path / "notes" / "notes.en.md", "# Intro\n<script>alert(1)</script>\n")
    done = _cli("build", "--runs", "fa", "fb", "--name", "mystudy", "--notes", str(bad), "--format", "html",
                "--lang", "en", "--no-cams", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and str(bad) in done.stderr
    assert "raw HTML" in done.stderr and not (tmp_path / "reports" / "mystudy").exists()
    good = _write(tmp_path / "notes" / "notes.en.md", "---\ntitle: Two fixtures\n---\n# Conclusion\nFine.\n")
    done = _cli("build", "--runs", "fa", "fb", "--name", "mystudy", "--notes", str(good), "--format", "html",
                "--lang", "en,zh-CN", "--no-cams", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "reports" / "mystudy"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Two fixtures" in html and "fa" in html and "fb" in html and "undefined" not in html
    assert "此语言没有提供笔记" in html and "<script>" not in _body(html, "en").split("<style>")[0]
    summary = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert summary["kind"] == "study" and len(summary["tests"]) == 1
    assert '../fa/report.html' in html or "xreport build --run fa" in html


def test_a_single_run_report_places_the_notes_by_heading(good_notes: Path) -> None:
    from report_fixture import shared_run

    _, ctx = shared_run()
    loaded = notes_mod.load_notes([good_notes], ["en", "zh-TW"])
    html = render.render_html({**ctx, "notes": loaded, "notes_langs": ["en"]}, langs=["en", "zh-TW"])
    en = _body(html, "en")
    assert "Pneumonia on small radiographs" in en and "ethics approval" in en
    order = [en.index(marker) for marker in ('id="en-notes-1"', 'id="en-data"', 'id="en-notes-2"',
                                             'id="en-discussion"', 'id="en-notes-3"', 'id="en-repro"')]
    assert order == sorted(order)        # intro before the data, other notes, conclusion at the end
    zh = _body(html, "zh-TW")
    assert zh.count("此語言沒有提供筆記") == 1 and "Pretraining helped" not in zh


def test_study_placeholders_match_across_languages() -> None:
    catalogs = {lang: json.loads((REPO / "templates" / "i18n" / lang / "study.json").read_text(encoding="utf-8"))
                for lang in render.LANGS}
    for key, text in catalogs["en"].items():
        for lang in ("zh-TW", "zh-CN"):
            assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", catalogs[lang][key])), (lang, key)


def test_the_cam_grid_draws_every_run_and_marks_a_missing_map() -> None:
    from xreport import charts

    image = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    cam = np.outer(np.linspace(0, 1, 4), np.ones(4))
    fig = charts.study_cams([image, image], [[cam, None, cam], [cam, cam, cam]],
                            row_labels=["NORMAL · img-1", "PNEUMONIA · img-2"],
                            run_labels=["r18", "a very long run name that needs shortening", "d121"],
                            t=lambda key, **params: key)
    assert len(fig.axes) == 2 * 4 + 1                              # image + 3 runs per row, colour bar
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0] == "chart.study.image" and titles[1] == "r18" and titles[3] == "d121"
    assert any(text.get_text() == "–" for text in fig.axes[2].texts)   # the run without a map
