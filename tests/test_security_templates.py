"""Files and resources a user's ``--templates`` folder (templates + message catalogs) may reach.

Issue 13's four security examples are the first tests here; the rest pin the classes they
belong to: every file a template reaches goes through one resolver (symlinks followed, only
the templates and report folders), catalog messages never reach attributes or unbounded
widths, and one render is bounded in time, loop items, value sizes and output size.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xreport import render
from xreport.errors import ReportError

SECRET = "xreport-secret-line-7f3a"


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    """A file outside every allowed folder whose content must never reach a report."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret.txt"
    path.write_text(SECRET, encoding="utf-8")
    return path


@pytest.fixture()
def context():
    from report_fixture import shared_run
    return shared_run()[1]


def _templates(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "tpl"
    folder.mkdir(exist_ok=True)
    (folder / "body.html.j2").write_text(body, encoding="utf-8")
    return folder


def _refused(context, folder: Path, *needles: str, pdf: bool = False, tmp_path: Path | None = None) -> str:
    with pytest.raises(ReportError) as info:
        if pdf:
            render.render_pdf(context, lang="en", out_path=tmp_path / "out.pdf", templates_dir=folder)
        else:
            render.render_html(context, langs=["en"], templates_dir=folder)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert SECRET not in message
    return message


# ---------------------------------------------------------------- issue 13's examples

@pytest.mark.parametrize("ref", ["ABS", "REL"])
def test_example_1_img_cannot_read_a_file_outside(tmp_path, secret, context, ref):
    ref = str(secret) if ref == "ABS" else os.path.relpath(secret, context["report_dir"])
    folder = _templates(tmp_path, f'<img src="{{{{ img("{ref}") }}}}">')
    _refused(context, folder, "outside the templates and report folders")


def test_example_1_img_refused_in_the_pdf_too(tmp_path, secret, context):
    pytest.importorskip("weasyprint")
    folder = _templates(tmp_path, f'<img src="{{{{ img("{secret}") }}}}">')
    _refused(context, folder, "outside", pdf=True, tmp_path=tmp_path)
    assert not (tmp_path / "out.pdf").exists()


def test_example_2_a_symlinked_include_is_refused(tmp_path, secret, context):
    folder = _templates(tmp_path, '{% include "leak.html.j2" %}')
    (folder / "leak.html.j2").symlink_to(secret)
    _refused(context, folder, "leak.html.j2", "outside")


@pytest.mark.parametrize("message", [
    "{date.__class__.__mro__}",
    "{version.__class__.__base__.__subclasses__}",
    "{date[0]}",
    "{0}",
    "{}",
    "{date!r}",
    "{date:>100000000}",
    "{date:{date}}",
])
def test_example_3_catalog_messages_cannot_reach_python(tmp_path, context, message):
    folder = tmp_path / "tpl"
    catalog = folder / "i18n" / "en"
    catalog.mkdir(parents=True)
    (catalog / "report.json").write_text(json.dumps({"summary.generated": message}), encoding="utf-8")
    t = render.translator("en", folder)
    with pytest.raises(ReportError) as info:
        t("summary.generated", date="2026-01-01", version="1.0")
    assert "\n" not in str(info.value) and "summary.generated" in str(info.value)
    assert len(str(info.value)) < 400


def test_catalog_placeholders_that_are_plain_names_still_work(tmp_path):
    assert render.format_message("{n} of {total:>5} ({share:.4})", {"n": "3", "total": "9", "share": "0.333"},
                                 where="x") == "3 of     9 (0.33)"
    assert render.format_message("{{literal}} {n}", {"n": "1"}, where="x") == "{literal} 1"


def test_a_symlinked_catalog_is_refused(tmp_path, secret):
    folder = tmp_path / "tpl"
    catalog = folder / "i18n" / "en"
    catalog.mkdir(parents=True)
    leak = tmp_path / "outside" / "leak.json"
    leak.write_text(json.dumps({"report.title": SECRET}), encoding="utf-8")
    (catalog / "leak.json").symlink_to(leak)
    with pytest.raises(ReportError, match="outside the templates"):
        render.translator("en", folder)


def test_a_symlinked_css_is_refused(tmp_path, secret, context):
    folder = _templates(tmp_path, "<p>{{ lang }}</p>")
    (folder / "css").mkdir()
    (folder / "css" / "report.css").symlink_to(secret)
    _refused(context, folder, "report.css", "outside")


def test_a_symlinked_templates_subfolder_is_refused(tmp_path, secret, context):
    folder = _templates(tmp_path, '{% include "partials/secret.txt" %}')
    (folder / "partials").symlink_to(secret.parent, target_is_directory=True)
    _refused(context, folder, "outside")


def test_a_symlink_to_a_device_is_not_read(tmp_path, context):
    folder = _templates(tmp_path, '{% include "zero.html.j2" %}')
    (folder / "zero.html.j2").symlink_to("/dev/zero")
    _refused(context, folder, "zero.html.j2")


def test_a_symlink_inside_the_report_folder_is_refused(tmp_path, secret, context):
    report_dir = Path(context["report_dir"])
    link = report_dir / "figures" / "leak-13.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(secret)
    try:
        folder = _templates(tmp_path, '{{ img("figures/leak-13.png") }}')
        _refused(context, folder, "leak-13.png", "outside")
    finally:
        link.unlink()


def test_the_pdf_fetcher_uses_the_same_resolver(tmp_path, secret):
    pytest.importorskip("weasyprint")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.css").write_text("p { color: red }", encoding="utf-8")
    (allowed / "link.css").symlink_to(secret)
    fetcher = render.make_url_fetcher(render.FileScope.of(allowed))
    fetched = fetcher.fetch((allowed / "ok.css").as_uri())
    assert fetched is not None
    for url in ((allowed / "link.css").as_uri(), secret.as_uri(),
                (allowed / ".." / "outside" / "secret.txt").as_uri(), "http://127.0.0.1:1/x.css"):
        with pytest.raises(ReportError):
            fetcher.fetch(url)


def test_a_user_font_face_outside_is_not_embedded(tmp_path, secret, context):
    pytest.importorskip("weasyprint")
    folder = _templates(tmp_path, f'<style>@font-face {{ font-family: x; src: url("{secret.as_uri()}"); }}'
                                  'p { font-family: x }</style><p>{{ lang }}</p>')
    out = render.render_pdf(context, lang="en", out_path=tmp_path / "out.pdf", templates_dir=folder)
    assert SECRET.encode() not in out.read_bytes()


# ---------------------------------------------------------------- bounded renders

BOUNDED = {
    "nested_range": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "string_times_huge": "{{ 'x' * 10**12 }}",
    "list_times_huge": "{{ ([1] * 10**12)|length }}",
    "string_times_moderate": "{{ 'x' * 100000000 }}",
    "power": "{{ 2 ** 100000000 }}",
    "percent_width": "{{ '%0999999999d' % 1 }}",
    "format_width": "{{ '{:>999999999}'.format(1) }}",
    "format_filter": "{{ '%0999999999d'|format(1) }}",
    "center_filter": "{{ 'x'|center(10**10) }}",
    "center_method": "{{ 'x'.center(10**10) }}",
    "replace_grow": "{% set s = 'a' * 100000 %}{{ s.replace('a', s) }}",
    "doubling": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}{{ ns.s|length }}"),
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "exponential_macro": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}x{% endif %}"
                          "{% endmacro %}{{ f(40) }}"),
    "lipsum": "{{ lipsum(10**9) }}",
    "output_size": "{% for i in range(900000) %}{{ 'y' * 100 }}{% endfor %}",
}


