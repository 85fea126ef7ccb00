"""Interruptions lose nothing: SIGKILL during writes, training and builds; locks; NaN loss."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from xreport import runs
from xreport.cli import main
from xreport.config import from_dict
from xreport.errors import TrainingError
from xreport.train import train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(path: Path, *, epochs: int, train_n: int = 32, name: str = "r") -> Path:
    path.write_text(textwrap.dedent(f'''\
        name = "{name}"
        image_size = 32
        [data]
        dataset = "phantom"
        phantom_size = 32
        phantom_train = {train_n}
        phantom_val = 16
        phantom_test = 16
        [model]
        small_input_stem = "off"
        [train]
        epochs = {epochs}
        batch_size = 16
        '''), encoding="utf-8")
    return path


def xreport(*args: str) -> list[str]:
    return [sys.executable, "-m", "xreport", *args]


def history_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def wait_for(predicate, *, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# ---------------------------------------------------------------- atomic checkpoint writes

WRITER = textwrap.dedent('''\
    import sys, torch
    from xreport import runs
    i = 0
    while True:
        i += 1
        runs.save_checkpoint(sys.argv[1], state_dict={"w": torch.full((4_000_000,), float(i))},
                             meta={"i": i})
    ''')


def test_checkpoint_writes_survive_sigkill(tmp_path):
    """Kill a process that rewrites a 16 MB checkpoint in a loop: the file always loads whole."""
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(target.is_file, proc=proc, timeout=120, what="the first checkpoint")
    # Let a few more writes start so the kill lands inside one.
    first = runs.load_checkpoint(target).meta["i"]
    wait_for(lambda: len(list(tmp_path.glob(".last.pt.*.tmp"))) > 0, proc=proc, timeout=60,
             what="a write in progress")
    kill(proc)
    ckpt = runs.load_checkpoint(target)
    i = ckpt.meta["i"]
    assert i >= first and torch.all(ckpt.state_dict["w"] == float(i))
    # What the kill leaves is a hidden temp file beside it, never a damaged last.pt.
    assert {p.name for p in tmp_path.iterdir()} - {"last.pt"} <= {p.name for p in tmp_path.glob(".last.pt.*.tmp")}


# ---------------------------------------------------------------- training: SIGKILL, resume

@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    config = tiny_config(tmp_path / "run.toml", epochs=3, train_n=160)
    ck = tmp_path / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}        # same maths in every process

    full = subprocess.run(xreport("train", "--config", str(config), "--name", "full"),
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert full.returncode == 0, full.stderr

    cut_dir = ck / "cut"
    proc = subprocess.Popen(xreport("train", "--config", str(config), "--name", "cut"),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    wait_for(lambda: len(history_rows(cut_dir / "history.csv")) >= 1 and (cut_dir / "last.pt").is_file(),
             proc=proc, timeout=240, what="the first epoch")
    # Epoch 2 has just begun: wait about a third of an epoch so the kill lands mid-epoch.
    seconds = float(history_rows(cut_dir / "history.csv")[0]["seconds"])
    time.sleep(min(seconds / 3, 2.0))
    kill(proc)

    done = len(history_rows(cut_dir / "history.csv"))
    assert 1 <= done < 3, "the kill must land before the run finishes"
    last = runs.load_checkpoint(cut_dir / "last.pt")
    best = runs.load_checkpoint(cut_dir / "best.pt")
    assert last.meta["epoch"] == done and 1 <= best.meta["epoch"] <= done
    assert all(torch.isfinite(t).all() for t in last.state_dict.values() if t.is_floating_point())

    resumed = subprocess.run(xreport("train", "--config", str(config), "--name", "cut", "--resume"),
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    def comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert comparable(history_rows(cut_dir / "history.csv")) == comparable(history_rows(ck / "full" / "history.csv"))
    for name in ("last.pt", "best.pt"):
        a = runs.load_checkpoint(cut_dir / name)
        b = runs.load_checkpoint(ck / "full" / name)
        assert a.meta["epoch"] == b.meta["epoch"]
        assert a.state_dict.keys() == b.state_dict.keys()
        for key in a.state_dict:
            assert torch.equal(a.state_dict[key], b.state_dict[key]), (name, key)


# ---------------------------------------------------------------- NaN loss

def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """Epoch 1 is fine (2 steps); the first step of epoch 2 gets a NaN loss."""
    calls = {"n": 0}
    original = torch.nn.CrossEntropyLoss.forward

    def poisoned(self, logits, target):
        calls["n"] += 1
        loss = original(self, logits, target)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", poisoned)
    config = tiny_config(tmp_path / "run.toml", epochs=3)
    capsys.readouterr()
    rc = main(["train", "--config", str(config), "--checkpoints", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("xreport: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert "nan" in lines[0] and "epoch 2" in lines[0] and "epoch 1 were kept" in lines[0]

    run_dir = tmp_path / "ck" / "r"
    assert len(history_rows(run_dir / "history.csv")) == 1
    for name in ("last.pt", "best.pt"):
        ckpt = runs.load_checkpoint(run_dir / name)
        assert ckpt.meta["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in ckpt.state_dict.values() if t.is_floating_point())


def test_nan_loss_in_the_library_raises_training_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward",
                        lambda self, logits, target: logits.sum() * float("nan"))
    cfg = from_dict({"name": "n", "image_size": 32,
                     "data": {"phantom_size": 32, "phantom_train": 16, "phantom_val": 8, "phantom_test": 8},
                     "model": {"small_input_stem": "off"}, "train": {"epochs": 2, "batch_size": 16}})
    with pytest.raises(TrainingError, match="no checkpoint was written"):
        train(cfg, checkpoints_root=tmp_path)
    assert not list(tmp_path.rglob("*.pt"))


# ---------------------------------------------------------------- builds: kill, locks, concurrency

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Runs "a" and "b" (trained in this process) and a built HTML report of "a"."""
    root = tmp_path_factory.mktemp("builds")
    for name in ("a", "b"):
        config = tiny_config(root / f"{name}.toml", epochs=1, name=name)
        assert main(["train", "--config", str(config), "--checkpoints", str(root / "checkpoints")]) == 0
    assert main(["build", "--run", "a", "--format", "html", "--lang", "en",
                 "--checkpoints", str(root / "checkpoints"), "--reports", str(root / "reports")]) == 0
    return root


