"""Issue 23: nothing trusted that should not be. One section per class of failure, each case
a test that failed before the fix (see RELIABILITY.md, "Classes of failure closed by issue 23")."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from test_reliability_inputs import SIZE, cli, image_folder, one_error, png

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train_run(capsys, tmp_path: Path, *, names: tuple[str, ...] = ("normal", "lesion"),
               name: str = "r") -> Path:
    """A tiny run trained on an .npz whose classes are named (in this order) by data.class_names."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, SIZE, SIZE), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % len(names))[:, None]
    np.savez(tmp_path / "d.npz", **arrays)
    config = tmp_path / "run.toml"
    config.write_text(f'name = "{name}"\nimage_size = {SIZE}\n[data]\ndataset = "{tmp_path / "d.npz"}"\n'
                      f"class_names = {list(names)!r}\n".replace("'", '"')
                      + '[model]\narch = "resnet_tiny"\n[train]\nepochs = 1\nbatch_size = 4\nmax_steps = 1\n',
                      encoding="utf-8")
    rc, _, err = cli(capsys, "train", "--config", str(config), "--checkpoints", str(tmp_path / "checkpoints"))
    assert rc == 0, err
    return tmp_path / "checkpoints"


def _evaluate(capsys, tmp_path: Path, data: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "evaluate", "--run", "r", "--data", str(data), "--no-cam", "--device", "cpu",
               "--checkpoints", str(tmp_path / "checkpoints"), "--reports", str(tmp_path / "reports"), *extra)


def _y_true_by_folder(predictions: Path) -> dict[str, set[int]]:
    with open(predictions, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, set[int]] = {}
    for row in rows:
        out.setdefault(row["id"].split("/")[1], set()).add(int(row["y_true"]))
    return out


# ---------------------------------------------------------------- 1. classes matched by name

def test_the_same_class_names_in_another_order_map_by_name(tmp_path, capsys, caplog):
    _train_run(capsys, tmp_path)              # the model's classes: normal (0), lesion (1)
    data = image_folder(tmp_path / "ext", classes=("lesion", "normal"))   # sorted the other way
    rc, _, err = _evaluate(capsys, tmp_path, data)
    assert rc == 0, err
    labels = _y_true_by_folder(tmp_path / "reports" / "r" / "external-ext" / "predictions.csv")
    assert labels == {"normal": {0}, "lesion": {1}}
    assert "matched to the checkpoint by name" in caplog.text


def test_other_class_names_are_refused_naming_both_sets(tmp_path, capsys):
    _train_run(capsys, tmp_path)
    data = image_folder(tmp_path / "ext", classes=("cat", "dog"))
    rc, _, err = _evaluate(capsys, tmp_path, data)
    one_error(rc, err, "'cat'", "cat, dog", "normal, lesion", "class_map")
    assert not (tmp_path / "reports" / "r" / "external-ext").exists()


def test_a_class_map_maps_other_names(tmp_path, capsys):
    _train_run(capsys, tmp_path)
    data = image_folder(tmp_path / "ext", classes=("cat", "dog"))
    rc, _, err = _evaluate(capsys, tmp_path, data, "--class-map", "cat=lesion,dog=normal")
    assert rc == 0, err
    labels = _y_true_by_folder(tmp_path / "reports" / "r" / "external-ext" / "predictions.csv")
    assert labels == {"cat": {1}, "dog": {0}}


def test_a_class_map_naming_a_missing_class_is_refused(tmp_path, capsys):
    _train_run(capsys, tmp_path)
    data = image_folder(tmp_path / "ext", classes=("lesion", "normal"))
    rc, _, err = _evaluate(capsys, tmp_path, data, "--class-map", "bird=lesion")
    one_error(rc, err, "'bird'", "class_map")


def test_match_classes_is_one_function():
    from xreport.data.base import match_classes
    from xreport.errors import DataError

    assert match_classes(["b", "a"], ["a", "b"], where="x") == [1, 0]
    assert match_classes(["x", "a"], ["a", "b"], where="x", class_map={"x": "b"}) == [1, 0]
    assert match_classes(["class_0", "class_1"], ["a", "b"], where="x") == [0, 1]  # no names: by index
    with pytest.raises(DataError, match="a, c.*a, b"):
        match_classes(["a", "c"], ["a", "b"], where="x")
    with pytest.raises(DataError, match="two classes"):
        match_classes(["a", "c"], ["a", "b"], where="x", class_map={"c": "a"})


