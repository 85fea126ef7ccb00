"""The report languages, as data: a language is its folder ``templates/i18n/<code>/``, with the
message catalogs (``*.json``) and ``language.toml``, which says what the layout needs to know:

    label = "繁體中文"            # its name in the language switcher
    order = 2                    # its place in the list of languages
    word_spacing = false         # false: no space between words or sentences (Chinese)
    fonts = ["Noto Sans CJK TC"] # font families, preferred first: the PDF's CSS stack and
                                 # the charts' face (the first CJK face whose glyphs follow
                                 # the language's conventions)

Adding a language is that folder: nothing in the code lists the languages.
"""
from __future__ import annotations

import functools
import importlib.resources
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ReportError

DEFAULT_LANGS = ("en", "zh-TW")   # what `build` and `compare` write when no language is asked for
FALLBACK = "en"                    # the language a missing message falls back to
LANGUAGE_FILE = "language.toml"


@dataclass(frozen=True)
class Language:
    code: str                      # "zh-TW": the folder name, the HTML lang, the file suffix
    label: str
    order: int
    word_spacing: bool
    fonts: tuple[str, ...]

    @property
    def css_fonts(self) -> str:
        """The CSS font-family stack of the PDF: ``"A", "B", sans-serif``."""
        return ", ".join([*(f'"{f}"' for f in self.fonts), "sans-serif"])


def _read(folder: Path) -> Language:
    path = folder / LANGUAGE_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        fonts = raw["fonts"]
        language = Language(code=folder.name, label=raw["label"], order=raw["order"],
                            word_spacing=raw["word_spacing"], fonts=tuple(fonts))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ReportError(f"{path}: not a usable language description ({type(exc).__name__}: {exc})") from None
    if not (isinstance(language.label, str) and isinstance(language.order, int)
            and isinstance(language.word_spacing, bool) and isinstance(fonts, list)
            and all(isinstance(f, str) and '"' not in f for f in fonts)):
        raise ReportError(f"{path}: label must be a string, order a whole number, word_spacing "
                          "true/false and fonts a list of family names")
    return language


def templates_root() -> Path:
    """The built-in templates: ``<repo>/templates`` in development, else inside the package
    (here, below render, because a language is its folder in them)."""
    dev = Path(__file__).resolve().parent.parent / "templates"
    if (dev / "report.html.j2").is_file():
        return dev
    packaged = Path(str(importlib.resources.files("xreport") / "templates"))
    if (packaged / "report.html.j2").is_file():
        return packaged
    raise ReportError(f"built-in templates not found in {dev} or {packaged}; reinstall xreport")


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Language]:
    found = [_read(folder) for folder in (templates_root() / "i18n").iterdir()
             if (folder / LANGUAGE_FILE).is_file()]
    return {lang.code: lang for lang in sorted(found, key=lambda lang: (lang.order, lang.code))}


def codes() -> tuple[str, ...]:
    """Every report language, in the order of the language switcher ("en" first)."""
    return tuple(_registry())


def labels() -> dict[str, str]:
    """code -> the language's own name, for the language switcher."""
    return {code: lang.label for code, lang in _registry().items()}


def language(code: str) -> Language:
    """``code``'s description; a code without a folder is refused in one line."""
    found = _registry().get(code)
    if found is None:
        raise ReportError(f"language {code!r} is not one of {', '.join(codes())}")
    return found
