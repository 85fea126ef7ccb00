"""The Python API: train a config, evaluate a run, build a report. The CLI is a thin layer
over these functions (``xreport.cli`` parses options and calls them), so a notebook and the
command line make the same files.

    from xreport import api as xr
    run = xr.train("configs/pneumonia.toml", epochs=5)   # -> Run (checkpoints/NAME/)
    xr.evaluate(run, split="val")                        # -> Evaluated (metrics.json ...)
    report = xr.build(run, lang=("en", "zh-TW"))          # -> Report; shows inline in Jupyter
    report.html, report.pdfs["en"]

A run can also be opened by name or path (``xr.open_run("pneumonia")``), and
``build(runs=[a, b])`` writes the study report of several runs (``xreport build --runs``).
"""
from __future__ import annotations

import html
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, Union

from . import artifacts, languages, runs
from .config import RunConfig
from .device import EVAL_PRECISION
from .evaluate import EXPLAIN_DEFAULT, TTA_DEFAULT
from .explain import DEFAULT_CAM_METHOD
from .errors import ConfigError, RunError
from .languages import DEFAULT_LANGS
from .runs import DEFAULT_CHECKPOINTS, DEFAULT_REPORTS, RunPaths

if TYPE_CHECKING:
    from .recipe import Resolved
    from .train import TrainResult

logger = logging.getLogger("xreport")

# The short option names the CLI flags and ``train(..., epochs=3)`` use, and the config key
# each sets; any other key is given with "__" for the dot (``train__warmup_epochs=1``).
SHORT_KEYS: dict[str, str] = {
    "name": "name", "image_size": "image_size",
    "dataset": "data.dataset", "skip_bad_images": "data.skip_bad_images",
    "arch": "model.arch", "pretrained": "model.pretrained", "weights": "model.weights",
    "recipe": "train.recipe", "epochs": "train.epochs", "batch_size": "train.batch_size",
    "lr": "train.lr", "seed": "train.seed", "device": "train.device", "max_steps": "train.max_steps",
}

ConfigLike = Union[str, Path, Mapping[str, object], RunConfig, None]
RunLike = Union["Run", RunPaths, str, Path]


@dataclass(frozen=True)
class Run:
    """A trained run: ``checkpoints/NAME/`` and where its reports go (``reports/NAME/``)."""

    paths: RunPaths
    trained: "TrainResult | None" = None   # set when this Run came from ``train``
    config: RunConfig | None = None        # the config it was trained with (after the recipe), idem

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def run_dir(self) -> Path:
        return self.paths.run_dir

    @property
    def checkpoint(self) -> Path:
        return self.paths.best

    @property
    def report_dir(self) -> Path:
        return self.paths.report_dir

    def __repr__(self) -> str:
        return f"Run({self.name!r}, run_dir={str(self.run_dir)!r})"


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: its metrics.json content and the folder of its files."""

    run: Run
    evaluation: artifacts.Evaluation
    paths: runs.EvaluationPaths

    @property
    def metrics(self) -> artifacts.Metrics | None:
        return self.evaluation["metrics"]

    @property
    def predictions(self) -> Path:
        return self.paths.predictions

    @property
    def metrics_file(self) -> Path:
        return self.paths.metrics


@dataclass
class Report:
    """What ``build`` wrote. In Jupyter it shows as a short summary (headline metrics with
    their intervals and links to the files), not the multi-megabyte report itself."""

    name: str
    report_dir: Path
    langs: list[str]
    html: Path | None                        # report.html, when "html" was asked for
    pdfs: dict[str, Path] = field(default_factory=dict)   # language -> report.<lang>.pdf
    files: list[Path] = field(default_factory=list)
    evaluation: Path | None = None           # the metrics.json the report shows (None: a study)
    runs: list[str] = field(default_factory=list)          # a study's runs
    reused_predictions: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Report({self.name!r}, files={[str(f) for f in self.files]!r})"

    def _repr_html_(self) -> str:
        from . import render
        from .report import headline

        lang = self.langs[0] if self.langs else "en"
        t = render.translator(lang)
        say = render.message_text(t, str)
        rows: list[str] = []
        if self.evaluation is not None:
            metrics = artifacts.load_evaluation(runs.EvaluationPaths(self.evaluation.parent, self.name))["metrics"]
            for item in headline(metrics) if metrics else []:
                rows.append(f'<tr><th style="text-align:left">{html.escape(t(item["key"]))}</th>'
                            f"<td>{render.fmt(item['value'], say=say)}</td></tr>")
        links = ([(t("notebook.html"), self.html)] if self.html is not None else []) + \
            [(t("notebook.pdf", language=languages.labels().get(lang_, lang_)), pdf) for lang_, pdf in self.pdfs.items()]
        items = "".join(f'<li><a href="{html.escape(_href(path), quote=True)}" target="_blank">'
                        f"{html.escape(label)}</a> <code>{html.escape(str(path))}</code></li>"
                        for label, path in links)
        title = t("notebook.study" if self.runs else "notebook.report", name=self.name)
        study = (f"<p>{html.escape(', '.join(self.runs))}</p>" if self.runs else "")
        table = f"<table>{''.join(rows)}</table>" if rows else ""
        return (f'<div class="xreport-summary"><strong>{html.escape(title)}</strong>{study}{table}'
                f"<ul>{items}</ul></div>")


def _href(path: Path) -> str:
    """A link Jupyter opens: relative to the notebook's folder when below it."""
    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).resolve().as_uri()


