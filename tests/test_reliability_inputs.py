"""Bad input through the CLI: one clear ``xreport: error:`` line, exit 2, no traceback.

Most cases call ``xreport.cli.main`` in this process (the same code path as the console
script, minus the seconds a new Python spends importing torch); the cases marked
``subprocess`` run ``python -m xreport`` for real. The tally of every case is in
RELIABILITY.md.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xreport import runs
from xreport.cli import main
from xreport.data import read_image
from xreport.data.manifest import read_manifest
from xreport.models import build_model

SIZE = 16
EVIL_CLASS = "<script>alert('x')</script>"
AMP_CLASS = "B&<b>bold"
RUN = "胸片-小"            # non-ASCII run names are allowed


# ---------------------------------------------------------------- helpers

def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``xreport ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main(list(args))
    except SystemExit as exc:     # argparse errors
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def one_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, exactly one error line holding every needle, and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("xreport: error:")]
    assert rc == 2 and len(lines) == 1, (rc, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def png(path: Path, *, seed: int, size: int = SIZE) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(path)
    return path


def image_folder(root: Path, *, n: int = 4, classes: tuple[str, ...] = ("a", "b")) -> Path:
    for s, split in enumerate(("train", "val", "test")):
        for c, name in enumerate(classes):
            for i in range(n):
                png(root / split / name / f"{i}.png", seed=100 * s + 10 * c + i)
    return root


def train_args(dataset: Path, name: str, root: Path) -> list[str]:
    return ["train", "--dataset", str(dataset), "--image-size", str(SIZE), "--epochs", "1",
            "--batch-size", "8", "--max-steps", "1", "--name", name,
            "--checkpoints", str(root / "checkpoints")]


def no_checkpoints(root: Path) -> bool:
    return not list((root / "checkpoints").rglob("*.pt")) if (root / "checkpoints").exists() else True


# ---------------------------------------------------------------- images

def _truncated(path: Path) -> None:
    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:40])


def _bomb(path: Path) -> None:
    # 400 megapixels of one colour compress to a few kilobytes.
    Image.new("1", (20_000, 20_000), 0).save(path)


BAD_IMAGES = {
    "truncated": (_truncated, "corrupt or truncated"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "not_an_image": (lambda p: p.write_text("name,label\nx,1\n"), "not a recognised image"),
    "decompression_bomb": (_bomb, "decompression bomb"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_a_bad_image_stops_with_its_path(tmp_path, capsys, case):
    data = image_folder(tmp_path / "data")
    write, needle = BAD_IMAGES[case]
    write(data / "train" / "b" / "bad.png")
    rc, _, err = cli(capsys, *train_args(data, "r", tmp_path))
    one_error(rc, err, str(data / "train" / "b" / "bad.png"), needle)
    assert no_checkpoints(tmp_path)


def test_unusual_but_valid_images_are_converted(tmp_path, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.fromarray((np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) * 250)).save(odd / "deep.png")
    Image.new("CMYK", (SIZE, SIZE), (10, 200, 30, 40)).save(odd / "cmyk.jpg")
    Image.new("RGBA", (SIZE, SIZE), (200, 20, 30, 128)).save(odd / "alpha.png")
    Image.new("L", (1, 1), 7).save(odd / "dot.png")
    deep = read_image(odd / "deep.png")
    assert deep.dtype == np.uint8 and deep.shape == (SIZE, SIZE) and deep.min() == 0 and deep.max() == 255
    assert read_image(odd / "cmyk.jpg").shape == (SIZE, SIZE, 3)
    alpha = read_image(odd / "alpha.png")
    assert alpha.shape == (SIZE, SIZE, 3) and abs(int(alpha[0, 0, 0]) - 100) <= 1   # over black
    assert read_image(odd / "dot.png").shape == (1, 1)
    # The whole pipeline takes them (mixed grey and colour, 1x1 upscaled).
    data = image_folder(tmp_path / "data")
    for f in odd.iterdir():
        shutil.copy(f, data / "train" / "a" / f.name)
    rc, out, err = cli(capsys, *train_args(data, "odd", tmp_path))
    assert rc == 0, err
    assert (tmp_path / "checkpoints" / "odd" / "best.pt").is_file()


def test_skip_bad_images_counts_and_lists_them(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    _truncated(data / "train" / "a" / "broken.png")
    (data / "val" / "b" / "words.png").write_text("hello")
    rc, _, err = cli(capsys, *train_args(data, "skip", tmp_path), "--skip-bad-images")
    assert rc == 0, err
    log = (tmp_path / "checkpoints" / "skip" / "train.log").read_text(encoding="utf-8")
    assert "broken.png" in log and "words.png" in log


def test_one_bad_image_through_the_real_cli(tmp_path):
    """subprocess"""
    data = image_folder(tmp_path / "data")
    (data / "test" / "a" / "0.png").write_bytes(b"")
    (data / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nrest is gone")
    proc = run_cli(*train_args(data, "r", tmp_path), cwd=tmp_path)
    one_error(proc.returncode, proc.stderr, "train/a/0.png", "corrupt or truncated")
    assert no_checkpoints(tmp_path)


# ---------------------------------------------------------------- CSV manifests

def csv_data(root: Path, train_rows: str | bytes | None = None) -> Path:
    for s, split in enumerate(("train", "val", "test")):
        rows = ["path,label"] + [f"img/{split}{i}.png,{i % 2}" for i in range(8)]
        for i in range(8):
            png(root / "img" / f"{split}{i}.png", seed=10 * s + i)
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    if train_rows is not None:
        target = root / "train.csv"
        if isinstance(train_rows, bytes):
            target.write_bytes(train_rows)
        else:
            target.write_text(train_rows, encoding="utf-8")
    return root


GOOD_ROWS = "path,label\n" + "".join(f"img/train{i}.png,{i % 2}\n" for i in range(8))
BAD_CSVS = {
    "no_path_column": (GOOD_ROWS.replace("path,label", "file,label"), ["no path column"]),
    "no_label_column": ("path\n" + "".join(f"img/train{i}.png\n" for i in range(8)), ["train split has no labels"]),
    "missing_file": (GOOD_ROWS + "img/absent.png,1\n", ["img/absent.png", "cannot read image"]),
    "escapes_root": (GOOD_ROWS + "../../etc/passwd,1\n", ["train.csv", "line 10", "outside the data folder"]),
    "absolute_path": (GOOD_ROWS + "/etc/passwd,0\n", ["train.csv", "line 10", "outside the data folder"]),
    "label_gap": (GOOD_ROWS + "img/train1.png,7\n", ["train.csv", "line 10", "label 7"]),
    "label_negative": (GOOD_ROWS + "img/train1.png,-1\n", ["train.csv", "line 10", "'-1' is not a class"]),
    "label_text": (GOOD_ROWS + "img/train1.png,cat\n", ["train.csv", "line 10", "'cat'"]),
    "label_fraction": (GOOD_ROWS + "img/train1.png,1.5\n", ["train.csv", "line 10", "'1.5'"]),
    "label_missing": (GOOD_ROWS + "img/train1.png\n", ["train.csv", "line 10", "no label"]),
    "nul_in_path": (GOOD_ROWS + "img/tr\x00in1.png,1\n", ["train.csv", "line 10", "NUL"]),
    "not_utf8": ((GOOD_ROWS + "img/caf\xe9.png,1\n").encode("latin-1"), ["train.csv", "not UTF-8"]),
    "header_only": ("path,label\n", ["train.csv", "no rows"]),
    "empty_file": ("", ["train.csv", "empty CSV"]),
    "folder_as_path": (GOOD_ROWS + "img,1\n", ["img", "a folder, not an image"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_a_bad_csv_names_the_file_and_line(tmp_path, capsys, case):
    rows, needles = BAD_CSVS[case]
    data = csv_data(tmp_path / "data", rows)
    rc, _, err = cli(capsys, *train_args(data, "r", tmp_path))
    one_error(rc, err, *needles)
    assert no_checkpoints(tmp_path)


def test_csv_with_bom_and_blank_lines_is_read(tmp_path):
    data = csv_data(tmp_path / "data", "\ufeff" + GOOD_ROWS.replace("\n", "\r\n\r\n") + ",\n")
    manifest = read_manifest(data / "train.csv")
    assert len(manifest.rows) == 8 and manifest.has_labels
    assert [r.line for r in manifest.rows][:2] == [3, 5]           # real line numbers


# ---------------------------------------------------------------- image folders

def _no_class_folders(root: Path) -> None:
    for split in ("train", "val", "test"):
        for i in range(3):
            png(root / split / f"{i}.png", seed=i)


def _empty_class_folder(root: Path) -> None:
    image_folder(root)
    for split in ("train", "val", "test"):
        (root / split / "c").mkdir()


def _empty_split(root: Path) -> None:
    image_folder(root)
    shutil.rmtree(root / "val")
    (root / "val").mkdir()


BAD_FOLDERS = {
    "no_classes": (_no_class_folders, ["train split has no labels"]),
    "one_class": (lambda r: image_folder(r, classes=("only",)), ["found 1 class", "at least 2"]),
    "empty_class_folder": (_empty_class_folder, ["class folder 'c' holds no images"]),
    "empty_split": (_empty_split, ["val", "no images"]),
    "nothing": (lambda r: r.mkdir(), ["neither an image folder"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_a_bad_image_folder_is_refused(tmp_path, capsys, case):
    make, needles = BAD_FOLDERS[case]
    data = tmp_path / "data"
    make(data)
    rc, _, err = cli(capsys, *train_args(data, "r", tmp_path))
    one_error(rc, err, "data", *needles)


# ---------------------------------------------------------------- MedMNIST .npz

def npz_arrays(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "val", "test"):
        out[f"{split}_images"] = rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    return out


def _npz(path: Path, **changes: np.ndarray | None) -> None:
    arrays = npz_arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _truncated_npz(path: Path) -> None:
    _npz(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_NPZ = {
    "truncated": (_truncated_npz, ["not a .npz archive"]),
    "text": (lambda p: p.write_text("hello"), ["not a .npz archive"]),
    "wrong_keys": (lambda p: _npz(p, train_images=None, training_images=npz_arrays()["train_images"]),
                   ["'train_images' is missing", "training_images"]),
    "length_mismatch": (lambda p: _npz(p, train_labels=np.zeros((5, 1), int)), ["8 images", "5 labels"]),
    "float_labels": (lambda p: _npz(p, val_labels=np.full((8, 1), 0.5)), ["'val_labels'", "integer"]),
    "float_pixels_out_of_range": (lambda p: _npz(p, train_images=np.full((8, SIZE, SIZE), 300.0, np.float32)),
                                  ["'train_images'", "float pixels in 300..300", "[0, 1]"]),
    "nan_pixels": (lambda p: _npz(p, val_images=np.full((8, SIZE, SIZE), np.nan)), ["'val_images'", "NaN"]),
    "wide_int_pixels": (lambda p: _npz(p, train_images=np.full((8, SIZE, SIZE), 4095, np.uint16)),
                        ["uint16 pixels in 4095..4095", "8 bits"]),
    "bool_pixels": (lambda p: _npz(p, train_images=np.zeros((8, SIZE, SIZE), bool)), ["dtype bool"]),
    "zero_width": (lambda p: _npz(p, train_images=np.zeros((8, SIZE, 0), np.uint8)), ["1x1"]),
    "multi_label": (lambda p: _npz(p, train_labels=np.zeros((8, 3), int)), ["multi-label"]),
    "one_class": (lambda p: _npz(p, **{f"{s}_labels": np.zeros((8, 1), int) for s in ("train", "val", "test")}),
                  ["found 1 class"]),
    "empty_train": (lambda p: _npz(p, train_images=np.zeros((0, SIZE, SIZE), np.uint8),
                                   train_labels=np.zeros((0, 1), int)), ["train split is missing or empty"]),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_a_bad_npz_is_refused(tmp_path, capsys, case):
    write, needles = BAD_NPZ[case]
    path = tmp_path / "set.npz"
    write(path)
    rc, _, err = cli(capsys, *train_args(path, "r", tmp_path))
    one_error(rc, err, "set.npz", *needles)


# ---------------------------------------------------------------- config

BAD_CONFIGS = {
    "unknown_key": ("[train]\nepoch = 3\n", "unknown key 'epoch'"),
    "unknown_section": ("[trian]\nepochs = 3\n", "unknown key 'trian'"),
    "wrong_type": ('[train]\nepochs = "three"\n', "train.epochs: expected a whole number"),
    "negative_epochs": ("[train]\nepochs = -2\n", "train.epochs must be at least 1"),
    "nan_lr": ("[train]\nlr = nan\n", "train.lr"),
    "infinite_lr": ("[train]\nlr = inf\n", "train.lr must be a finite number"),
    "probability_above_one": ("[augment]\nhflip = 2.0\n", "augment.hflip"),
    "negative_weight_decay": ("[train]\nweight_decay = -1.0\n", "train.weight_decay"),
    "zero_std": ('[preprocess]\nnormalize = "fixed"\nmean = [0.5]\nstd = [0.0]\n', "preprocess.std"),
    "huge_image_size": ("image_size = 100000\n", "image_size must be at most"),
    "tiny_phantom": ("[data]\nphantom_size = 3\n", "data.phantom_size"),
    "not_toml": ("epochs = = 3\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_is_one_line(tmp_path, capsys, case):
    text, needle = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    rc, _, err = cli(capsys, "train", "--config", str(path), "--checkpoints", str(tmp_path / "checkpoints"))
    one_error(rc, err, "bad.toml", needle)
    assert not (tmp_path / "checkpoints").exists()


# ---------------------------------------------------------------- run names

@pytest.mark.parametrize("name", ["a/b", "..", "../up", "with space", ".hidden", "<b>x</b>", "x\x00y"])
@pytest.mark.parametrize("command", ["train", "build", "evaluate"])
def test_run_names_cannot_leave_their_folder(tmp_path, capsys, monkeypatch, name, command):
    monkeypatch.chdir(tmp_path)
    args = (["train", "--dataset", "phantom", "--name", name] if command == "train"
            else [command, "--run", name])
    rc, _, err = cli(capsys, *args)
    one_error(rc, err, "run name")
    assert not any(tmp_path.rglob("*.pt")) and not any(tmp_path.rglob("*.html"))


# ---------------------------------------------------------------- one trained run, many checks

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """A run with a Chinese name and HTML class names, trained with --skip-bad-images on a
    folder that holds one broken file in train and one in test."""
    root = tmp_path_factory.mktemp("tiny")
    data = image_folder(root / "data")
    _truncated(data / "train" / "a" / "broken.png")
    (data / "test" / "b" / "notes.png").write_text("not pixels")
    config = root / "run.toml"
    config.write_text(
        f'name = "{RUN}"\nimage_size = {SIZE}\n[data]\ndataset = "{data}"\nskip_bad_images = true\n'
        f"class_names = {json.dumps([EVIL_CLASS, AMP_CLASS])}\n"
        f'[model]\nsmall_input_stem = "off"\n[train]\nepochs = 1\nbatch_size = 8\n', encoding="utf-8")
    rc = main(["train", "--config", str(config), "--checkpoints", str(root / "checkpoints")])
    assert rc == 0
    return {"root": root, "data": data, "run_dir": root / "checkpoints" / RUN}


def roots(run: dict[str, Path]) -> list[str]:
    return ["--checkpoints", str(run["root"] / "checkpoints"), "--reports", str(run["root"] / "reports")]


def _copy_run(run: dict[str, Path], name: str) -> Path:
    target = run["root"] / "checkpoints" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run["run_dir"], target)
    (target / "last.pt").unlink()
    return target


def _other_arch(path: Path, ckpt: runs.Checkpoint) -> None:
    model = build_model("resnet34", num_classes=2, in_channels=1, small_input_stem=False)
    runs.save_checkpoint(path, state_dict=model.state_dict(), meta=ckpt.meta)


def _other_classes(path: Path, ckpt: runs.Checkpoint) -> None:
    model = build_model("resnet18", num_classes=3, in_channels=1, small_input_stem=False)
    runs.save_checkpoint(path, state_dict=model.state_dict(), meta=ckpt.meta)


def _truncated_ckpt(path: Path, ckpt: runs.Checkpoint) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _meta_wrong_type(path: Path, ckpt: runs.Checkpoint) -> None:
    runs.save_checkpoint(path, state_dict=ckpt.state_dict, meta={**ckpt.meta, "image_size": "big"})


def _meta_not_a_dict(path: Path, ckpt: runs.Checkpoint) -> None:
    torch.save({"format": 1, "meta_json": "[1, 2]", "state_dict": ckpt.state_dict}, path)


BAD_CHECKPOINTS = {
    "other_architecture": (_other_arch, "do not fit this architecture"),
    "other_class_count": (_other_classes, "another class count"),
    "truncated": (_truncated_ckpt, "not a checkpoint"),
    "text_file": (lambda p, c: p.write_text("weights go here"), "not a checkpoint"),
    "empty_file": (lambda p, c: p.write_bytes(b""), "not a checkpoint"),
    "plain_tensor_dict": (lambda p, c: torch.save({"w": torch.zeros(2)}, p), "not an xreport checkpoint"),
    "meta_wrong_type": (_meta_wrong_type, "image_size"),
    "meta_not_a_mapping": (_meta_not_a_dict, "not a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_refused(tiny_run, capsys, case):
    damage, needle = BAD_CHECKPOINTS[case]
    run_dir = _copy_run(tiny_run, f"ck-{case}")
    damage(run_dir / "best.pt", runs.load_checkpoint(tiny_run["run_dir"] / "best.pt"))
    rc, _, err = cli(capsys, "evaluate", "--run", str(run_dir), "--no-cam", *roots(tiny_run))
    one_error(rc, err, str(run_dir / "best.pt"), needle)
    assert not (tiny_run["root"] / "reports" / f"ck-{case}").exists()


class _Payload:
    """Pickles to a call of ``open(marker, "w")``: harmless, but it leaves a trace if run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_payload_is_refused_and_never_runs(tiny_run, tmp_path):
    """subprocess"""
    run_dir = _copy_run(tiny_run, "ck-payload")
    good = runs.load_checkpoint(tiny_run["run_dir"] / "best.pt")
    marker = tmp_path / "payload-ran"
    torch.save({"format": 1, "meta_json": json.dumps(good.meta), "state_dict": good.state_dict,
                "extra": {"x": _Payload(marker)}}, run_dir / "best.pt")
    proc = run_cli("evaluate", "--run", str(run_dir), "--no-cam", *roots(tiny_run), cwd=tmp_path)
    line = one_error(proc.returncode, proc.stderr, "best.pt", "refused to load", "open")
    assert "Weights only load failed" not in line          # the useful line, not torch's preamble
    assert not marker.exists()
    # The file really is live: an unsafe load would have run it.
    torch.load(run_dir / "best.pt", weights_only=False)
    assert marker.exists()


