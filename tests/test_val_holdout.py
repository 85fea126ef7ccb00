"""A source without a val split: val is held out of train, the same images every time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xreport import artifacts, build, runs
from xreport.config import DataConfig, PreprocessConfig
from xreport.data import class_distribution, load_dataset
from xreport.data.base import Split, hold_out_val
from xreport.errors import DataError

from test_data_files import make_folder


def split_of(labels: list[int]) -> Split:
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return Split("train", images, torch.tensor(labels), [f"img{i}" for i in range(n)])


def test_hold_out_is_stratified_disjoint_and_keeps_one_of_each_class() -> None:
    labels = [0] * 50 + [1] * 20 + [2] * 3 + [3] * 1
    train, val = hold_out_val(split_of(labels), 0.1, 4)
    assert val.class_counts(4) == [5, 2, 1, 0]          # round(10%), at least 1, a lone image stays
    assert train.class_counts(4) == [45, 18, 2, 1]
    assert not set(train.ids) & set(val.ids) and len(train) + len(val) == len(labels)
    for part in (train, val):                           # ids, labels and pixels still belong together
        index = [int(i[3:]) for i in part.ids]
        assert part.labels.tolist() == [labels[i] for i in index]
        assert part.images[:, 0, 0, 0].tolist() == index
    again_train, again_val = hold_out_val(split_of(labels), 0.1, 4)
    assert again_val.ids == val.ids and again_train.ids == train.ids
    _t, two = hold_out_val(split_of([0, 0, 1, 1]), 0.4, 2)
    assert two.class_counts(2) == [1, 1]                # never the last image of a class


def test_folder_without_val_gets_one_from_train_and_reports_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr", splits=("train", "test"), per_class=10)
    cfg = DataConfig(dataset=str(root))
    ds = load_dataset(cfg, PreprocessConfig(), image_size=16)
    assert list(ds.splits) == ["train", "val", "test"] and ds.val_held_out == 0.1
    assert ds.splits["val"].class_counts(2) == [1, 1] and ds.splits["train"].class_counts(2) == [9, 9]
    assert all(i.startswith("train/") for i in ds.splits["val"].ids)
    assert not set(ds.splits["val"].ids) & set(ds.splits["train"].ids)
    # Asked for val alone (evaluate --split val), the same images come back.
    only_val = load_dataset(cfg, PreprocessConfig(), image_size=16, splits=("val",))
    assert list(only_val.splits) == ["val"] and only_val.splits["val"].ids == ds.splits["val"].ids
    assert class_distribution(ds)["val_held_out"] == 0.1
    with_val = load_dataset(DataConfig(dataset=str(make_folder(tmp_path / "full"))), PreprocessConfig(),
                            image_size=16)
    assert with_val.val_held_out is None and class_distribution(with_val)["val_held_out"] is None


def test_too_small_train_split_says_to_add_a_val_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr", splits=("train", "test"), per_class=1)
    with pytest.raises(DataError, match="too small to hold one out.*add a val split"):
        load_dataset(DataConfig(dataset=str(root)), PreprocessConfig(), image_size=16)


def test_npz_without_val_arrays_gets_a_val_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "noval.npz"
    np.savez(path, train_images=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
             train_labels=np.repeat([0, 1], 20).reshape(-1, 1),
             test_images=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
             test_labels=np.array([0, 1, 0, 1, 0, 1]).reshape(-1, 1))
    ds = load_dataset(DataConfig(dataset=str(path)), PreprocessConfig(), image_size=8, splits=("train", "val"))
    assert ds.splits["val"].class_counts(2) == [2, 2] and len(ds.splits["train"]) == 36


def test_older_class_distribution_without_the_field_loads(tmp_path: Path) -> None:
    paths = runs.RunPaths("old", checkpoints_root=tmp_path)
    paths.run_dir.mkdir(parents=True)
    runs.write_json(paths.class_distribution, {"class_names": ["a", "b"], "splits": {"train": [3, 4]}})
    loaded = artifacts.load_class_distribution(paths)
    assert loaded is not None and loaded["val_held_out"] is None


def test_train_on_a_folder_without_val_records_the_hold_out(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from xreport.cli import main

    root = make_folder(tmp_path / "noval", splits=("train", "test"), per_class=10)
    assert main(["train", "--dataset", str(root), "--image-size", "16", "--epochs", "1",
                 "--batch-size", "8", "--max-steps", "1", "--name", "nv",
                 "--checkpoints", str(tmp_path / "checkpoints")]) == 0
    dist = artifacts.load_class_distribution(runs.RunPaths("nv", checkpoints_root=tmp_path / "checkpoints"))
    assert dist is not None and dist["val_held_out"] == 0.1 and dist["splits"]["val"] == [1, 1]


def test_the_report_says_val_was_held_out(tmp_path: Path) -> None:
    from report_fixture import make_run
    from xreport import render

    paths = make_run(tmp_path)
    dist = artifacts.load_class_distribution(paths)
    assert dist is not None and dist["val_held_out"] is None
    html = render.render_html(build.report_context(paths, langs=["en"]), langs=["en"])
    assert "held out at random as val" not in html
    runs.write_json(paths.class_distribution, {**dist, "val_held_out": 0.15})
    ctx = build.report_context(paths, langs=["en", "zh-TW", "zh-CN"])
    html = render.render_html(ctx, langs=["en", "zh-TW", "zh-CN"])
    assert "15.0% of each train class was held out at random as val" in html
    assert "每個類別的訓練影像隨機保留 15.0% 作為驗證集" in html
    assert "每个类别的训练图像随机保留 15.0% 作为验证集" in html


def test_the_recipe_probe_counts_the_val_images_that_will_be_held_out(tmp_path: Path) -> None:
    from xreport.data import probe_source

    no_val = make_folder(tmp_path / "noval", splits=("train", "test"), per_class=10)
    assert probe_source(DataConfig(dataset=str(no_val))).n_val == 2
    full = make_folder(tmp_path / "full", per_class=3)
    assert probe_source(DataConfig(dataset=str(full))).n_val == 6


def test_a_plain_npy_named_npz_is_refused_by_the_reader_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    np.save(tmp_path / "fake.npy", np.zeros((4, 8, 8), np.uint8))
    (tmp_path / "fake.npy").rename(path)
    with pytest.raises(DataError, match="not a .npz archive"):
        load_dataset(DataConfig(dataset=str(path)), PreprocessConfig(), image_size=8)
