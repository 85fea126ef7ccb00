"""The Python API (xreport.api): what a notebook calls, and the CLI is a thin layer over."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from report_fixture import EVIL_CLASS, make_run
from test_cli import write_tiny_config
from xreport import api
from xreport.errors import ConfigError, RunError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"


def test_import_xreport_stays_light_and_reaches_the_api():
    code = ("import sys, xreport; light = 'torch' not in sys.modules; "
            "print(light, xreport.api.build.__module__, xreport.Report.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "xreport.api", "Report"]


def test_short_and_dotted_overrides():
    assert api.config_overrides({"epochs": 2, "arch": "resnet34", "train__warmup_epochs": 1,
                                 "data.phantom_seed": 3}) == {
        "train.epochs": 2, "model.arch": "resnet34", "train.warmup_epochs": 1, "data.phantom_seed": 3}


def test_an_unknown_override_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="warmup_epochs"):
        api.train(write_tiny_config(tmp_path), checkpoints=tmp_path / "checkpoints", warmup_epochs=1)
    assert not (tmp_path / "checkpoints").exists()


def test_build_takes_one_run_or_a_study(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="one run"):
        api.build()
    with pytest.raises(ConfigError, match="one run"):
        api.build("a", runs=["a", "b"])
    with pytest.raises(RunError, match="two runs"):
        api.build(runs=["a"])
    with pytest.raises(ConfigError, match="list of runs"):
        api.build(runs="ab")

    # A study is the study report: the same call `xreport build --runs` makes.
    from xreport import study

    seen = {}

    def fake_study(paths, **kw):
        seen.update(names=[p.name for p in paths], **kw)
        out = study.StudyResult(report_dir=kw["reports_root"] / "s")
        out.files = [out.report_dir / "report.html"]
        return out

    monkeypatch.setattr(study, "build_study", fake_study)
    report = api.build(runs=["a", "b"], name="s", lang="en,zh-CN", formats=["html"], reports=tmp_path,
                       notes=["notes.md"], cams=False)
    assert seen["names"] == ["a", "b"] and seen["langs"] == ["en", "zh-CN"] and seen["name"] == "s"
    assert seen["notes"] == [Path("notes.md")] and seen["cams"] is False
    assert report.runs == ["a", "b"] and report.html == tmp_path / "s" / "report.html" and report.pdfs == {}


def test_repr_html_is_a_short_escaped_summary(tmp_path):
    paths = make_run(tmp_path, name="evil", class_names=(EVIL_CLASS, "B"))
    pdf = paths.report_pdf("zh-TW")
    report = api.Report(name="<img src=x onerror=alert(1)>", report_dir=paths.report_dir,
                        langs=["zh-TW"], html=paths.report_html, pdfs={"zh-TW": pdf},
                        evaluation=paths.metrics)
    shown = report._repr_html_()
    assert "<img" not in shown and "&lt;img src=x" in shown and "<script>" not in shown
    metrics = json.loads(paths.metrics.read_text())["metrics"]
    lo, hi = metrics["accuracy"]["ci95"]
    from xreport.render import num

    assert num(metrics["accuracy"]["value"]) in shown and f"{num(lo)}–{num(hi)}" in shown
    assert "準確率" in shown                            # in the first language
    assert "report.html" in shown and "report.zh-TW.pdf" in shown and len(shown) < 5000


def test_api_trains_and_evaluates_a_tiny_phantom_run(tmp_path):
    config = write_tiny_config(tmp_path)
    run = api.train(config, checkpoints=tmp_path / "checkpoints", reports=tmp_path / "reports",
                    epochs=1, max_steps=2)
    assert run.trained is not None and run.trained.best_epoch == 1 and run.checkpoint.is_file()
    assert run.config is not None and run.config.train.epochs == 1 and run.config.train.max_steps == 2
    assert api.open_run(str(run.checkpoint)).run_dir == run.run_dir
    # The report's training command is the call, not the interpreter's argv.
    from xreport import artifacts

    assert artifacts.load_checkpoint_meta(run.checkpoint)["command"] == [
        "xreport.api.train", str(config), "epochs=1", "max_steps=2"]

    done = api.evaluate(run, split="val", explain=False)
    assert done.paths.folder == tmp_path / "reports" / "tiny" / "val" and done.metrics is not None
    assert done.metrics["n"] == 48 and done.predictions.is_file()


def test_api_and_cli_make_the_same_report(tmp_path):
    """The same build through the API and through the CLI, each in its own process (the
    same thread count, so the same floating-point sums): the same files and numbers."""
    run_dir = tmp_path / "checkpoints" / "fixture_binary"
    shutil.copytree(FIXTURES / "fixture_binary", run_dir)
    code = ("import sys; from xreport import api; r = api.build(sys.argv[1], reports=sys.argv[2], "
            "lang='en', formats='html'); print(r.html); print(r.evaluation)")
    by_api = subprocess.run([sys.executable, "-c", code, str(run_dir), str(tmp_path / "api")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert by_api.returncode == 0, by_api.stderr
    api_dir, cli_dir = tmp_path / "api" / "fixture_binary", tmp_path / "cli" / "fixture_binary"
    assert by_api.stdout.split() == [str(api_dir / "report.html"), str(api_dir / "metrics.json")]
    by_cli = subprocess.run([sys.executable, "-m", "xreport", "build", "--run", str(run_dir),
                             "--reports", str(tmp_path / "cli"), "--lang", "en", "--format", "html"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert by_cli.returncode == 0, by_cli.stderr

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    assert files(api_dir) == files(cli_dir) and "report.html" in files(api_dir)
    assert (api_dir / "predictions.csv").read_bytes() == (cli_dir / "predictions.csv").read_bytes()
    a, c = (json.loads((d / "metrics.json").read_text()) for d in (api_dir, cli_dir))
    for volatile in ("created", "timings"):   # when and how long: the only differences
        a.pop(volatile), c.pop(volatile)
    a["explain"].pop("timings"), c["explain"].pop("timings")
    assert a == c
