"""Image folders, CSV manifests, safe decoding (odd formats, corrupt files) and DICOM."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xreport.config import DataConfig, PreprocessConfig
from xreport.data import load_dataset, raw_examples, resolve_source
from xreport.data.images import read_image
from xreport.errors import DataError


def save_png(path: Path, value: int, *, size: tuple[int, int] = (20, 30), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]), value, dtype=np.uint8)
    arr[: size[1] // 2] = 255 - value          # not flat, so min-max or hashing see content
    Image.fromarray(arr).convert(mode).save(path)
    return path


def make_folder(root: Path, *, splits: tuple[str, ...] = ("train", "val", "test"),
                classes: tuple[str, ...] = ("normal", "pneumonia"), per_class: int = 3) -> Path:
    for s_i, split in enumerate(splits):
        for c_i, name in enumerate(classes):
            for k in range(per_class):
                save_png(root / split / name / f"{k}.png", 10 + 40 * c_i + 5 * k + s_i)
    return root


def load(source: Path, **data: object) -> object:
    return load_dataset(DataConfig(dataset=str(source), **data), PreprocessConfig(), image_size=16)


# ---------------------------------------------------------------- folders
def test_image_folder_loads_sorted_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr", classes=("pneumonia", "normal"))
    ds = load(root)
    assert ds.kind == "folder" and ds.name == "xr" and ds.class_names == ["normal", "pneumonia"]
    train = ds.splits["train"]
    assert train.images.shape == (6, 1, 16, 16) and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.ids[0] == "train/normal/0.png"
    assert ds.original_size == (30, 20)
    again = load_dataset(DataConfig(dataset=str(root)), PreprocessConfig(), image_size=16, splits=("test",))
    assert again.fingerprint == ds.fingerprint          # independent of the splits loaded
    save_png(root / "test" / "normal" / "0.png", 99)
    assert load(root).fingerprint != ds.fingerprint


def test_folder_class_sets_must_match(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr")
    save_png(root / "val" / "covid" / "0.png", 5)
    with pytest.raises(DataError, match="class folders differ.*covid"):
        load(root)


def test_folder_missing_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr", splits=("train", "val"))
    with pytest.raises(DataError, match="no 'test' split \\(found: train, val\\)"):
        load(root)
    # No val split: it is held out of train (tests/test_val_holdout.py), unless switched off.
    no_val = make_folder(tmp_path / "xr2", splits=("train", "test"))
    with pytest.raises(DataError, match="no 'val' split \\(found: train, test\\)"):
        load(no_val, val_fraction=0.0)


def test_corrupt_image_raises_or_is_skipped(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr")
    bad = root / "train" / "normal" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "train" / "normal" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="bad.png"):
        load(root)
    ds = load(root, skip_bad_images=True)
    assert len(ds.splits["train"]) == 6
    assert sorted(s["file"] for s in ds.skipped) == ["train/normal/bad.png", "train/normal/empty.jpg"]
    assert all(s["reason"] for s in ds.skipped)


# ---------------------------------------------------------------- CSV manifests
def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_csv_manifests_with_bom_blank_lines_and_names(tmp_path: Path) -> None:
    for i in range(4):
        save_png(tmp_path / "img" / f"{i}.png", 20 * i)
    write_csv(tmp_path / "train.csv", "FilePath,Label\n\nimg/0.png,NORMAL\nimg/1.png,PNEUMONIA\n\n", bom=True)
    write_csv(tmp_path / "val.csv", "image,label\nimg/2.png,PNEUMONIA\n")
    write_csv(tmp_path / "test.csv", "path\nimg/3.png\nimg/0.png\n")
    ds = load(tmp_path)
    assert ds.kind == "csv" and ds.class_names == ["NORMAL", "PNEUMONIA"] and ds.task == "binary"
    assert ds.splits["train"].labels.tolist() == [0, 1] and ds.splits["val"].labels.tolist() == [1]
    assert ds.splits["test"].labels is None and ds.splits["test"].ids == ["img/3.png", "img/0.png"]


def test_csv_integer_labels_with_class_name_column(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / f"{i}.png", 30 * i)
    write_csv(tmp_path / "train.csv", "img,label,class_name\n0.png,0,cat\n1.png,2,dog\n2.png,1,\n")
    ds = load_dataset(DataConfig(dataset=str(tmp_path / "train.csv")), PreprocessConfig(),
                      image_size=8, splits=("train",))
    assert ds.class_names == ["cat", "class_1", "dog"] and ds.task == "multiclass"
    assert ds.splits["train"].labels.tolist() == [0, 2, 1]


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd", "img/../../x.png"])
def test_csv_path_escaping_the_root_is_refused(tmp_path: Path, bad_path: str) -> None:
    data = tmp_path / "data"
    save_png(data / "img" / "0.png", 5)
    write_csv(data / "test.csv", f"path,label\nimg/0.png,0\n{bad_path},1\n")
    with pytest.raises(DataError, match=r"test.csv: line 3: path .* outside the data folder"):
        load_dataset(DataConfig(dataset=str(data)), PreprocessConfig(), image_size=8, splits=("test",))


@pytest.mark.parametrize("text, message", [
    ("file,label\na.png,0\n", "no path column; found file, label, expected one of path"),
    ("", "empty CSV"),
    ("path,label\na.png,0\nb.png,\n", "line 3 has no label"),
    ("path,label\na.png,0\nb.png,cat\n", "mix class indices and class names"),
])
def test_csv_bad_columns_and_labels(tmp_path: Path, text: str, message: str) -> None:
    save_png(tmp_path / "a.png", 1)
    save_png(tmp_path / "b.png", 2)
    write_csv(tmp_path / "train.csv", text)
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(dataset=str(tmp_path)), PreprocessConfig(), image_size=8, splits=("train",))


def test_csv_labelled_split_needs_two_classes_and_known_labels(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", 1)
    write_csv(tmp_path / "train.csv", "path,label\na.png,0\n")
    with pytest.raises(DataError, match="at least 2 are needed"):
        load_dataset(DataConfig(dataset=str(tmp_path)), PreprocessConfig(), image_size=8, splits=("train",))
    with pytest.raises(DataError, match="label '5' is not a class"):
        write_csv(tmp_path / "train.csv", "path,label\na.png,5\n")
        load_dataset(DataConfig(dataset=str(tmp_path), class_names=("a", "b")), PreprocessConfig(),
                     image_size=8, splits=("train",))


def test_csv_missing_image_file_names_it(tmp_path: Path) -> None:
    write_csv(tmp_path / "test.csv", "path\nnothere.png\n")
    with pytest.raises(DataError, match="nothere.png"):
        load_dataset(DataConfig(dataset=str(tmp_path)), PreprocessConfig(), image_size=8, splits=("test",))


# ---------------------------------------------------------------- decoding
def test_sixteen_bit_png_is_scaled(tmp_path: Path) -> None:
    arr = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))    # 12-bit data in 16 bits
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (8, 64)
    assert out.min() == 0 and out.max() == 255 and np.all(np.diff(out[0].astype(int)) >= 0)


def test_cmyk_jpeg_rgba_png_and_palette(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    cmyk = read_image(tmp_path / "c.jpg")
    assert cmyk.shape == (10, 12, 3) and cmyk[..., 0].mean() > cmyk[..., 2].mean() + 100
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[:3, :, 3] = 0                                  # transparent top half -> black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (6, 6) and out[:3].max() == 0 and out[3:].min() == 200
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (10, 12, 3)


def test_one_pixel_image_is_accepted_and_resized(tmp_path: Path) -> None:
    Image.fromarray(np.full((1, 1), 77, np.uint8)).save(tmp_path / "dot.png")
    assert read_image(tmp_path / "dot.png").shape == (1, 1)
    root = make_folder(tmp_path / "xr")
    Image.fromarray(np.full((1, 1), 77, np.uint8)).save(root / "train" / "normal" / "dot.png")
    ds = load(root)
    dot = ds.splits["train"].ids.index("train/normal/dot.png")
    assert torch.all(ds.splits["train"].images[dot] == 77)


def test_non_image_truncated_and_bomb(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(DataError, match="notes.png: not a recognised image"):
        read_image(tmp_path / "notes.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="cut.png: corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    save_png(tmp_path / "big.png", 3, size=(40, 40))
    with pytest.raises(DataError, match="exceeds the limit"):
        read_image(tmp_path / "big.png", max_pixels=1000)


def test_colour_file_makes_every_split_three_channels(tmp_path: Path) -> None:
    # A colour majority in train: every split gets 3 channels, grey files too.
    root = make_folder(tmp_path / "xr")
    for name in ("normal", "pneumonia"):
        for k in range(3):
            Image.fromarray(np.dstack([np.full((8, 8), v + k, np.uint8) for v in (10, 100, 200)])).save(
                root / "train" / name / f"{k}.png")
    ds = load(root)
    assert {s.images.shape[1] for s in ds.splits.values()} == {3}
    assert ds.original_channels is None


def test_modality_follows_the_pixels_not_the_file_mode(tmp_path: Path) -> None:
    """Grey scans saved as RGB files (equal channels up to JPEG noise) are grey: one channel,
    and a lone colour file in a grey data set is made grey (majority content)."""
    root = make_folder(tmp_path / "xr")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for k in range(3):   # near-equal channels: +-1 grey level of noise, stored as RGB
            grey = np.full((30, 20), 60 + 10 * k, np.int16)
            noisy = np.clip(grey[..., None] + rng.integers(-1, 2, (30, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / split / "normal" / f"{k}.png")
    Image.fromarray(np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 100, 200)])).save(
        root / "test" / "normal" / "colour.png")
    ds = load(root)
    assert {s.images.shape[1] for s in ds.splits.values()} == {1}
    from xreport.data.images import is_grey_content, probe_modality
    assert not is_grey_content(np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 100, 200)]))
    m = probe_modality(sorted((root / "train").rglob("*.png")))
    assert (m.colour, m.sampled, m.stored_rgb, m.grey_content) == (False, 6, 3, 6)


# ---------------------------------------------------------------- DICOM
def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = (1000.0, 1000.0)) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.set_pixel_data(pixels.astype(np.uint16), photometric, 12)
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).Rows == pixels.shape[0]
    return path


def test_dicom_window_and_monochrome1(tmp_path: Path) -> None:
    pixels = np.array([[0, 500, 1000], [1500, 2000, 4000]])
    out = read_image(write_dicom(tmp_path / "a.dcm", pixels))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0, 128], [255, 255, 255]]
    inverted = read_image(write_dicom(tmp_path / "b.dcm", pixels, photometric="MONOCHROME1"))
    assert inverted.tolist() == [[255, 255, 127], [0, 0, 0]]
    plain = read_image(write_dicom(tmp_path / "c.dcm", pixels, window=None))
    assert plain.min() == 0 and plain.max() == 255
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="junk.dcm: not a readable DICOM"):
        read_image(tmp_path / "junk.dcm")


def test_dicom_in_a_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr")
    write_dicom(root / "val" / "pneumonia" / "scan.dcm", np.arange(64).reshape(8, 8) * 60)
    ds = load(root)
    assert "val/pneumonia/scan.dcm" in ds.splits["val"].ids


# ---------------------------------------------------------------- source kinds, raw examples
def test_resolve_source_kinds(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr")
    assert resolve_source(DataConfig(dataset=str(root))) == ("folder", str(root.resolve()))
    with pytest.raises(DataError, match="data.kind is 'csv'"):
        resolve_source(DataConfig(dataset=str(root), kind="csv"))
    assert resolve_source(DataConfig()) == ("phantom", "phantom")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither an image folder"):
        resolve_source(DataConfig(dataset=str(tmp_path / "empty")))


def test_raw_examples_from_a_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "xr", per_class=4)
    examples = raw_examples(DataConfig(dataset=str(root)), 2, 0)
    assert [label for _img, label in examples] == [0, 0, 1, 1]
    assert all(img.shape == (30, 20) and img.dtype == np.uint8 for img, _ in examples)
    again = raw_examples(DataConfig(dataset=str(root)), 2, 0)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(examples, again))


def test_npz_float_and_wide_integer_pixels_are_read_as_uint8(tmp_path: Path) -> None:
    from xreport.data.medmnist import read_npz

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 6, 6)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1]).reshape(-1, 1)
    for name, stored in {"unit": pixels.astype(np.float64) / 255.0,
                         "bytes_as_float": pixels.astype(np.float32),
                         "int64": pixels.astype(np.int64), "half": (pixels / 255.0).astype(np.float16)}.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, train_images=stored, train_labels=labels)
        arrays, k = read_npz(path, ("train",), num_classes=None)
        got = arrays["train"][0]
        assert got.dtype == np.uint8 and k == 2, name
        tolerance = 1 if name == "half" else 0            # float16 keeps 11 bits of the fraction
        assert np.abs(got[:, 0].astype(int) - pixels.astype(int)).max() <= tolerance, name
