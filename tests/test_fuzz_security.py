"""Property-based fuzzing of what a user's ``--templates`` folder and config may hold:
random template code, random catalog messages and random numeric config values end in a
bounded result or one ``XReportError`` line, never another exception, never a Python
internal in the output, never more than the limits allow."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_fuzz import FUZZ, result_or_xreport_error
from xreport import config as xconfig
from xreport import render
from xreport.errors import ReportError

# ---------------------------------------------------------------- catalog messages

MESSAGE_PARTS = st.one_of(
    st.sampled_from(["{", "}", "{{", "}}", "date", "version", "n", ".__class__", ".__mro__", "[0]",
                     "['x']", "!r", "!s", "!a", ":", ">", "<", "^", "=", "0", "9", "99999999",
                     ".", ",", "f", "d", "s", "x", "%", "{date}", "{n:>5}", "{date.__class__}",
                     "{0}", "{}", "{date:{n}}", "{n:.999999}", " ", "\n", "字"]),
    st.text(max_size=4))
MESSAGES = st.lists(MESSAGE_PARTS, max_size=12).map("".join)
PARAMS = {"date": "2026-01-01", "version": "1.0", "n": "42"}


@FUZZ
@given(text=MESSAGES)
def test_catalog_messages(text):
    out = result_or_xreport_error(lambda: render.format_message(text, PARAMS, where="m"))
    if isinstance(out, str):
        assert len(out) <= len(text) + 3 * (render.MAX_MESSAGE_WIDTH + 20) * text.count("{")
        assert "<class" not in out and "mappingproxy" not in out


# ---------------------------------------------------------------- template code

TEMPLATE_PARTS = st.sampled_from([
    "{{ ", " }}", "{% for i in ", " %}", "{% endfor %}", "{% set ns = namespace(s='x') %}",
    "{% set ns.s = ns.s ~ ns.s %}", "ns.s", "range(", ")", "10**9", "10**12", "2**100000",
    "'x' * ", "[1] * ", "'%099999999d' % 1", "'{:>99999999}'.format(1)", "|center(", "|indent(",
    "|format(1)", "|replace('x', 'xx')", "|list", "|length", "|join", ".__class__", ".__mro__",
    "|attr('__class__')", "cycler", "lipsum(", "ctx", "ctx.class_names", "img('/etc/passwd')",
    "{% include 'x.j2' %}", "{% include '../../etc/passwd' %}", "1", "999999", "i", ", ", "+",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}", "f(1)", "t('report.title')", "x", "\n",
])
TEMPLATES = st.lists(TEMPLATE_PARTS, max_size=10).map("".join)


@pytest.fixture(scope="module")
def small_limits():
    saved = (render.RENDER_SECONDS, render.MAX_OUTPUT_CHARS, render.MAX_VALUE_CHARS, render.MAX_LOOP_ITEMS)
    render.RENDER_SECONDS, render.MAX_OUTPUT_CHARS = 5.0, 1_000_000
    render.MAX_VALUE_CHARS, render.MAX_LOOP_ITEMS = 1_000_000, 100_000
    yield
    render.RENDER_SECONDS, render.MAX_OUTPUT_CHARS, render.MAX_VALUE_CHARS, render.MAX_LOOP_ITEMS = saved


@FUZZ
@given(body=TEMPLATES)
def test_template_code(small_limits, body):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "fuzz.html.j2").write_text(body, encoding="utf-8")
        env = render.make_environment(Path(folder))
        values = {"ctx": {"class_names": ["a", "b"]}, "t": lambda key, **_: key, "img": lambda ref: ref}

        def run() -> str:
            with render.template_errors("fuzz.html.j2"):
                return render.render_template(env, "fuzz.html.j2", **values)
        out = result_or_xreport_error(run)
    if isinstance(out, str):
        assert len(out) <= render.MAX_OUTPUT_CHARS
        assert "root:" not in out and "<class '" not in out
    else:
        assert isinstance(out, ReportError)


# ---------------------------------------------------------------- numeric config values

NUMERIC = [(section, f.name, f.type) for section, cls in xconfig.SECTIONS.items()
           for f in dataclasses.fields(cls) if f.type in ("int", "float")]


@FUZZ
@given(choice=st.sampled_from(NUMERIC), data=st.data())
def test_numeric_config_values(choice, data):
    section, key, kind = choice
    value = data.draw(st.integers(-(10**18), 10**18) if kind == "int"
                      else st.floats(allow_nan=True, allow_infinity=True))
    out = result_or_xreport_error(lambda: xconfig.from_dict({section: {key: value}}, source="f.toml"))
    if isinstance(out, xconfig.RunConfig):
        low, high = xconfig.BOUNDS.get(f"{section}.{key}", (-xconfig.GENERIC_BOUND, xconfig.GENERIC_BOUND))
        assert low <= value <= high
