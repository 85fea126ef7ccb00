"""Render a report context to one self-contained HTML file and to per-language PDFs.

Every visible string comes from the message catalogs ``templates/i18n/<lang>/*.json``
(English is the fallback). Templates run in a sandboxed Jinja environment with autoescape
and ``StrictUndefined`` so that a user's ``--templates`` folder can neither run code nor
silently print "undefined". Nothing here fetches a remote URL: the HTML embeds every image
as a data URI and the PDF renderer is given a fetcher that refuses anything outside the
report and templates folders.
"""
from __future__ import annotations

import base64
import contextlib
import importlib.resources
import json
import logging
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import jinja2
import jinja2.sandbox
from markupsafe import Markup, escape

import xreport

from .errors import ReportError
from .runs import atomic_path

logger = logging.getLogger(__name__)

LANGS = ("en", "zh-TW", "zh-CN")
LANG_LABELS = {"en": "English", "zh-TW": "繁體中文", "zh-CN": "简体中文"}
# Debian fonts-noto-cjk family per language; the Latin text falls back to DejaVu/Noto.
PDF_FONTS = {"en": '"DejaVu Sans", "Noto Sans CJK JP", sans-serif',
             "zh-TW": '"Noto Sans CJK TC", sans-serif',
             "zh-CN": '"Noto Sans CJK SC", sans-serif'}
DASH = "—"

Translator = Callable[..., str]


# ---------------------------------------------------------------- templates and catalogs

def templates_root() -> Path:
    """The built-in templates: ``<repo>/templates`` in development, else inside the package."""
    dev = Path(xreport.__file__).resolve().parent.parent / "templates"
    if (dev / "report.html.j2").is_file():
        return dev
    packaged = Path(str(importlib.resources.files("xreport") / "templates"))
    if (packaged / "report.html.j2").is_file():
        return packaged
    raise ReportError(f"built-in templates not found in {dev} or {packaged}; reinstall xreport")


def _search_path(templates_dir: Path | None) -> list[str]:
    # A user's folder comes first so it may override any single template or catalog.
    paths = [str(templates_root())]
    if templates_dir is not None:
        templates_dir = Path(templates_dir)
        if not templates_dir.is_dir():
            raise ReportError(f"--templates {templates_dir}: not a folder")
        paths.insert(0, str(templates_dir))
    return paths


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """A sandboxed, autoescaping, strict Jinja environment over the template folders."""
    env = jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(_search_path(templates_dir)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "xml", "html.j2", "xml.j2", "j2"),
            default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["num"] = num
    env.filters["ci"] = ci
    env.globals["DASH"] = DASH
    return env


