"""The real CLI, end to end, on small phantom runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xreport.cli import main

PHANTOM_FLAGS = ["--dataset", "phantom", "--image-size", "32", "--epochs", "1", "--batch-size", "32"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def write_tiny_config(tmp_path: Path, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'''name = "{name}"
image_size = 32
[data]
dataset = "phantom"
phantom_size = 32
phantom_train = 96
phantom_val = 48
phantom_test = 64
[model]
arch = "resnet18"
small_input_stem = "off"
[train]
epochs = 2
batch_size = 32
''', encoding="utf-8")
    return path


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "build", "compare", "demo"):
        assert command in out


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = -3\n")
    proc = run_cli("train", "--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("xreport: error:")]
    assert len(lines) == 1 and "bad.toml" in lines[0] and "epochs" in lines[0]


def test_build_of_a_missing_run_says_so(tmp_path):
    proc = run_cli("build", "--run", "nothing_here", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nothing_here" in proc.stderr


@pytest.mark.parametrize("name", ["../escape", "a/b", "bad name"])
def test_run_names_cannot_escape(tmp_path, name):
    proc = run_cli("train", *PHANTOM_FLAGS, "--name", name, cwd=tmp_path)
    assert proc.returncode == 2 and "run name" in proc.stderr
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").rglob("*.pt"))


def test_train_evaluate_build_through_the_cli(tmp_path):
    config = write_tiny_config(tmp_path)
    proc = run_cli("train", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "checkpoints" / "tiny"
    for name in ("config.toml", "best.pt", "last.pt", "history.csv", "train.log"):
        assert (run_dir / name).is_file(), name

    proc = run_cli("evaluate", "--run", "tiny", "--no-cam", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "reports" / "tiny" / "metrics.json").read_text())
    assert metrics["data"]["n"] == 64 and metrics["metrics"]["n"] == 64

    proc = run_cli("build", "--run", "tiny", "--lang", "en,zh-TW", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / "reports" / "tiny"
    assert (report / "report.html").stat().st_size > 10_000
    assert (report / "report.en.pdf").is_file() and (report / "report.zh-TW.pdf").is_file()

    # A second build reuses the cached predictions.
    proc = run_cli("build", "--run", "tiny", "--format", "html", cwd=tmp_path)
    assert proc.returncode == 0 and "cached predictions" in proc.stdout

    # A checkpoint path works in place of the run name.
    proc = run_cli("build", "--run", str(run_dir / "best.pt"), "--format", "html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_bad_language_is_refused(tmp_path):
    proc = run_cli("build", "--run", "x", "--lang", "fr", cwd=tmp_path)
    assert proc.returncode == 2 and "fr" in proc.stderr
