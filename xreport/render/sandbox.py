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
import hashlib
import io
import json
import logging
import math
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar, cast
from urllib.parse import unquote, urlsplit

import jinja2
import jinja2.sandbox
from markupsafe import Markup, escape

from .. import artifacts, languages
from ..errors import ReportError
from ..runs import atomic_path

logger = logging.getLogger(__name__)

DASH = "—"


# ---------------------------------------------------------------- templates and catalogs

# The languages are data (templates/i18n/<lang>/language.toml, read by xreport.languages);
# this is the list at import, for callers that want a constant.
LANGS = languages.codes()


def _search_path(templates_dir: Path | None) -> list[str]:
    # A user's folder comes first so it may override any single template or catalog.
    paths = [str(languages.templates_root())]
    if templates_dir is not None:
        templates_dir = Path(templates_dir)
        if not templates_dir.is_dir():
            raise ReportError(f"--templates {templates_dir}: not a folder")
        paths.insert(0, str(templates_dir))
    return paths


# ---------------------------------------------------------------- files a template may reach

# A template, a catalog or a figure larger than this is not one we wrote (a symlink to a
# device or a huge log); refusing it keeps a render from reading without end.
MAX_TEMPLATE_BYTES = 4 * 2**20
MAX_EMBEDDED_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FileScope:
    """The folders whose files a template may reach (includes, CSS, catalogs, ``img()``,
    the PDF fetcher): the templates folders and the report folder. One resolver for all of
    them, so a symlink or ``../`` can never lead a report to another file."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, *folders: Path | str | None) -> "FileScope":
        return cls(tuple(dict.fromkeys(Path(f).resolve() for f in folders if f is not None)))

    def resolve(self, path: Path | str, *, what: str, max_bytes: int = MAX_EMBEDDED_BYTES,
                shown: str | None = None) -> Path:
        """The real file behind ``path`` (every symlink followed), if it lies inside a root.
        ``shown`` is how the message names it (what the user wrote)."""
        shown = shown or str(path)
        try:
            # Containment first (on the path with every existing symlink followed), so a
            # refused path says nothing about whether the file exists.
            real = Path(path).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
            raise ReportError(f"{what} {shown!r}: not a usable path ({type(exc).__name__})") from None
        if not any(real == r or real.is_relative_to(r) for r in self.roots):
            raise ReportError(f"{what} {shown}: refused, it leads to {real}, outside the templates "
                              "and report folders")
        if not real.exists():
            raise ReportError(f"{what} {shown}: cannot be read (no such file)")
        if not real.is_file():
            raise ReportError(f"{what} {shown}: not a regular file")
        size = real.stat().st_size
        if size > max_bytes:
            raise ReportError(f"{what} {shown}: {size} bytes is more than the limit of {max_bytes}")
        return real

    def read_bytes(self, path: Path | str, *, what: str, max_bytes: int = MAX_EMBEDDED_BYTES,
                   shown: str | None = None) -> bytes:
        real = self.resolve(path, what=what, max_bytes=max_bytes, shown=shown)
        try:
            return real.read_bytes()
        except OSError as exc:
            raise ReportError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None


def template_scope(templates_dir: Path | None, *extra: Path | str | None) -> FileScope:
    return FileScope.of(languages.templates_root(), templates_dir, *extra)


class ConfinedLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that refuses any template whose real file (after symlinks) lies
    outside the template roots, and any file too large to be a template."""

    def __init__(self, searchpath: Sequence[str]) -> None:
        super().__init__(list(searchpath))
        self.scope = FileScope.of(*searchpath)

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        from jinja2.loaders import split_template_path

        pieces = split_template_path(template)  # refuses ".." pieces
        for root in self.searchpath:
            candidate = Path(root, *pieces)
            if not (candidate.is_file() or candidate.is_symlink()):
                continue
            real = self.scope.resolve(candidate, what="template", max_bytes=MAX_TEMPLATE_BYTES)
            try:
                source = real.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ReportError(f"template {candidate}: not UTF-8 text") from None
            mtime = real.stat().st_mtime
            return source, str(candidate), lambda: real.is_file() and real.stat().st_mtime == mtime
        raise jinja2.TemplateNotFound(template)


