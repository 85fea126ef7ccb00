"""Data roots: no path whose real target leaves the data folder is ever opened.

Issue 13's example 4 (an image-folder symlink out of the data root) and its class: any
file or folder link in an image folder, refused before it is opened, or skipped and listed
under ``skip_bad_images``.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from test_reliability_inputs import cli, image_folder, one_error, png, train_args


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    png(folder / "x.png", seed=9)
    return folder


@pytest.fixture()
def alarm():
    """Fail instead of hanging if anything opens a FIFO."""
    def boom(*_):
        raise AssertionError("a FIFO outside the data root was opened")
    previous = signal.signal(signal.SIGALRM, boom)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_example_4_a_symlink_out_of_the_data_root_is_refused(tmp_path, capsys, outside, alarm):
    data = image_folder(tmp_path / "data")
    os.mkfifo(outside / "fifo.png")     # opening it would block: proof nothing opens it
    (data / "train" / "a" / "leak.png").symlink_to(outside / "fifo.png")
    rc, _, err = cli(capsys, *train_args(data, "leak", tmp_path))
    one_error(rc, err, "leak.png", "outside the data folder")
    assert not (tmp_path / "checkpoints" / "leak" / "best.pt").exists()


@pytest.mark.parametrize("where", ["class_folder", "split_folder", "unlabelled_split"])
def test_folder_links_out_of_the_root_are_refused(tmp_path, capsys, outside, where):
    data = image_folder(tmp_path / "data")
    if where == "class_folder":
        (data / "train" / "c").symlink_to(outside, target_is_directory=True)
        for split in ("val", "test"):      # same class set everywhere, so only the link is wrong
            png(data / split / "c" / "0.png", seed=3)
    elif where == "split_folder":
        import shutil
        moved = tmp_path / "outside" / "test"
        shutil.move(str(data / "test"), moved)
        (data / "test").symlink_to(moved, target_is_directory=True)
    else:
        import shutil
        shutil.rmtree(data / "test")
        (data / "test").mkdir()
        (data / "test" / "u.png").symlink_to(outside / "x.png")
    rc, _, err = cli(capsys, *train_args(data, "leak", tmp_path))
    one_error(rc, err, "outside the data folder")


def test_links_inside_the_root_are_fine(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    pool = png(data / "pool" / "x.png", seed=5)           # inside the root, outside the splits
    (data / "train" / "a" / "linked.png").symlink_to(pool)
    rc, _, err = cli(capsys, *train_args(data, "inside", tmp_path))
    assert rc == 0, err


def test_skip_bad_images_skips_and_lists_the_link(tmp_path, capsys, outside, alarm):
    data = image_folder(tmp_path / "data")
    os.mkfifo(outside / "fifo.png")
    (data / "train" / "a" / "leak.png").symlink_to(outside / "fifo.png")
    rc, _, err = cli(capsys, *train_args(data, "skip", tmp_path), "--skip-bad-images")
    assert rc == 0, err
    log = (tmp_path / "checkpoints" / "skip" / "train.log").read_text(encoding="utf-8")
    assert "leak.png" in log and "outside the data folder" in log
