"""The interactive attention viewer: maps for every class, its data file, and the page itself
in a real headless Chromium (clicks and key presses through the DevTools protocol)."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import browser
from report_fixture import EVIL_CLASS, shared_run
from xreport import artifacts, explain, render, report, viewer
from xreport.errors import ReportError
from xreport.runs import EvaluationPaths
from xreport.models import build_model, cam_target_layer

# ---------------------------------------------------------------- maps for every class


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, in_channels=1, small_input_stem=True).eval()
    layer, _ = cam_target_layer(model, input_size=28, in_channels=1)
    return model, layer


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam"])
def test_viewer_maps_are_the_cams_of_every_class(tiny_model, method):
    model, layer = tiny_model
    x = torch.randn(5, 1, 28, 28)
    maps = explain.viewer_maps(model, x, target_layer=layer, method=method, batch_size=2)
    assert maps.dtype == torch.uint8 and maps.shape[:2] == (5, 3) and maps.shape[2] <= explain.VIEWER_MAX_GRID
    for k in range(3):
        ref = explain.compute_cams(model, x, target_layer=layer, targets=torch.full((5,), k), method=method)
        # The browser upsamples the grid bilinearly, as compute_cams does before its min-max.
        up = F.interpolate(maps[:, k:k + 1].float() / 255, size=(28, 28), mode="bilinear", align_corners=False)
        assert torch.allclose(explain.cams._minmax(up[:, 0]), ref, atol=0.02), (method, k)


def test_viewer_maps_cam_method_uses_the_classifier_weights(tiny_model):
    model, _ = tiny_model
    x = torch.randn(3, 1, 28, 28)
    maps = explain.viewer_maps(model, x, target_layer=model.layer4, method="cam")
    for k in range(3):
        ref = explain.compute_cams(model, x, target_layer=model.layer4, targets=torch.full((3,), k), method="cam")
        up = F.interpolate(maps[:, k:k + 1].float() / 255, size=(28, 28), mode="bilinear", align_corners=False)
        assert torch.allclose(explain.cams._minmax(up[:, 0]), ref, atol=0.02)


def test_viewer_maps_take_one_forward_pass_per_batch_for_all_classes(tiny_model):
    model, layer = tiny_model
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        maps = explain.viewer_maps(model, torch.randn(10, 1, 28, 28), target_layer=layer, batch_size=4)
    finally:
        handle.remove()
    assert maps.shape[:2] == (10, 3)
    assert len(calls) == 3  # ceil(10 / 4) batches, not batches x classes


def test_select_rows_takes_the_gallery_and_both_ends_of_confidence():
    probs = np.array([[0.5, 0.5], [0.99, 0.01], [0.6, 0.4], [0.1, 0.9], [0.55, 0.45]])
    sets = viewer.select_rows(probs, [2], n_extreme=2)
    assert sets[2] == ["gallery"]
    assert sets[1] == ["confident"] and sets[3] == ["confident"]
    assert sets[0] == ["uncertain"] and sets[4] == ["uncertain"]


def _fake_viewer(k: int, n: int, *, seed: int = 0, names: list[str] | None = None) -> dict:
    """Viewer data whose class-c map is hot in its own corner, so a drawn pixel tells the class."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(60, 200, size=(n, 1, 28, 28), dtype=np.uint8))
    y = np.arange(n) % k
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    maps = torch.zeros((n, k, 7, 7), dtype=torch.uint8)
    corners = [(0, 0), (6, 6), (0, 6), (6, 0)]
    for c in range(k):
        r, col = corners[c % 4]
        maps[:, c, r, col] = 255
    rows = list(range(n))
    sets = viewer.select_rows(probs, rows[:4], n_extreme=n // 3)
    return viewer.build_viewer(images, [f"img{i:03d}.png" for i in rows], y, probs, maps, rows, sets,
                               class_names=names or [f"class {c}" for c in range(k)],
                               task="binary" if k == 2 else "multiclass", split="test",
                               method="gradcam", layer="layer3")


def test_viewer_file_round_trips_and_a_damaged_one_is_refused(tmp_path):
    data = _fake_viewer(3, 12)
    folder = EvaluationPaths(tmp_path, "run")
    artifacts.save_viewer(folder, data)
    loaded = artifacts.load_viewer(folder)
    assert loaded == json.loads(json.dumps(data))
    assert [it["p"] for it in loaded["items"]] == sorted([it["p"] for it in loaded["items"]], key=lambda p: -max(p))
    data["items"][3]["maps"] = data["items"][3]["maps"][:8]
    with pytest.raises(ReportError, match=r"does not fit 3 classes"):   # the writer checks as the reader
        artifacts.save_viewer(folder, data)
    folder.viewer.write_text(json.dumps(data))                           # a hand-damaged file
    with pytest.raises(ReportError, match=r"viewer.json: item 'img\d+.png' does not fit 3 classes and a 7x7 grid"):
        artifacts.load_viewer(folder)
    # The report then keeps its static gallery and leaves the viewer out.
    assert report._viewer({"viewer": {"file": "viewer.json", "n": 12}}, tmp_path, {"en": {}}) is None
    with pytest.raises(ReportError, match="absent.json: not found"):
        artifacts.load_viewer(folder, "absent.json")


# ---------------------------------------------------------------- the page in a browser


def _report_with_viewer(tmp_path: Path, data: dict, *, langs=("en", "zh-TW")) -> tuple[Path, dict]:
    _, ctx = shared_run()
    ctx = copy.deepcopy(ctx)
    artifacts.save_viewer(EvaluationPaths(tmp_path), data)
    mappings = {lang: {} for lang in langs}
    if "zh-TW" in langs and len(data["class_names"]) == 2:
        mappings["zh-TW"] = dict(zip(data["class_names"], ["正常", "肺炎"]))
    ctx["explain"]["viewer"] = report._viewer({"viewer": {"file": "viewer.json"}}, tmp_path, mappings)
    html = render.render_html(ctx, langs=list(langs))
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    return path, ctx


def _count(data: dict, **where) -> int:
    def outcome(it):
        if data["task"] != "binary":
            return "correct" if it["y"] == it["pred"] else "incorrect"
        return {(1, 1): "TP", (0, 1): "FP", (0, 0): "TN", (1, 0): "FN"}[(it["y"], it["pred"])]
    return sum(all((outcome(it) if key == "outcome" else it[key]) == value for key, value in where.items())
               for it in data["items"])


def _pixel(b: browser.Browser, root: str, x: int, y: int) -> list[int]:
    return b.js(f"Array.from(document.querySelector('{root} .xv-overlay').getContext('2d')"
                f".getImageData({x}, {y}, 1, 1).data)")


def _shots() -> Path | None:
    folder = os.environ.get("XREPORT_SCREENSHOTS")
    return Path(folder) if folder else None


pytestmark_browser = pytest.mark.skipif(not browser.available(), reason="chromium is not installed")


@pytestmark_browser
def test_viewer_filters_select_and_draw_in_a_real_browser(tmp_path):
    data = _fake_viewer(2, 40)
    path, _ = _report_with_viewer(tmp_path, data)
    html = path.read_text(encoding="utf-8")
    assert html.count('id="xr-viewer-data"') == 1          # the data once, not once per language
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    with browser.Browser() as b:
        b.open(path)
        root = "#en-viewer"
        total = len(data["items"])
        assert b.wait_for(f"document.querySelector('{root}').getAttribute('data-shown')") == str(total)
        assert b.js(f"document.querySelector('{root}').hidden") is False
        first = b.js(f"document.querySelector('{root}').getAttribute('data-current')")
        assert first == data["items"][0]["id"]

        # A click on the FN button: only false negatives remain, and the panel shows one of them.
        fn = _count(data, outcome="FN")
        assert 0 < fn < total
        b.click(f"{root} .xv-outcomes button[data-outcome='FN']")
        assert b.js(f"document.querySelector('{root}').getAttribute('data-shown')") == str(fn)
        visible = b.js(f"Array.from(document.querySelectorAll('{root} .xv-thumb')).filter(t => !t.hidden)"
                       ".map(t => t.getAttribute('data-outcome'))")
        assert visible == ["FN"] * fn
        current = b.js(f"document.querySelector('{root}').getAttribute('data-current')")
        assert current != first and next(it for it in data["items"] if it["id"] == current)["y"] == 1
        assert b.js(f"document.querySelector('{root} .xv-outcome-text').textContent") == "FN"
        assert b.js(f"document.querySelector('{root} .xv-outcomes button[data-outcome=\"FN\"]').getAttribute('aria-pressed')") == "true"

        # Back to all outcomes; the true-class select by keyboard (focus, arrow down).
        b.click(f"{root} .xv-outcomes button[data-outcome='']")
        b.focus(f"#en-xv-true")
        b.key("ArrowDown")
        assert b.wait_for(f"document.querySelector('{root}').getAttribute('data-shown') === '{_count(data, y=0)}'")

        # The map for another class, at full opacity (keyboard on the slider): the hot corner moves.
        b.focus("#en-xv-opacity")
        b.key("End")
        assert b.wait_for(f"(document.querySelector('{root}').getAttribute('data-drawn') || '').endsWith('|100')")
        b.js("(s => { s.value = '0'; s.dispatchEvent(new Event('change')); })(document.querySelector('#en-xv-map'))")
        b.wait_for(f"(document.querySelector('{root}').getAttribute('data-drawn') || '').includes('|0|100')")
        hot0, cold0 = _pixel(b, root, 3, 3), _pixel(b, root, 220, 220)
        b.focus("#en-xv-map")
        b.key("ArrowDown")                                   # class 0 -> class 1
        assert b.wait_for(f"(document.querySelector('{root}').getAttribute('data-drawn') || '').includes('|1|100')")
        hot1, cold1 = _pixel(b, root, 220, 220), _pixel(b, root, 3, 3)
        lut = np.frombuffer(__import__("base64").b64decode(data_lut()), dtype=np.uint8).reshape(256, 3)
        assert hot0[:3] == hot1[:3] == lut[255].tolist() and cold0[:3] == cold1[:3] == lut[0].tolist()

        # The image list is one tab stop: arrow keys move the selection.
        before = b.js(f"document.querySelector('{root}').getAttribute('data-current')")
        b.focus(f"{root} .xv-thumb[tabindex='0']")
        b.key("ArrowRight")
        after = b.js(f"document.querySelector('{root}').getAttribute('data-current')")
        assert after != before
        assert b.js("document.activeElement.getAttribute('aria-pressed')") == "true"

        # Filters that match nothing say so.
        b.click(f"{root} .xv-outcomes button[data-outcome='TP']")
        b.js("(s => { s.value = '0'; s.dispatchEvent(new Event('change')); })(document.querySelector('#en-xv-true'))")
        assert b.js(f"document.querySelector('{root}').getAttribute('data-shown')") == "0"
        assert b.js(f"document.querySelector('{root} .xv-none').hidden") is False

        shots = _shots()
        if shots:
            b.click(f"{root} .xv-outcomes button[data-outcome='']")
            b.screenshot(shots / "viewer-en.png", selector=f"{root}")
        # Printing keeps the static gallery only.
        b.call("Emulation.setEmulatedMedia", {"media": "print"}, session=True)
        assert b.js("getComputedStyle(document.querySelector('.xr-viewer-block')).display") == "none"
        assert not [u for u in b.requests() if not u.startswith(("data:", "file:", "about:"))]
        assert not b.exceptions()


def data_lut() -> str:
    from xreport import charts
    return charts.colormap_lut()


@pytestmark_browser
def test_viewer_in_chinese_and_for_many_classes(tmp_path):
    data = _fake_viewer(3, 30, seed=1, names=["NEUTROPHIL", "EOSINOPHIL", EVIL_CLASS])
    path, _ = _report_with_viewer(tmp_path, data)
    html = path.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html                 # a class name is data, never markup
    with browser.Browser() as b:
        b.open(path)
        b.click("label[for='lang-zh-TW']")
        root = "#zh-TW-viewer"
        b.wait_for(f"document.querySelector('{root}').getBoundingClientRect().width > 0")
        outcomes = b.js(f"Array.from(document.querySelectorAll('{root} .xv-outcomes button[data-outcome]'))"
                        ".map(x => [x.getAttribute('data-outcome'), x.textContent])")
        assert outcomes == [["", "全部"], ["correct", "正確"], ["incorrect", "錯誤"]]
        b.click(f"{root} .xv-outcomes button[data-outcome='incorrect']")
        b.js("(s => { s.value = '2'; s.dispatchEvent(new Event('change')); })(document.querySelector('#zh-TW-xv-true'))")
        expected = _count(data, outcome="incorrect", y=2)    # the false negatives of class 2
        assert b.js(f"document.querySelector('{root}').getAttribute('data-shown')") == str(expected)
        assert b.js(f"document.querySelector('{root} .xv-count').textContent") == f"{expected} / 30 張影像"
        if expected:
            assert b.js(f"document.querySelector('{root} .xv-true').textContent") == EVIL_CLASS
        assert b.js("document.querySelectorAll('script').length") == 2
        shots = _shots()
        if shots:
            b.click(f"{root} .xv-outcomes button[data-outcome='']")
            b.screenshot(shots / "viewer-zh-TW.png", selector=root)
        assert not b.exceptions()


def _letterboxed_viewer(n: int = 6) -> dict:
    """Two classes, images with black keep-aspect bands (rows 0-5 and 22-27), and a class-0
    map whose hottest cells lie in the top band."""
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(60, 200, size=(n, 1, 28, 28), dtype=np.uint8))
    images[:, :, :6] = 0
    images[:, :, 22:] = 0
    maps = torch.zeros((n, 2, 7, 7), dtype=torch.uint8)
    maps[:, 0, 0, :] = 255                                    # in the padding
    maps[:, 0, 3, :] = 120                                    # the content's own peak
    maps[:, 1, 3, 3] = 255
    y = np.arange(n) % 2
    probs = np.where(np.eye(2)[y] > 0, 0.8, 0.2)
    rows = list(range(n))
    return viewer.build_viewer(images, [f"pad{i}.png" for i in rows], y, probs, maps, rows,
                               viewer.select_rows(probs, rows[:2], n_extreme=2), class_names=["a", "b"],
                               task="binary", split="test", method="gradcam", layer="layer3")