def test_compare_pairs_runs_whose_classes_are_the_same_names_in_another_order(tmp_path):
    import dataclasses

    from test_compare import _labels, memory_run
    from xreport import compare

    y = _labels(80, seed=3)
    ids = [f"id{i}" for i in range(80)]
    a = memory_run(tmp_path, "a", y=y, ids=ids, separation=1.0, seed=1)
    b = memory_run(tmp_path, "b", y=y, ids=ids, separation=1.5, seed=2)
    # b trained with the classes the other way round: label 0 is PNEUMONIA, columns swapped.
    evaluation = {**b.evaluation, "metrics": {**b.evaluation["metrics"], "class_names": ["PNEUMONIA", "NORMAL"]}}
    swapped = dataclasses.replace(b, y_true=1 - y, probs=b.probs[:, ::-1], evaluation=evaluation,
                                  meta={**b.meta, "class_names": ["PNEUMONIA", "NORMAL"]})
    (plain,) = compare.paired_tests(a, [b], n_boot=50)
    (by_name,) = compare.paired_tests(a, [swapped], n_boot=50)
    assert by_name["paired"], by_name["reason"]
    assert by_name["mcnemar"] == plain["mcnemar"]
    assert by_name["auc"]["p_value"] == pytest.approx(plain["auc"]["p_value"])


# ---------------------------------------------------------------- 2. output folders the user owns

def _evaluate_out(capsys, tmp_path: Path, out: Path | str) -> tuple[int, str, str]:
    return cli(capsys, "evaluate", "--run", "r", "--out", str(out), "--no-cam", "--device", "cpu",
               "--checkpoints", str(tmp_path / "checkpoints"), "--reports", str(tmp_path / "reports"))


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_the_runs_own_report_folder_is_refused_as_out(tmp_path, capsys):
    _train_run(capsys, tmp_path)
    rc, _, err = cli(capsys, "evaluate", "--run", "r", "--no-cam", "--device", "cpu",
                     "--checkpoints", str(tmp_path / "checkpoints"), "--reports", str(tmp_path / "reports"))
    assert rc == 0, err
    before = _tree(tmp_path)
    for out in (tmp_path / "reports" / "r", tmp_path / "reports" / "r" / "val", tmp_path / "checkpoints" / "r",
                tmp_path / "reports"):
        rc, _, err = _evaluate_out(capsys, tmp_path, out)
        one_error(rc, err, "--out", "run's own folder")
    assert _tree(tmp_path) == before


