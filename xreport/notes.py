"""The user's own words in a report: Markdown notes per language, read safely.

A notes file is Markdown with an optional front matter block (``title``, ``authors``,
``affiliation`` or ``course``, ``date`` and free statements such as ``data source`` or
``ethics approval``). ``NAME.en.md``, ``NAME.zh-TW.md`` and ``NAME.zh-CN.md`` serve one
language; ``NAME.md`` serves every language that has no file of its own.

Safe by construction: markdown-it-py renders with raw HTML disabled, and a notes file that
holds raw HTML (a ``<script>``, a ``<div>``) is refused outright rather than silently
escaped, so the author learns their text would not show as written. Links are shown as text
(never followed by a reader or the PDF renderer); images come only from the notes file's own
folder, embedded as data URIs, with bounded sizes. Every problem is one ``ConfigError`` line
naming the file, raised before anything is written.

Sections are placed by heading: an introduction or objectives heading goes before the data,
a conclusion at the end, any other heading into the notes section (``SECTION_WORDS``).
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence, TypedDict

from markupsafe import Markup, escape

from . import languages
from .errors import ConfigError

MAX_NOTES_BYTES = 1 * 2**20          # one notes file
MAX_IMAGE_BYTES = 2 * 2**20          # one embedded image
MAX_IMAGES_BYTES = 8 * 2**20         # all images of one notes file
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# SVG is left out on purpose: it can carry scripts.
LANGS = languages.codes()   # the report languages (templates/i18n/<code>/language.toml)
# Front matter keys with a place of their own; any other key is a free statement.
HEAD_KEYS = ("title", "authors", "affiliation", "course", "date")
MAX_FRONT_KEYS = 40
_LANG_LIKE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z]{2,4})?\Z")
_KEY = re.compile(r"[A-Za-z\u3400-\u9fff][\w \-/\u3400-\u9fff]{0,60}\Z")

# Heading words (case-folded, matched as substrings) that place a section.
SECTION_WORDS: Mapping[str, tuple[str, ...]] = {
    "intro": ("introduction", "objective", "aim", "background", "motivation", "purpose",
              "引言", "目的", "背景", "前言", "動機", "动机", "緒論", "绪论", "簡介", "简介", "導論", "导论"),
    "conclusion": ("conclusion", "concluding", "結論", "结论", "總結", "总结", "結語", "结语"),
}


class NotesSection(TypedDict):
    title: str               # the heading as written ("" for text before the first heading)
    place: str               # intro | other | conclusion
    anchor: str              # unique within the language's body: notes-1, notes-2, ...
    html: Markup             # rendered, safe HTML


class Statement(TypedDict):
    key: str                 # normalised: "data_source"
    label: str               # as written: "data source"
    text: str


class Notes(TypedDict):
    """One language's notes, ready for the templates."""

    file: str
    lang: str
    title: str | None
    authors: str | None
    affiliation: str | None
    date: str | None
    statements: list[Statement]
    sections: list[NotesSection]


@dataclass(frozen=True)
class NotesFile:
    path: Path
    lang: str | None          # None: every language


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"notes {path}: {problem}")


def classify(path: Path) -> NotesFile:
    """The language a notes file serves, from its name (``x.en.md``, ``x.md``)."""
    name = path.name
    if not name.lower().endswith(".md"):
        raise _fail(path, "not a Markdown file (the name must end in .md, e.g. notes.en.md)")
    stem = name[:-3]
    suffix = stem.rsplit(".", 1)[1] if "." in stem else None
    if suffix is None:
        return NotesFile(path, None)
    for lang in LANGS:
        if suffix.lower() == lang.lower():
            return NotesFile(path, lang)
    if _LANG_LIKE.match(suffix):
        raise _fail(path, f"unknown language suffix {suffix!r}; use one of "
                          f"{', '.join('.' + lang + '.md' for lang in LANGS)}, or .md for every language")
    return NotesFile(path, None)


def assign(files: Sequence[Path], langs: Sequence[str]) -> dict[str, NotesFile | None]:
    """Which file serves each report language: its own file, else a file without a suffix."""
    classified = [classify(Path(f)) for f in files]
    seen: dict[str | None, Path] = {}
    for item in classified:
        if item.lang in seen:
            which = item.lang or "every language"
            raise _fail(item.path, f"a second notes file for {which} (the first is {seen[item.lang]}); "
                                   "give one file per language")
        seen[item.lang] = item.path
    own = {item.lang: item for item in classified}
    return {lang: own.get(lang) or own.get(None) for lang in langs}


# ---------------------------------------------------------------- reading

