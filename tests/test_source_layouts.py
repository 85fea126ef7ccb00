"""Image folders in their sources' layouts: split-folder aliases in any case, class folders
named differently between splits (data.class_map, unambiguous prefixes), and the one-line
errors for what cannot be matched."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xreport.config import DataConfig, PreprocessConfig
from xreport.data import class_distribution, load_dataset
from xreport.data.base import match_classes
from xreport.errors import DataError


def image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((20, 20), value, dtype=np.uint8)
    arr[:10] = 255 - value
    Image.fromarray(arr).save(path)


def layout(root: Path, splits: dict[str, tuple[str, ...]], per_class: int = 3) -> Path:
    for s_i, (split, classes) in enumerate(splits.items()):
        for c_i, name in enumerate(classes):
            for k in range(per_class):
                image(root / split / name / f"{k}.png", 10 + 40 * c_i + 5 * k + s_i)
    return root


def load(root: Path, splits: tuple[str, ...] = ("train", "val", "test"), **data: object):
    return load_dataset(DataConfig(dataset=str(root), **data), PreprocessConfig(), image_size=16,
                        splits=splits)


def test_training_testing_without_val_loads_with_a_held_out_val(tmp_path: Path) -> None:
    root = layout(tmp_path / "mri", {"Training": ("glioma", "notumor"), "Testing": ("glioma", "notumor")},
                  per_class=5)
    ds = load(root)
    assert list(ds.splits) == ["train", "val", "test"] and ds.val_held_out is not None
    assert ds.splits["test"].ids[0] == "Testing/glioma/0.png"
    assert ds.class_names == ["glioma", "notumor"]


@pytest.mark.parametrize("names", [("TRAIN", "Valid", "Test"), ("training", "validation", "testing"),
                                   ("train", "dev", "test")])
def test_split_aliases_in_any_case(tmp_path: Path, names: tuple[str, str, str]) -> None:
    root = layout(tmp_path / "d", {n: ("a", "b") for n in names})
    ds = load(root)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 6, "val": 6, "test": 6}


def test_two_folders_for_one_split_are_refused(tmp_path: Path) -> None:
    root = layout(tmp_path / "d", {"train": ("a", "b"), "val": ("a", "b"), "valid": ("a", "b"),
                                   "test": ("a", "b")})
    with pytest.raises(DataError, match="folders val, valid all name the val split"):
        load(root)


def test_prefix_names_are_matched_and_said(tmp_path: Path) -> None:
    root = layout(tmp_path / "d", {"train": ("glioma", "meningioma"), "val": ("glioma", "meningioma"),
                                   "test": ("Glioma_tumor", "meningioma_tumor_stage2")})
    ds = load(root)
    assert ds.class_names == ["glioma", "meningioma"]
    assert ds.splits["test"].labels.tolist() == [0, 0, 0, 1, 1, 1]
    dist = class_distribution(ds)
    assert dist["splits"]["test"] == [3, 3]
    assert {(m["split"], m["folder"], m["class"], m["rule"]) for m in dist["class_matches"]} == {
        ("test", "Glioma_tumor", "glioma", "prefix"), ("test", "meningioma_tumor_stage2", "meningioma", "prefix")}


def test_class_map_renames_folders(tmp_path: Path) -> None:
    root = layout(tmp_path / "d", {"train": ("glioma", "notumor"), "val": ("glioma", "notumor"),
                                   "test": ("g1", "healthy")})
    ds = load(root, class_map={"g1": "glioma", "healthy": "notumor"})
    assert ds.splits["test"].labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert {m["rule"] for m in ds.class_matches} == {"class_map"}


@pytest.mark.parametrize(("splits", "class_map", "message"), [
    # "a" is a prefix of both "a1" and "a2"
    ({"train": ("a1", "a2"), "val": ("a1", "a2"), "test": ("a", "a2")}, {}, "'a' of test could be any of 'a1', 'a2'"),
    ({"train": ("x", "y"), "val": ("x", "y"), "test": ("x", "y")}, {"z": "x"}, "data.class_map names 'z'"),
    ({"train": ("x", "y"), "val": ("x", "y"), "test": ("x", "w")}, {"w": "q"}, "'q' of test are not classes of train"),
    ({"train": ("cat", "dog"), "val": ("cat", "dog"), "test": ("apple", "pear")}, {},
     "class folders differ between splits: .*test has apple, pear; train has cat, dog"),
])
def test_unmatched_class_folders_are_one_line_errors(tmp_path: Path, splits: dict, class_map: dict,
                                                     message: str) -> None:
    root = layout(tmp_path / "d", splits)
    with pytest.raises(DataError, match=message) as err:
        load(root, class_map=class_map)
    assert "\n" not in str(err.value)


def test_cli_exits_2_on_two_folders_for_one_split(tmp_path: Path) -> None:
    root = layout(tmp_path / "d", {"train": ("a", "b"), "test": ("a", "b"), "testing": ("a", "b")})
    done = subprocess.run([sys.executable, "-m", "xreport", "train", "--dataset", str(root),
                           "--checkpoints", str(tmp_path / "ck"), "--epochs", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "test, testing all name the test split" in done.stderr


def test_match_rule_is_shared_and_refuses_two_folders_on_one_class() -> None:
    notes: list = []
    assert match_classes(["pneumonia_viral", "NORMAL"], ["normal", "pneumonia"], where="x",
                         matches=notes) == [1, 0]
    assert [(n["folder"], n["class"], n["rule"]) for n in notes] == [
        ("pneumonia_viral", "pneumonia", "prefix"), ("NORMAL", "normal", "case")]
    with pytest.raises(DataError, match="'norm', 'normal_2' of the data all match 'normal'"):
        match_classes(["norm", "normal_2"], ["normal", "pneumonia"], where="x")


@pytest.mark.slow
def test_real_brain_mri_folder_loads_as_four_grey_classes_without_val() -> None:
    """The shared brain MRI set: Training/ + Testing/, grey scans partly saved as RGB."""
    from conftest import real_data_dir

    from xreport.data import folder, probe_source

    base = real_data_dir()
    if base is None or not (base / "brain_mri").is_dir():
        pytest.skip("real data absent: ../shared/data/brain_mri (or $XREPORT_DATA_DIR)")
    root = base / "brain_mri"
    scanned, names = folder.scan(root)
    assert names == ["glioma", "meningioma", "notumor", "pituitary"] and set(scanned) == {"train", "test"}
    assert (len(scanned["train"].files), len(scanned["test"].files)) == (5708, 1311)
    probe = probe_source(DataConfig(dataset=str(root)))
    assert probe.colour is False and probe.n_val == 571       # held out of train
    assert "stored as colour files" in probe.modality
