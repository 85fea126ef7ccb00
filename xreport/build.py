"""`xreport build`: evaluate when stale, draw the figures, render HTML and PDFs."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from tqdm.auto import tqdm

from . import artifacts, languages, runs
from .data.base import REPORT_SPLITS
from .data.base import SPLITS as DATA_SPLITS
from .device import EVAL_PRECISION, check_eval_precision, resolve_device
from .errors import ConfigError, DataError, ReportError
from .explain import DEFAULT_CAM_METHOD
from .evaluate import (EXPLAIN_DEFAULT, TTA_DEFAULT, cached_metrics, check_report_options, dataset_for_run,
                       evaluate_run, load_run)
from .languages import DEFAULT_LANGS

if TYPE_CHECKING:
    import torch

    from . import render as render_mod
    from .data.base import Dataset
    from .report import ReportContext

logger = logging.getLogger(__name__)

FORMATS = ("html", "pdf")
SPLITS = REPORT_SPLITS


@dataclass
class BuildResult:
    report_dir: Path
    files: list[Path] = field(default_factory=list)
    reused_predictions: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    shown: runs.EvaluationPaths | None = None   # the evaluation the report shows (its final place)


def check_choices(values: Sequence[str], valid: Sequence[str], *, what: str) -> list[str]:
    values = [v.strip() for v in values if v.strip()]
    for value in values:
        if value not in valid:
            raise ConfigError(f"--{what} {value!r} is not one of {', '.join(valid)}")
    if not values:
        raise ConfigError(f"--{what} is empty; choose from {', '.join(valid)}")
    return values


def report_context(paths: runs.RunPaths, *, langs: Sequence[str], dataset: Dataset | None = None,
                   command: str | None = None, templates_dir: Path | None = None,
                   meta: artifacts.CheckpointMeta | None = None, model: torch.nn.Module | None = None,
                   evaluation: runs.EvaluationPaths | None = None,
                   predictions_only: runs.EvaluationPaths | None = None) -> ReportContext:
    """The report's stages after evaluation, as drawn: read the run folder
    (``report.load_inputs``), draw every chart per language with ``templates_dir``'s wording
    (``figures.draw_report_figures``), assemble the context (``report.build_context``).
    ``meta``/``model``/``evaluation``/``predictions_only`` as in ``report.load_inputs``."""
    from .figures import draw_report_figures
    from .report import build_context, load_inputs

    inputs = load_inputs(paths, dataset=dataset, meta=meta, model=model, evaluation=evaluation,
                         predictions_only=predictions_only)
    figs = draw_report_figures(paths.report_dir, meta=inputs.meta, evaluation=inputs.evaluation,
                               history=inputs.history, distribution=inputs.distribution, dataset=dataset,
                               langs=langs, templates_dir=templates_dir, architecture=inputs.architecture,
                               evaluation_paths=inputs.evaluation_paths)
    return build_context(inputs, figs, langs=langs, command=command)


def build_report(paths: runs.RunPaths, *, langs: Sequence[str] = DEFAULT_LANGS,
                 formats: Sequence[str] = FORMATS, templates: Path | None = None,
                 cam_method: str = DEFAULT_CAM_METHOD, device: str = "auto", split: str = "test",
                 force: bool = False, command: str | None = None,
                 progress: bool = True, precision: str = EVAL_PRECISION,
                 explain_protocol: str = EXPLAIN_DEFAULT,
                 notes: Sequence[Path] = (), tta: str = TTA_DEFAULT) -> BuildResult:
    """Build ``reports/NAME/`` from ``checkpoints/NAME/``; reuse predictions when fresh.

    ``split`` is the split the report is about. A split without labels (a Kaggle-style test
    set) still gets its predictions (predictions.csv, the submission); the report's metrics
    and CAMs then come from the validation split, labelled as such.
    """
    from . import render

    # Every option is checked before anything is written.
    langs = check_choices(langs, languages.codes(), what="lang")
    formats = check_choices(formats, FORMATS, what="format")
    check_report_options(split=split, cam_method=cam_method, device=device, templates=templates,
                         explain_protocol=explain_protocol, tta=tta)
    check_eval_precision(precision)
    split = check_choices([split], SPLITS, what="split")[0]
    from .notes import load_notes
    notes_by_lang = load_notes([Path(n) for n in notes], langs)   # a bad notes file: before any write
    result = BuildResult(report_dir=paths.report_dir)
    started = time.perf_counter()
    # The whole file set is written into a staging copy and swapped in at the end: an
    # interrupted or failed build leaves the previous complete report.
    with runs.run_lock(paths.report_dir, what="report"), runs.staged_report(paths) as staged:
        dev = resolve_device(device)
        run = load_run(paths, device=dev)
        dataset = dataset_for_run(run, splits=DATA_SPLITS)
        if split not in dataset.splits or len(dataset.splits[split]) == 0:
            raise DataError(f"{dataset.source}: has no {split!r} images; available: "
                            f"{', '.join(s for s in dataset.splits if len(dataset.splits[s]))}")
        reused = []

        def evaluated(which: str) -> runs.EvaluationPaths:
            out = staged.evaluation(which)
            cached = None if force else cached_metrics(out, run, dataset, cam_method=cam_method, split=which,
                                                       precision=precision, explain_protocol=explain_protocol,
                                                       tta=tta)
            if cached is None:
                evaluate_run(staged, split=which, device=device, cam_method=cam_method,
                             dataset=dataset, run=run, out=out, progress=progress, precision=precision,
                             explain_protocol=explain_protocol, tta=tta)
            reused.append(cached is not None)
            return out

        shown = evaluated(split)
        predictions_only = None
        val = dataset.splits.get("val")
        if (dataset.splits[split].labels is None and split != "val" and val is not None
                and val.labels is not None and len(val)):
            predictions_only, shown = shown, evaluated("val")
        result.reused_predictions = all(reused)
        result.shown = paths.evaluation(split if predictions_only is None else "val")
        result.seconds["evaluate"] = round(time.perf_counter() - started, 2)

        # figures (in the user's wording) -> context -> render; one named step per stage.
        stages = ["figures"] + (["html"] if "html" in formats else []) + (["pdf"] if "pdf" in formats else [])
        with tqdm(total=len(stages), desc="report", unit="stage", disable=None if progress else True,
                  leave=False) as bar:
            with _stage(bar, result.seconds, "figures", f"figures ({', '.join(langs)})"):
                context = report_context(staged, langs=langs, dataset=dataset, command=command,
                                         templates_dir=templates, meta=run.meta, model=run.model,
                                         evaluation=shown, predictions_only=predictions_only)
                context["notes"] = notes_by_lang
                context["notes_langs"] = [lang for lang in langs if notes_by_lang.get(lang)]
            if "html" in formats:
                with _stage(bar, result.seconds, "html", "HTML"):
                    html = render.render_html(context, langs=langs, templates_dir=templates)
                    runs.write_text(staged.report_html, html)
                result.files.append(paths.report_html)
            if "pdf" in formats:
                with _stage(bar, result.seconds, "pdf", f"PDF ({', '.join(langs)})"):
                    render_pdfs(context, langs=langs, out=staged, templates_dir=templates)
                result.files.extend(paths.report_pdf(lang) for lang in langs)
        _record_build_seconds(shown, result.seconds)
    result.seconds["total"] = round(time.perf_counter() - started, 2)
    return result


@contextlib.contextmanager
def _stage(bar: tqdm, seconds: dict[str, float], key: str, label: str) -> Iterator[None]:
    """One named step of the report's progress bar, its wall seconds kept under ``key``."""
    bar.set_description(f"report: {label}")
    clock = time.perf_counter()
    yield
    seconds[key] = round(time.perf_counter() - clock, 2)
    bar.update()


