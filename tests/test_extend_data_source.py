"""A new data source is one class and one ``register_source`` line (docs/HOWTO-extend.md).

The toy source below lives in this file only: a JSON file of tiny inline images
(``{"xreport_toy": 1, "classes": [...], "train": [{"label": 0, "pixels": [[...]]}, ...]}``).
Once registered it is found from ``data.dataset`` alone, named by ``data.kind``, probed by the
auto recipe, loaded (with a held-out val split, as every source gets), and trained on through
the ordinary API, and no module of the package was edited for it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xreport import api
from xreport.config import DataConfig, PreprocessConfig, from_dict
from xreport.data import (SPLITS, Dataset, DataSource, Split, SourceProbe, load_dataset, probe_source,
                          raw_examples, register_source, registered_kinds, resolve_source, source_splits)
from xreport.data import sources as sources_mod
from xreport.data.preprocess import preprocess_stack
from xreport.data.sources import names_and_task, pick_per_class, require_splits
from xreport.errors import ConfigError, DataError
from xreport.recipe import resolve
from xreport.runs import load_checkpoint


class ToyJsonSource(DataSource):
    """Tiny grey images written inline in one JSON file."""

    kind = "toyjson"
    file_form = "a toy JSON file"

    def claims(self, path: Path) -> bool:
        if not (path.is_file() and path.suffix == ".json"):
            return False
        return "xreport_toy" in json.loads(path.read_text(encoding="utf-8"))

    def _read(self, source: str) -> dict:
        return json.loads(Path(source).read_text(encoding="utf-8"))

    def _arrays(self, raw: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray([r["pixels"] for r in raw[split]], dtype=np.uint8)[:, None]
        return images, np.asarray([r["label"] for r in raw[split]], dtype=np.int64)

    def splits(self, source: str) -> set[str]:
        return {s for s in SPLITS if s in self._read(source)}

    def load(self, source: str, data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *,
             image_size: int, splits: tuple[str, ...]) -> Dataset:
        raw = self._read(source)
        require_splits(splits, self.splits(source), source)
        names, task = names_and_task(data_cfg, list(raw["classes"]), where=source)
        out = {}
        for split in splits:
            images, labels = self._arrays(raw, split)
            x, _ = preprocess_stack(torch.from_numpy(images), preprocess_cfg, image_size)
            out[split] = Split(split, x, torch.from_numpy(labels), [f"{split}-{i}" for i in range(len(labels))])
        return Dataset(name=Path(source).stem, source=source, kind=self.kind, class_names=names, task=task,
                       splits=out, fingerprint=hashlib.sha256(Path(source).read_bytes()).hexdigest())

    def probe(self, source: str, data_cfg: DataConfig, *, sample: int) -> SourceProbe:
        raw = self._read(source)
        images, labels = self._arrays(raw, "train")
        names, task = names_and_task(data_cfg, list(raw["classes"]), where=source)
        n_val = len(raw["val"]) if "val" in raw else round(data_cfg.val_fraction * len(labels))
        return SourceProbe(self.kind, source, min(images.shape[2:]), False,
                           np.bincount(labels, minlength=len(names)).tolist(), n_val, task, tuple(names))

    def raw_examples(self, source: str, data_cfg: DataConfig, n_per_class: int,
                     rng: np.random.Generator, *, split: str) -> list[tuple[np.ndarray, int | None]]:
        raw = self._read(source)
        images, labels = self._arrays(raw, split if split in raw else "train")
        return [(images[i, 0], int(labels[i])) for i in pick_per_class(labels, n_per_class, rng)]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as the package built it, restored after the test."""
    monkeypatch.setattr(sources_mod, "_REGISTRY", dict(sources_mod._REGISTRY))


