"""Class sets across splits: inconsistent labels stop with one line naming the file, or (for a
class without training images) warn under the explicit data.allow_missing_classes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_reliability_inputs import SIZE, cli, image_folder, one_error, png, train_args


def _npz(path: Path, labels: dict[str, list[int]]) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, y in labels.items():
        arrays[f"{split}_images"] = rng.integers(0, 255, (len(y), SIZE, SIZE), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array(y, dtype=np.int64)[:, None]
    np.savez(path, **arrays)
    return path


def _csv_data(root: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    for split, items in rows.items():
        lines = ["path,label"]
        for name, label in items:
            if not (root / name).exists():
                png(root / name, seed=len(name) + hash(name) % 97)
            lines.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _toml(tmp_path: Path, dataset: Path, extra: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f'name = "c"\nimage_size = {SIZE}\n[data]\ndataset = "{dataset}"\n{extra}\n'
                    "[train]\nepochs = 1\nbatch_size = 4\nmax_steps = 1\n", encoding="utf-8")
    return path


def _train(capsys, tmp_path: Path, config: Path) -> tuple[int, str, str]:
    return cli(capsys, "train", "--config", str(config), "--checkpoints", str(tmp_path / "checkpoints"))


# ---------------------------------------------------------------- a class with no training images

def test_folder_class_without_training_images(tmp_path, capsys):
    data = image_folder(tmp_path / "data", classes=("a", "b", "c"))
    for p in (data / "train" / "c").iterdir():
        p.unlink()
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "'c'", "no training images", "allow_missing_classes")


def test_npz_test_labels_outside_the_train_classes(tmp_path, capsys):
    path = _npz(tmp_path / "d.npz", {"train": [0, 1, 0, 1], "val": [0, 1, 0, 1], "test": [0, 1, 2, 2]})
    rc, _, err = cli(capsys, *train_args(path, "c", tmp_path))
    one_error(rc, err, "d.npz", "class_2", "no training images")


def test_csv_val_label_outside_the_train_classes(tmp_path, capsys):
    data = _csv_data(tmp_path / "data", {"train": [("a0.png", "cat"), ("a1.png", "dog")],
                                         "val": [("v0.png", "cat"), ("v1.png", "bird")]})
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "'bird'", "no training images")


def test_allow_missing_classes_turns_it_into_a_warning(tmp_path, capsys, caplog):
    path = _npz(tmp_path / "d.npz", {"train": [0, 1, 0, 1, 0, 1], "val": [0, 1, 2, 2], "test": [0, 1, 2]})
    rc, _, err = _train(capsys, tmp_path, _toml(tmp_path, path, "allow_missing_classes = true"))
    assert rc == 0, err
    assert "no training images" in caplog.text


def test_a_train_split_with_one_class(tmp_path, capsys):
    path = _npz(tmp_path / "d.npz", {"train": [1, 1, 1, 1], "val": [0, 1, 0, 1], "test": [0, 1]})
    rc, _, err = cli(capsys, *train_args(path, "c", tmp_path))
    one_error(rc, err, "d.npz", "only class")


# ---------------------------------------------------------------- labels

def test_gaps_in_integer_npz_labels(tmp_path, capsys):
    path = _npz(tmp_path / "gap.npz", {"train": [0, 1, 7, 7], "val": [0, 1, 7, 0], "test": [0, 7]})
    rc, _, err = cli(capsys, *train_args(path, "c", tmp_path))
    one_error(rc, err, "gap.npz", "2, 3, 4, 5, 6")


@pytest.mark.parametrize("top", [1000, 10**9])
def test_a_huge_label_is_refused_before_it_sizes_anything(tmp_path, capsys, top):
    # A label of 10**9 (an id column read as labels) used to make a billion classes: OOM kill.
    path = _npz(tmp_path / "ids.npz", {"train": [0, 1, top, 1], "val": [0, 1], "test": [0, 1]})
    rc, _, err = cli(capsys, *train_args(path, "c", tmp_path))
    one_error(rc, err, "ids.npz", f"highest label, {top},", "at most 1000")


def test_a_huge_label_in_a_csv_is_refused(tmp_path, capsys):
    data = _csv_data(tmp_path / "data", {"train": [("a.png", "0"), ("b.png", "1"), ("c.png", "123456789")],
                                         "val": [("v0.png", "0"), ("v1.png", "1")]})
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "train.csv", "highest label, 123456789,", "at most 1000")


def test_the_same_image_twice_with_different_labels_in_one_csv(tmp_path, capsys):
    data = _csv_data(tmp_path / "data", {"train": [("a.png", "0"), ("b.png", "1"), ("a.png", "1")],
                                         "val": [("v0.png", "0"), ("v1.png", "1")]})
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "train.csv", "line 4", "a.png")


def test_the_same_image_in_two_splits_with_different_labels(tmp_path, capsys):
    data = _csv_data(tmp_path / "data", {"train": [("a.png", "0"), ("b.png", "1")],
                                         "val": [("a.png", "1"), ("v1.png", "0")]})
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "val.csv", "a.png", "train.csv")


def test_the_same_file_in_two_class_folders(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    (data / "train" / "b" / "dup.png").symlink_to(data / "train" / "a" / "0.png")
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "dup.png", "one image has one label")


# ---------------------------------------------------------------- class names

@pytest.mark.parametrize("extra, needle", [
    ('class_names = ["a", "a"]', "more than once"),
    ('class_names = ["a", "b"]\nclass_names_i18n = {zh-TW = ["甲"]}', "class_names_i18n.zh-TW has 1"),
    ('class_names = ["a", "b"]\nclass_names_i18n = {zh-CN = ["甲", "乙", "丙"]}', "class_names_i18n.zh-CN has 3"),
    ('class_names_i18n = {zh-TW = ["甲", "甲"]}', "more than once"),
    ('class_names_i18n = {zh_tw = ["甲", "乙"]}', "not a report language"),
    # The per-language keys of older configs are read as the table, and checked as it is.
    ('class_names = ["a", "b"]\nclass_names_zh_tw = ["甲"]', "class_names_i18n.zh-TW has 1"),
    ('class_names_zh_tw = ["甲", "乙"]\nclass_names_i18n = {zh-TW = ["丙", "乙"]}', "disagree"),
])
def test_bad_class_name_lists_in_the_config(tmp_path, capsys, extra, needle):
    data = image_folder(tmp_path / "data")
    rc, _, err = _train(capsys, tmp_path, _toml(tmp_path, data, extra))
    one_error(rc, err, "run.toml", needle)


def test_translations_of_the_wrong_length_for_the_data(tmp_path, capsys):
    data = image_folder(tmp_path / "data", classes=("a", "b", "c"))
    rc, _, err = _train(capsys, tmp_path, _toml(tmp_path, data, 'class_names_i18n = {zh-TW = ["甲", "乙"]}'))
    one_error(rc, err, "class_names_i18n.zh-TW has 2", "3 classes")


def test_a_class_name_column_naming_two_labels_alike(tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("train", "val"):
        lines = ["path,label,class_name"]
        for i, (label, name) in enumerate([(0, "x"), (1, "x")]):
            png(data / f"{split}{i}.png", seed=i)
            lines.append(f"{split}{i}.png,{label},{name}")
        (data / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc, _, err = cli(capsys, *train_args(data, "c", tmp_path))
    one_error(rc, err, "class_name 'x'")