# ---------------------------------------------------------------- render limits

# A template is a program from the user's folder: bound what one render may cost. Real
# reports stay far below each limit (a report renders in about a second, a few MB).
MAX_OUTPUT_CHARS = 64 * 2**20      # one rendered document
MAX_VALUE_CHARS = 16 * 2**20       # one string or list made inside a template
MAX_LOOP_ITEMS = 1_000_000         # range() items over one render, however nested
MAX_FORMAT_WIDTH = 1_000           # width / precision in a format spec, fill widths
RENDER_SECONDS = 120.0             # wall clock for one document


class TemplateLimitError(jinja2.exceptions.SecurityError):
    """A template asked for more time, memory or output than a report may take."""


class RenderBudget:
    """Counted per render: range() items, and a deadline checked at every sandbox call."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.items = 0
        self.deadline = time.monotonic() + RENDER_SECONDS

    def tick(self, n: int = 1) -> None:
        self.items += n
        if self.items > MAX_LOOP_ITEMS:
            raise TemplateLimitError(f"more than {MAX_LOOP_ITEMS:,} loop iterations (range) in one render")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering took longer than {RENDER_SECONDS:.0f} s")


_PERCENT_SPEC = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_WIDTH = re.compile(r"(\d+)")


def _check_width(spec: str, what: str) -> None:
    for digits in _FORMAT_WIDTH.findall(spec):
        if len(digits) > 6 or int(digits) > MAX_FORMAT_WIDTH:
            raise TemplateLimitError(f"{what}: a width or precision above {MAX_FORMAT_WIDTH} "
                                     f"in {spec[:40]!r}")


def _check_percent_format(text: str) -> None:
    for match in _PERCENT_SPEC.finditer(text):
        if "*" in match.group(0):
            raise TemplateLimitError("'%' formatting with a '*' width is not allowed in templates")
        _check_width(match.group(0), "'%' formatting")


def _check_str_format(text: str, depth: int = 0) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return  # str.format will say what is wrong
    for _literal, _field, spec, _conv in parsed:
        if spec:
            _check_width(spec, "format()")
            if depth < 2:
                _check_str_format(spec, depth + 1)


T = TypeVar("T")


def _size(value: object) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_value(value: T) -> T:
    if _size(value) > MAX_VALUE_CHARS:
        raise TemplateLimitError(f"a value of {_size(value):,} items is larger than the "
                                 f"limit of {MAX_VALUE_CHARS:,}")
    return value


# Builtin methods and filters whose integer argument sets the size of the result.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH_FILTERS = frozenset({"center", "indent", "slice", "wordwrap", "truncate", "batch"})


def _check_call(name: str, obj: object, args: Sequence[object], kwargs: Mapping[str, object]) -> None:
    for value in (*args, *kwargs.values()):
        _check_value(value)
    if name in ("replace",) and isinstance(obj, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        grown = len(obj) + (obj.count(old) if old else len(obj) + 1) * len(new)
        _check_value_len(grown)
    if name == "format" and isinstance(obj, str):
        _check_str_format(obj)
    if name == "format_map" and isinstance(obj, str):
        _check_str_format(obj)


def _check_value_len(n: int) -> None:
    if n > MAX_VALUE_CHARS:
        raise TemplateLimitError(f"the result would hold {n:,} characters, more than the limit "
                                 f"of {MAX_VALUE_CHARS:,}")


def _check_ints(args: Sequence[object], kwargs: Mapping[str, object], what: str) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_FORMAT_WIDTH:
            raise TemplateLimitError(f"{what}({value}) is above the limit of {MAX_FORMAT_WIDTH}")


class BoundedSandbox(jinja2.sandbox.SandboxedEnvironment):
    """The sandbox, plus limits on time, loop items, value sizes and output size."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.budget = RenderBudget()

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: object,
                   right: object) -> object:
        self.budget.tick(0)
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                        and not isinstance(times, bool)):
                    _check_value_len(len(seq) * max(times, 0))
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                if right > 0 and right * max(abs(left), 2).bit_length() > 100_000:
                    raise TemplateLimitError(f"a power with {right:,} as exponent is too large")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_value_len(len(left) + len(right))
        return _check_value(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: object) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = str(getattr(value, "__self__"))   # the string whose format/format_map is called

        def checked(*args: object, **kwargs: object) -> str:
            _check_str_format(text)
            return wrapped(*args, **kwargs)
        return checked

    def getattr(self, obj: object, attribute: str) -> object:
        self.budget.tick(0)
        return _check_value(super().getattr(obj, attribute))

    def getitem(self, obj: object, argument: object) -> object:
        self.budget.tick(0)
        return _check_value(super().getitem(obj, argument))

    def call(__self, __context: jinja2.runtime.Context, __obj: object,  # noqa: N805
             *args: object, **kwargs: object) -> object:
        __self.budget.tick(0)
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and name in _WIDTH_METHODS:
            _check_ints(args, kwargs, name)
        _check_call(name, owner, args, kwargs)
        return _check_value(super().call(__context, __obj, *args, **kwargs))