def open_run(run: RunLike, *, checkpoints: Path | str = DEFAULT_CHECKPOINTS,
             reports: Path | str = DEFAULT_REPORTS) -> Run:
    """A run by name (under ``checkpoints``), by its folder, or by a checkpoint file in it."""
    if isinstance(run, Run):
        return run
    if isinstance(run, RunPaths):
        return Run(run)
    value = str(run)
    path = Path(value)
    if path.suffix == ".pt" and path.is_file():
        path = path.parent
    if path.is_dir() and (path / "config.toml").exists() and ("/" in value or path.is_absolute()):
        return Run(RunPaths(path.name, checkpoints_root=path.parent, reports_root=Path(reports)))
    return Run(RunPaths(value, checkpoints_root=Path(checkpoints), reports_root=Path(reports)))


def config_overrides(overrides: Mapping[str, object]) -> dict[str, object]:
    """Keyword overrides as dotted config keys: ``epochs`` -> ``train.epochs``,
    ``train__warmup_epochs`` -> ``train.warmup_epochs``; dotted keys pass through."""
    out: dict[str, object] = {}
    for key, value in overrides.items():
        out[SHORT_KEYS.get(key, key.replace("__", "."))] = value
    return out


def train(config: ConfigLike = None, *, checkpoints: Path | str = DEFAULT_CHECKPOINTS,
          reports: Path | str = DEFAULT_REPORTS, resume: bool = False, overwrite: bool = False,
          command: Sequence[str] | None = None, **overrides: object) -> Run:
    """Train ``config`` (a TOML path, a dict in TOML layout, a ``RunConfig``, or None for the
    defaults) with ``overrides`` applied, into ``checkpoints/NAME/``; the auto recipe fills
    unset keys from the data as ``xreport train`` does. ``overwrite`` replaces an existing
    run of the same name, ``resume`` continues it from last.pt."""
    from .train import train as train_run

    resolved = resolve_config(config, config_overrides(overrides),
                              from_command_line=command is not None)
    if command is None:   # the call, as the report's "training command" (not the kernel's argv)
        command = ["xreport.api.train", *([str(config)] if isinstance(config, (str, Path)) else []),
                   *(f"{key}={value!r}" for key, value in overrides.items())]
    result = train_run(resolved.config, checkpoints_root=Path(checkpoints), resume=resume,
                       overwrite=overwrite, command=list(command), recipe_choices=resolved.choices)
    paths = RunPaths(resolved.config.name, checkpoints_root=Path(checkpoints), reports_root=Path(reports))
    return Run(paths, trained=result, config=resolved.config)