def _record_build_seconds(out: runs.EvaluationPaths, seconds: Mapping[str, float]) -> None:
    """The report stages' seconds (figures, html, pdf) go beside the evaluation's own in
    metrics.json ``timings`` as ``build_<stage>``: one file holds where the time went."""
    artifacts.record_timings(out, {f"build_{k}": float(v) for k, v in seconds.items() if k != "total"})


def render_pdfs(context: Mapping[str, object], *, langs: Sequence[str], out: runs.RunPaths,
                templates_dir: Path | None, kind: render_mod.DocumentKind | None = None) -> None:
    """Every language's PDF. WeasyPrint lays out in pure Python on one core, so on Linux with
    two or more cores each language after the first is laid out in a forked child at the same
    time (a two-language report takes the time of one); elsewhere one after the other."""
    from . import render

    parallel = len(langs) > 1 and sys.platform == "linux" and (os.cpu_count() or 1) > 1
    kind = kind or render.REPORT
    children = [_fork_pdf(context, lang, out, templates_dir, kind) for lang in langs[1:]] if parallel else []
    try:
        for lang in (langs[:1] if parallel else langs):
            render.render_pdf(context, lang=lang, out_path=out.report_pdf(lang), templates_dir=templates_dir,
                              kind=kind)
    except BaseException:
        for child in children:
            child.stop()
        raise
    for child in children:
        child.join()


@dataclass
class _PdfChild:
    """A forked process laying out one language's PDF; its exception comes back pickled."""
    pid: int
    errors: int  # read end of the pipe the child writes its exception to
    lang: str

    def join(self) -> None:
        with os.fdopen(self.errors, "rb") as fh:
            payload = fh.read()
        _, status = os.waitpid(self.pid, 0)
        if payload:
            try:
                error = pickle.loads(payload)
            except Exception:  # an exception that does not unpickle: keep its text
                error = ReportError(f"PDF ({self.lang}): {payload[-500:].decode(errors='replace')}")
            raise error
        if status != 0:
            raise ReportError(f"PDF ({self.lang}): the layout process ended with status {status}")

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        os.close(self.errors)


def _fork_pdf(context: Mapping[str, object], lang: str, out: runs.RunPaths,
              templates_dir: Path | None, kind: render_mod.DocumentKind) -> _PdfChild:
    from . import render

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: lay out, report any exception, and leave without running the parent's cleanup
        code = 0
        try:
            os.close(read_end)
            render.render_pdf(context, lang=lang, out_path=out.report_pdf(lang), templates_dir=templates_dir,
                              kind=kind)
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            code = 1
            try:
                payload = pickle.dumps(exc)
            except Exception:
                payload = f"{type(exc).__name__}: {exc}".encode()
            os.write(write_end, payload)
        finally:
            os._exit(code)
    os.close(write_end)
    return _PdfChild(pid=pid, errors=read_end, lang=lang)
