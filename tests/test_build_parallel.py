"""build.render_pdfs: languages laid out side by side in forked children, errors come back."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from xreport import build, render, runs
from xreport.errors import ReportError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked layout is Linux-only")


@pytest.fixture
def paths(tmp_path: Path) -> runs.RunPaths:
    out = runs.RunPaths("r", checkpoints_root=tmp_path / "ck", reports_root=tmp_path / "rep")
    out.report_dir.mkdir(parents=True)
    return out


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def fake_render(fail: dict[str, BaseException] | None = None, delay: float = 0.0):
    def render_pdf(context, *, lang, out_path, templates_dir=None, kind=None):
        time.sleep(delay)
        if fail and lang in fail:
            raise fail[lang]
        Path(out_path).write_text(f"{lang} from pid {os.getpid()}")
        return Path(out_path)
    return render_pdf


def test_every_language_is_written_and_the_second_in_another_process(paths, monkeypatch):
    monkeypatch.setattr(render, "render_pdf", fake_render())
    build.render_pdfs({}, langs=["en", "zh-TW", "zh-CN"], out=paths, templates_dir=None)
    texts = {lang: paths.report_pdf(lang).read_text() for lang in ("en", "zh-TW", "zh-CN")}
    assert texts["en"] == f"en from pid {os.getpid()}"
    assert all(t.startswith(lang) and not t.endswith(f"pid {os.getpid()}")
               for lang, t in texts.items() if lang != "en")


def test_languages_are_laid_out_at_the_same_time(paths, monkeypatch):
    def render_pdf(context, *, lang, out_path, templates_dir=None, kind=None):
        if lang == "en":  # waits for the other language: done one after the other, it never comes
            deadline = time.monotonic() + 20
            while not paths.report_pdf("zh-TW").exists():
                if time.monotonic() > deadline:
                    raise AssertionError("zh-TW was not laid out while en was")
                time.sleep(0.01)
        Path(out_path).write_text(lang)
    monkeypatch.setattr(render, "render_pdf", render_pdf)
    build.render_pdfs({}, langs=["en", "zh-TW"], out=paths, templates_dir=None)
    assert paths.report_pdf("en").read_text() == "en"


@pytest.mark.parametrize("error", [ReportError("templates/x.j2: line 3: undefined 'foo'"),
                                   OSError(28, "No space left on device")])
def test_a_child_error_is_raised_in_the_parent_with_its_type_and_text(paths, monkeypatch, error):
    monkeypatch.setattr(render, "render_pdf", fake_render(fail={"zh-TW": error}))
    with pytest.raises(type(error)) as caught:
        build.render_pdfs({}, langs=["en", "zh-TW"], out=paths, templates_dir=None)
    assert str(caught.value) == str(error)
    assert not paths.report_pdf("zh-TW").exists()


def test_a_parent_error_stops_and_reaps_the_children(paths, monkeypatch):
    monkeypatch.setattr(render, "render_pdf", fake_render(fail={"en": ReportError("boom")}, delay=0.2))
    with pytest.raises(ReportError, match="boom"):
        build.render_pdfs({}, langs=["en", "zh-TW"], out=paths, templates_dir=None)
    with pytest.raises(ChildProcessError):  # nothing left to wait for: no zombie
        os.waitpid(-1, os.WNOHANG)


def test_one_core_renders_in_this_process(paths, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setattr(render, "render_pdf", fake_render())
    build.render_pdfs({}, langs=["en", "zh-TW"], out=paths, templates_dir=None)
    assert paths.report_pdf("zh-TW").read_text() == f"zh-TW from pid {os.getpid()}"