def test_an_empty_test_split_is_refused(tiny_run, capsys, tmp_path):
    path = tmp_path / "ext.npz"
    _npz(path, test_images=np.zeros((0, SIZE, SIZE), np.uint8), test_labels=np.zeros((0, 1), int))
    rc, _, err = cli(capsys, "evaluate", "--run", RUN, "--data", str(path), "--no-cam", *roots(tiny_run))
    one_error(rc, err, "ext.npz", "'test' split is empty")


def test_one_class_test_split_gives_undefined_metrics_with_reasons(tiny_run, capsys, tmp_path):
    path = tmp_path / "oneclass.npz"
    # The test split holds class 0 only; train labels keep the file two-class.
    _npz(path, test_labels=np.zeros((8, 1), int))
    rc, _, err = cli(capsys, "evaluate", "--run", RUN, "--data", str(path), "--no-cam", *roots(tiny_run))
    assert rc == 0, err
    # Other data is an external evaluation: it goes to its own folder, never over the run's files.
    external = tiny_run["root"] / "reports" / RUN / "external-oneclass" / "metrics.json"
    metrics = json.loads(external.read_text(encoding="utf-8"))["metrics"]
    assert metrics["roc_auc"]["value"] is None and metrics["roc_auc"]["reason"]
    assert metrics["accuracy"]["value"] is not None


