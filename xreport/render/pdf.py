"""The per-language PDFs: the single-language HTML WeasyPrint lays out, written atomically,
with a URL fetcher that serves ``data:`` URIs and files inside the scope only.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import unquote, urlsplit

from markupsafe import Markup

from .. import languages
from ..errors import ReportError
from ..runs import atomic_path
from .html import DocumentKind, REPORT, check_langs, document_environment, read_css, render_body
from .messages import translator
from .sandbox import FileScope, render_template, template_errors, template_scope

logger = logging.getLogger(__name__)


def make_url_fetcher(allowed_roots: Sequence[Path] | FileScope) -> object:
    """A WeasyPrint fetcher serving ``data:`` URIs and files inside the scope only."""
    from weasyprint.urls import URLFetcher

    scope = allowed_roots if isinstance(allowed_roots, FileScope) else FileScope.of(*allowed_roots)

    class LocalOnlyFetcher(URLFetcher):
        def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> object:
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme == "file":
                real = scope.resolve(unquote(urlsplit(url).path), what="PDF resource")
                return super().fetch(real.as_uri(), headers)
            raise ReportError(f"refused to fetch {url[:80]!r}: reports never load remote URLs")

    return LocalOnlyFetcher(allowed_protocols=("data", "file"), allow_redirects=False)


def render_pdf_html(context: Mapping[str, object], *, lang: str,
                    templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> str:
    """The single-language HTML that WeasyPrint lays out (file URIs for figures)."""
    (lang,) = check_langs([lang])
    env = document_environment(templates_dir, kind)
    body = render_body(context, lang=lang, env=env, templates_dir=templates_dir, mode="file",
                       kind=kind)
    t = translator(lang, templates_dir)
    with template_errors("pdf.html.j2"):
        return render_template(env, "pdf.html.j2",
            ctx=context, lang=lang, body=body, t=t, title_key=kind.title_key,
            font_family=Markup(languages.language(lang).css_fonts),
            css=read_css(env, "css/report.css"), print_css=read_css(env, "css/print.css"))


def render_pdf(context: Mapping[str, object], *, lang: str, out_path: Path,
               templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> Path:
    """Lay out the ``lang`` report with WeasyPrint and write it atomically to ``out_path``."""
    try:
        import weasyprint
    except ImportError as exc:  # a system library (pango) is missing
        raise ReportError(f"PDF output needs WeasyPrint and its system libraries: {exc}") from None
    start = time.perf_counter()
    html = render_pdf_html(context, lang=lang, templates_dir=templates_dir, kind=kind)
    report_dir = Path(str(context.get("report_dir", Path(out_path).parent)))
    document = weasyprint.HTML(string=html, base_url=str(report_dir.resolve()) + "/",
                               url_fetcher=make_url_fetcher(template_scope(templates_dir, report_dir)))
    with atomic_path(out_path) as tmp:
        document.write_pdf(tmp)
    logger.debug("wrote %s in %.1f s", out_path, time.perf_counter() - start)
    return Path(out_path)
