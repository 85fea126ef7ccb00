"""Every failure is one line: OS errors, memory, unexpected exceptions, and sizes an input
declares (config values, .npy headers, DICOM tags, checkpoint storages) checked before the
allocation they would cause."""
from __future__ import annotations

import dataclasses
import errno
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from test_reliability_inputs import cli, image_folder, one_error, png, train_args
from xreport import cli as cli_mod
from xreport import config as xconfig
from xreport import runs
from xreport.errors import CheckpointError, ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"


@pytest.fixture()
def fixture_run(tmp_path: Path) -> Path:
    """A copy of the binary fixture run (phantom data, tiny ResNet)."""
    target = tmp_path / "checkpoints" / "fx"
    shutil.copytree(FIXTURES / "fixture_binary", target)
    return target


def evaluate_args(run_dir: Path, tmp_path: Path, *more: str) -> list[str]:
    return ["evaluate", "--run", str(run_dir), "--no-cam", "--device", "cpu",
            "--reports", str(tmp_path / "reports"), *more]


# ---------------------------------------------------------------- OS errors and bugs

def test_config_pointing_at_a_folder(tmp_path, capsys):
    rc, _, err = cli(capsys, "train", "--config", str(tmp_path))
    one_error(rc, err, str(tmp_path), "a folder")


def test_a_file_where_the_reports_folder_should_be(tmp_path, capsys, fixture_run):
    (tmp_path / "reports").write_text("not a folder")
    rc, _, err = cli(capsys, *evaluate_args(fixture_run, tmp_path))
    one_error(rc, err, "reports")


def test_a_file_where_the_checkpoints_folder_should_be(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    (tmp_path / "checkpoints").write_text("not a folder")
    rc, _, err = cli(capsys, *train_args(data, "x", tmp_path))
    one_error(rc, err, "checkpoints")


def test_disk_full_while_writing_is_one_line_naming_the_file(tmp_path, capsys, fixture_run, monkeypatch):
    real_replace = __import__("os").replace

    def full(src, dst, *a, **k):
        if str(dst).endswith("predictions.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr("xreport.runs.os.replace", full)
    rc, _, err = cli(capsys, *evaluate_args(fixture_run, tmp_path))
    one_error(rc, err, "predictions.csv", "No space left on device")
    assert not list((tmp_path / "reports").rglob("*.tmp"))


@pytest.mark.parametrize("exc, code, needle", [
    (OSError(errno.EROFS, "Read-only file system", "/x/y"), 2, "/x/y: Read-only file system"),
    (MemoryError(), 2, "out of memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 TB"), 2,
     "out of memory"),
    (KeyError("boom"), 1, "please report"),
    (ValueError("a\nb"), 1, "internal error (ValueError: a b)"),
])
def test_every_exception_is_one_line(capsys, monkeypatch, exc, code, needle):
    def broken(args):
        raise exc
    monkeypatch.setitem(cli_mod.COMMANDS, "demo", broken)
    rc, _, err = cli(capsys, "demo")
    assert rc == code and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xreport: error:") and needle in lines[0], err


def test_a_bug_shows_its_traceback_under_verbose(capsys, monkeypatch):
    def broken(args):
        raise KeyError("boom")
    monkeypatch.setitem(cli_mod.COMMANDS, "demo", broken)
    rc, _, err = cli(capsys, "-v", "demo")
    assert rc == 1 and "Traceback" in err and "please report" in err


# ---------------------------------------------------------------- config values

NUMERIC_FIELDS = [(section, f.name) for section, cls in xconfig.SECTIONS.items()
                  for f in dataclasses.fields(cls)
                  if f.type in ("int", "float", int, float)] + [(None, "image_size")]


@pytest.mark.parametrize("section, key", NUMERIC_FIELDS, ids=lambda v: str(v))
@pytest.mark.parametrize("value", [10**15, -(10**15)])
def test_every_numeric_config_field_has_bounds(section, key, value):
    raw = {key: value} if section is None else {section: {key: value}}
    with pytest.raises(ConfigError) as info:
        xconfig.from_dict(raw, source="run.toml")
    assert key in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("raw, needle", [
    ({"data": {"phantom_size": 100_000}}, "data.phantom_size"),
    ({"data": {"phantom_seed": -1}}, "data.phantom_seed"),
    ({"data": {"phantom_train": 200_000, "phantom_size": 1024}}, "pixels"),
    ({"train": {"epochs": 10**9}}, "train.epochs"),
    ({"train": {"batch_size": 10**9}}, "train.batch_size"),
    ({"train": {"batch_size": 1}}, "BatchNorm"),
    ({"train": {"seed": -5}}, "train.seed"),
    ({"image_size": 10**6}, "image_size"),
])
def test_config_values_out_of_range(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        xconfig.from_dict(raw, source="run.toml")


def test_negative_phantom_seed_through_the_cli(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[data]\nphantom_seed = -1\n", encoding="utf-8")
    rc, _, err = cli(capsys, "train", "--config", str(cfg), "--checkpoints", str(tmp_path / "c"))
    one_error(rc, err, "run.toml", "phantom_seed")


# ---------------------------------------------------------------- declared sizes: .npz

def _npz_with_forged_header(path: Path, shape: tuple[int, ...], *, compress: bool) -> None:
    """A valid-looking npz whose train_images header declares ``shape`` over 16 bytes."""
    arrays = {"train_labels": np.zeros(4, np.uint8), "val_images": np.zeros((4, 8, 8), np.uint8),
              "val_labels": np.array([0, 1, 0, 1], np.uint8)}
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as zf:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            zf.writestr(f"{key}.npy", buffer.getvalue())
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                      "shape": shape})
        zf.writestr("train_images.npy", buffer.getvalue() + b"\0" * 16)


@pytest.mark.parametrize("compress", [False, True])
def test_a_forged_npy_header_is_refused_before_allocating(tmp_path, capsys, compress):
    path = tmp_path / "forged.npz"
    _npz_with_forged_header(path, (4, 10**6, 10**6), compress=compress)   # 4 TB declared
    rc, _, err = cli(capsys, *train_args(path, "forged", tmp_path))
    one_error(rc, err, "forged.npz", "train_images", "holds only")


def test_an_npz_larger_than_the_memory_budget_is_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(path, **{f"{s}_images": rng.integers(0, 255, (8, 32, 32), dtype=np.uint8) for s in ("train", "val")},
             **{f"{s}_labels": np.array([0, 1] * 4) for s in ("train", "val")})
    monkeypatch.setenv("XREPORT_MAX_INPUT_BYTES", "4096")
    rc, _, err = cli(capsys, *train_args(path, "big", tmp_path))
    one_error(rc, err, "big.npz", "allows for one input")


# ---------------------------------------------------------------- declared sizes: DICOM

def _dicom(path: Path, rows: int, cols: int, *, deflate: bool, frames: int = 1) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian,
                             SecondaryCaptureImageStorage, generate_uid)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflate else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = bytes(rows * cols * 2 * frames)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_a_deflated_dicom_of_10000_squared_pixels_is_refused(tmp_path):
    from xreport.data import read_image

    path = tmp_path / "huge.dcm"
    _dicom(path, 10_000, 10_000, deflate=True)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataError, match="huge.dcm.*(decompression bomb|limit)"):
        read_image(path)


