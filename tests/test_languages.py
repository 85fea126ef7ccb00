"""A language is data: its folder under templates/i18n (catalogs + language.toml); class-name
translations are one {language: names} table in the config and the checkpoint meta, and
older configs and checkpoints are read into it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xreport import artifacts, charts, config, languages, render, runs
from xreport.errors import CheckpointError, ConfigError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"


@pytest.fixture
def templates_with(tmp_path, monkeypatch):
    """The built-in templates copied, plus a language folder made from another one."""
    root = tmp_path / "templates"
    shutil.copytree(languages.templates_root(), root)

    def add(code: str, *, like: str, toml: str) -> None:
        folder = root / "i18n" / code
        shutil.copytree(root / "i18n" / like, folder)
        (folder / "language.toml").write_text(toml, encoding="utf-8")
        languages._registry.cache_clear()

    monkeypatch.setattr(languages, "templates_root", lambda: root)
    languages._registry.cache_clear()
    yield add
    languages._registry.cache_clear()


def test_the_built_in_languages_come_from_their_folders():
    assert languages.codes() == ("en", "zh-TW", "zh-CN")
    assert [languages.language(c).word_spacing for c in languages.codes()] == [True, False, False]
    assert languages.language("zh-TW").css_fonts == '"Noto Sans CJK TC", sans-serif'
    assert languages.labels()["zh-CN"] == "简体中文"
    with pytest.raises(Exception, match="'fr' is not one of en, zh-TW, zh-CN"):
        languages.language("fr")


def test_a_new_language_is_its_folder(templates_with):
    templates_with("ja", like="zh-TW", toml='label = "日本語"\norder = 4\nword_spacing = false\n'
                                          'fonts = ["Noto Sans CJK JP"]\n')
    templates_with("fr", like="en", toml='label = "Français"\norder = 5\nword_spacing = true\n'
                                         'fonts = ["DejaVu Sans", "Noto Sans CJK JP"]\n')
    assert languages.codes()[:5] == ("en", "zh-TW", "zh-CN", "ja", "fr")
    # No space around a class name in a language that sets none; kept in one that does.
    templates_with("xy", like="zh-TW", toml='label = "XY"\norder = 6\nword_spacing = true\nfonts = []\n')
    # The same catalog text: no space around a class name where the language sets none.
    words = {"cls": "甲", "recall": "0.9", "precision": "0.5"}
    assert "預測為甲" in render.translator("ja")("discussion.leans_towards", **words)
    assert "預測為 甲" in render.translator("xy")("discussion.leans_towards", **words)
    assert languages.language("ja").css_fonts == '"Noto Sans CJK JP", sans-serif'
    assert charts.font_families("ja")[0] == "Noto Sans CJK JP" or not charts.has_cjk_font()
    from report_fixture import shared_run

    _, context = shared_run()
    html = render.render_html(context, langs=["fr", "ja"])
    assert 'id="lang-fr"' in html and "日本語" in html and "Français" in html


def test_a_broken_language_file_is_one_line(templates_with):
    templates_with("xx", like="en", toml='label = "X"\norder = "first"\nword_spacing = true\nfonts = []\n')
    with pytest.raises(Exception, match=r"xx/language.toml: label must be a string, order a whole number"):
        languages.codes()


def test_class_name_translations_are_one_table_in_the_config():
    cfg = config.from_dict({"data": {"class_names": ["a", "b"],
                                     "class_names_i18n": {"zh-TW": ["甲", "乙"], "zh-CN": ["甲", "乙"]}}})
    assert cfg.data.class_names_i18n == {"zh-TW": ("甲", "乙"), "zh-CN": ("甲", "乙")}
    again = config.from_dict(config.to_dict(cfg))
    assert again == cfg and "[data.class_names_i18n]" in config.to_toml(cfg)


def test_an_older_config_is_read_into_the_table():
    old = {"data": {"class_names": ["a", "b"], "class_names_zh_tw": ["甲", "乙"], "class_names_zh_cn": []}}
    assert config.from_dict(old).data.class_names_i18n == {"zh-TW": ("甲", "乙")}
    clash = {"data": {"class_names_zh_tw": ["甲", "乙"], "class_names_i18n": {"zh-TW": ["丙", "乙"]}}}
    with pytest.raises(ConfigError, match="disagree"):
        config.from_dict(clash)
    # The committed fixture runs were written with the older keys.
    fixture = config.load(FIXTURES / "fixture_binary" / "config.toml")
    assert fixture.data.class_names_i18n == {"zh-TW": ("正常", "病灶"), "zh-CN": ("正常", "病灶")}


def test_an_older_checkpoint_meta_is_migrated_on_load():
    # fixture_binary/best.pt was written before the table: class_names_zh_tw / _zh_cn keys.
    raw = runs.load_checkpoint(FIXTURES / "fixture_binary" / "best.pt").meta
    assert "class_names_zh_tw" in raw and "class_names_i18n" not in raw
    meta = artifacts.load_checkpoint_meta(FIXTURES / "fixture_binary" / "best.pt")
    assert meta["class_names_i18n"] == {"zh-TW": ["正常", "病灶"], "zh-CN": ["正常", "病灶"]}
    assert "class_names_zh_tw" not in meta and "class_names_zh_tw" not in meta["config"]["data"]
    assert config.from_dict(meta["config"]).data.class_names_i18n["zh-CN"] == ("正常", "病灶")
    assert artifacts.class_names_in(meta, "zh-TW") == ["正常", "病灶"]
    assert artifacts.class_names_in(meta, "en") == meta["class_names"]
    # A meta without translations at all (older still) reads as an empty table.
    bare = {k: v for k, v in raw.items() if not k.startswith("class_names_zh")}
    assert artifacts.check_checkpoint_meta(bare, path=Path("x.pt"))["class_names_i18n"] == {}
    with pytest.raises(CheckpointError, match="x.pt"):
        artifacts.check_checkpoint_meta({**raw, "class_names_i18n": {"zh-TW": ["A", "B"]}}, path=Path("x.pt"))
