from __future__ import annotations

from pathlib import Path

import pytest

from xreport import config as cfg
from xreport.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_round_trip_through_toml(tmp_path):
    original = cfg.RunConfig()
    path = write(tmp_path, cfg.to_toml(original))
    assert cfg.load(path) == original


def test_every_default_is_written_out():
    text = cfg.to_toml(cfg.RunConfig())
    for section in ("[data]", "[preprocess]", "[augment]", "[model]", "[train]"):
        assert section in text
    assert "label_smoothing" in text and "phantom_seed" in text


def test_overrides_win_over_file(tmp_path):
    path = write(tmp_path, 'name = "a"\n[train]\nepochs = 3\nlr = 0.01\n')
    loaded = cfg.load(path, overrides={"train.epochs": 7, "name": "b", "train.lr": None})
    assert loaded.train.epochs == 7 and loaded.name == "b" and loaded.train.lr == 0.01


def test_int_is_accepted_for_float():
    assert cfg.from_dict({"train": {"lr": 1}}).train.lr == 1.0


@pytest.mark.parametrize("text, needle", [
    ('[train]\nepochz = 3\n', "unknown key 'epochz'"),
    ('[train]\nepochs = "ten"\n', "train.epochs"),
    ('[train]\nepochs = -1\n', "train.epochs must be at least 1"),
    ('[model]\narch = "vgg16"\n', "vgg16"),
    ('[train]\noptimizer = "lion"\n', "adamw"),
    ('colour = "red"\n', "unknown key 'colour'"),
    ('[train]\nepochs = true\n', "whole number"),
    ('train = 3\n', "must be a table"),
    ('[train\n', "not valid TOML"),
])
def test_bad_configs_name_the_file_and_the_problem(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    message = str(info.value)
    assert needle in message and str(path) in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfg.load(tmp_path / "absent.toml")


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files, "configs/ holds example run configs"
    for path in files:
        cfg.load(path)