def _toy_file(path: Path, *, n: int = 24, size: int = 12, with_val: bool = False) -> Path:
    """Two classes a network can tell apart: a dark and a bright square on grey."""
    rng = np.random.default_rng(0)

    def item(label: int) -> dict:
        img = rng.integers(90, 110, size=(size, size))
        img[3:9, 3:9] = 30 if label == 0 else 220
        return {"label": label, "pixels": img.tolist()}

    raw: dict = {"xreport_toy": 1, "classes": ["dark", "bright"],
                 "train": [item(i % 2) for i in range(n)], "test": [item(i % 2) for i in range(8)]}
    if with_val:
        raw["val"] = [item(i % 2) for i in range(6)]
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def test_a_registered_source_is_found_probed_and_loaded(tmp_path: Path, registry: None) -> None:
    data = _toy_file(tmp_path / "toy.json")
    cfg = DataConfig(dataset=str(data))
    with pytest.raises(DataError, match="unsupported data file; expected a MedMNIST .npz, a .csv manifest, or a folder"):
        resolve_source(cfg)

    register_source(ToyJsonSource())     # the one line

    assert "toyjson" in registered_kinds()
    assert resolve_source(cfg) == ("toyjson", str(data.resolve()))
    assert resolve_source(DataConfig(dataset=str(data), kind="toyjson"))[0] == "toyjson"
    assert source_splits(cfg) == {"train", "test"}
    probe = probe_source(cfg)
    assert (probe.kind, probe.native_size, probe.train_counts, probe.n_val, probe.task) == \
        ("toyjson", 12, [12, 12], 2, "binary")
    ds = load_dataset(cfg, PreprocessConfig(), image_size=16)
    # No val split in the file: the shared rule held one of each class of 12 out of train.
    assert ds.kind == "toyjson" and ds.class_names == ["dark", "bright"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 22, "val": 2, "test": 8}
    assert ds.val_held_out == cfg.val_fraction and tuple(ds.splits["val"].images.shape[1:]) == (1, 16, 16)
    examples = raw_examples(cfg, 2, seed=0)
    assert sorted(label for _img, label in examples) == [0, 0, 1, 1]
    # A file of another kind is not taken for it, and a path the toy does not claim is refused.
    (tmp_path / "other.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="a toy JSON file, or a folder"):
        resolve_source(DataConfig(dataset=str(tmp_path / "other.json")))


def test_an_unknown_kind_is_refused_naming_the_registered_ones(tmp_path: Path, registry: None) -> None:
    raw = {"data": {"dataset": str(tmp_path / "toy.json"), "kind": "toyjson"}}
    with pytest.raises(ConfigError, match=r"^config: data.kind: 'toyjson' is not one of auto, medmnist, "
                                          r"folder, csv, phantom$"):
        resolve(raw)
    with pytest.raises(DataError, match=r"data.kind 'toyjson' is not one of auto, medmnist, folder, csv, phantom"):
        resolve_source(DataConfig(kind="toyjson"))
    register_source(ToyJsonSource())
    assert from_dict(raw).data.kind == "toyjson"
    assert resolve({**raw, "train": {"recipe": "plain"}}).config.data.kind == "toyjson"
    with pytest.raises(ConfigError, match="is not one of auto, medmnist, folder, csv, phantom, toyjson$"):
        resolve({"data": {"kind": "npy"}})
    with pytest.raises(ValueError, match="already registered"):
        register_source(ToyJsonSource())


def test_a_registered_source_trains_through_the_api(tmp_path: Path, registry: None) -> None:
    register_source(ToyJsonSource())
    data = _toy_file(tmp_path / "toy.json", n=32, with_val=True)
    run = api.train({"name": "toy", "data": {"dataset": str(data)}, "model": {"arch": "resnet_tiny"},
                     "train": {"epochs": 1, "batch_size": 8}},
                    checkpoints=tmp_path / "checkpoints", reports=tmp_path / "reports")
    meta = load_checkpoint(run.checkpoint).meta
    # The auto recipe sized the input from the toy's probe (12 px native), the loader read it.
    assert meta["image_size"] == 12 and meta["class_names"] == ["dark", "bright"]
    assert meta["data_fingerprint"] == hashlib.sha256(data.read_bytes()).hexdigest()
    distribution = json.loads((run.run_dir / "class_distribution.json").read_text(encoding="utf-8"))
    assert distribution["sizes"] == {"train": 32, "val": 6}


# ---------------------------------------------------------------- the .npz belongs to its adapter
def test_only_the_medmnist_adapter_opens_an_npz() -> None:
    """A data set's .npz is opened by its adapter; artifacts.py opens the run folder's own
    cams.npz (its schema, GalleryCams), nothing else opens one."""
    package = Path(__file__).resolve().parents[1] / "xreport"
    opening = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                     if "np.load(" in p.read_text(encoding="utf-8"))
    assert opening == ["artifacts.py", "data/medmnist.py"]


@pytest.mark.parametrize("content", [b"x", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }"])
def test_raw_examples_of_a_file_that_is_no_npz_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "set.npz"     # a plain .npy (or anything) under an .npz name
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"set.npz: not a .npz archive"):
        raw_examples(DataConfig(dataset=str(path)), 1, seed=0)
