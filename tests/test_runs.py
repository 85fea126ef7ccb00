from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xreport import runs
from xreport.errors import CheckpointError, RunError


@pytest.mark.parametrize("name", ["chest_r18", "run-1.v2", "胸部_r18", "Résumé"])
def test_good_run_names(name):
    assert runs.check_run_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a b", ".hidden", "x\\y", "a\nb"])
def test_bad_run_names(name):
    with pytest.raises(RunError):
        runs.RunPaths(name)


def test_paths_stay_inside_their_roots(tmp_path):
    paths = runs.RunPaths("r", checkpoints_root=tmp_path / "c", reports_root=tmp_path / "r")
    assert paths.best.parent == tmp_path / "c" / "r"
    assert paths.report_pdf("zh-TW").name == "report.zh-TW.pdf"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    runs.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with runs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_checkpoint_round_trip(tmp_path):
    state = {"w": torch.arange(4.0)}
    meta = {"arch": "resnet18", "class_names": ["正常", "肺炎"], "epoch": 3}
    runs.save_checkpoint(tmp_path / "best.pt", state_dict=state, meta=meta,
                         extra={"optimizer": {"lr": torch.tensor(0.1)}})
    loaded = runs.load_checkpoint(tmp_path / "best.pt")
    assert loaded.meta == meta
    assert torch.equal(loaded.state_dict["w"], state["w"])
    assert float(loaded.extra["optimizer"]["lr"]) == pytest.approx(0.1)


class Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta_json": "{}", "x": Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        runs.load_checkpoint(evil)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    runs.save_checkpoint(good, state_dict={"w": torch.zeros(1000)}, meta={})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.pt"):
        runs.load_checkpoint(cut)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        runs.load_checkpoint(text)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an xreport checkpoint"):
        runs.load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="not found"):
        runs.load_checkpoint(tmp_path / "absent.pt")


def test_second_writer_is_refused(tmp_path):
    with runs.run_lock(tmp_path / "r"):
        with pytest.raises(RunError, match="another xreport process"):
            with runs.run_lock(tmp_path / "r"):
                pass
    with runs.run_lock(tmp_path / "r"):  # released after the first finished
        pass


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        runs.write_json(tmp_path / "m.json", {"x": float("nan")})
    assert not (tmp_path / "m.json").exists()