def _read(path: Path) -> str:
    try:
        if not path.is_file():
            raise _fail(path, "no such file" if not path.exists() else "not a regular file")
        size = path.stat().st_size
        if size > MAX_NOTES_BYTES:
            raise _fail(path, f"{size:,} bytes is more than the limit of {MAX_NOTES_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_NOTES_BYTES:
        raise _fail(path, f"more than the limit of {MAX_NOTES_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise _fail(path, "holds a NUL byte; not a text file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_front_matter(path: Path, text: str) -> tuple[dict[str, tuple[str, str]], str, int]:
    """``---`` key: value lines ``---`` at the very top -> ({norm_key: (label, value)}, body,
    line offset of the body). Plain ``key: value`` lines only; anything else is refused."""
    if not text.startswith("---\n"):
        return {}, text, 0
    lines = text.split("\n")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() in ("---", "..."))
    except StopIteration:
        raise _fail(path, "front matter opened by '---' on line 1 is never closed by a '---' line") from None
    front: dict[str, tuple[str, str]] = {}
    for number in range(1, end):
        line = lines[number]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise _fail(path, f"front matter line {number + 1} is not 'key: value' ({line.strip()[:40]!r})")
        label, value = (part.strip() for part in line.split(":", 1))
        if not _KEY.match(label):
            raise _fail(path, f"front matter line {number + 1}: {label[:40]!r} is not a usable key "
                              "(letters, digits, spaces, - and _)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        key = re.sub(r"[\s\-/]+", "_", label.strip().casefold())
        if key in front:
            raise _fail(path, f"front matter line {number + 1}: key {label!r} given twice")
        if not value:
            raise _fail(path, f"front matter line {number + 1}: key {label!r} has no value")
        front[key] = (label, value)
        if len(front) > MAX_FRONT_KEYS:
            raise _fail(path, f"front matter holds more than {MAX_FRONT_KEYS} keys")
    return front, "\n".join(lines[end + 1:]), end + 1


# ---------------------------------------------------------------- Markdown

def _parsers() -> tuple[object, object]:
    from markdown_it import MarkdownIt

    # The checker sees raw HTML as tokens (so it can be refused by line); the renderer has
    # HTML disabled, so even a missed case is printed as text.
    checker = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
    return checker, renderer


def _check_html(path: Path, tokens: Iterable[object], offset: int) -> None:
    for token in tokens:
        kind = getattr(token, "type", "")
        if kind in ("html_block", "html_inline"):
            line = (getattr(token, "map", None) or [None])[0]
            snippet = " ".join(str(getattr(token, "content", "")).split())[:40]
            where = f"line {line + 1 + offset}" if line is not None else "an inline"
            raise _fail(path, f"raw HTML is not allowed ({where}: {snippet!r}); write Markdown instead")
        children = getattr(token, "children", None)
        if children:
            # inline children carry no line map; name the block's line instead
            for child in children:
                if getattr(child, "type", "") == "html_inline":
                    line = (getattr(token, "map", None) or [None])[0]
                    snippet = " ".join(str(child.content).split())[:40]
                    where = f"line {line + 1 + offset}" if line is not None else "a paragraph"
                    raise _fail(path, f"raw HTML is not allowed ({where}: {snippet!r}); write Markdown instead")


class _Images:
    """Embeds images that lie in the notes file's own folder; refuses every other source."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = path.resolve().parent
        self.total = 0

    def data_uri(self, src: str) -> str:
        from PIL import Image, UnidentifiedImageError

        shown = src[:80]
        if not src or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", src) or src.startswith(("/", "\\", "~")):
            raise _fail(self.path, f"image {shown!r}: only a file beside the notes is allowed "
                                   "(no URL, no absolute path)")
        parts = re.split(r"[\\/]", src)
        if ".." in parts:
            raise _fail(self.path, f"image {shown!r}: '..' is not allowed; put the image beside the notes")
        target = (self.folder / src).resolve()
        if not target.is_relative_to(self.folder):
            raise _fail(self.path, f"image {shown!r}: leads outside the notes folder ({target})")
        if not target.is_file():
            raise _fail(self.path, f"image {shown!r}: no such file beside the notes")
        size = target.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise _fail(self.path, f"image {shown!r}: {size:,} bytes is more than the limit of {MAX_IMAGE_BYTES:,}")
        self.total += size
        if self.total > MAX_IMAGES_BYTES:
            raise _fail(self.path, f"images add up to more than the limit of {MAX_IMAGES_BYTES:,} bytes")
        payload = target.read_bytes()
        try:
            with Image.open(io.BytesIO(payload)) as image:
                kind = image.format or ""
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _fail(self.path, f"image {shown!r}: not a readable image ({type(exc).__name__})") from None
        if kind not in IMAGE_TYPES:
            raise _fail(self.path, f"image {shown!r}: {kind or 'unknown'} images are not allowed; "
                                   f"use {', '.join(IMAGE_TYPES)}")
        return f"data:{IMAGE_TYPES[kind]};base64,{base64.b64encode(payload).decode('ascii')}"


def _render(renderer: object, tokens: list[object], images: _Images, *, shift: int) -> Markup:
    """Tokens -> HTML: links as their text with the address beside it, images embedded,
    headings moved down by ``shift`` levels below the report's own section headings."""
    from markdown_it.renderer import RendererHTML
    from markdown_it.utils import OptionsDict

    def link_open(self: RendererHTML, toks: list, idx: int, options: object, env: dict) -> str:
        env.setdefault("hrefs", []).append(toks[idx].attrGet("href") or "")
        return ""

    def link_close(self: RendererHTML, toks: list, idx: int, options: object, env: dict) -> str:
        href = env["hrefs"].pop() if env.get("hrefs") else ""
        return f' <span class="notes-url">({escape(href)})</span>' if href else ""

    def image(self: RendererHTML, toks: list, idx: int, options: OptionsDict, env: dict) -> str:
        token = toks[idx]
        alt = self.renderInlineAsText(token.children or [], options, env)
        uri = images.data_uri(str(token.attrGet("src") or ""))
        return f'<img class="notes-img" src="{escape(uri)}" alt="{escape(alt)}">'

    def heading_open(self: RendererHTML, toks: list, idx: int, options: object, env: dict) -> str:
        level = min(6, int(toks[idx].tag[1:]) + shift)
        return f"<h{level}>"

    def heading_close(self: RendererHTML, toks: list, idx: int, options: object, env: dict) -> str:
        level = min(6, int(toks[idx].tag[1:]) + shift)
        return f"</h{level}>\n"

    r = renderer.renderer  # type: ignore[attr-defined]
    for name, fn in (("link_open", link_open), ("link_close", link_close), ("image", image),
                     ("heading_open", heading_open), ("heading_close", heading_close)):
        r.rules[name] = fn.__get__(r)
    html = r.render(tokens, renderer.options, {})  # type: ignore[attr-defined]
    return Markup(html)


def _place(title: str) -> str:
    folded = title.casefold()
    for place in ("conclusion", "intro"):
        if any(word in folded for word in SECTION_WORDS[place]):
            return place
    return "other"


def load(path: Path, lang: str) -> Notes:
    """One notes file for one language, checked and rendered; ConfigError on any problem."""
    path = Path(path)
    text = _read(path)
    front, body, offset = split_front_matter(path, text)
    checker, renderer = _parsers()
    _check_html(path, checker.parse(body), offset)  # type: ignore[attr-defined]
    tokens = renderer.parse(body)  # type: ignore[attr-defined]
    # Sections start at each heading of the top level the notes use.
    levels = [int(t.tag[1:]) for t in tokens if t.type == "heading_open"]
    top = min(levels) if levels else 1
    images = _Images(path)
    chunks: list[tuple[str, list[object]]] = [("", [])]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open" and int(token.tag[1:]) == top:
            title = tokens[i + 1].content if i + 1 < len(tokens) else ""
            chunks.append((title, []))
            i += 3   # heading_open, inline, heading_close
            continue
        chunks[-1][1].append(token)
        i += 1
    sections: list[NotesSection] = []
    for title, toks in chunks:
        if not title and not toks:
            continue
        place = _place(title) if title else "intro"
        sections.append({"title": title, "place": place, "anchor": f"notes-{len(sections) + 1}",
                         "html": _render(renderer, toks, images, shift=3 - top)})
    statements: list[Statement] = [{"key": key, "label": label, "text": value}
                                   for key, (label, value) in front.items() if key not in HEAD_KEYS]
    affiliation = front.get("affiliation") or front.get("course")
    return {"file": path.name, "lang": lang,
            "title": front["title"][1] if "title" in front else None,
            "authors": front["authors"][1] if "authors" in front else None,
            "affiliation": affiliation[1] if affiliation else None,
            "date": front["date"][1] if "date" in front else None,
            "statements": statements, "sections": sections}


def load_notes(files: Sequence[Path], langs: Sequence[str]) -> dict[str, Notes | None]:
    """Every report language's notes (None where no file serves it). Every file is read and
    checked, whichever language it serves, so a bad file fails before anything is written."""
    chosen = assign(files, langs)
    out: dict[str, Notes | None] = {}
    for lang in langs:
        item = chosen[lang]
        out[lang] = load(item.path, lang) if item is not None else None
    # files no report language uses are still checked
    used = {item.path for item in chosen.values() if item is not None}
    for f in files:
        if Path(f) not in used:
            load(Path(f), "en")
    return out
