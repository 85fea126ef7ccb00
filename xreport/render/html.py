"""The documents' HTML: the template globals of one language (``t``, ``say``, ``cname``,
``img``, the class labels), ``render_body`` and ``render_html`` (one self-contained file with
every language; nothing fetched from a remote URL). ``DocumentKind`` says what differs between
the report and the other documents in the same shell.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, cast

import jinja2
import jinja2.sandbox
from markupsafe import Markup

from .. import languages
from ..errors import ReportError
from .messages import class_namer, message_text, translator
from .pictures import PictureStore, image_source
from .sandbox import make_environment, render_template, template_errors, template_scope


@dataclass(frozen=True)
class DocumentKind:
    """What differs between the single-run report and other documents in the same shell
    (the comparison): the body template, the page title and extra filters."""

    body_template: str = "body.html.j2"
    title_key: str = "report.title"
    filters: Mapping[str, Callable[..., object]] = field(default_factory=dict)


REPORT = DocumentKind()


def _globals_for(context: Mapping[str, object], lang: str, *, templates_dir: Path | None,
                 mode: str, kind: DocumentKind = REPORT,
                 store: PictureStore | None = None) -> dict[str, object]:
    t = translator(lang, templates_dir)
    cname = class_namer(context, lang)
    report_dir = Path(str(context.get("report_dir", ".")))
    say = message_text(t, cname)
    scope = template_scope(templates_dir, report_dir)
    return {"ctx": context, "lang": lang, "t": t, "has_key": t.has, "cname": cname,
            "say": say, "img": image_source(report_dir, scope, mode=mode, store=store),
            "lang_labels": languages.labels(), "mode": mode,
            "word_spacing": languages.language(lang).word_spacing, **_class_labels(context, cname)}


def _class_labels(context: Mapping[str, object], cname: Callable[[object], str]) -> dict[str, object]:
    """The labels that name classes where a full name does not fit, in this language
    (``labels`` owns the rule; the charts use the same one):

    - ``clabel(name)``: the column head of a wide table (row k starts with the same label);
    - ``clabel_rest(name)``: the rest of the full name after that label ("" when none);
    - ``chart_key``: (chart label, full name) for each class whose chart label is shortened.
    """
    from ..labels import column_labels, label_key, short_labels

    names = [str(n) for n in cast(Sequence[str], context.get("class_names", []))]
    shown = [cname(n) for n in names]
    columns = dict(zip(names, column_labels(shown)))

    def clabel(name: object) -> str:
        return columns.get(str(name), cname(name))

    def clabel_rest(name: object) -> str:
        label, full = clabel(name), cname(name)
        if label == full:
            return ""
        # A label that starts the name ("Grade 0" of "Grade 0 - no …") is followed by the
        # rest of it; a letter key by the whole name, after a space.
        rest = full[len(label):]
        starts = full.startswith(label) and not (rest[:1].isalnum() or rest[:1] == "_")
        return rest if starts else " " + full

    return {"clabel": clabel, "clabel_rest": clabel_rest,
            "chart_key": label_key(shown, short_labels(shown))}


def check_langs(langs: Sequence[str]) -> list[str]:
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ReportError("no report language given; choose from " + ", ".join(languages.codes()))
    for lang in langs:
        languages.language(lang)
    return langs


def read_css(env: jinja2.Environment, name: str) -> Markup:
    # CSS (and the viewer's script) go through the loader so a user's folder can override
    # them; they are ours, not data.
    if env.loader is None:   # make_environment always sets one
        raise ReportError(f"{name}: the template environment has no loader")
    source, _, _ = env.loader.get_source(env, name)
    return Markup(source.replace("</", "<\\/"))


def script_json(obj: object) -> Markup:
    """JSON safe inside <script type="application/json">: no "</script>", no "<!--", and
    the two line separators JavaScript once refused are escaped too."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


def _viewer_assets(context: Mapping[str, object], env: jinja2.Environment) -> dict[str, Markup | None]:
    """The interactive viewer's data and script, once per HTML file (every language uses them)."""
    explain = context.get("explain")
    viewer = explain.get("viewer") if isinstance(explain, Mapping) else None
    if not viewer:
        return {"viewer_json": None, "viewer_js": None, "viewer_css": None}
    return {"viewer_json": script_json(viewer["data"]), "viewer_js": read_css(env, "js/viewer.js"),
            "viewer_css": read_css(env, "css/viewer.css")}


def render_body(context: Mapping[str, object], *, lang: str, env: jinja2.Environment,
                templates_dir: Path | None = None, mode: str = "data",
                kind: DocumentKind = REPORT, store: PictureStore | None = None) -> Markup:
    """One language's document body (all sections) as HTML (with a ``store``, its pictures
    are placeholders until :meth:`PictureStore.embed`)."""
    g = _globals_for(context, lang, templates_dir=templates_dir, mode=mode, kind=kind,
                     store=store)
    with template_errors(f"{kind.body_template} ({lang})"):
        return Markup(render_template(env, kind.body_template, **g))


def document_environment(templates_dir: Path | None, kind: DocumentKind) -> jinja2.Environment:
    env = make_environment(templates_dir)
    env.filters.update(kind.filters)
    return env


def render_html(context: Mapping[str, object], *, langs: Sequence[str],
                templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> str:
    """One self-contained HTML file holding every language; a CSS-only language switch."""
    langs = check_langs(langs)
    env = document_environment(templates_dir, kind)
    # Every picture is embedded once, however many languages (or panels) show it.
    store = PictureStore()
    rendered = [render_body(context, lang=lang, env=env, templates_dir=templates_dir, kind=kind,
                            store=store) for lang in langs]
    embedded, pictures = store.embed(rendered)
    bodies = list(zip(langs, embedded))
    t = translator(langs[0], templates_dir)
    with template_errors("report.html.j2"):
        html = render_template(env, "report.html.j2",
            ctx=context, langs=langs, bodies=bodies, lang_labels=languages.labels(), t=t,
            title_key=kind.title_key, **_viewer_assets(context, env),
            css=read_css(env, "css/report.css"), mobile_css=read_css(env, "css/mobile.css"))
    # The shared pictures go right after <body> (outside every language's block, which is
    # hidden while another language is shown), whatever the user's report.html.j2 holds.
    body = re.search(r"<body\b[^>]*>", html)
    at = body.end() if body else 0
    return html[:at] + str(pictures) + html[at:]