@pytest.mark.parametrize("case", sorted(BOUNDED))
def test_a_render_is_bounded(tmp_path, context, case, monkeypatch):
    import time

    monkeypatch.setattr(render.sandbox, "RENDER_SECONDS", 20.0)
    folder = _templates(tmp_path, BOUNDED[case])
    start = time.monotonic()
    message = _refused(context, folder, "template")
    assert time.monotonic() - start < 40, message


def test_ordinary_template_code_still_renders(tmp_path, context):
    folder = _templates(tmp_path, "{% for i in range(3) %}{{ i }}{% endfor %}|{{ range(5)|length }}|"
                                  "{{ 'ab' * 3 }}|{{ '%05.1f' % 2.5 }}|{{ '{:>4}'.format(7) }}|"
                                  "{{ 'x'|center(5) }}|{{ 2 ** 10 }}|{{ (range(10)|list)[2:4] }}")
    html = render.render_html(context, langs=["en"], templates_dir=folder)
    assert "012|5|ababab|002.5|   7|  x  |1024|[2, 3]" in html


def test_the_output_bound_is_what_stops_a_large_report(tmp_path, context, monkeypatch):
    monkeypatch.setattr(render.sandbox, "MAX_OUTPUT_CHARS", 10_000)
    folder = _templates(tmp_path, "{% for i in range(200) %}{{ 'y' * 100 }}{% endfor %}")
    _refused(context, folder, "exceeds 10,000 characters")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symlinks")
def test_the_built_in_templates_render_under_the_limits(context):
    html = render.render_html(context, langs=["en", "zh-TW"])
    assert "<html" in html and len(html) < render.MAX_OUTPUT_CHARS