def _guarded_filter(name: str, fn: Callable[..., object]) -> Callable[..., object]:
    """Filters are called directly by compiled templates, not through ``call``: wrap them."""
    import functools

    @functools.wraps(fn)
    def guarded(*args: object, **kwargs: object) -> object:
        plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context,
                                                         jinja2.nodes.EvalContext,
                                                         jinja2.Environment))]
        if name in _WIDTH_FILTERS:
            _check_ints(plain[1:], kwargs, name)
        if name == "format" and plain and isinstance(plain[0], str):
            _check_percent_format(plain[0])
        if name == "replace" and len(plain) >= 3 and isinstance(plain[0], str):
            _check_call("replace", plain[0], [str(plain[1]), str(plain[2])], {})
        for value in (*plain, *kwargs.values()):
            _check_value(value)
        return _check_value(fn(*args, **kwargs))
    return guarded


class CountedRange:
    """``range()`` for templates: a real range whose iteration counts against the render's
    budget, so nested loops cannot run without end."""

    def __init__(self, numbers: range, budget: RenderBudget) -> None:
        self._numbers, self._budget = numbers, budget

    def __len__(self) -> int:
        return len(self._numbers)

    def __getitem__(self, index: int | slice) -> "int | CountedRange":
        item = self._numbers[index]
        return CountedRange(item, self._budget) if isinstance(item, range) else item

    def __contains__(self, value: object) -> bool:
        return value in self._numbers

    def __iter__(self) -> Iterator[int]:
        for n in self._numbers:
            self._budget.tick()
            yield n

    def __reversed__(self) -> Iterator[int]:
        return iter(CountedRange(self._numbers[::-1], self._budget))

    def __repr__(self) -> str:
        return repr(self._numbers)


def _budgeted_range(env: BoundedSandbox) -> Callable[..., CountedRange]:
    def counted_range(*args: int) -> CountedRange:
        return CountedRange(jinja2.sandbox.safe_range(*args), env.budget)
    return counted_range


# Characters that reorder or hide text around them: the bidi embeddings, overrides, isolates
# and marks (U+202A-202E, U+2066-2069, U+200E/F, U+061C), and C0/C1 controls other than tab
# and line breaks. A class name, file id or note holding U+202E would otherwise reverse the
# rest of the report's own sentence (HTML and the PDF made from it).
_REORDERING = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
                         "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(value: object) -> object:
    """The one owner of output text hygiene: ``value`` without the characters above (a
    ``Markup`` stays ``Markup``: they are never part of markup). Jinja's ``finalize``, so
    every ``{{ ... }}`` of every template, user templates included, passes here."""
    if isinstance(value, str) and _REORDERING.search(value):
        cleaned = _REORDERING.sub("", value)
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """A sandboxed, autoescaping, strict Jinja environment over the template folders."""
    env = BoundedSandbox(
        loader=ConfinedLoader(_search_path(templates_dir)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "xml", "html.j2", "xml.j2", "j2"),
            default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined, finalize=clean_text,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = jinja2.pass_context(
        lambda context, v, digits=3: fmt(v, digits, say=context.get("say")))
    env.filters["pct"] = pct
    env.filters["num"] = num
    env.filters["ci"] = ci
    env.filters = {name: _guarded_filter(name, fn) for name, fn in env.filters.items()}
    env.globals.pop("lipsum", None)   # lipsum(n=10**9) would write without end
    env.globals["range"] = _budgeted_range(env)
    env.globals["DASH"] = DASH
    return env


def render_template(env: jinja2.Environment, name: str, **values: object) -> str:
    """Render ``name`` with the output size bounded (streamed, so a runaway stops early)."""
    template = env.get_template(name)
    if isinstance(env, BoundedSandbox):
        env.budget.reset()
    chunks: list[str] = []
    total = 0
    for chunk in template.generate(**values):
        total += len(chunk)
        if total > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"the output exceeds {MAX_OUTPUT_CHARS:,} characters")
        chunks.append(chunk)
    return "".join(chunks)


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


