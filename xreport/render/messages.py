"""The message catalogs and the words they make: ``templates/i18n/<lang>/*.json`` read inside
the file scope (English is the fallback), ``translator`` (``t(key, **params)``), the class-name
spacing rule of languages set without spaces, and ``message_text`` (words any
``{key, params}`` message, its class names in the document's language).
"""
from __future__ import annotations

import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence, cast

from .. import artifacts, languages
from ..errors import ReportError
from .numbers import DASH, num, pct
from .sandbox import FileScope, MAX_TEMPLATE_BYTES, template_scope


# The languages are data (templates/i18n/<lang>/language.toml, read by xreport.languages);
# this is the list at import, for callers that want a constant.
LANGS = languages.codes()


# Beside a language's catalogs: the one rendering of each term (tests/test_glossary.py
# checks every catalog string against it); not messages.
GLOSSARY_FILE = "glossary.json"


def _catalog_paths(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.json")) if p.name != GLOSSARY_FILE]


@lru_cache(maxsize=32)
def _read_catalog_dir(folder: str, mtimes: tuple[float, ...], scope: FileScope) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in _catalog_paths(Path(folder)):
        raw = scope.read_bytes(path, what="message catalog", max_bytes=MAX_TEMPLATE_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReportError(f"{path}: not a valid JSON message catalog ({exc})") from None
        data = artifacts.parse_json(text, path=path, what="JSON message catalog")
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ReportError(f"{path}: a message catalog must map keys to strings")
        merged.update({k: v for k, v in data.items() if isinstance(v, str)})   # all are (checked above)
    return merged


def _catalog_files(folder: Path, scope: FileScope) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    try:
        mtimes = tuple(p.lstat().st_mtime for p in _catalog_paths(folder))
    except OSError as exc:
        raise ReportError(f"{folder}: message catalogs cannot be read ({exc.strerror or exc})") from None
    return dict(_read_catalog_dir(str(folder), mtimes, scope))


def load_catalog(lang: str, templates_dir: Path | None = None) -> dict[str, str]:
    """All ``i18n/<lang>/*.json`` merged; a user's templates folder overrides single keys."""
    languages.language(lang)   # an unknown code fails here, in one line
    scope = template_scope(templates_dir)
    catalog = _catalog_files(languages.templates_root() / "i18n" / lang, scope)
    if templates_dir is not None:
        catalog.update(_catalog_files(Path(templates_dir) / "i18n" / lang, scope))
    return catalog


class Messages:
    """``t(key, **params)``: the language's string, else English, else an error."""

    def __init__(self, lang: str, templates_dir: Path | None = None) -> None:
        self.lang = lang
        self.catalog = load_catalog(lang, templates_dir)
        self.fallback = self.catalog if lang == "en" else load_catalog("en", templates_dir)

    def has(self, key: str) -> bool:
        return key in self.fallback or key in self.catalog

    def __call__(self, key: str, **params: object) -> str:
        text = self.catalog.get(key)
        if text is None:
            text = self.fallback.get(key)
            if text is None:
                raise ReportError(f"message key {key!r} is missing from templates/i18n/en")
        if not params:
            return text
        values = {k: _param_text(v) for k, v in params.items()}
        if not languages.language(self.lang).word_spacing:
            text = spaced_class_names(tight_class_names(text), values)
        return format_message(text, values, where=f"message {key!r} ({self.lang})")


# Chinese sets no spaces between words: a class name ({cls}, {cls_minor}, ...) sits directly
# against the Han characters and full-width punctuation around it, whatever the catalog says.
_CJK = "\u2e80-\u9fff\u3000-\u303f\uff00-\uffef"
_SPACE_BEFORE_NAME = re.compile(f"(?<=[{_CJK}]) +(?=\\{{cls[A-Za-z0-9_]*\\}})")
_SPACE_AFTER_NAME = re.compile(f"(\\{{cls[A-Za-z0-9_]*\\}}) +(?=[{_CJK}])")


def tight_class_names(text: str) -> str:
    """Drop the spaces between a ``{cls*}`` placeholder and neighbouring CJK text."""
    return _SPACE_AFTER_NAME.sub(r"\1", _SPACE_BEFORE_NAME.sub("", text))


# The one spacing rule of Chinese text: a space between a Han character and a Latin letter
# or digit (the catalogs write "在 {n} 張", "CAM 峰值"), none next to full-width
# punctuation or between Han characters. A class name follows it by its own first and
# last character: "預測為 EOSINOPHIL，" but "預測為第6級，".
HAN = "\u3400-\u4dbf\u4e00-\u9fff"
_HAN_CHAR = re.compile(f"[{HAN}]")
_LATIN_CHAR = re.compile(r"[A-Za-z0-9]")
_NAME_PLACEHOLDER = re.compile(r"\{(cls[A-Za-z0-9_]*)\}")


def spaced_class_names(text: str, values: Mapping[str, str]) -> str:
    """Put a space between a ``{cls*}`` placeholder and a neighbouring Han character when
    the class name's own end there is a Latin letter or digit (see HAN)."""
    def space(match: re.Match[str]) -> str:
        name = str(values.get(match.group(1), ""))
        before = text[match.start() - 1] if match.start() else ""
        after = text[match.end()] if match.end() < len(text) else ""
        lead = " " if name and _HAN_CHAR.match(before) and _LATIN_CHAR.match(name[0]) else ""
        tail = " " if name and _HAN_CHAR.match(after) and _LATIN_CHAR.match(name[-1]) else ""
        return f"{lead}{match.group(0)}{tail}"
    return _NAME_PLACEHOLDER.sub(space, text)


_PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# [[fill]align][sign][0][width][grouping][.precision][type]: no nested fields.
_MESSAGE_SPEC = re.compile(r"(?:[^{}]?[<>^=])?[-+ ]?0?(?P<width>\d{0,4})[,_]?"
                           r"(?:\.(?P<precision>\d{1,3}))?[bcdeEfFgGnosxX%]?\Z")
MAX_MESSAGE_WIDTH = 200


def format_message(text: str, params: Mapping[str, object], *, where: str) -> str:
    """Fill ``{name}`` placeholders of a catalog message; never ``str.format``.

    Catalogs may come from a user's folder and ``str.format`` reaches attributes and items
    (``{date.__class__}``), so only plain names are allowed, no conversion, and a format
    spec only with a bounded width and precision.
    """
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ReportError(f"{where}: bad placeholder ({exc})") from None
    out: list[str] = []
    for literal, name, spec, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        if not _PLACEHOLDER_NAME.match(name):
            raise ReportError(f"{where}: placeholder {{{name[:40]}}} is not allowed; use a plain "
                              "name such as {count} (no attribute, index or position)")
        if conversion:
            raise ReportError(f"{where}: placeholder {{{name}!{conversion}}}: conversions are not allowed")
        if name not in params:
            raise ReportError(f"{where}: unknown placeholder {{{name}}}; this message has "
                              f"{', '.join(sorted(params)) or 'no placeholders'}")
        value = params[name]
        if not spec:
            out.append(str(value))
            continue
        match = _MESSAGE_SPEC.match(spec)
        if (match is None or int(match.group("width") or 0) > MAX_MESSAGE_WIDTH
                or int(match.group("precision") or 0) > MAX_MESSAGE_WIDTH):
            raise ReportError(f"{where}: format {{{name}:{spec[:20]}}} is not allowed (plain "
                              f"alignment, width and precision up to {MAX_MESSAGE_WIDTH})")
        try:
            out.append(format(value, spec))
        except (ValueError, TypeError) as exc:
            raise ReportError(f"{where}: format {{{name}:{spec}}}: {exc}") from None
    return "".join(out)


def translator(lang: str, templates_dir: Path | None = None) -> Messages:
    return Messages(lang, templates_dir)


def _param_text(value: object) -> str:
    if isinstance(value, float):
        return num(value)
    return str(value)


def class_namer(context: Mapping[str, object], lang: str) -> Callable[[object], str]:
    from ..artifacts import class_name_map

    names = list(cast(Sequence[str], context.get("class_names", [])))
    translated = cast(Mapping[str, Sequence[str]], context.get("class_names_i18n", {}))
    mapping = class_name_map(names, translated.get(lang))

    def cname(name: object) -> str:
        if isinstance(name, int) and 0 <= name < len(names):
            name = names[name]
        return mapping.get(str(name), str(name))
    return cname


def message_text(t: Messages, cname: Callable[[object], str]) -> Callable[[object], str]:
    """``say(message)``: word a ``{key, params}`` message (an observation, a metric's reason,
    a comparison verdict) in ``t``'s language. A parameter that is itself a message is worded
    first; ``cls*`` parameters are class names, ``*_pct`` fractions are percentages, None is
    a dash. A plain string (an older metrics.json) is shown as it is; nothing is "".
    """
    def say(item: object) -> str:
        if not item:
            return ""
        if isinstance(item, str):
            return item
        message = cast(Mapping[str, object], item)   # {key, params}
        params = cast(Mapping[str, object], message.get("params") or {})
        return t(str(message["key"]), **{k: _observation_param(k, v, cname, say)
                                         for k, v in params.items()})
    return say


def _observation_param(name: str, value: object, cname: Callable[[object], str],
                       say: Callable[[object], str]) -> str:
    if isinstance(value, Mapping) and "key" in value:
        return say(value)
    if value is None:
        return DASH
    if name.startswith("cls"):
        return cname(value)
    if name.endswith("_pct"):
        return pct(value)
    if name == "ratio" and isinstance(value, (int, float)):
        return f"{value:.1f}"
    return _param_text(value)
