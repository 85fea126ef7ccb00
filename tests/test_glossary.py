"""One glossary per language (issue 20): every string of a Chinese catalog writes each term
the one way its glossary says, and class names and Latin words sit in Chinese text by one
spacing rule."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from xreport import languages, render

I18N = languages.templates_root() / "i18n"
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def glossary(lang: str) -> dict[str, dict]:
    return json.loads((I18N / lang / render.GLOSSARY_FILE).read_text(encoding="utf-8"))


def strings(lang: str) -> list[tuple[str, str]]:
    """(key, text) of every catalog string of ``lang``, placeholders removed (``{epoch}`` is a
    parameter's name, not a word of the text)."""
    out = []
    for path in render._catalog_paths(I18N / lang):
        for key, text in json.loads(path.read_text(encoding="utf-8")).items():
            out.append((f"{path.name}:{key}", re.sub(r"\{[^{}]*\}", "{}", text)))
    return out


def _without_glosses(text: str, english: str, use: str) -> str:
    """Drop "rendering (English)" glosses: the English term may follow its rendering in brackets."""
    pattern = re.compile(r"\s?[（(]\s*" + re.escape(english) + r"[-\w ]*[）)]", re.IGNORECASE)
    kept, last = [], 0
    for m in pattern.finditer(text):
        if use in text[max(0, m.start() - len(use) - 4):m.start()]:
            kept.append(text[last:m.start()])
            last = m.end()
    return "".join(kept) + text[last:]


@pytest.mark.parametrize("lang", ["zh-TW", "zh-CN"])
def test_every_catalog_string_uses_the_glossary(lang: str) -> None:
    terms = glossary(lang)
    assert {"macro", "epoch", "bootstrap", "pointing game"} <= set(terms)
    found = []
    for key, text in strings(lang):
        for english, entry in terms.items():
            for wrong in entry["avoid"]:
                if wrong in text:
                    found.append(f"{key}: {wrong!r} instead of {entry['use']!r}")
            rest = _without_glosses(text, english, entry["use"])
            if re.search(r"(?<![A-Za-z])" + re.escape(english) + r"(?![A-Za-z])", rest, re.IGNORECASE):
                found.append(f"{key}: English {english!r} in running text (write {entry['use']!r})")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("lang", ["zh-TW", "zh-CN"])
def test_every_glossary_term_is_used(lang: str) -> None:
    text = " ".join(t for _, t in strings(lang))
    assert all(entry["use"] in text for entry in glossary(lang).values())


def test_the_glossary_is_not_a_catalog() -> None:
    assert "macro" not in render.load_catalog("zh-TW")


@pytest.mark.parametrize("lang", ["zh-TW", "zh-CN"])
def test_latin_and_han_are_spaced_by_one_rule(lang: str) -> None:
    # Catalog text: a space between a Han character and a Latin letter or digit.
    bad = [(k, t) for k, t in strings(lang)
           if re.search(r"[\u3400-\u4dbf\u4e00-\u9fff][A-Za-z0-9]|[A-Za-z0-9][\u3400-\u4dbf\u4e00-\u9fff]", t)]
    assert not bad, bad[:5]
    # Class names follow the same rule by their own first and last characters.
    t = render.translator(lang)
    latin = t("discussion.leans_towards_argmax", cls="EOSINOPHIL", recall=0.8, precision=0.7)
    assert not re.search(r"[\u4e00-\u9fff]EOSINOPHIL|EOSINOPHIL[\u4e00-\u9fff]", latin), latin
    han = t("discussion.leans_towards_argmax", cls="第6級", recall=0.8, precision=0.7)
    assert " 第6級" not in han and "第6級 " not in han, han


def test_chinese_lists_are_joined_with_the_enumeration_comma() -> None:
    assert render.translator("zh-TW")("list.sep") == render.translator("zh-CN")("list.sep") == "、"
    assert render.translator("en")("list.sep") == ", "