# ---------------------------------------------------------------- number formatting

def _is_missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


# Float noise below this many significant digits is dropped before rounding, so equal
# quantities computed two ways (189/240 as 0.7875 and as 0.7875000000000001) print the same.
NOISE_DIGITS = 12


def rounded(x: float, digits: int) -> Decimal:
    """``x`` to ``digits`` decimals, half away from zero, after dropping float noise:
    the one rounding rule of every number the documents print."""
    return Decimal(f"{x:.{NOISE_DIGITS}g}").quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def num(x: object, digits: int = 3) -> str:
    """0.91234 -> "0.912"; ints stay whole with thousands separators; None -> "—".

    A non-zero value that would round to zero is written as a bound, "< 0.001" (or
    "> -0.001"), never in scientific notation among fixed-point numbers."""
    if _is_missing(x):
        return DASH
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        value = rounded(x, digits)
        if x != 0 and value == 0:
            bound = f"{Decimal(1).scaleb(-digits):.{digits}f}"
            return f"< {bound}" if x > 0 else f"> -{bound}"
        return f"{value:.{digits}f}" if value != 0 else f"{0:.{digits}f}"
    return str(x)


def pct(x: object, digits: int = 1) -> str:
    """0.912 (or a metric value {"value": 0.912, ...}) -> "91.2%"."""
    if isinstance(x, Mapping):
        x = x.get("value")
    if _is_missing(x):
        return DASH
    return f"{rounded(100 * float(cast(float, x)), digits):.{digits}f}%"


def ci(v: object, digits: int = 3) -> str:
    """The interval of a metric value alone: "0.889–0.934", or "" when there is none."""
    if isinstance(v, Mapping) and v.get("ci95") and not any(_is_missing(b) for b in v["ci95"]):
        lo, hi = v["ci95"]
        return f"{num(float(lo), digits)}–{num(float(hi), digits)}"
    return ""


def pval(p: float | None) -> str:
    """A p-value for a table cell: "0.041" or "< 0.001" (three decimals, so 0.049 never
    reads as 0.05)."""
    if p is None or not math.isfinite(p):
        return DASH
    return "<\u00a00.001" if p < 0.001 else f"{p:.3f}"   # no line break inside "< 0.001"


def p_phrase(p: float | None) -> str:
    """A p-value for a sentence: "p = 0.041" or "p < 0.001"."""
    if p is None or not math.isfinite(p):
        return f"p = {DASH}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def signed(x: float | None) -> str:
    """A difference with its sign, the minus typeset: "+0.012", "−0.034"."""
    if x is None or not math.isfinite(x):
        return DASH
    return f"{x:+.3f}".replace("-", "−")


def fmt(v: object, digits: int = 3, *, say: Callable[[object], str] | None = None) -> Markup:
    """A metric value for a table cell: "0.912 (0.889–0.934)", or "—" with the reason
    (a reason message is worded by ``say``, the template's language)."""
    if isinstance(v, Mapping):
        value = v.get("value")
        if _is_missing(value):
            reason = v.get("reason")
            if reason:
                text = say(reason) if say is not None and isinstance(reason, Mapping) else str(reason)
                return Markup('{}<span class="reason">{}</span>').format(DASH, f" ({text})")
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