@pytest.mark.slow
def test_html_in_names_is_escaped_and_skipped_files_are_listed(tiny_run, capsys):
    rc, _, err = cli(capsys, "build", "--run", RUN, "--format", "html", "--lang", "en,zh-CN", *roots(tiny_run))
    assert rc == 0, err
    html = (tiny_run["root"] / "reports" / RUN / "report.html").read_text(encoding="utf-8")
    assert EVIL_CLASS not in html and "alert(&#39;x&#39;)" in html
    assert AMP_CLASS not in html and "B&amp;&lt;b&gt;bold" in html
    # The only scripts are the attention viewer's own data block and code, never a name's.
    scripts = re.findall(r"<script[^>]*>", html.lower())
    assert scripts in ([], ['<script type="application/json" id="xr-viewer-data">', "<script>"]), scripts
    assert "http://" not in html and "https://" not in html and "src=\"//" not in html
    assert "train/a/broken.png" in html and "test/b/notes.png" in html
    assert RUN in html
    # A hostile --templates folder: one line, and the report already there is untouched.
    hostile = tiny_run["root"] / "hostile"
    hostile.mkdir(exist_ok=True)
    (hostile / "body.html.j2").write_text(HOSTILE_TEMPLATES["mro"], encoding="utf-8")
    rc, _, err = cli(capsys, "build", "--run", RUN, "--format", "html", "--templates", str(hostile),
                     *roots(tiny_run))
    one_error(rc, err, "refused by the sandbox", "__class__")
    assert (tiny_run["root"] / "reports" / RUN / "report.html").read_text(encoding="utf-8") == html