def resolve_config(config: ConfigLike, overrides: Mapping[str, object], *, from_command_line: bool = False,
                   log_keys: Sequence[str] | None = None) -> "Resolved":
    """``config`` (a TOML path, a dict in TOML layout, a ``RunConfig``, or None for the
    defaults) with the dotted ``overrides`` applied and the auto recipe's choices filled in
    (each logged; ``log_keys`` limits which). An unknown key is refused by the config's own
    validation, naming the valid ones."""
    from . import config as config_mod
    from .recipe import resolve

    if isinstance(config, RunConfig):  # every key is set: the recipe has nothing left to choose
        raw, source = config_mod.apply_overrides(config_mod.to_dict(config), overrides), f"RunConfig {config.name!r}"
    elif isinstance(config, Mapping):
        raw, source = config_mod.apply_overrides(config, overrides), "config mapping"
    elif config is not None:
        raw, source = config_mod.load_raw(config, overrides=overrides), str(config)
    else:
        raw, source = config_mod.apply_overrides({}, overrides), "command line" if from_command_line else "defaults"
    resolved = resolve(raw, source=source)
    for choice in resolved.choices:
        if choice["rule"] != "base" and (log_keys is None or choice["key"] in log_keys):
            logger.info("auto recipe: %s = %r (%s)", choice["key"], choice["value"], choice["why"])
    return resolved


def evaluate(run: RunLike, *, split: str = "test", data: str | Path | None = None, tta: str | bool = TTA_DEFAULT,
             cam: str = DEFAULT_CAM_METHOD, explain: bool = True, out: Path | str | None = None,
             device: str = "auto", precision: str = EVAL_PRECISION,
             class_map: Mapping[str, str] | None = None, explain_protocol: str = EXPLAIN_DEFAULT,
             checkpoints: Path | str = DEFAULT_CHECKPOINTS,
             reports: Path | str = DEFAULT_REPORTS, progress: bool = True) -> Evaluated:
    """Run the checkpoint on ``split`` (or on other ``data``, its classes renamed onto the
    model's by ``class_map``) -> predictions.csv, metrics.json and CAMs, in the run's report
    folder (or ``out``); see ``xreport evaluate --help``. ``tta``: "on"/"off" (True/False)."""
    from .evaluate import evaluate_report

    opened = open_run(run, checkpoints=checkpoints, reports=reports)
    result, where = evaluate_report(opened.paths, split=split, device=device,
                                    data=str(data) if data is not None else None, tta=_tta(tta),
                                    cam_method=cam, explain=explain,
                                    out=Path(out) if out is not None else None, progress=progress,
                                    precision=precision, class_map=class_map,
                                    explain_protocol=explain_protocol)
    return Evaluated(opened, result, where)


