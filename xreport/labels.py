"""Short class labels for charts and table headers: the one owner of how a long class name
is shortened, so that every chart, axis, legend and column head names a class the same way
and no two classes ever share a label.

A name that fits is shown whole. A longer one keeps its first words and, when those are
shared with another class, the words that tell it apart (``"Solitary pulmonary…left upper
lobe"``); when no such form fits, the classes get letter keys (``"A"``, ``"B"`` …, which
cannot be mistaken for the grade numbers that ordinal names often carry). Wherever a label
differs from the full name, :func:`label_key` gives the (label, full name) rows the report
prints beside the figure. Widths count East Asian wide characters twice, as they print.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

ELLIPSIS = "…"
# A chart label (legend entry, axis tick, example-row label): about a third of A4's text width
# at the charts' legend size.
CHART_WIDTH = 30
# A column head of a wide table (the confusion matrix beyond four classes).
COLUMN_WIDTH = 10


def text_width(text: str) -> int:
    """Printed width in half-width cells: CJK (wide/full-width) characters count 2."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _head(text: str, width: int) -> str:
    """The longest start of ``text`` of at most ``width`` cells."""
    out, used = [], 0
    for ch in text:
        used += text_width(ch)
        if used > width:
            break
        out.append(ch)
    return "".join(out)



# A word ends at a space or a separator (ASCII or full-width), so "第0級－…" splits like
# "Grade 0 - …"; the separator stays with the word before it.
_SEP = r"\s\-–—:：－、,，;；/()（）"
_WORD = re.compile(rf"[^{_SEP}]+[{_SEP}]*|[{_SEP}]+")
_STRIP = " -–—:：－、,，;；/·(（"


def _words(name: str) -> list[str]:
    return _WORD.findall(name)


def _join(words: Sequence[str]) -> str:
    return "".join(words).rstrip(_STRIP)


def _shortest_unique_prefix(names: Sequence[str], i: int) -> str:
    """The fewest leading words of ``names[i]`` that no other name starts with (the whole
    name when every shorter start is shared)."""
    words = _words(names[i])
    others = [_words(other) for j, other in enumerate(names) if j != i]
    for n in range(1, len(words) + 1):
        start = _join(words[:n])
        if start and not any(_join(theirs[:n]) == start for theirs in others):
            return start
    return names[i]


def _whole_words(words: Sequence[str], width: int) -> str:
    """As many leading words as fit in ``width`` cells (the first one cut when none fits)."""
    out = ""
    for k in range(1, len(words) + 1):
        candidate = _join(words[:k])
        if text_width(candidate) > width:
            break
        out = candidate
    return out or _head(_join(words[:1]), width)


def _cut(name: str, width: int) -> str:
    """``name`` cut to ``width`` cells with an ellipsis, between words where it can be."""
    if text_width(name) <= width:
        return name
    return _whole_words(_words(name), width - 1) + ELLIPSIS


def _elide(name: str, width: int, tail_from: int) -> str:
    """Head and tail of ``name`` with an ellipsis between; the tail starts at word index
    ``tail_from`` (the first word that differs from the names it is confused with)."""
    words = _words(name)
    if tail_from == 0:
        return _cut(name, width)
    # The first word stays whole (up to a third of the label), the tail gets the rest.
    first = _whole_words(words[:1], width // 3)
    tail = "".join(words[tail_from:]).strip()
    room = width - 1 - text_width(first)
    if text_width(tail) > room:
        tail = _whole_words(_words(tail), room - 1) + ELLIPSIS
    head = _whole_words(words[:tail_from], width - 1 - text_width(tail))
    return head + ELLIPSIS + tail


def _first_difference(names: Sequence[str], i: int) -> int:
    """Index of the first word of ``names[i]`` where it differs from every name that shares
    its start (0 when it shares none)."""
    words = _words(names[i])
    best = 0
    for j, other in enumerate(names):
        if j == i:
            continue
        theirs = _words(other)
        k = 0
        while k < min(len(words), len(theirs)) and words[k].rstrip(_STRIP) == theirs[k].rstrip(_STRIP):
            k += 1
        best = max(best, k)
    return min(best, max(len(words) - 1, 0))


def letter_keys(n: int) -> list[str]:
    """A, B, … Z, AA, AB, …: keys that no class name with grade numbers is confused with."""
    letters = string.ascii_uppercase
    keys = []
    for i in range(n):
        key, k = "", i
        while True:
            key = letters[k % 26] + key
            k = k // 26 - 1
            if k < 0:
                break
        keys.append(key)
    return keys


def short_labels(names: Sequence[str], width: int = CHART_WIDTH) -> list[str]:
    """One label per class, each at most ``width`` cells wide and all different.

    Names that fit are kept whole; a long name keeps its first words (cut at ``width``) and,
    when that start is shared, the words that tell it apart after an ellipsis. When even that
    leaves two labels alike (or a name is blank or repeated), every class gets a letter key.
    """
    names = [str(n) for n in names]
    if all(text_width(n) <= width for n in names) and len(set(names)) == len(names):
        return names
    labels: list[str] = []
    for i, name in enumerate(names):
        if text_width(name) <= width:
            labels.append(name)
            continue
        prefix = _shortest_unique_prefix(names, i)
        if text_width(prefix) <= width - 1:
            cut = _cut(name, width)
            labels.append(cut if cut.startswith(prefix) else prefix + ELLIPSIS)
            continue
        labels.append(_elide(name, width, _first_difference(names, i)))
    if len(set(labels)) == len(labels) and all(label.strip(ELLIPSIS + " ") for label in labels):
        return labels
    return letter_keys(len(names))


def column_labels(names: Sequence[str], width: int = COLUMN_WIDTH) -> list[str]:
    """Column heads for a wide table: the class names when they fit, else each name's shortest
    distinguishing first words (``"Grade 0"`` for ``"Grade 0 - no visible abnormality"``)
    when those fit, else letter keys. Row ``k`` of the table carries the same label."""
    names = [str(n) for n in names]
    if all(text_width(n) <= width for n in names) and len(set(names)) == len(names):
        return names
    prefixes = [_shortest_unique_prefix(names, i) for i in range(len(names))]
    if (all(text_width(p) <= width for p in prefixes) and len(set(prefixes)) == len(prefixes)
            and all(p.strip() for p in prefixes)):
        return prefixes
    return letter_keys(len(names))


def size_text(width: int, height: int) -> str:
    """An image size as every table, chart and caption writes it: width × height."""
    return f"{int(width)} × {int(height)}"


def label_key(names: Sequence[str], labels: Sequence[str]) -> list[tuple[str, str]]:
    """The (label, full name) rows for the classes whose label is not their full name."""
    return [(label, name) for label, name in zip(labels, names) if label != name]
