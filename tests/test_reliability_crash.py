"""Output is never left damaged by a failed or interrupted command.

- every option is checked before anything is written (evaluate with a bad --cam);
- evaluate takes the report lock that build takes;
- a report folder's file set is written to a staging copy and swapped in whole: an
  interruption (SIGINT while the CAM gallery is rewritten) leaves the previous set;
- a training epoch whose files cannot be written (disk full) leaves the previous epoch's
  set, which --resume continues.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from test_reliability_inputs import cli, one_error
from test_reliability_interrupt import tiny_config
from test_reliability_limits import fixture_run  # noqa: F401  (the shared copy of the binary fixture run)
from xreport import runs


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (the lock file aside)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def evaluate(run_dir: Path, tmp_path: Path, *more: str) -> list[str]:
    return ["evaluate", "--run", str(run_dir), "--device", "cpu",
            "--reports", str(tmp_path / "reports"), *more]


def test_evaluate_rejects_a_bad_cam_before_writing_anything(tmp_path, capsys, fixture_run):
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--cam", "nonsense"))
    one_error(rc, err, "--cam", "nonsense")
    assert not (tmp_path / "reports").exists()


def test_a_bad_cam_leaves_an_existing_report_alone(tmp_path, capsys, fixture_run):
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--no-cam"))
    assert rc == 0, err
    before = snapshot(tmp_path / "reports" / "fx")
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--split", "val", "--cam", "nonsense"))
    one_error(rc, err, "--cam")
    assert snapshot(tmp_path / "reports" / "fx") == before


def test_build_rejects_bad_options_before_writing(tmp_path, capsys, fixture_run):
    for bad in (["--cam", "x"], ["--templates", str(tmp_path / "missing")], ["--lang", "fr"],
                ["--format", "docx"], ["--device", "tpu"]):
        rc, _, err = cli(capsys, "build", "--run", str(fixture_run), "--reports", str(tmp_path / "reports"),
                         *bad)
        one_error(rc, err)
    assert not (tmp_path / "reports").exists()


def test_evaluate_takes_the_report_lock(tmp_path, capsys, fixture_run):
    report = tmp_path / "reports" / "fx"
    with runs.run_lock(report, what="report"):       # as if a build were running
        rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--no-cam"))
    one_error(rc, err, "another xreport process is writing this report")
    assert not (report / "predictions.csv").exists()


def test_an_interrupted_cam_gallery_leaves_the_previous_set(tmp_path, capsys, fixture_run, monkeypatch):
    """Issue 13: SIGINT while the gallery was rewritten deleted 6 of 8 images."""
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path))
    assert rc == 0, err
    report = tmp_path / "reports" / "fx"
    before = snapshot(report)
    # evaluate keeps the gallery's maps (cams.npz); the figures stage draws the overlays
    assert "cams.npz" in before

    from xreport import artifacts

    def interrupted(*a, **k):
        raise KeyboardInterrupt       # while the new gallery is written
    monkeypatch.setattr(artifacts, "save_gallery_cams", interrupted)
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--split", "val"))
    assert rc == 130
    assert snapshot(report) == before
    assert not [p for p in report.parent.iterdir() if ".staging-" in p.name]


def test_a_failure_late_in_evaluate_leaves_the_previous_set(tmp_path, capsys, fixture_run, monkeypatch):
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--no-cam"))
    assert rc == 0, err
    report = tmp_path / "reports" / "fx"
    before = snapshot(report)
    real_replace = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith("metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr("xreport.runs.os.replace", full)
    rc, _, err = cli(capsys, *evaluate(fixture_run, tmp_path, "--no-cam", "--split", "val"))
    one_error(rc, err, "metrics.json", "No space left")
    assert snapshot(report) == before     # predictions.csv of val is not beside metrics of test


@pytest.mark.parametrize("exchange", [True, False])
def test_the_swap_replaces_the_whole_set(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    folder = tmp_path / "reports" / "r"
    folder.mkdir(parents=True)
    (folder / "old.txt").write_text("old")
    (folder / "keep.txt").write_text("keep")
    with runs.run_lock(folder, what="report"), runs.staged_folder(folder) as staged:
        (staged / "old.txt").unlink()
        (staged / "new.txt").write_text("new")
        assert (folder / "old.txt").exists() and not (folder / "new.txt").exists()
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == ["keep.txt", "new.txt"]
    assert [p.name for p in folder.parent.iterdir()] == ["r"]


def test_a_swap_cut_between_its_renames_is_finished_next_time(tmp_path):
    folder = tmp_path / "reports" / "r"
    staged = tmp_path / "reports" / ".r.staging-x" / "r"
    staged.mkdir(parents=True)
    (staged / "report.html").write_text("new")
    (staged / ".complete").write_text("")
    leftover = tmp_path / "reports" / ".r.staging-y" / "r"      # an unfinished staging copy
    leftover.mkdir(parents=True)
    runs.recover_staged(folder)
    assert (folder / "report.html").read_text() == "new"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["r"]


def _fail_on(monkeypatch, name: str, *, at_call: int) -> None:
    """The disk is full when the ``at_call``-th temporary file for ``name`` is created."""
    import tempfile

    real_mkstemp = tempfile.mkstemp
    seen = []

    def mkstemp(*a, prefix: str = "", **k):
        if prefix.startswith(f".{name}."):
            seen.append(prefix)
            if len(seen) == at_call:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*a, prefix=prefix, **k)
    monkeypatch.setattr("xreport.runs.tempfile.mkstemp", mkstemp)


def test_disk_full_in_epoch_2_leaves_a_run_that_resume_finishes(tmp_path, capsys, monkeypatch):
    config = tiny_config(tmp_path / "r.toml", epochs=2, train_n=32)
    args = ["train", "--config", str(config), "--checkpoints", str(tmp_path / "checkpoints")]
    with monkeypatch.context() as m:
        _fail_on(m, "last.pt", at_call=2)
        rc, _, err = cli(capsys, *args)
    one_error(rc, err, "epoch 2", "last.pt", "--resume")
    run = tmp_path / "checkpoints" / "r"
    assert runs.load_checkpoint(run / "last.pt").meta["epoch"] == 1
    assert runs.load_checkpoint(run / "best.pt").meta["epoch"] == 1
    assert len((run / "history.csv").read_text().strip().splitlines()) == 2   # header + epoch 1
    assert not list(run.glob(".*.tmp"))
    rc, _, err = cli(capsys, *args, "--resume")
    assert rc == 0, err
    assert runs.load_checkpoint(run / "last.pt").meta["epoch"] == 2


def test_disk_full_in_epoch_1_leaves_a_folder_a_plain_run_reuses(tmp_path, capsys, monkeypatch):
    config = tiny_config(tmp_path / "r.toml", epochs=1, train_n=32)
    args = ["train", "--config", str(config), "--checkpoints", str(tmp_path / "checkpoints")]
    with monkeypatch.context() as m:
        _fail_on(m, "last.pt", at_call=1)
        rc, _, err = cli(capsys, *args)
    one_error(rc, err, "epoch 1", "run the same command again")
    run = tmp_path / "checkpoints" / "r"
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
    rc, _, err = cli(capsys, *args)
    assert rc == 0, err