def build(run: RunLike | None = None, *, runs: Sequence[RunLike] | None = None,
          lang: str | Sequence[str] = DEFAULT_LANGS, formats: str | Sequence[str] = ("html", "pdf"),
          templates: Path | str | None = None, cam: str = DEFAULT_CAM_METHOD, split: str = "test",
          device: str = "auto", precision: str = EVAL_PRECISION, force: bool = False,
          explain_protocol: str = EXPLAIN_DEFAULT, notes: Sequence[Path | str] = (),
          tta: str | bool = TTA_DEFAULT,
          name: str | None = None, cams: bool = True,
          checkpoints: Path | str = DEFAULT_CHECKPOINTS, reports: Path | str = DEFAULT_REPORTS,
          command: str | None = None, progress: bool = True) -> Report:
    """Render ``reports/NAME/report.html`` and ``report.<lang>.pdf`` for ``run`` (evaluating it
    first when its predictions are stale), or, with ``runs=[...]``, the study report of
    several runs on one test split (``name`` is its folder, ``cams=False`` evaluates stale
    runs without CAMs; the per-run options ``cam``, ``split``, ``force``, ``precision``,
    ``explain_protocol`` and ``tta`` do not apply to it). ``notes`` are the user's Markdown files
    (notes.<lang>.md). ``lang`` and ``formats`` take a list or a comma string ("en,zh-CN")."""
    langs, fmts = _listed(lang), _listed(formats)
    if (run is None) == (runs is None):
        raise ConfigError("build(): give one run, or runs=[...] for a study of several")
    if runs is not None:
        if _tta(tta) != TTA_DEFAULT:
            raise ConfigError("build(): tta= is for a single run; a study reads each run's test "
                              "evaluation as it is cached")
        return _build_study(runs, langs=langs, formats=fmts, templates=templates, device=device,
                            name=name, notes=[Path(n) for n in notes], cams=cams,
                            checkpoints=checkpoints, reports=reports, command=command, progress=progress)
    from .build import build_report

    assert run is not None
    if name is not None:
        raise ConfigError("build(): name= names a study's folder; a run's report is reports/<run name>/")
    opened = open_run(run, checkpoints=checkpoints, reports=reports)
    result = build_report(opened.paths, langs=langs, formats=fmts,
                          templates=Path(templates) if templates is not None else None,
                          cam_method=cam, device=device, force=force, command=command, split=split,
                          progress=progress, precision=precision, explain_protocol=explain_protocol,
                          tta=_tta(tta),
                          notes=[Path(n) for n in notes])
    paths = opened.paths
    return Report(name=paths.name, report_dir=result.report_dir, langs=langs,
                  html=paths.report_html if paths.report_html in result.files else None,
                  pdfs={lang_: paths.report_pdf(lang_) for lang_ in langs
                        if paths.report_pdf(lang_) in result.files},
                  files=list(result.files),
                  evaluation=result.shown.metrics if result.shown is not None else None,
                  reused_predictions=result.reused_predictions, seconds=dict(result.seconds))


def _tta(value: str | bool) -> str:
    """``tta`` as the option's word: True/False are "on"/"off" (a bad word is refused by
    evaluate.check_report_options, before any write)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _build_study(members: Sequence[RunLike], *, langs: list[str], formats: list[str],
                 templates: Path | str | None, device: str, name: str | None, notes: list[Path],
                 cams: bool, checkpoints: Path | str, reports: Path | str, command: str | None,
                 progress: bool) -> Report:
    from .study import build_study

    if isinstance(members, (str, Path)):
        raise ConfigError("build(): runs= takes a list of runs, not one name")
    opened = [open_run(r, checkpoints=checkpoints, reports=reports) for r in members]
    if len(opened) < 2:
        raise RunError(f"build(runs=...): a study needs two runs or more, got {len(opened)}")
    result = build_study([r.paths for r in opened], name=name, reports_root=Path(reports), langs=langs,
                         formats=formats, notes=notes, device=device, command=command,
                         templates=Path(templates) if templates is not None else None, cams=cams,
                         progress=progress)
    html_file = result.report_dir / "report.html"
    return Report(name=result.report_dir.name, report_dir=result.report_dir, langs=langs,
                  html=html_file if html_file in result.files else None,
                  pdfs={lang_: result.report_dir / f"report.{lang_}.pdf" for lang_ in langs
                        if result.report_dir / f"report.{lang_}.pdf" in result.files},
                  files=list(result.files), runs=[r.name for r in opened], seconds=dict(result.seconds))


def _listed(value: str | Sequence[str]) -> list[str]:
    """"en,zh-TW" or ["en", "zh-TW"] -> ["en", "zh-TW"] (blanks dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v.strip()]


def command_line(argv: Sequence[str]) -> str:
    """The command as the report's reproducibility section quotes it."""
    return " ".join(shlex.quote(a) for a in ["xreport", *argv])