@lru_cache(maxsize=32)
def _read_catalog_dir(folder: str, mtimes: tuple[float, ...]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReportError(f"{path}: not a valid JSON message catalog ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ReportError(f"{path}: a message catalog must map keys to strings")
        merged.update(data)
    return merged


def _catalog_files(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    mtimes = tuple(p.stat().st_mtime for p in sorted(folder.glob("*.json")))
    return dict(_read_catalog_dir(str(folder), mtimes))


def load_catalog(lang: str, templates_dir: Path | None = None) -> dict[str, str]:
    """All ``i18n/<lang>/*.json`` merged; a user's templates folder overrides single keys."""
    if lang not in LANGS:
        raise ReportError(f"language {lang!r} is not one of {', '.join(LANGS)}")
    catalog = _catalog_files(templates_root() / "i18n" / lang)
    if templates_dir is not None:
        catalog.update(_catalog_files(Path(templates_dir) / "i18n" / lang))
    return catalog


class Messages:
    """``t(key, **params)``: the language's string, else English, else an error."""

    def __init__(self, lang: str, templates_dir: Path | None = None) -> None:
        self.lang = lang
        self.catalog = load_catalog(lang, templates_dir)
        self.fallback = self.catalog if lang == "en" else load_catalog("en", templates_dir)

    def has(self, key: str) -> bool:
        return key in self.fallback or key in self.catalog

    def __call__(self, key: str, **params: Any) -> str:
        text = self.catalog.get(key)
        if text is None:
            text = self.fallback.get(key)
            if text is None:
                raise ReportError(f"message key {key!r} is missing from templates/i18n/en")
        if not params:
            return text
        try:
            return text.format_map({k: _param_text(v) for k, v in params.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise ReportError(f"message {key!r} ({self.lang}): bad placeholder {exc}") from None


def translator(lang: str, templates_dir: Path | None = None) -> Messages:
    return Messages(lang, templates_dir)


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return num(value)
    return str(value)


# ---------------------------------------------------------------- number formatting

def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def num(x: Any, digits: int = 3) -> str:
    """0.91234 -> "0.912"; ints stay whole with thousands separators; None -> "—"."""
    if _is_missing(x):
        return DASH
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -digits:
            return f"{x:.{max(1, digits - 1)}e}"
        return f"{x:.{digits}f}"
    return str(x)


def pct(x: Any, digits: int = 1) -> str:
    """0.912 -> "91.2%"."""
    if isinstance(x, Mapping):
        x = x.get("value")
    if _is_missing(x):
        return DASH
    return f"{100 * float(x):.{digits}f}%"


def ci(v: Any, digits: int = 3) -> str:
    """The interval of a metric value alone: "0.889–0.934", or "" when there is none."""
    if isinstance(v, Mapping) and v.get("ci95") and not any(_is_missing(b) for b in v["ci95"]):
        lo, hi = v["ci95"]
        return f"{num(float(lo), digits)}–{num(float(hi), digits)}"
    return ""


def fmt(v: Any, digits: int = 3) -> Markup:
    """A metric value for a table cell: "0.912 (0.889–0.934)", or "—" with the reason."""
    if isinstance(v, Mapping):
        value = v.get("value")
        if _is_missing(value):
            reason = v.get("reason")
            if reason:
                return Markup('{}<span class="reason">{}</span>').format(
                    DASH, f" ({reason})")
            return Markup(DASH)
        interval = ci(v, digits)
        text = num(value, digits)
        if interval:
            return Markup('{} <span class="ci">({})</span>').format(text, interval)
        return Markup(escape(text))
    return Markup(escape(num(v, digits)))


# ---------------------------------------------------------------- images

def _mime(path: Path) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml", ".gif": "image/gif"}.get(path.suffix.lower(),
                                                               "application/octet-stream")


def data_uri(path: Path) -> str:
    try:
        payload = Path(path).read_bytes()
    except OSError as exc:
        raise ReportError(f"{path}: figure cannot be read ({exc.strerror})") from None
    return f"data:{_mime(path)};base64,{base64.b64encode(payload).decode('ascii')}"


def _image_source(report_dir: Path, *, mode: str) -> Callable[[Any, str], str]:
    """``img(ref, lang)``: a figure ref (a path, or {lang: path}) -> a data or file URI."""
    def img(ref: Any, lang: str = "en") -> str:
        if isinstance(ref, Mapping):
            ref = ref.get(lang) or ref.get("en") or next(iter(ref.values()))
        path = Path(ref)
        if not path.is_absolute():
            path = report_dir / path
        if mode == "file":
            return path.resolve().as_uri()
        return data_uri(path)
    return img


# ---------------------------------------------------------------- rendering

def _class_namer(context: Mapping[str, Any], lang: str) -> Callable[[Any], str]:
    names = list(context.get("class_names", []))
    translated = context.get("class_names_i18n", {}).get(lang) or []
    mapping = {n: (translated[i] if i < len(translated) and translated[i] else n)
               for i, n in enumerate(names)}

    def cname(name: Any) -> str:
        if isinstance(name, int) and 0 <= name < len(names):
            name = names[name]
        return mapping.get(str(name), str(name))
    return cname


def _discussion_text(t: Messages, cname: Callable[[Any], str]) -> Callable[[Mapping[str, Any]], str]:
    """Fill one observation's message; params named ``cls*`` are class names to translate."""
    def say(item: Mapping[str, Any]) -> str:
        return t(item["key"], **{k: _observation_param(k, v, cname)
                                  for k, v in dict(item.get("params", {})).items()})
    return say


def _observation_param(name: str, value: Any, cname: Callable[[Any], str]) -> str:
    if name.startswith("cls"):
        return cname(value)
    if name.endswith("_pct"):
        return pct(value)
    if name == "ratio" and isinstance(value, (int, float)):
        return f"{value:.1f}"
    return _param_text(value)


@dataclass(frozen=True)
class DocumentKind:
    """What differs between the single-run report and other documents in the same shell
    (the comparison): the body template, the page title, extra filters, and how
    ``say({key, params})`` items are filled."""

    body_template: str = "body.html.j2"
    title_key: str = "report.title"
    filters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    make_say: Callable[[Messages, Callable[[Any], str]], Callable[..., str]] | None = None


REPORT = DocumentKind()


def _globals_for(context: Mapping[str, Any], lang: str, *, templates_dir: Path | None,
                 mode: str, kind: DocumentKind = REPORT) -> dict[str, Any]:
    t = translator(lang, templates_dir)
    cname = _class_namer(context, lang)
    report_dir = Path(context.get("report_dir", "."))
    say = (kind.make_say or _discussion_text)(t, cname)
    return {"ctx": context, "lang": lang, "t": t, "has_key": t.has, "cname": cname,
            "say": say, "img": _image_source(report_dir, mode=mode),
            "lang_labels": LANG_LABELS, "mode": mode}


def _check_langs(langs: Sequence[str]) -> list[str]:
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ReportError("no report language given; choose from " + ", ".join(LANGS))
    for lang in langs:
        if lang not in LANGS:
            raise ReportError(f"language {lang!r} is not one of {', '.join(LANGS)}")
    return langs


def _read_css(env: jinja2.Environment, name: str) -> Markup:
    # CSS (and the viewer's script) go through the loader so a user's folder can override
    # them; they are ours, not data.
    source, _, _ = env.loader.get_source(env, name)
    return Markup(source.replace("</", "<\\/"))


def script_json(obj: Any) -> Markup:
    """JSON safe inside <script type="application/json">: no "</script>", no "<!--", and
    the two line separators JavaScript once refused are escaped too."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


def _viewer_assets(context: Mapping[str, Any], env: jinja2.Environment) -> dict[str, Any]:
    """The interactive viewer's data and script, once per HTML file (every language uses them)."""
    viewer = (context.get("explain") or {}).get("viewer") if isinstance(context.get("explain"), Mapping) else None
    if not viewer:
        return {"viewer_json": None, "viewer_js": None, "viewer_css": None}
    return {"viewer_json": script_json(viewer["data"]), "viewer_js": _read_css(env, "js/viewer.js"),
            "viewer_css": _read_css(env, "css/viewer.css")}


def render_body(context: Mapping[str, Any], *, lang: str, env: jinja2.Environment,
                templates_dir: Path | None = None, mode: str = "data",
                kind: DocumentKind = REPORT) -> Markup:
    """One language's document body (all sections) as HTML."""
    g = _globals_for(context, lang, templates_dir=templates_dir, mode=mode, kind=kind)
    with template_errors(f"{kind.body_template} ({lang})"):
        return Markup(env.get_template(kind.body_template).render(**g))


def _environment(templates_dir: Path | None, kind: DocumentKind) -> jinja2.Environment:
    env = make_environment(templates_dir)
    env.filters.update(kind.filters)
    return env


@contextlib.contextmanager
def template_errors(name: str) -> Iterator[None]:
    """Any template failure (undefined name, sandbox refusal, syntax) is one ReportError line."""
    try:
        yield
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or exc.name or name}, line {exc.lineno}"
        raise ReportError(f"template {where}: syntax error: {_one_line(exc)}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise ReportError(f"template {name}: refused by the sandbox: {_one_line(exc)}") from None
    except jinja2.TemplateNotFound as exc:
        raise ReportError(f"template {name}: includes {exc.name!r}, which is not in the "
                          "templates folders") from None
    except jinja2.TemplateError as exc:
        raise ReportError(f"template {name}: {_one_line(exc)}") from None
    except OverflowError as exc:   # the sandbox's limit on range()
        raise ReportError(f"template {name}: refused by the sandbox: {_one_line(exc)}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
        # A user's template can fail at run time like any program; name it, no traceback.
        raise ReportError(f"template {name}: {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def render_html(context: Mapping[str, Any], *, langs: Sequence[str],
                templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> str:
    """One self-contained HTML file holding every language; a CSS-only language switch."""
    langs = _check_langs(langs)
    env = _environment(templates_dir, kind)
    bodies = [(lang, render_body(context, lang=lang, env=env, templates_dir=templates_dir, kind=kind))
              for lang in langs]
    t = translator(langs[0], templates_dir)
    with template_errors("report.html.j2"):
        return env.get_template("report.html.j2").render(
            ctx=context, langs=langs, bodies=bodies, lang_labels=LANG_LABELS, t=t,
            title_key=kind.title_key, **_viewer_assets(context, env),
            css=_read_css(env, "css/report.css"), mobile_css=_read_css(env, "css/mobile.css"))


def write_html(context: Mapping[str, Any], out_path: Path, *, langs: Sequence[str],
               templates_dir: Path | None = None) -> Path:
    html = render_html(context, langs=langs, templates_dir=templates_dir)
    with atomic_path(out_path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(out_path)


# ---------------------------------------------------------------- PDF

def make_url_fetcher(allowed_roots: Sequence[Path]) -> Any:
    """A WeasyPrint fetcher serving ``data:`` URIs and files under ``allowed_roots`` only."""
    from weasyprint.urls import URLFetcher

    roots = [Path(r).resolve() for r in allowed_roots]

    class LocalOnlyFetcher(URLFetcher):
        def fetch(self, url: str, headers: Any = None) -> Any:
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme == "file":
                path = Path(unquote(urlsplit(url).path)).resolve()
                if any(path == r or r in path.parents for r in roots):
                    return super().fetch(url, headers)
                raise ReportError(f"refused to read {path}: outside the report and templates folders")
            raise ReportError(f"refused to fetch {url[:80]!r}: reports never load remote URLs")

    return LocalOnlyFetcher(allowed_protocols=("data", "file"), allow_redirects=False)


def render_pdf_html(context: Mapping[str, Any], *, lang: str,
                    templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> str:
    """The single-language HTML that WeasyPrint lays out (file URIs for figures)."""
    (lang,) = _check_langs([lang])
    env = _environment(templates_dir, kind)
    body = render_body(context, lang=lang, env=env, templates_dir=templates_dir, mode="file",
                       kind=kind)
    t = translator(lang, templates_dir)
    with template_errors("pdf.html.j2"):
        return env.get_template("pdf.html.j2").render(
            ctx=context, lang=lang, body=body, t=t, title_key=kind.title_key,
            font_family=Markup(PDF_FONTS[lang]),
            css=_read_css(env, "css/report.css"), print_css=_read_css(env, "css/print.css"))


def render_pdf(context: Mapping[str, Any], *, lang: str, out_path: Path,
               templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> Path:
    """Lay out the ``lang`` report with WeasyPrint and write it atomically to ``out_path``."""
    try:
        import weasyprint
    except ImportError as exc:  # a system library (pango) is missing
        raise ReportError(f"PDF output needs WeasyPrint and its system libraries: {exc}") from None
    start = time.perf_counter()
    html = render_pdf_html(context, lang=lang, templates_dir=templates_dir, kind=kind)
    report_dir = Path(context.get("report_dir", Path(out_path).parent))
    roots = [report_dir, templates_root()] + ([Path(templates_dir)] if templates_dir else [])
    document = weasyprint.HTML(string=html, base_url=str(report_dir.resolve()) + "/",
                               url_fetcher=make_url_fetcher(roots))
    with atomic_path(out_path) as tmp:
        document.write_pdf(tmp)
    logger.info("wrote %s in %.1f s", out_path, time.perf_counter() - start)
    return Path(out_path)
