"""MedMNIST .npz adapter: shapes, validation, lookup by name, and the real PneumoniaMNIST."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from xreport.config import DataConfig, PreprocessConfig
from xreport.data import load_dataset, resolve_source
from xreport.data.medmnist import CLASS_NAMES, CLASS_NAMES_ZH_CN, CLASS_NAMES_ZH_TW
from xreport.data.preprocess import preprocess_image
from xreport.errors import DataError, OfflineError

REPO = Path(__file__).resolve().parents[1]


def write_npz(path: Path, *, n: tuple[int, int, int] = (12, 4, 6), size: int = 28, rgb: bool = False,
              flat_labels: bool = False, classes: int = 2, seed: int = 0, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = (np.arange(count) % classes).astype(np.uint8)
        arrays[f"{split}_labels"] = labels if flat_labels else labels[:, None]
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def load(path: Path, *, image_size: int = 32, **data: object):
    return load_dataset(DataConfig(dataset=str(path), **data), PreprocessConfig(), image_size=image_size)


def test_grey_npz_with_column_labels(tmp_path: Path) -> None:
    ds = load(write_npz(tmp_path / "pneumoniamnist.npz"))
    assert ds.kind == "medmnist" and ds.name == "pneumoniamnist"
    assert ds.class_names == ["normal", "pneumonia"] and ds.task == "binary"
    train = ds.splits["train"]
    assert train.images.shape == (12, 1, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1] * 6
    assert ds.original_size == (28, 28) and ds.original_channels == 1
    import hashlib
    assert ds.fingerprint == hashlib.sha256((tmp_path / "pneumoniamnist.npz").read_bytes()).hexdigest()


def test_rgb_npz_with_flat_labels_and_unknown_name(tmp_path: Path) -> None:
    ds = load(write_npz(tmp_path / "mystuff.npz", rgb=True, flat_labels=True, classes=3))
    assert ds.splits["val"].images.shape == (4, 3, 32, 32)
    assert ds.class_names == ["class_0", "class_1", "class_2"] and ds.task == "multiclass"
    assert ds.splits["test"].labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_retinamnist_is_ordinal_and_config_names_override(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "retinamnist_64.npz", size=64, classes=5)
    ds = load(path)
    assert ds.name == "retinamnist" and ds.task == "ordinal" and ds.class_names == CLASS_NAMES["retinamnist"]
    named = load(path, class_names=("a", "b", "c", "d", "e"))
    assert named.class_names == ["a", "b", "c", "d", "e"]
    with pytest.raises(DataError, match="class_names has 2 names"):
        load(path, class_names=("a", "b"))


def test_vectorised_resize_matches_the_per_image_pipeline(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "x.npz")
    ds = load(path, image_size=64)
    raw = np.load(path)["train_images"]
    for i in (0, 5):
        one = preprocess_image(raw[i], PreprocessConfig(), 64)
        assert np.array_equal(ds.splits["train"].images[i, 0].numpy(), one)


@pytest.mark.parametrize("override, message", [
    ({"val_labels": None}, "'val_labels' is missing"),
    ({"test_labels": np.zeros((5, 1), np.uint8)}, "6 images but 'test_labels' has 5"),
    ({"train_labels": np.full((12, 1), 7, np.uint8)}, r"labels in 7..7; valid range is 0..1"),
    ({"train_images": np.full((12, 28, 28), -1.0, np.float32)}, r"float pixels in -1..-1; expected \[0, 1\]"),
    ({"train_labels": np.zeros((12, 14), np.uint8)}, "multi-label"),
    ({"train_images": np.zeros((12, 4, 28, 28, 1), np.uint8)}, "3D MedMNIST"),
])
def test_invalid_files_name_the_file_and_key(tmp_path: Path, override: dict, message: str) -> None:
    arrays = {k: v for k, v in override.items() if v is not None}
    path = write_npz(tmp_path / "pneumoniamnist.npz", **arrays)
    if any(v is None for v in override.values()):
        data = dict(np.load(path))
        for key in override:
            data.pop(key)
        np.savez(path, **data)
    with pytest.raises(DataError, match=message) as info:
        load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_not_an_npz(tmp_path: Path) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="broken.npz"):
        load(bad)


def test_lookup_by_name_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XREPORT_DATA_DIR", str(tmp_path))
    write_npz(tmp_path / "breastmnist_64.npz", size=64)
    write_npz(tmp_path / "breastmnist_128.npz", size=128)
    kind, path = resolve_source(DataConfig(dataset="breastmnist"), image_size=100)
    assert kind == "medmnist" and path == str((tmp_path / "breastmnist_128.npz").resolve())
    ds = load_dataset(DataConfig(dataset="BreastMNIST"), PreprocessConfig(), image_size=64, splits=("test",))
    assert ds.source.endswith("breastmnist_64.npz") and ds.class_names == ["malignant", "normal, benign"]
    assert list(ds.splits) == ["test"]


def test_missing_named_set_is_offline_error_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XREPORT_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OfflineError) as info:
        resolve_source(DataConfig(dataset="dermamnist"))
    message = str(info.value)
    assert "dermamnist.npz" in message and str(tmp_path) in message and "\n" not in message


def test_unknown_name_and_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XREPORT_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="not a known MedMNIST 2D set.*pneumoniamnist"):
        resolve_source(DataConfig(dataset="nosuchmnist"))
    with pytest.raises(DataError, match="no such file"):
        resolve_source(DataConfig(dataset=str(tmp_path / "absent.npz")))
    with pytest.raises(DataError, match="multi-label"):
        resolve_source(DataConfig(dataset="chestmnist"))


def test_missing_requested_split_and_bad_split_name(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "x.npz")
    with pytest.raises(DataError, match="choose from train, val, test"):
        load_dataset(DataConfig(dataset=str(path)), PreprocessConfig(), image_size=32, splits=("dev",))


def _real_data() -> Path:
    for folder in (os.environ.get("XREPORT_DATA_DIR"), REPO.parent / "shared" / "data"):
        if folder and (Path(folder) / "pneumoniamnist.npz").is_file():
            return Path(folder)
    pytest.skip("pneumoniamnist.npz not found in $XREPORT_DATA_DIR or ../shared/data")


@pytest.mark.slow
def test_real_pneumoniamnist_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XREPORT_DATA_DIR", str(_real_data()))
    start = time.perf_counter()
    ds = load_dataset(DataConfig(dataset="pneumoniamnist"), PreprocessConfig(), image_size=64)
    seconds = time.perf_counter() - start
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert ds.splits["train"].class_counts(2) == [1214, 3494]
    assert ds.splits["val"].class_counts(2) == [135, 389]
    assert ds.splits["test"].class_counts(2) == [234, 390]
    assert ds.splits["train"].images.shape == (4708, 1, 64, 64)
    assert ds.task == "binary" and ds.class_names == ["normal", "pneumonia"]
    assert seconds < 10, f"loading took {seconds:.1f} s"   # ~1 s on an idle machine
    rgb = load_dataset(DataConfig(dataset="pneumoniamnist"), replace(PreprocessConfig(), to_rgb=True),
                       image_size=32, splits=("test",))
    assert rgb.splits["test"].images.shape == (624, 3, 32, 32)


# ---------------------------------------------------------------- class names from MedMNIST

def test_every_known_set_has_named_classes_and_both_translations() -> None:
    for name, names in CLASS_NAMES.items():
        assert len(set(names)) == len(names) and not any(n.startswith("class_") for n in names), name
        for table in (CLASS_NAMES_ZH_TW, CLASS_NAMES_ZH_CN):
            assert len(table[name]) == len(names), name
    assert CLASS_NAMES["bloodmnist"][1] == "eosinophil" and CLASS_NAMES_ZH_TW["bloodmnist"][1] == "嗜酸性球"
    assert [n.split(":")[0] for n in CLASS_NAMES["retinamnist"]] == list("01234")


def test_medmnist_names_and_translations_reach_the_dataset(tmp_path: Path) -> None:
    ds = load(write_npz(tmp_path / "bloodmnist.npz", classes=8))
    assert ds.class_names == CLASS_NAMES["bloodmnist"]
    assert ds.class_names_i18n == {"zh-TW": CLASS_NAMES_ZH_TW["bloodmnist"], "zh-CN": CLASS_NAMES_ZH_CN["bloodmnist"]}
    renamed = load(write_npz(tmp_path / "pneumoniamnist.npz"), class_names=("N", "P"))
    # User names replace the table, so its translations (of other words) are dropped.
    assert renamed.class_names == ["N", "P"] and renamed.class_names_i18n == {}