def roots(root: Path) -> list[str]:
    return ["--checkpoints", str(root / "checkpoints"), "--reports", str(root / "reports")]


def test_a_locked_run_is_refused_not_corrupted(tmp_path, capsys):
    """A second writer of the same report or run folder gets one clear line and changes nothing.

    The lock is taken before anything else, so no trained run is needed to test it."""
    report = tmp_path / "reports" / "a"
    report.mkdir(parents=True)
    (report / "report.html").write_text("<html>previous</html>", encoding="utf-8")
    with runs.run_lock(report, what="report"):          # as if another build were running
        capsys.readouterr()
        rc = main(["build", "--run", "a", "--format", "html", "--lang", "en", *roots(tmp_path)])
        err = capsys.readouterr().err
    assert rc == 2 and "another xreport process is writing this report" in err and "Traceback" not in err
    assert (report / "report.html").read_text(encoding="utf-8") == "<html>previous</html>"
    with runs.run_lock(tmp_path / "checkpoints" / "b"):  # as if "b" were training
        config = tiny_config(tmp_path / "b.toml", epochs=1, name="b")
        rc = main(["train", "--config", str(config), "--checkpoints", str(tmp_path / "checkpoints")])
        err = capsys.readouterr().err
    assert rc == 2 and "another xreport process is writing this run" in err
    left = tmp_path / "checkpoints" / "b"      # nothing written (the lock holder's folder only)
    assert not left.exists() or [p.name for p in left.iterdir()] == [".lock"]


def _newer_than(folder: Path, t0: float) -> bool:
    return any(p.stat().st_mtime > t0 for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_build_killed_midway_keeps_the_previous_report(two_runs):
    report = two_runs / "reports" / "a"
    html_before = (report / "report.html").read_bytes()
    t0 = time.time()
    time.sleep(0.05)
    proc = subprocess.Popen(xreport("build", "--run", "a", "--force", "--format", "html,pdf",
                                    "--lang", "en", *roots(two_runs)),
                            cwd=two_runs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The build writes into a staging copy beside the report (swapped in whole at the end),
    # so "started writing" is the first new file there; the report itself must not change.
    def staging_started() -> bool:
        return any(_newer_than(p, t0) for p in report.parent.glob(f".{report.name}.staging-*"))
    wait_for(staging_started, proc=proc, timeout=180, what="the build to start writing")
    kill(proc)
    assert (report / "report.html").read_bytes() == html_before
    json.loads((report / "metrics.json").read_text(encoding="utf-8"))      # whole, not cut
    assert not (report / "report.en.pdf").exists()
    proc = subprocess.run(xreport("build", "--run", "a", "--format", "html", "--lang", "en",
                                  *roots(two_runs)),
                          cwd=two_runs, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (report / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")


@pytest.mark.slow
def test_two_builds_of_different_runs_at_once_do_not_interfere(two_runs):
    procs = {name: subprocess.Popen(xreport("build", "--run", name, "--format", "html", "--lang", "en",
                                            *roots(two_runs)),
                                    cwd=two_runs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err)
    for name in ("a", "b"):
        report = two_runs / "reports" / name
        metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["run"] == name
        assert metrics["checkpoint"]["sha256"] == runs.sha256_file(two_runs / "checkpoints" / name / "best.pt")
        html = (report / "report.html").read_text(encoding="utf-8")
        assert html.rstrip().endswith("</html>")
