"""The phantom generator: determinism, classes, mask geometry, speed, and loading."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from xreport.config import DataConfig, PreprocessConfig
from xreport.data import load_dataset, phantom, raw_examples
from xreport.errors import DataError


def test_same_seed_same_pixels_other_seed_differs() -> None:
    a = phantom.generate(40, size=32, seed=3)
    b = phantom.generate(40, size=32, seed=3)
    c = phantom.generate(40, size=32, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_shapes_balanced_labels_and_masks() -> None:
    images, labels, masks = phantom.generate(200, size=48, seed=0)
    assert images.shape == (200, 1, 48, 48) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [100, 100]
    assert masks.shape == (200, 48, 48) and masks.dtype == bool
    assert not masks[labels == 0].any()                       # normal: empty masks
    assert masks[labels == 1].reshape(100, -1).any(axis=1).all()  # every lesion image has one
    area = masks[labels == 1].reshape(100, -1).mean(axis=1)
    assert area.max() < 0.1                                   # lesions are small
    # Lesions sit inside the thorax: none touches the image border.
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()


def test_lesions_are_brighter_than_their_surroundings() -> None:
    images, labels, masks = phantom.generate(300, size=64, seed=1)
    pos = labels == 1
    inside = images[pos, 0][masks[pos]].astype(float).mean()
    # Same pixels in normal images: the lesion adds intensity where the mask is.
    normal_same_place = images[~pos, 0][masks[pos][: (~pos).sum()]].astype(float).mean()
    assert inside > normal_same_place + 15


def test_looks_like_a_chest_film() -> None:
    images, _labels, _masks = phantom.generate(100, size=64, seed=2)
    mean = images[:, 0].astype(float).mean(axis=0)
    corners = mean[:4, :4].mean()
    lung = mean[28:36, 14:20].mean()         # a lung field, left of the midline
    mediastinum = mean[28:36, 30:34].mean()
    assert corners < lung < mediastinum       # dark background, dark lungs, bright middle
    # Random global contrast: image means vary.
    assert images.reshape(100, -1).mean(axis=1).std() > 5


def test_multiclass_and_ordinal() -> None:
    names, _ = phantom.class_specs(4, ordinal=False)
    assert names == ["normal", "nodule", "opacity", "effusion"]
    names7, _ = phantom.class_specs(7, ordinal=False)
    assert len(names7) == 7 and names7[1] == "nodule-right"
    with pytest.raises(DataError, match="more than the 7"):
        phantom.class_specs(8, ordinal=False)
    images, labels, masks = phantom.generate(250, size=48, classes=5, ordinal=True, seed=0)
    area = [masks[labels == g].reshape((labels == g).sum(), -1).sum(axis=1).mean() for g in range(5)]
    assert area[0] == 0 and all(a < b for a, b in zip(area, area[1:]))   # grade grows the lesions


def test_fast_enough() -> None:
    start = time.perf_counter()
    phantom.generate(1000, size=64, seed=0)
    assert time.perf_counter() - start < 8.0      # about 0.4 s on an idle 2-core machine; slack for busy CI


def test_load_resizes_images_and_masks_together() -> None:
    cfg = DataConfig(phantom_train=40, phantom_val=20, phantom_test=20, phantom_size=64)
    ds = load_dataset(cfg, PreprocessConfig(), image_size=32)
    assert ds.kind == "phantom" and ds.class_names == ["normal", "lesion"] and ds.task == "binary"
    train = ds.splits["train"]
    assert train.images.shape == (40, 1, 32, 32) and train.masks.shape == (40, 32, 32)
    full = phantom.generate(40, size=64, seed=_seed(cfg, "train"))
    down = full[2].reshape(40, 32, 2, 32, 2).mean(axis=(2, 4))
    assert (train.masks.numpy() == (down >= 0.5)).mean() > 0.99
    assert ds.fingerprint == load_dataset(cfg, PreprocessConfig(), image_size=64, splits=("test",)).fingerprint
    assert ds.fingerprint != load_dataset(replace(cfg, phantom_seed=9), PreprocessConfig(), image_size=32).fingerprint
    assert not np.array_equal(ds.splits["train"].images[:20].numpy(), ds.splits["val"].images.numpy())
    ordinal = load_dataset(replace(cfg, phantom_classes=3, phantom_ordinal=True), PreprocessConfig(), image_size=32)
    assert ordinal.task == "ordinal" and ordinal.class_names == ["grade_0", "grade_1", "grade_2"]


def test_raw_examples_are_the_unprocessed_train_images() -> None:
    cfg = DataConfig(phantom_train=30, phantom_size=48)
    examples = raw_examples(cfg, 2, seed=0)
    assert [label for _img, label in examples] == [0, 0, 1, 1]
    images, _labels, _ = phantom.generate(30, size=48, seed=_seed(cfg, "train"))
    assert all(any(np.array_equal(img, x[0]) for x in images) for img, _ in examples)


def _seed(cfg: DataConfig, split: str) -> int:
    from xreport.data import _phantom_seed
    return _phantom_seed(cfg.phantom_seed, split)