def data_uri(path: Path, scope: FileScope | None = None, *, shown: str | None = None) -> str:
    """``path`` as a data URI; with ``scope``, only a file inside its folders."""
    if scope is not None:
        payload = scope.read_bytes(path, what="figure", shown=shown)
    else:
        try:
            payload = Path(path).read_bytes()
        except OSError as exc:
            raise ReportError(f"{path}: figure cannot be read ({exc.strerror})") from None
    return f"data:{_mime(Path(path))};base64,{base64.b64encode(payload).decode('ascii')}"


@dataclass
class PictureStore:
    """The pictures of one HTML file, by content: while the language bodies are rendered,
    ``img()`` hands out a placeholder per picture; :meth:`embed` then writes a picture that
    appears once as a data URI in its ``<img>``, and one that appears more than once (a CAM
    overlay shown in every language, the same chart in two languages) once, as an SVG
    ``<image>`` that each use draws with ``<use>``. So no picture is embedded twice."""

    payloads: dict[str, tuple[str, bytes]] = field(default_factory=dict)   # sha -> (mime, bytes)

    PREFIX: ClassVar[str] = "xr-pic:"

    def add(self, payload: bytes, mime: str) -> str:
        sha = hashlib.sha256(payload).hexdigest()
        self.payloads.setdefault(sha, (mime, payload))
        return self.PREFIX + sha

    def _uri(self, sha: str) -> str:
        mime, payload = self.payloads[sha]
        return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"

    def embed(self, bodies: Sequence[str]) -> tuple[list[Markup], Markup]:
        """The bodies with every placeholder resolved, and the shared pictures' definitions
        (an SVG of ``<image>`` elements to place once in the document)."""
        token = re.compile(re.escape(self.PREFIX) + r"([0-9a-f]{64})")
        tag = re.compile(r'<img\b[^>]*\bsrc="' + re.escape(self.PREFIX) + r'([0-9a-f]{64})"[^>]*>')
        uses = Counter(m[1] for body in bodies for m in token.finditer(body))
        sizes = {sha: _pixel_size(self.payloads[sha][1]) for sha, n in uses.items() if n > 1}
        shared = {sha: size for sha, size in sizes.items() if size is not None}   # sha -> (w, h)

        def picture(match: re.Match[str]) -> str:
            sha = match[1]
            if sha not in shared:
                return match[0].replace(self.PREFIX + sha, self._uri(sha))
            w, h = shared[sha]
            alt = re.search(r'\balt="([^"]*)"', match[0])
            label = f' aria-label="{alt[1]}"' if alt else ' aria-hidden="true"'
            return (f'<svg class="pic" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"'
                    f'{label}><use href="#xr-pic-{sha[:16]}"/></svg>')

        out = []
        for body in bodies:
            body = tag.sub(picture, body)
            # A placeholder outside an <img> (a user template's own use): its data URI.
            out.append(Markup(token.sub(lambda m: self._uri(m[1]), body)))
        defs = "".join(f'<image id="xr-pic-{sha[:16]}" width="{shared[sha][0]}" '
                       f'height="{shared[sha][1]}" href="{self._uri(sha)}"/>' for sha in sorted(shared))
        holder = (f'<svg class="pic-defs" width="0" height="0" aria-hidden="true" focusable="false">'
                  f'<defs>{defs}</defs></svg>') if shared else ""
        return out, Markup(holder)


def _pixel_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG or GIF in pixels, None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _image_source(report_dir: Path, scope: FileScope, *, mode: str,
                  store: PictureStore | None = None) -> Callable[[object, str], str]:
    """``img(ref, lang)``: a figure ref (a path, or {lang: path}) -> a data or file URI (or,
    with a ``store``, its placeholder there). Relative refs are under the report folder;
    every ref must resolve inside ``scope``."""
    def img(ref: object, lang: str = "en") -> str:
        if isinstance(ref, Mapping):
            ref = ref.get(lang) or ref.get("en") or next(iter(ref.values()))
        if not isinstance(ref, (str, Path)):
            raise ReportError(f"img(): expected a file name, got {type(ref).__name__}")
        path = Path(ref)
        if not path.is_absolute():
            path = report_dir / path
        if mode == "file":
            return scope.resolve(path, what="figure", shown=str(ref)).as_uri()
        if store is not None:
            return store.add(scope.read_bytes(path, what="figure", shown=str(ref)), _mime(path))
        return data_uri(path, scope, shown=str(ref))
    return img