def test_dicom_tags_declaring_too_many_pixels_are_refused(tmp_path):
    from xreport.data import read_image

    path = tmp_path / "tags.dcm"
    _dicom(path, 64, 64, deflate=False)
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60_000, 60_000        # the pixel data stays 8 KB
    ds.save_as(path)
    with pytest.raises(DataError, match="tags.dcm.*60000x60000"):
        read_image(path)


def test_a_small_deflated_dicom_still_reads(tmp_path):
    from xreport.data import read_image

    path = tmp_path / "small.dcm"
    _dicom(path, 64, 48, deflate=True)
    assert read_image(path).shape == (64, 48)


# ---------------------------------------------------------------- declared sizes: checkpoints

def _rewrite(path: Path, *, compress_data: bool = False) -> None:
    with zipfile.ZipFile(path) as src:
        members = [(i, src.read(i)) for i in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, data in members:
            mode = zipfile.ZIP_DEFLATED if compress_data and "/data/" in info.filename else zipfile.ZIP_STORED
            dst.writestr(info.filename, data, compress_type=mode)


def test_a_compressed_checkpoint_storage_is_refused(fixture_run, tmp_path, capsys):
    _rewrite(fixture_run / "best.pt", compress_data=True)
    rc, _, err = cli(capsys, *evaluate_args(fixture_run, tmp_path))
    one_error(rc, err, "best.pt", "compressed")


def test_a_checkpoint_far_larger_than_its_architecture_is_refused(fixture_run, tmp_path, capsys):
    ckpt = runs.load_checkpoint(fixture_run / "best.pt")
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    state["padding"] = torch.zeros(12 * 2**20 // 4 * 2)       # 24 MB beside a kilobyte model
    runs.save_checkpoint(fixture_run / "best.pt", state_dict=state, meta=ckpt.meta)
    rc, _, err = cli(capsys, *evaluate_args(fixture_run, tmp_path))
    one_error(rc, err, "best.pt", "its architecture needs")


def test_nan_weights_name_the_checkpoint_and_write_nothing(fixture_run, tmp_path, capsys):
    ckpt = runs.load_checkpoint(fixture_run / "best.pt")
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and k.endswith("weight"))
    state[key][...] = float("nan")
    runs.save_checkpoint(fixture_run / "best.pt", state_dict=state, meta=ckpt.meta)
    rc, _, err = cli(capsys, *evaluate_args(fixture_run, tmp_path))
    one_error(rc, err, "best.pt", "NaN")
    assert not (tmp_path / "reports" / "fx" / "predictions.csv").exists()


def test_nan_outputs_name_the_checkpoint(fixture_run, tmp_path):
    from xreport.evaluate import check_outputs

    probs = np.array([[0.5, 0.5], [np.nan, np.nan]])
    with pytest.raises(CheckpointError, match="best.pt.*'b'"):
        check_outputs(probs, ["a", "b"], path=fixture_run / "best.pt")


# ---------------------------------------------------------------- tiny train splits

def test_a_one_image_train_split_is_a_clear_error(tmp_path, capsys):
    from xreport.train import _check_data
    from xreport.data.base import Dataset, Split

    x = torch.zeros((1, 1, 8, 8), dtype=torch.uint8)
    val = Split("val", torch.zeros((2, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1]), ["0", "1"])
    ds = Dataset(name="d", source="d.npz", kind="medmnist", class_names=["a", "b"], task="binary",
                 splits={"train": Split("train", x, torch.tensor([1]), ["0"]), "val": val},
                 fingerprint="0")
    with pytest.raises(DataError, match="d.npz: the train split has 1 image"):
        _check_data(ds)
