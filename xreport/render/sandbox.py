"""The sandbox every template runs in: a bounded Jinja ``SandboxedEnvironment`` (autoescape,
``StrictUndefined``, limits on output size, loop items, format widths and wall clock), the
file scope templates and PDFs may read from, ``clean_text`` (bidi and control characters
removed from every output) and the one place template errors become a ``ReportError``.
"""
from __future__ import annotations

import contextlib
import logging
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

import jinja2
import jinja2.sandbox
from markupsafe import Markup

from .. import languages
from ..errors import ReportError
from .numbers import DASH, ci, fmt, num, pct


logger = logging.getLogger(__name__)


def _search_path(templates_dir: Path | None) -> list[str]:
    # A user's folder comes first so it may override any single template or catalog.
    paths = [str(languages.templates_root())]
    if templates_dir is not None:
        templates_dir = Path(templates_dir)
        if not templates_dir.is_dir():
            raise ReportError(f"--templates {templates_dir}: not a folder")
        paths.insert(0, str(templates_dir))
    return paths


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
