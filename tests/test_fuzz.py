"""Property-based fuzzing: random input to the readers and metrics ends in a result or an
``XReportError``, never in another exception (which the CLI would show as a traceback)."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from xreport import config as xconfig
from xreport import metrics
from xreport.data import manifest, medmnist, read_image
from xreport.errors import XReportError

# XREPORT_FUZZ_EXAMPLES=2000 for a deeper run; 60 keeps the suite fast and repeatable.
EXAMPLES = int(os.environ.get("XREPORT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def result_or_xreport_error(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; an XReportError is a fine answer, anything else fails the test."""
    try:
        return fn()
    except XReportError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), repr(exc)
        return exc


def in_tmp(write: Callable[[Path], Path], read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        return result_or_xreport_error(lambda: read(write(Path(folder))))


# ---------------------------------------------------------------- CSV manifests

CELL = st.one_of(st.sampled_from(["path", "label", "class_name", "img", "a.png", "../x.png", "/etc/passwd",
                                  "0", "1", "-1", "7", "1.5", "cat", "", " ", "\ufeff", '"', "\x00"]),
                 st.text(max_size=8))
ROWS = st.lists(st.lists(CELL, max_size=4), max_size=8)


def _write_csv(rows: list[list[str]], raw_bytes: bytes | None) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        (folder / "a.png").write_bytes(b"")
        path = folder / "train.csv"
        if raw_bytes is not None:
            path.write_bytes(raw_bytes)
        else:
            path.write_text("\n".join(",".join(r) for r in rows), encoding="utf-8", errors="surrogatepass")
        return path
    return write


def _read_csv(path: Path) -> Any:
    m = manifest.read_manifest(path)
    names = manifest.class_names([m], configured=())
    labels = manifest.encode_labels(m, names)
    assert labels is None or all(0 <= v < len(names) for v in labels)
    return m


@FUZZ
@given(rows=ROWS, raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_csv_reader(rows, raw):
    try:
        "\n".join(",".join(r) for r in rows).encode("utf-8")
    except UnicodeEncodeError:
        return                              # a lone surrogate cannot be written as UTF-8 at all
    in_tmp(_write_csv(rows, raw), _read_csv)


# ---------------------------------------------------------------- MedMNIST .npz

KEYS = st.sampled_from(["train_images", "train_labels", "val_images", "test_labels", "other"])
DTYPES = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8])
ARRAYS = hnp.arrays(dtype=DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                    elements=None)


def _write_npz(arrays: dict[str, np.ndarray], junk: bytes | None) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "set.npz"
        if junk is not None:
            path.write_bytes(junk)
        else:
            np.savez(path, **arrays)
        return path
    return write


@FUZZ
@given(arrays=st.dictionaries(KEYS, ARRAYS, max_size=5), junk=st.one_of(st.none(), st.binary(max_size=64)),
       classes=st.one_of(st.none(), st.integers(1, 4)))
def test_npz_reader(arrays, junk, classes):
    def read(path: Path) -> Any:
        out, k = medmnist.read_npz(path, ("train",), num_classes=classes)
        images, labels = out["train"]
        assert images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(labels)
        assert labels.size == 0 or (labels.min() >= 0 and labels.max() < k)
        return out
    in_tmp(_write_npz(arrays, junk), read)


@FUZZ
@given(n=st.integers(0, 4), h=st.integers(1, 6), labels=st.lists(st.integers(-2, 5), min_size=0, max_size=5))
def test_npz_reader_on_plausible_files(n, h, labels):
    """Near-valid files (right keys, random sizes and labels) find the subtler checks."""
    arrays = {f"{s}_images": np.zeros((n, h, h), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.array(labels, dtype=np.int64) for s in ("train", "val", "test")})
    in_tmp(_write_npz(arrays, None), lambda p: medmnist.read_npz(p, ("train", "test"), num_classes=None))


# ---------------------------------------------------------------- image files

def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


@FUZZ
@given(cut=st.integers(0, len(PNG)), flips=st.lists(st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255)),
                                                      max_size=4),
       suffix=st.sampled_from([".png", ".jpg", ".jpeg"]))
def test_image_reader_on_damaged_png(cut, flips, suffix):
    data = bytearray(PNG[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value

    def write(folder: Path) -> Path:
        path = folder / f"x{suffix}"
        path.write_bytes(bytes(data))
        return path

    out = in_tmp(write, read_image)
    if isinstance(out, np.ndarray):
        assert out.dtype == np.uint8 and out.ndim in (2, 3)


# ---------------------------------------------------------------- metrics

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@FUZZ
@given(n=st.integers(0, 12), k=st.integers(1, 4), data=st.data(), task=st.sampled_from(["binary", "multiclass", "ordinal"]),
       normalise=st.booleans())
def test_metrics_compute_all(n, k, data, task, normalise):
    y = data.draw(st.lists(st.integers(-1, k), min_size=n, max_size=n))
    raw = np.array(data.draw(st.lists(FLOATS, min_size=n * k, max_size=n * k)), dtype=np.float64).reshape(n, k)
    if normalise:                      # mostly-valid probabilities reach the deeper code
        with np.errstate(all="ignore"):
            raw = np.abs(np.nan_to_num(raw, nan=0.5, posinf=1.0, neginf=0.0)) + 1e-3
            raw = raw / raw.sum(axis=1, keepdims=True)
    names = [f"c{i}" for i in range(k)]
    out = result_or_xreport_error(lambda: metrics.compute_all(np.array(y, dtype=np.int64), raw, class_names=names,
                                                              task=task, n_boot=20, seed=0))
    if isinstance(out, dict):
        assert out["n"] == n


@FUZZ
@given(n=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_metrics_on_valid_random_predictions_always_give_a_result(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = rng.random(n)
    out = metrics.compute_all(y, np.stack([1 - p1, p1], axis=1), class_names=["a", "b"], task="binary",
                              n_boot=20, seed=0)
    auc = out["roc_auc"]
    assert (auc["value"] is None) == (len(set(y.tolist())) < 2)
    assert auc["value"] is not None or auc["reason"]


# ---------------------------------------------------------------- config

VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), FLOATS, st.text(max_size=6)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
FIELD_KEYS = sorted({f for cls in xconfig.SECTIONS.values() for f in cls.__dataclass_fields__})


@FUZZ
@given(top=st.dictionaries(st.sampled_from([*xconfig.TOP_LEVEL, *xconfig.SECTIONS, "x"]), VALUES, max_size=3),
       section=st.sampled_from(sorted(xconfig.SECTIONS)),
       fields=st.dictionaries(st.sampled_from(FIELD_KEYS), VALUES, max_size=3))
def test_config_from_dict(top, section, fields):
    raw = {**top, section: fields}
    out = result_or_xreport_error(lambda: xconfig.from_dict(raw, source="fuzz.toml"))
    if isinstance(out, xconfig.RunConfig):
        xconfig.validate(out)
        assert xconfig.from_dict(xconfig.to_dict(out)) == out