def test_half_written_runs_are_not_left_by_a_data_error(tmp_path, capsys):
    """A failed first attempt must not block the retry with 'a run already exists'."""
    data = image_folder(tmp_path / "data")
    (data / "train" / "a" / "0.png").write_bytes(b"")
    rc, _, err = cli(capsys, *train_args(data, "retry", tmp_path))
    one_error(rc, err, "0.png")
    png(data / "train" / "a" / "0.png", seed=1)              # the user fixes the data ...
    rc, _, err = cli(capsys, *train_args(data, "retry", tmp_path))
    assert rc == 0, err                                      # ... and the same command works


# ---------------------------------------------------------------- hostile templates

HOSTILE_TEMPLATES = {
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ t.__init__.__globals__['os'] }}",
    "cycler": "{{ cycler.__init__.__globals__.os.popen('touch pwned').read() }}",
    "attr_filter": "{{ ctx|attr('__class__') }}",
    "format": "{{ '{0.__class__}'.format(ctx) }}",
    "include_outside": "{% include '../../../../etc/passwd' %}",
    "huge_range": "{{ range(10**9)|list|length }}",
    "syntax": "{% for %}",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TEMPLATES))
def test_a_hostile_user_template_fails_with_one_line(tmp_path, monkeypatch, case):
    from report_fixture import shared_run

    from xreport import render
    from xreport.errors import ReportError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "body.html.j2").write_text(HOSTILE_TEMPLATES[case], encoding="utf-8")
    _, context = shared_run()
    with pytest.raises(ReportError) as info:
        render.render_html(context, langs=["en"], templates_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "template" in message
    assert not (tmp_path / "pwned").exists()


def test_pdf_rendering_makes_no_network_request(tmp_path):
    """A user template pointing at a local HTTP server: WeasyPrint must never call it."""
    pytest.importorskip("weasyprint")
    import http.server
    import threading

    from report_fixture import shared_run

    from xreport import render

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        (tmp_path / "body.html.j2").write_text(
            f'<style>@import url("{url}/a.css"); body {{ background: url("{url}/bg.png"); }}</style>'
            f'<img src="{url}/x.png"><link rel="stylesheet" href="{url}/b.css"><p>{{{{ lang }}}}</p>',
            encoding="utf-8")
        _, context = shared_run()
        out = render.render_pdf(context, lang="en", out_path=tmp_path / "out.pdf", templates_dir=tmp_path)
        assert out.stat().st_size > 1000
        html = render.render_html(context, langs=["en"], templates_dir=tmp_path)
    finally:
        server.shutdown()
    assert hits == []
    assert url in html          # the user asked for it; the HTML is theirs, the fetch is ours


def test_truncated_images_are_refused_even_after_weasyprint_is_imported(tmp_path):
    """WeasyPrint sets PIL's process-wide LOAD_TRUNCATED_IMAGES on when it is imported."""
    pytest.importorskip("weasyprint")
    import weasyprint  # noqa: F401
    from PIL import ImageFile

    from xreport.errors import DataError

    assert ImageFile.LOAD_TRUNCATED_IMAGES
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.png: corrupt or truncated"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES           # put back as found