# ---------------------------------------------------------------- rendering

def _class_namer(context: Mapping[str, object], lang: str) -> Callable[[object], str]:
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
    cname = _class_namer(context, lang)
    report_dir = Path(str(context.get("report_dir", ".")))
    say = message_text(t, cname)
    scope = template_scope(templates_dir, report_dir)
    return {"ctx": context, "lang": lang, "t": t, "has_key": t.has, "cname": cname,
            "say": say, "img": _image_source(report_dir, scope, mode=mode, store=store),
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


def _check_langs(langs: Sequence[str]) -> list[str]:
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ReportError("no report language given; choose from " + ", ".join(languages.codes()))
    for lang in langs:
        languages.language(lang)
    return langs


def _read_css(env: jinja2.Environment, name: str) -> Markup:
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
    return {"viewer_json": script_json(viewer["data"]), "viewer_js": _read_css(env, "js/viewer.js"),
            "viewer_css": _read_css(env, "css/viewer.css")}


def render_body(context: Mapping[str, object], *, lang: str, env: jinja2.Environment,
                templates_dir: Path | None = None, mode: str = "data",
                kind: DocumentKind = REPORT, store: PictureStore | None = None) -> Markup:
    """One language's document body (all sections) as HTML (with a ``store``, its pictures
    are placeholders until :meth:`PictureStore.embed`)."""
    g = _globals_for(context, lang, templates_dir=templates_dir, mode=mode, kind=kind,
                     store=store)
    with template_errors(f"{kind.body_template} ({lang})"):
        return Markup(render_template(env, kind.body_template, **g))


def _environment(templates_dir: Path | None, kind: DocumentKind) -> jinja2.Environment:
    env = make_environment(templates_dir)
    env.filters.update(kind.filters)
    return env


@contextlib.contextmanager
def template_errors(name: str) -> Iterator[None]:
    """Every template failure (undefined name, sandbox refusal, syntax) is one ReportError line."""
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
    except MemoryError:
        raise ReportError(f"template {name}: refused: it needs more memory than this machine "
                          "has (a huge repetition or loop)") from None
    except RecursionError:
        raise ReportError(f"template {name}: refused: macros or includes nest too deeply") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
        # A user's template can fail at run time like any program; name it, no traceback.
        raise ReportError(f"template {name}: {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def render_html(context: Mapping[str, object], *, langs: Sequence[str],
                templates_dir: Path | None = None, kind: DocumentKind = REPORT) -> str:
    """One self-contained HTML file holding every language; a CSS-only language switch."""
    langs = _check_langs(langs)
    env = _environment(templates_dir, kind)
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
            css=_read_css(env, "css/report.css"), mobile_css=_read_css(env, "css/mobile.css"))
    # The shared pictures go right after <body> (outside every language's block, which is
    # hidden while another language is shown), whatever the user's report.html.j2 holds.
    body = re.search(r"<body\b[^>]*>", html)
    at = body.end() if body else 0
    return html[:at] + str(pictures) + html[at:]


# ---------------------------------------------------------------- PDF

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
    (lang,) = _check_langs([lang])
    env = _environment(templates_dir, kind)
    body = render_body(context, lang=lang, env=env, templates_dir=templates_dir, mode="file",
                       kind=kind)
    t = translator(lang, templates_dir)
    with template_errors("pdf.html.j2"):
        return render_template(env, "pdf.html.j2",
            ctx=context, lang=lang, body=body, t=t, title_key=kind.title_key,
            font_family=Markup(languages.language(lang).css_fonts),
            css=_read_css(env, "css/report.css"), print_css=_read_css(env, "css/print.css"))


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
