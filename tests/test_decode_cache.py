"""Image files are decoded once: the cache is keyed by file content, preprocessing and size."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xreport.config import DataConfig, PreprocessConfig
from xreport.data import images as images_mod
from xreport.data import load_dataset


def cached_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, suffix: str,
                  image: Callable[[np.random.Generator, int], np.ndarray]) -> Path:
    """tmp_path/data: train and val, classes a and b, 3 files each (``image(rng, i)``), with
    the decode cache in tmp_path/cache and on for splits of 4 files or more."""
    monkeypatch.setenv(images_mod.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(images_mod, "CACHE_MIN_FILES", 4)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(image(rng, i)).save(tmp_path / "data" / split / cls / f"{i}{suffix}")
    return tmp_path / "data"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return cached_folder(tmp_path, monkeypatch, suffix=".jpg",
                         image=lambda rng, i: rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))


def load(root: Path, size: int = 24, **pre: object):
    return load_dataset(DataConfig(dataset=str(root)), PreprocessConfig(**pre), image_size=size,
                        splits=("train", "val"))


def _no_decoding(path: object, **kwargs: object) -> np.ndarray:
    raise AssertionError("decoded although cached")


def test_second_load_reads_the_cache_not_the_files(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(folder)
    assert len(list((folder.parent / "cache").glob("*.pt"))) == 2     # one per split
    monkeypatch.setattr(images_mod, "read_image", _no_decoding)
    second = load(folder)
    for split in ("train", "val"):
        assert torch.equal(first.splits[split].images, second.splits[split].images)
        assert first.splits[split].ids == second.splits[split].ids
    assert second.original_size == (40, 50) and second.original_channels == 3


def test_other_size_preprocessing_or_content_misses(folder: Path) -> None:
    load(folder)
    load(folder, size=16)
    load(folder, equalize=True)
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(folder / "train" / "a" / "0.jpg")
    changed = load(folder)
    assert len(list((folder.parent / "cache").glob("*.pt"))) == 2 + 2 + 2 + 1
    assert int(changed.splits["train"].images[0].max()) < 10


def test_off_and_damaged_cache_fall_back_to_decoding(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load(folder)
    for path in (folder.parent / "cache").glob("*.pt"):
        path.write_bytes(b"not a tensor file")
    assert load(folder).splits["train"].images.shape == (6, 3, 24, 24)
    monkeypatch.setenv(images_mod.CACHE_ENV, "off")
    assert images_mod.decode_cache_dir() is None


def test_a_grey_set_with_colour_stored_files_reads_its_cache(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Grey scans partly saved as RGB files (equal channels) are one grey set; the cached
    tensor has one channel although some files held three, and is read back, not re-decoded."""
    def grey_scan(rng: np.random.Generator, i: int) -> np.ndarray:
        grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
        if i:
            return grey
        # One RGB file per class, its channels a grey level apart at some pixels (as JPEG
        # leaves them): grey by content, three channels as read.
        jitter = (rng.random((40, 40)) < 0.1).astype(np.uint8)
        return np.stack([grey, grey ^ jitter, grey], axis=2)

    cached_folder(tmp_path, monkeypatch, suffix=".png", image=grey_scan)
    first = load(tmp_path / "data")
    assert first.splits["train"].images.shape[1] == 1
    monkeypatch.setattr(images_mod, "read_image", _no_decoding)
    monkeypatch.setattr(images_mod.logger, "warning", lambda *a, **k: pytest.fail(f"cache refused: {a}"))
    second = load(tmp_path / "data")
    assert torch.equal(first.splits["train"].images, second.splits["train"].images)
