"""Render a report context to one self-contained HTML file and to per-language PDFs.

Every visible string comes from the message catalogs ``templates/i18n/<lang>/*.json``
(English is the fallback). Templates run in a sandboxed Jinja environment with autoescape
and ``StrictUndefined`` so that a user's ``--templates`` folder can neither run code nor
silently print "undefined". Nothing here fetches a remote URL: the HTML embeds every image
as a data URI and the PDF renderer is given a fetcher that refuses anything outside the
report and templates folders. One file per concern:

- ``sandbox.py``: the bounded Jinja sandbox, the file scope, ``clean_text``, template errors
- ``messages.py``: the catalogs, ``translator``, ``message_text`` and the class-name spacing rule
- ``numbers.py``: the one rounding rule, the number filters (``num``, ``pct``, ``fmt`` ...) and ``DASH``
- ``pictures.py``: data URIs and ``PictureStore`` (each picture embedded once)
- ``html.py``: the template globals, ``render_body``, ``render_html``, ``DocumentKind``
- ``pdf.py``: ``render_pdf`` (WeasyPrint) and its local-only URL fetcher

The names other modules use are imported here, so ``from xreport import render;
render.render_html(...)`` reads the same as before the split. A setting is changed (or
monkeypatched) where it is read: ``render.sandbox.RENDER_SECONDS``, not ``render.RENDER_SECONDS``.
"""
from __future__ import annotations

from .sandbox import (BoundedSandbox, ConfinedLoader, CountedRange, FileScope, MAX_EMBEDDED_BYTES,
                      MAX_FORMAT_WIDTH, MAX_LOOP_ITEMS, MAX_OUTPUT_CHARS, MAX_TEMPLATE_BYTES,
                      MAX_VALUE_CHARS, RENDER_SECONDS, RenderBudget, TemplateLimitError, clean_text,
                      make_environment, render_template, template_errors, template_scope)
from .messages import (GLOSSARY_FILE, HAN, LANGS, MAX_MESSAGE_WIDTH, Messages, _catalog_paths, format_message,
                       load_catalog, message_text, spaced_class_names, tight_class_names, translator)
from .numbers import DASH, NOISE_DIGITS, ci, fmt, num, p_phrase, pct, pval, rounded, signed
from .pictures import PictureStore, data_uri
from .html import REPORT, DocumentKind, _globals_for, render_body, render_html, script_json
from .pdf import make_url_fetcher, render_pdf, render_pdf_html

__all__ = [
    "DASH", "GLOSSARY_FILE", "HAN", "LANGS", "MAX_EMBEDDED_BYTES", "MAX_FORMAT_WIDTH", "MAX_LOOP_ITEMS",
    "MAX_MESSAGE_WIDTH", "MAX_OUTPUT_CHARS", "MAX_TEMPLATE_BYTES", "MAX_VALUE_CHARS", "NOISE_DIGITS",
    "RENDER_SECONDS", "REPORT", "BoundedSandbox", "ConfinedLoader", "CountedRange", "DocumentKind",
    "FileScope", "Messages", "PictureStore", "RenderBudget", "TemplateLimitError", "ci", "clean_text",
    "data_uri", "fmt", "format_message", "load_catalog", "make_environment", "make_url_fetcher",
    "message_text", "num", "p_phrase", "pct", "pval", "render_body", "render_html", "render_pdf",
    "render_pdf_html", "render_template", "rounded", "script_json", "signed", "spaced_class_names",
    "template_errors", "template_scope", "tight_class_names", "translator",
]