def test_a_non_empty_foreign_folder_and_the_current_folder_are_refused(tmp_path, capsys, monkeypatch):
    _train_run(capsys, tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    (mine / "metrics.json").write_text("{}", encoding="utf-8")
    before = _tree(tmp_path)
    rc, _, err = _evaluate_out(capsys, tmp_path, mine)
    one_error(rc, err, "notes.txt", "not an evaluation's")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, _, err = _evaluate_out(capsys, tmp_path, ".")
    one_error(rc, err, "current folder")
    work.rmdir()
    assert _tree(tmp_path) == before          # no staging folder, no lock, nothing created


def test_a_symlinked_out_is_written_through_and_stays_a_link(tmp_path, capsys):
    _train_run(capsys, tmp_path)
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for _ in range(2):                        # a second evaluation replaces the first in place
        rc, _, err = _evaluate_out(capsys, tmp_path, link)
        assert rc == 0, err
        assert link.is_symlink() and (target / "predictions.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


# ---------------------------------------------------------------- 3. one bounded loader for every byte stream

def _deflated(path: Path) -> Path:
    """The torch.save archive at ``path`` rewritten with its members deflated: what a forged
    file declaring a tensor far larger than itself looks like (torch.save never compresses)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_a_weights_file_with_an_inflating_tensor_is_refused_before_loading(tmp_path):
    import torch

    from xreport.errors import CheckpointError
    from xreport.models import build_model

    path = tmp_path / "w.pth"
    state = build_model("resnet_tiny", num_classes=2).state_dict()
    state["extra.big"] = torch.zeros(4 * 2**20, dtype=torch.uint8)      # 4 MB of zeros -> a few KB
    torch.save(state, path)
    _deflated(path)
    assert path.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"w\.pth.*compressed"):
        build_model("resnet_tiny", num_classes=2, weights=path)


def test_the_torch_hub_cache_file_goes_through_the_same_loader(tmp_path, monkeypatch):
    import torch
    import torchvision

    from xreport.errors import CheckpointError
    from xreport.models import build_model, weights_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    _deflated(path)
    with pytest.raises(CheckpointError, match=r"resnet18-f37072fd\.pth.*compressed.*download"):
        build_model("resnet18", num_classes=2, pretrained=True)


@pytest.fixture
def cached_folder(tmp_path, monkeypatch):
    from xreport.data import images as images_mod

    monkeypatch.setenv(images_mod.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(images_mod, "CACHE_MIN_FILES", 4)
    return image_folder(tmp_path / "data", n=4)


def _load(root: Path):
    from xreport.config import DataConfig, PreprocessConfig
    from xreport.data import load_dataset

    return load_dataset(DataConfig(dataset=str(root)), PreprocessConfig(), image_size=SIZE,
                        splits=("train", "test"))


@pytest.mark.parametrize("tamper", ["fewer images", "other size", "other channels", "pixels changed",
                                    "inflating"])
def test_a_tampered_decode_cache_entry_is_decoded_again(cached_folder, tmp_path, caplog, tamper):
    import torch

    first = _load(cached_folder)
    for entry in (tmp_path / "cache").glob("*.pt"):
        blob = torch.load(entry, weights_only=True)
        images = blob["images"]
        if tamper == "fewer images":
            blob.update(images=images[:3], kept=blob["kept"][:3], n=3)
        elif tamper == "other size":
            blob["images"] = torch.zeros((len(images), 1, 4, 4), dtype=torch.uint8)
        elif tamper == "other channels":
            blob["images"] = images.expand(-1, 3, -1, -1).contiguous()
        elif tamper == "pixels changed":
            blob["images"] = 255 - images
        else:
            blob["junk"] = torch.zeros(4 * 2**20, dtype=torch.uint8)
        torch.save(blob, entry)
        if tamper == "inflating":
            _deflated(entry)
    second = _load(cached_folder)
    for split in ("train", "test"):
        assert torch.equal(first.splits[split].images, second.splits[split].images)
    assert "unusable decode cache" in caplog.text


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    from report_fixture import make_run

    return make_run(tmp_path_factory.mktemp("fixture"))


def _edited(run, tmp_path: Path, edit) -> "object":
    """A copy of the fixture run with its metrics.json changed by ``edit(data)``."""
    import json
    import shutil

    from xreport import runs

    paths = runs.RunPaths(run.name, checkpoints_root=tmp_path / "c", reports_root=tmp_path / "r")
    shutil.copytree(run.run_dir, paths.run_dir)
    shutil.copytree(run.report_dir, paths.report_dir)
    data = json.loads(paths.metrics.read_text(encoding="utf-8"))
    edit(data)
    paths.metrics.write_text(json.dumps(data), encoding="utf-8")
    return paths


def _set(path: str, value):
    def edit(data):
        node = data
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, needle", [
    (_set("metrics.accuracy.value", 1.5), "metrics.accuracy.value is 1.5"),
    (_set("metrics.n", -5), "metrics.n is -5"),
    (_set("metrics.roc_auc.ci95", [-0.2, 0.9]), "metrics.roc_auc.ci95[0]"),
    (_set("metrics.confusion_matrix.raw", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "not 2x2"),
    (_set("metrics.per_class.0.support", -1), "support is -1"),
    (_set("metrics.class_names", ["PNEUMONIA", "NORMAL"]), "not the checkpoint's"),
    (_set("predicted_counts", [3, -1]), "predicted_counts[1]"),
])
def test_hand_edited_metrics_out_of_range_are_refused(fixture_run, tmp_path, edit, needle):
    from xreport import artifacts
    from xreport.errors import ReportError

    paths = _edited(fixture_run, tmp_path, edit)
    with pytest.raises(ReportError) as info:
        artifacts.load_evaluation(paths, class_names=["NORMAL", "PNEUMONIA"])
    message = str(info.value)
    assert "metrics.json" in message and needle in message and "\n" not in message


def test_hand_edited_predictions_and_viewer_are_refused(fixture_run, tmp_path):
    import json

    from xreport import artifacts
    from xreport.errors import ReportError

    paths = _edited(fixture_run, tmp_path, lambda d: None)
    artifacts.save_predictions(paths, ["a", "b"], np.array([0, 1]), np.array([[0.3, 0.7], [0.6, 0.4]]),
                               class_names=["NORMAL", "PNEUMONIA"])
    artifacts.load_predictions(paths, class_names=["NORMAL", "PNEUMONIA"])      # as written: fine
    lines = paths.predictions.read_text(encoding="utf-8").splitlines()
    cells = lines[1].split(",")
    cells[-1] = "1.7"                             # prob_1 of the first row
    paths.predictions.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match=r"predictions.csv: .*outside \[0, 1\]"):
        artifacts.load_predictions(paths, class_names=["NORMAL", "PNEUMONIA"])
    from test_viewer import _fake_viewer

    data = _fake_viewer(2, 8, names=["NORMAL", "PNEUMONIA"])
    folder = paths.evaluation("test")
    artifacts.save_viewer(folder, data)
    artifacts.load_viewer(folder, class_names=["NORMAL", "PNEUMONIA"])     # as written: fine
    for edit, needle in ((lambda d: d.update(class_names=d["class_names"][::-1]), "not the checkpoint's"),
                         (lambda d: d["items"][0].update(p=[1.5, -0.5]), "does not fit")):
        edited = json.loads(json.dumps(data))
        edit(edited)
        folder.viewer.write_text(json.dumps(edited))   # by hand: the writer refuses it
        with pytest.raises(ReportError, match=f"viewer.json: .*{needle}"):
            artifacts.load_viewer(folder, class_names=["NORMAL", "PNEUMONIA"])


def test_hand_edited_history_out_of_range_is_refused(fixture_run, tmp_path):
    from xreport import artifacts
    from xreport.errors import ReportError

    paths = _edited(fixture_run, tmp_path, lambda d: None)
    lines = paths.history.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("val_acc")] = "1.5"
    paths.history.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match=r"history.csv: row 1 val_acc is 1.5"):
        artifacts.load_history(paths)


def test_a_hand_edited_metrics_json_is_refused_by_build_in_one_line(fixture_run, tmp_path, capsys):
    # The fixture's metrics.json names a checkpoint hash; build would re-evaluate a stale one,
    # so the refusal is tested where the file is read for the report.
    from xreport.build import report_context
    from xreport.errors import ReportError

    paths = _edited(fixture_run, tmp_path, _set("metrics.confusion_matrix.raw", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ReportError, match="metrics.json: metrics.confusion_matrix.raw is not 2x2"):
        report_context(paths, langs=["en"])


DEEP = 200_000


@pytest.mark.parametrize("which", ["metrics.json", "viewer.json", "catalog", "config"])
def test_json_nested_200000_deep_is_one_line_naming_the_file(fixture_run, tmp_path, capsys, which):
    from xreport import artifacts, config, runs
    from xreport.errors import XReportError

    deep = "[" * DEEP + "]" * DEEP
    if which == "metrics.json":
        paths = runs.EvaluationPaths(tmp_path)
        paths.metrics.write_text('{"metrics": ' + deep + "}", encoding="utf-8")
        call, name = (lambda: artifacts.load_evaluation(paths)), "metrics.json"
    elif which == "viewer.json":
        paths = runs.EvaluationPaths(tmp_path)
        paths.viewer.write_text(deep, encoding="utf-8")
        call, name = (lambda: artifacts.load_viewer(paths)), "viewer.json"
    elif which == "catalog":
        from xreport import render

        templates = tmp_path / "templates"
        (templates / "i18n" / "en").mkdir(parents=True)
        (templates / "i18n" / "en" / "deep.json").write_text('{"a": ' + deep + "}", encoding="utf-8")
        call, name = (lambda: render.load_catalog("en", templates)), "deep.json"
    else:
        path = tmp_path / "deep.toml"
        path.write_text("a = " + deep + "\n", encoding="utf-8")
        call, name = (lambda: config.load(path)), "deep.toml"
    with pytest.raises(XReportError) as info:
        call()
    assert name in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- 7. symlink loops (a regression)

@pytest.mark.parametrize("layout", ["two links", "self link", "csv"])
def test_a_symlink_loop_in_the_data_is_one_line(tmp_path, capsys, layout):
    from test_reliability_inputs import train_args

    data = image_folder(tmp_path / "data")
    if layout == "two links":
        (data / "train" / "a" / "loop1.png").symlink_to("loop2.png")
        (data / "train" / "a" / "loop2.png").symlink_to("loop1.png")
    elif layout == "self link":
        (data / "test" / "b" / "x.png").symlink_to("x.png")
    else:
        (data / "train.csv").write_text("path,label\ntrain/a/0.png,a\nself.png,b\n", encoding="utf-8")
        (data / "self.png").symlink_to("self.png")
        data = data / "train.csv"
    rc, _, err = cli(capsys, *train_args(data, "loop", tmp_path))
    one_error(rc, err, "symlink loop")


# ---------------------------------------------------------------- 5. bidi and control characters

RLO_NAME = "lesion\u202eevil\u2066x\u200f\x1b\x85"


def test_bidi_and_control_characters_in_names_cannot_reorder_the_report(tmp_path):
    from report_fixture import make_run
    from xreport import render
    from xreport.build import report_context

    paths = make_run(tmp_path, class_names=("normal", RLO_NAME), class_names_zh=("正常", RLO_NAME))
    context = report_context(paths, langs=["en", "zh-TW"])
    html = render.render_html(context, langs=["en", "zh-TW"])
    pdf_html = render.render_pdf_html(context, lang="en")
    for text in (html, pdf_html):
        assert "lesionevilx" in text                        # the name is shown, its controls gone
        for ch in "\u202e\u2066\u200f\x1b\x85":
            assert ch not in text, repr(ch)
    assert render.clean_text("a\u202bb\u2069c\td\n") == "abc\td\n"


# ---------------------------------------------------------------- 4. degenerate data, where it enters

@pytest.mark.parametrize("tag, value", [("WindowCenter", "nan"), ("WindowWidth", "inf"),
                                        ("RescaleSlope", "nan"), ("RescaleIntercept", "-inf")])
def test_non_finite_dicom_scaling_tags_are_refused(tmp_path, tag, value):
    from test_data_files import write_dicom
    from xreport.data import read_image
    from xreport.errors import DataError

    path = write_dicom(tmp_path / "a.dcm", np.array([[0, 500], [1000, 4000]]))
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(path)
    setattr(ds, tag, pydicom.valuerep.DSfloat(value, auto_format=False, validation_mode=0))
    ds.save_as(path)
    with pytest.raises(DataError, match=f"a.dcm: DICOM tag {tag} .*not a finite number"):
        read_image(path)


def test_constant_images_are_counted_warned_and_recorded(tmp_path, caplog):
    from PIL import Image

    from xreport.config import DataConfig, PreprocessConfig
    from xreport.data import class_distribution, load_dataset

    data = image_folder(tmp_path / "data")
    for i in range(2):
        Image.fromarray(np.full((SIZE, SIZE), 77, np.uint8)).save(data / "train" / "a" / f"{i}.png")
    ds = load_dataset(DataConfig(dataset=str(data)), PreprocessConfig(), image_size=SIZE)
    assert class_distribution(ds)["constant_images"] == {"train": 2, "val": 0, "test": 0}
    assert "2 image(s) hold one grey value only" in caplog.text


def _npz_without_val(path: Path, train: list[int], size: int = SIZE) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (len(train), size, size), dtype=np.uint8),
             train_labels=np.array(train)[:, None],
             test_images=rng.integers(0, 255, (4, size, size), dtype=np.uint8),
             test_labels=np.array([0, 1, 0, 1])[:, None])
    return path


def test_a_held_out_val_split_that_would_lack_a_class_is_refused(tmp_path, capsys):
    from test_reliability_inputs import train_args

    path = _npz_without_val(tmp_path / "d.npz", [0] * 15 + [1])
    rc, _, err = cli(capsys, *train_args(path, "v", tmp_path))
    one_error(rc, err, "d.npz", "'class_1'", "held-out val split cannot hold", "allow_missing_classes")


def test_a_nan_selection_metric_falls_back_to_val_loss_stated_and_recorded(tmp_path, capsys, caplog):
    from xreport import artifacts

    path = _npz_without_val(tmp_path / "d.npz", [0] * 15 + [1])
    config = tmp_path / "run.toml"
    config.write_text(f'name = "v"\nimage_size = {SIZE}\n[data]\ndataset = "{path}"\nallow_missing_classes = true\n'
                      '[model]\narch = "resnet_tiny"\n[train]\nrecipe = "plain"\nepochs = 2\nbatch_size = 8\n',
                      encoding="utf-8")
    rc, out, err = cli(capsys, "train", "--config", str(config), "--checkpoints", str(tmp_path / "checkpoints"))
    assert rc == 0, err
    assert "(val_loss " in out and "val_auc nan" not in out
    assert "val_auc is NaN at epoch 1" in caplog.text
    meta = artifacts.load_checkpoint_meta(tmp_path / "checkpoints" / "v" / "best.pt")
    assert meta["selected_by"] == "val_loss"


def test_the_recipe_never_picks_an_image_size_it_would_refuse(tmp_path, capsys):
    path = _npz_without_val(tmp_path / "d.npz", [0, 1] * 8, size=1)
    rc, out, err = cli(capsys, "train", "--dataset", str(path), "--arch", "resnet_tiny", "--epochs", "1",
                       "--max-steps", "1", "--name", "one", "--checkpoints", str(tmp_path / "checkpoints"))
    assert rc == 0, err
    from xreport import artifacts

    assert artifacts.load_checkpoint_meta(tmp_path / "checkpoints" / "one" / "best.pt")["image_size"] == 8


def test_a_torch_file_declaring_more_bytes_than_it_holds_is_refused(tmp_path):
    import struct

    import torch

    from xreport.errors import CheckpointError
    from xreport.models import build_model

    path = tmp_path / "w.pth"
    torch.save(build_model("resnet_tiny", num_classes=2).state_dict(), path)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at != -1:                               # every central-directory entry: 2 GB declared
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if b"/data/" in raw[at + 46:at + 46 + name_len]:
            struct.pack_into("<I", raw, at + 24, 2**31)
        at = raw.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"w\.pth: declares .* in a file of"):
        build_model("resnet_tiny", num_classes=2, weights=path)


# ---------------------------------------------------------------- 6. report work bounded by what it shows

def test_metrics_at_many_classes_stay_bounded_and_equal_the_full_computation(monkeypatch):
    from xreport import artifacts, metrics
    from xreport.limits import REPORT_CLASSES

    k, rng = 300, np.random.default_rng(0)
    y = np.repeat(np.arange(k), 2)
    logits = rng.normal(0, 1, (len(y), k))
    logits[np.arange(len(y)), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = [f"c{i}" for i in range(k)]
    counted = metrics.compute_all(y, probs, class_names=names, task="multiclass", n_boot=0)
    monkeypatch.setattr(metrics, "_FULL_CM_CLASSES", 10**6)      # the k x k confusion batch
    full = metrics.compute_all(y, probs, class_names=names, task="multiclass", n_boot=0)
    for key in ("accuracy", "balanced_accuracy", "mcc", "roc_auc", "roc_auc_weighted"):
        assert counted[key]["value"] == pytest.approx(full[key]["value"], abs=1e-12)
    assert [r["f1"]["value"] for r in counted["per_class"]] == pytest.approx(
        [r["f1"]["value"] for r in full["per_class"]], nan_ok=True)
    assert len(counted["curves"]["roc"]) == REPORT_CLASSES == len(counted["curves"]["pr"])
    assert "by_pred" not in counted["confusion_matrix"] and len(counted["confusion_matrix"]["raw"]) == k
    assert metrics.bootstrap_resamples(1000, 1000) == 100 and metrics.bootstrap_resamples(1000, 11) == 1000
    shown = artifacts.shown_confusion(counted)
    assert len(shown.indices) == REPORT_CLASSES and len(shown.raw) == REPORT_CLASSES == len(shown.raw[0])


def test_the_gallery_covers_at_most_the_shown_classes():
    from xreport.explain import select_gallery
    from xreport.limits import REPORT_CLASSES

    k, rng = 60, np.random.default_rng(1)
    y = np.repeat(np.arange(k), 3)
    probs = rng.dirichlet(np.ones(k), size=len(y))
    gallery = select_gallery(y, probs, class_names=[f"c{i}" for i in range(k)])
    assert len({e["class_index"] for e in gallery}) == REPORT_CLASSES
    small = select_gallery(y[:30], probs[:30, :10] / probs[:30, :10].sum(1, keepdims=True),
                           class_names=[f"c{i}" for i in range(10)])
    assert {e["class_index"] for e in small} == set(range(10))


def test_a_tampered_modality_cache_entry_is_a_miss():
    """The modality probe's cache entry is data from disk: only an entry of the written shape
    (a bool and three counts within the sample) is used; anything else decodes the sample again."""
    from xreport.data.images import Modality, _modality_entry

    good = {"colour": False, "sampled": 64, "stored_rgb": 37, "grey_content": 63}
    assert _modality_entry(good, 64) == Modality(False, 64, 37, 63)
    for bad in ({**good, "colour": "yes"}, {**good, "sampled": 10**9}, {**good, "stored_rgb": -1},
                {**good, "grey_content": True}, {**good, "extra": 1}, [good], None):
        assert _modality_entry(bad, 64) is None, bad