def test_content_box_finds_keep_aspect_padding():
    image = np.full((3, 28, 28), 90, dtype=np.uint8)
    assert viewer.content_box(image) is None                  # nothing to leave out
    image[:, :, :4] = 0
    image[:, :, 25:] = 0
    assert viewer.content_box(image) == [0, 4, 28, 25]        # [top, left, bottom, right)
    data = _letterboxed_viewer()
    assert all(it["content"] == [6, 0, 22, 28] for it in data["items"])


@pytestmark_browser
def test_viewer_leaves_padding_uncoloured_in_a_real_browser(tmp_path):
    """The map over a letterboxed image colours the content only (rescaled over it, as the
    gallery's overlays): the black bands stay black at full opacity."""
    data = _letterboxed_viewer()
    path, _ = _report_with_viewer(tmp_path, data, langs=("en",))
    with browser.Browser() as b:
        b.open(path)
        root = "#en-viewer"
        b.wait_for(f"document.querySelector('{root}').getAttribute('data-current')")
        b.js("(s => { s.value = '100'; s.dispatchEvent(new Event('input')); })(document.querySelector('#en-xv-opacity'))")
        b.js("(s => { s.value = '0'; s.dispatchEvent(new Event('change')); })(document.querySelector('#en-xv-map'))")
        assert b.wait_for(f"(document.querySelector('{root}').getAttribute('data-drawn') || '').endsWith('|0|100')")
        lut = np.frombuffer(__import__("base64").b64decode(data_lut()), dtype=np.uint8).reshape(256, 3)
        # Canvas rows 0-47 and 176-223 are the image's rows 0-5 and 22-27: the padding.
        for x, y in ((112, 10), (30, 40), (200, 200)):
            assert _pixel(b, root, x, y)[:3] == [0, 0, 0], (x, y)
        # The content's own peak (grid row 3, canvas row ~112) is the top of the scale.
        assert _pixel(b, root, 112, 112)[:3] == lut[255].tolist()
        assert not b.exceptions()


def test_the_pdf_has_no_viewer(tmp_path):
    _, ctx = _report_with_viewer(tmp_path, _fake_viewer(2, 10), langs=("en",))
    pdf_html = render.render_pdf_html(ctx, lang="en")
    assert "xr-viewer" not in pdf_html and "<script" not in pdf_html


@pytestmark_browser
def test_a_contents_link_lands_below_the_sticky_language_switch(tmp_path):
    """A heading reached from the contents is not hidden under the sticky language switch."""
    _, ctx = shared_run()
    path = tmp_path / "report.html"
    path.write_text(render.render_html(ctx, langs=["en", "zh-TW"]), encoding="utf-8")
    with browser.Browser(height=800) as b:
        b.open(path)
        for target in ("en-results", "en-explain"):
            b.click(f"#en-toc a[href='#{target}']")
            b.wait_for(f"Math.abs(document.getElementById('{target}').getBoundingClientRect().top - 56) < 80")
            heading = b.js(f"document.getElementById('{target}').getBoundingClientRect().top")
            bar = b.js("document.querySelector('.langbar').getBoundingClientRect().bottom")
            assert heading >= bar, (target, heading, bar)
        assert not b.exceptions()
