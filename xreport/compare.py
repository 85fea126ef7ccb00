"""`xreport compare`: several evaluated runs side by side in one bilingual report.

Each run is evaluated first when its ``reports/NAME/metrics.json`` is missing or stale. The
report holds a metrics table with 95% intervals, overlaid training and ROC curves, confusion
matrices side by side, and paired tests of every run against the first (reference) run on
the same test images: McNemar's test for accuracy and DeLong's test (binary) or a paired
bootstrap (multi-class) for ROC-AUC, with Holm-adjusted p-values when there are several
comparisons. Runs whose test images differ are still compared on their metrics; the report
says why their paired tests are missing.

The context is language-neutral (numbers, names, message keys with parameters); the wording
lives in ``templates/i18n/<lang>/compare.json`` and the layout in ``templates/compare.html.j2``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast, TYPE_CHECKING, Mapping, NotRequired, Sequence, TypedDict

import numpy as np

from . import artifacts, languages
from . import metrics as metrics_mod
from . import runs
from .data.base import match_classes
from .metrics import value_of
from .render.numbers import DASH, p_phrase, pval, signed
from .errors import ConfigError, ReportError, RunError, XReportError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .charts import RocLine
    from .figures import FigureMaker, FigurePaths, Translate
    from .render.html import DocumentKind

logger = logging.getLogger(__name__)

ALPHA = 0.05
N_BOOT = 1000
SPLIT = "test"
BODY_TEMPLATE = "compare.html.j2"
# (message key, path into compute_all's dict, which direction is better)
METRIC_ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("metric.accuracy", ("accuracy",), "max"),
    ("metric.balanced_accuracy", ("balanced_accuracy",), "max"),
    ("metric.macro_f1", ("macro_avg", "f1"), "max"),
    ("metric.roc_auc", ("roc_auc",), "max"),
    ("metric.ece", ("calibration", "ece"), "min"),
)
# Graded (ordinal) runs add the agreement of grades: QWK, then the mean absolute grade error.
ORDINAL_ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("metric.qwk", ("ordinal", "qwk"), "max"),
    ("metric.mae", ("ordinal", "mae"), "min"),
)
# When test images duplicate training images (metrics.json ``deduplicated``), the same
# metrics on the test split without them: the figures to believe.
DEDUP_ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("compare.dedup.accuracy", ("accuracy",), "max"),
    ("compare.dedup.roc_auc", ("roc_auc",), "max"),
)
_NAME_BYTES = 120   # a longer default folder name is shortened with a hash


@dataclass
class CompareResult:
    report_dir: Path
    files: list[Path] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)   # runs whose predictions were (re)made
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluatedRun:
    """What the comparison needs from one run: checkpoint meta, metrics.json, predictions."""

    paths: runs.RunPaths
    meta: artifacts.CheckpointMeta
    evaluation: artifacts.Evaluation
    ids: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    history: artifacts.History
    class_order: list[str] | None = None   # set when re-ordered into another run's classes

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def metrics(self) -> artifacts.Metrics:
        metrics = self.evaluation["metrics"]
        assert metrics is not None, "load_evaluated refuses a run without test metrics"
        return metrics

    @property
    def class_names(self) -> list[str]:
        return list(self.class_order or self.metrics["class_names"] or self.meta["class_names"])


# ---------------------------------------------------------------- names and inputs

def default_name(run_names: Sequence[str]) -> str:
    """``compare-A-B[-C]``; shortened with a hash when it would be an unwieldy folder name."""
    name = "compare-" + "-".join(run_names)
    if len(name.encode("utf-8")) <= _NAME_BYTES:
        return name
    digest = hashlib.sha256("\0".join(run_names).encode("utf-8")).hexdigest()[:10]
    return f"compare-{len(run_names)}runs-{digest}"


def load_evaluated(paths: runs.RunPaths) -> EvaluatedRun:
    """Read an evaluated run: metrics.json, checkpoint meta, predictions.csv, history.csv."""
    evaluation = artifacts.load_evaluation(paths)
    metrics = evaluation["metrics"]
    if not metrics:
        raise ReportError(f"{paths.metrics}: run {paths.name!r} has no test metrics (its test split "
                          "has no labels), so it cannot be compared")
    split = artifacts.evaluation_split(evaluation)
    if split != SPLIT:
        raise ReportError(f"{paths.metrics}: run {paths.name!r} was evaluated on the "
                          f"{split!r} split; compare needs the {SPLIT!r} split "
                          f"(xreport evaluate --run {paths.name})")
    meta = artifacts.load_checkpoint_meta(artifacts.checkpoint_path(paths))
    # The file's class names against the checkpoint's (the values were checked on loading).
    artifacts.check_evaluation_values(evaluation, path=paths.metrics, class_names=meta["class_names"])
    ids, y_true, probs = artifacts.load_predictions(paths, class_names=meta["class_names"])
    if y_true is None:
        raise ReportError(f"{paths.predictions}: run {paths.name!r} has no y_true column, so it "
                          "cannot be compared")
    if metrics["n"] != len(ids):
        raise ReportError(f"{paths.predictions}: {len(ids)} rows but {paths.metrics} counts "
                          f"{metrics['n']}; evaluate run {paths.name!r} again")
    return EvaluatedRun(paths=paths, meta=meta, evaluation=evaluation, ids=ids, y_true=y_true,
                        probs=probs, history=artifacts.load_history(paths))


# ---------------------------------------------------------------- pairing and tests

def _msg(key: str, **params: object) -> artifacts.Message:
    return {"key": key, "params": params}


class McNemarTest(metrics_mod.McNemar, total=False):
    """McNemar's test on accuracy with what the comparison adds (a = reference, b = run)."""

    p_holm: float | None         # Holm-adjusted over the runs compared
    significant: bool
    sentence: artifacts.Message


class AucTest(metrics_mod.PairedAuc, total=False):
    """The paired ROC-AUC test (a = run, b = reference) with what the comparison adds."""

    p_holm: float | None
    significant: bool
    sentence: artifacts.Message


class PairedTest(TypedDict):
    """One run against the reference."""

    run: str
    ref: str
    paired: bool
    reason: artifacts.Message | None   # why the runs cannot be paired
    mcnemar: McNemarTest | None
    auc: AucTest | None
    acc_run: float | None
    acc_ref: float | None
    n: NotRequired[int]


def in_reference_classes(reference: EvaluatedRun, run: EvaluatedRun) -> EvaluatedRun:
    """``run`` with its labels and probability columns in the reference's class order when
    both name the same classes in another order (matched by name, ``data.match_classes``);
    otherwise ``run`` as it is (``align`` then says the classes differ)."""
    if run.class_names == reference.class_names or sorted(run.class_names) != sorted(reference.class_names):
        return run
    order = match_classes(run.class_names, reference.class_names, where=str(run.paths.predictions))
    logger.info("%s: classes in %s's order, matched by name", run.name, reference.name)
    columns = np.argsort(np.array(order))          # reference class j is run column columns[j]
    return dataclasses.replace(run, y_true=np.array(order, dtype=np.int64)[run.y_true],
                               probs=run.probs[:, columns], class_order=list(reference.class_names))


def align(reference: EvaluatedRun, run: EvaluatedRun) -> tuple[np.ndarray | None, artifacts.Message | None]:
    """Rows of ``run`` in the reference's image order, or None and why they cannot be paired.

    The same ids in another order are re-ordered; other ids, other class names or other true
    labels for the same image rule the paired tests out.
    """
    if run.class_names != reference.class_names:
        return None, _msg("compare.unpaired.classes", run=run.name, ref=reference.name,
                             run_classes=", ".join(run.class_names),
                             ref_classes=", ".join(reference.class_names))
    position = {ident: i for i, ident in enumerate(run.ids)}
    common = sum(1 for ident in reference.ids if ident in position)
    unique = len(position) == len(run.ids) and len(set(reference.ids)) == len(reference.ids)
    if not unique or common != len(reference.ids) or len(run.ids) != len(reference.ids):
        return None, _msg("compare.unpaired.ids", run=run.name, ref=reference.name,
                             n_run=len(run.ids), n_ref=len(reference.ids), n_common=common)
    order = np.array([position[ident] for ident in reference.ids], dtype=np.int64)
    differ = int(np.sum(run.y_true[order] != reference.y_true))
    if differ:
        return None, _msg("compare.unpaired.labels", run=run.name, ref=reference.name, n=differ)
    return order, None


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment; None stays None and does not count as a comparison."""
    defined = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(defined)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# Number formats have one owner, render; the names stay for this module's callers.
p_text, format_p, _signed = pval, p_phrase, signed


def _verdict(delta: float, significant: bool, words: tuple[str, str, str, str, str]) -> str:
    """``words`` = (better, worse, not_better, not_worse, same) for delta = run − reference."""
    better, worse, not_better, not_worse, same = words
    if abs(delta) < 1e-12:
        return same
    if significant:
        return better if delta > 0 else worse
    return not_better if delta > 0 else not_worse


def paired_tests(reference: EvaluatedRun, others: Sequence[EvaluatedRun], *, n_boot: int = N_BOOT,
                 seed: int = 0) -> list[PairedTest]:
    """Each run against the reference: McNemar on accuracy and a paired ROC-AUC test."""
    tests: list[PairedTest] = []
    y = reference.y_true
    pred_ref = reference.probs.argmax(axis=1)
    for run in others:
        view = in_reference_classes(reference, run)
        order, why = align(reference, view)
        entry: PairedTest = {"run": run.name, "ref": reference.name, "paired": order is not None,
                             "reason": why, "mcnemar": None, "auc": None,
                             "acc_run": value_of(run.metrics["accuracy"]),
                             "acc_ref": value_of(reference.metrics["accuracy"])}
        if order is not None:
            probs = view.probs[order]
            # a = reference, b = this run: b counts images only the reference got right.
            entry["mcnemar"] = {**metrics_mod.mcnemar(y, pred_ref, probs.argmax(axis=1))}
            method = "delong" if probs.shape[1] == 2 else "bootstrap"
            # probs_a = this run, so "difference" is run − reference.
            entry["auc"] = {**metrics_mod.paired_auc_test(y, probs, reference.probs, method=method,
                                                          n_boot=n_boot, seed=seed)}
            entry["n"] = int(len(y))
        tests.append(entry)
    _add_holm(tests)
    adjusted = sum(1 for t in tests if t["paired"]) > 1
    for entry, run in zip(tests, others):
        _add_sentences(entry, reference=reference, run=run, adjusted=adjusted)
    return tests


def _add_holm(tests: list[PairedTest]) -> None:
    """Holm's adjustment within each family of tests (McNemar, paired AUC)."""
    families: list[list[McNemarTest | None] | list[AucTest | None]] = [
        [t["mcnemar"] for t in tests], [t["auc"] for t in tests]]
    for family in families:
        adjusted = holm([test["p_value"] if test is not None else None for test in family])
        for test, p_adj in zip(family, adjusted):
            if test is not None:
                test["p_holm"] = p_adj


def _add_sentences(entry: PairedTest, *, reference: EvaluatedRun, run: EvaluatedRun,
                   adjusted: bool) -> None:
    """The plain-words verdicts as nested {key, params} items (the catalogs word them)."""
    if not entry["paired"]:
        return
    names = {"run": run.name, "ref": reference.name}
    mc, auc = entry["mcnemar"], entry["auc"]
    assert mc is not None and auc is not None, "paired runs have both tests"
    p_acc = mc["p_holm"] if adjusted else mc["p_value"]
    mc["significant"] = p_acc is not None and p_acc < ALPHA
    verdict = _verdict(mc["c"] - mc["b"], mc["significant"],
                       ("better", "worse", "not_better", "not_worse", "same"))
    detail = _msg("compare.acc.detail_holm" if adjusted else "compare.acc.detail",
                     acc_run=entry["acc_run"], acc_ref=entry["acc_ref"],
                     p=format_p(mc["p_value"]), p_holm=format_p(mc.get("p_holm")))
    mc["sentence"] = _msg("compare.acc." + verdict, **names, detail=detail)

    if auc["p_value"] is None or auc["difference"] is None:
        auc["significant"] = False
        auc["sentence"] = _msg("compare.auc.undefined", **names,
                                  reason=auc.get("reason") or metrics_mod.why("no_p_value"))
        return
    p_auc = auc["p_holm"] if adjusted else auc["p_value"]
    auc["significant"] = p_auc is not None and p_auc < ALPHA
    verdict = _verdict(auc["difference"], auc["significant"],
                       ("higher", "lower", "not_higher", "not_lower", "same"))
    ci: Sequence[float | None] = auc["ci95"] or [None, None]
    detail = _msg("compare.auc.detail_holm" if adjusted else "compare.auc.detail",
                     auc_run=auc["auc_a"], auc_ref=auc["auc_b"], diff=_signed(auc["difference"]),
                     lo=_signed(ci[0]), hi=_signed(ci[1]),
                     method=_msg("compare.method." + auc["method"]),
                     p=format_p(auc["p_value"]), p_holm=format_p(auc.get("p_holm")))
    auc["sentence"] = _msg("compare.auc." + verdict, **names, detail=detail)


# ---------------------------------------------------------------- the context

def _dig(d: Mapping[str, object] | None, path: Sequence[str]) -> object:
    """The value at ``path`` in nested mappings (None where the path ends early)."""
    found: object = d
    for key in path:
        if not isinstance(found, Mapping):
            return None
        found = found.get(key)
    return found


class MetricRow(TypedDict):
    key: str                     # the metric's catalog key
    values: list[object]         # each run's metric value (a Value or None)
    better: str                  # max | min
    best: list[bool]             # which runs share the best value


def _metric_rows(evaluated: Sequence[EvaluatedRun]) -> list[MetricRow]:
    rows: list[MetricRow] = []
    graded = any(isinstance(r.metrics.get("ordinal"), Mapping) for r in evaluated)
    deduplicated = any(r.evaluation.get("deduplicated") for r in evaluated)
    table = [(key, path, better, False) for key, path, better in METRIC_ROWS + (ORDINAL_ROWS if graded else ())]
    table += [(key, path, better, True) for key, path, better in (DEDUP_ROWS if deduplicated else ())]
    for key, path, better, dedup in table:
        values = [_dig(cast(Mapping[str, object], r.evaluation.get("deduplicated") or {}).get("metrics")
                       if dedup else r.metrics, path)   # type: ignore[arg-type]
                  for r in evaluated]
        numbers = [value_of(v) for v in values]
        defined = [x for x in numbers if x is not None]
        target = (max if better == "max" else min)(defined) if len(defined) > 1 else None
        rows.append({"key": key, "values": values, "better": better,
                     "best": [target is not None and x is not None and abs(x - target) < 1e-12
                              for x in numbers]})
    return rows


def _duration(seconds: float | None) -> artifacts.Message | None:
    if seconds is None:
        return None
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return {"key": "compare.duration.hm", "params": {"h": h, "m": m}}
    if m:
        return {"key": "compare.duration.ms", "params": {"m": m, "s": sec}}
    return {"key": "compare.duration.s", "params": {"s": sec}}


def _train_seconds(history: artifacts.History) -> float | None:
    values = [row.get("seconds") for row in history]
    seconds = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values or len(seconds) != len(values):
        return None
    return float(sum(seconds))


def _params(meta: artifacts.CheckpointMeta) -> int | None:
    params = meta.get("params")
    if isinstance(params, dict) and isinstance(params.get("total"), int):
        return int(params["total"])
    if isinstance(params, int):
        return params
    from . import models
    try:
        return models.count_parameters(models.model_from_meta(meta))["total"]
    except (XReportError, KeyError, ValueError, RuntimeError) as exc:
        logger.warning("parameter count unknown: %s", exc)
        return None


class RunRow(TypedDict):
    name: str
    arch: str
    params: int | None
    image_size: int
    in_channels: int
    pretrained: bool
    head: str                    # models.HEADS
    loss: str                    # train.LOSSES
    epochs_run: int | None
    epochs_planned: object       # the config's train.epochs as recorded
    best_epoch: int | None
    selected_by: str | None
    train_time: artifacts.Message | None
    n: int
    task: str
    checkpoint_sha256: str
    data_fingerprint: str
    data_source: str
    evaluated: str


def _run_row(run: EvaluatedRun) -> RunRow:
    meta, evaluation = run.meta, run.evaluation
    train = meta["config"].get("train")
    return {
        "name": run.name, "arch": meta["arch"], "params": _params(meta),
        "image_size": meta["image_size"], "in_channels": meta["in_channels"],
        "pretrained": bool(meta["pretrained"]), "head": meta["head"], "loss": meta["loss"],
        "epochs_run": len(run.history) if run.history else None,
        "epochs_planned": train.get("epochs") if isinstance(train, Mapping) else None,
        "best_epoch": meta["epoch"], "selected_by": meta["selected_by"],
        "train_time": _duration(_train_seconds(run.history)),
        "n": len(run.ids), "task": run.metrics["task"],
        "checkpoint_sha256": evaluation["checkpoint"].get("sha256") or DASH,
        "data_fingerprint": evaluation["data"].get("fingerprint") or meta["data_fingerprint"] or DASH,
        "data_source": evaluation["data"].get("source") or DASH,
        "evaluated": str(evaluation["created"] or "")[:16].replace("T", " ") or DASH,
    }


def _roc_curve(metrics: artifacts.Metrics) -> RocLine | None:
    """The positive class's ROC (binary) or the macro average of one-vs-rest curves."""
    entries = [e for e in metrics["curves"]["roc"] if e["fpr"]]
    if not entries:
        return None
    auc = metrics["roc_auc"]
    if metrics["task"] == "binary" or len(entries) == 1:
        names = metrics["class_names"]
        entry = next((e for e in entries if len(names) > 1 and e["class"] == names[1]), entries[-1])
        return {"fpr": entry["fpr"], "tpr": entry["tpr"], "auc": auc}
    grid = np.linspace(0.0, 1.0, 201)
    tpr = np.mean([np.interp(grid, e["fpr"], e["tpr"]) for e in entries], axis=0)
    tpr[0] = 0.0
    return {"fpr": grid.tolist(), "tpr": tpr.tolist(), "auc": auc}


class ConfusionFigure(TypedDict):
    run: str
    figure: FigurePaths | None


class CompareFigures(TypedDict):
    curves: FigurePaths | None
    roc: FigurePaths | None
    confusion: list[ConfusionFigure]
    roc_multiclass: bool


def _figures(evaluated: Sequence[EvaluatedRun], *, maker: FigureMaker) -> CompareFigures:
    from . import charts

    histories = {r.name: r.history for r in evaluated if r.history}
    curves = None
    if histories:
        curves = maker.draw("compare_training", lambda t, lang: charts.compare_training_curves(
            histories, t=t))
    rocs = {r.name: c for r in evaluated if (c := _roc_curve(r.metrics)) is not None}
    roc = maker.draw("compare_roc", lambda t, lang: charts.compare_roc(rocs, t=t)) if rocs else None
    confusion: list[ConfusionFigure] = []
    for i, run in enumerate(evaluated):
        # The classes a report shows in full (all up to limits.REPORT_CLASSES), as the run's report.
        shown = artifacts.shown_confusion(run.metrics)

        def draw(t: Translate, lang: str, shown: artifacts.ShownConfusion = shown,
                 meta: artifacts.CheckpointMeta = run.meta) -> Figure:
            return charts.confusion_matrix(shown.by_true, artifacts.class_names_in(meta, lang, shown.labels),
                                           normalized=True, t=t)
        confusion.append({"run": run.name, "figure": maker.draw(f"compare_confusion_{i}", draw)
                          if shown.by_true else None})
    return {"curves": curves, "roc": roc, "confusion": confusion,
            "roc_multiclass": any(r.metrics["task"] != "binary" for r in evaluated)}


class CompareContext(TypedDict):
    """Everything the compare templates show (``ctx`` in them)."""

    schema: int
    kind: str
    run: str
    report_dir: str
    langs: list[str]
    generated: str
    versions: dict[str, str]
    reference: str
    run_names: list[str]
    class_names: list[str]
    class_names_i18n: dict[str, list[str]]
    runs: list[RunRow]
    metric_rows: list[MetricRow]
    bootstrap: artifacts.Bootstrap | None
    figures: CompareFigures
    tests: list[PairedTest]
    alpha: float
    n_paired: int
    adjusted: bool
    n_boot: int
    seed: int
    command: str | None
    failed_charts: list[str]


def compare_context(evaluated: Sequence[EvaluatedRun], *, name: str, reports_root: Path,
                    langs: Sequence[str], command: str | None = None, n_boot: int = N_BOOT,
                    seed: int = 0, templates_dir: Path | None = None,
                    reference: int = 0) -> CompareContext:
    """Everything the compare templates show, as plain data; draws figures per language.

    ``reference`` is the index of the run every other run is tested against (the study
    passes its best run; the runs keep their order in the tables)."""
    from .figures import FigureMaker

    if len(evaluated) < 2:
        raise ReportError(f"compare needs at least 2 evaluated runs; got {len(evaluated)}")
    out_paths = runs.RunPaths(runs.check_run_name(name), reports_root=reports_root)
    if not 0 <= reference < len(evaluated):
        raise ReportError(f"compare: reference run {reference} is not one of the {len(evaluated)} runs")
    ref_run = evaluated[reference]
    maker = FigureMaker(out_paths.report_dir, langs, templates_dir=templates_dir)
    figures = _figures(evaluated, maker=maker)
    others = [r for i, r in enumerate(evaluated) if i != reference]
    tests = paired_tests(ref_run, others, n_boot=n_boot, seed=seed)
    n_paired = sum(1 for t in tests if t["paired"])
    class_names = ref_run.class_names
    i18n = {lang: artifacts.class_names_in(ref_run.meta, lang, class_names) for lang in languages.codes()}
    return {
        "schema": 1, "kind": "compare", "run": name,
        "report_dir": str(out_paths.report_dir.resolve()),
        "langs": list(langs),
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "versions": artifacts.runtime_versions(),
        "reference": ref_run.name,
        "run_names": [r.name for r in evaluated],
        "class_names": class_names,
        "class_names_i18n": {k: v for k, v in i18n.items() if v != class_names},
        "runs": [_run_row(r) for r in evaluated],
        "metric_rows": _metric_rows(evaluated),
        "bootstrap": ref_run.metrics["bootstrap"],
        "figures": figures,
        "tests": tests,
        "alpha": ALPHA,
        "n_paired": n_paired,
        "adjusted": n_paired > 1,
        "n_boot": n_boot, "seed": seed,
        "command": command,
        "failed_charts": sorted(set(maker.failed)),
    }


# ---------------------------------------------------------------- rendering

def _document_kind() -> DocumentKind:
    """The comparison in the single-run report's shell: its own body, title and filters."""
    from . import render

    return render.DocumentKind(body_template=BODY_TEMPLATE, title_key="compare.title",
                               filters={"pval": p_text, "signed": _signed})


def render_compare_html(context: CompareContext, *, langs: Sequence[str],
                        templates_dir: Path | None = None) -> str:
    """One self-contained HTML file with every language, in the single-run report's shell."""
    from . import render

    return render.render_html(context, langs=langs, templates_dir=templates_dir,
                              kind=_document_kind())


def render_compare_pdf(context: CompareContext, *, lang: str, out_path: Path,
                       templates_dir: Path | None = None) -> Path:
    """Lay out one language with WeasyPrint (local files only) and write it atomically."""
    from . import render

    return render.render_pdf(context, lang=lang, out_path=out_path, templates_dir=templates_dir,
                             kind=_document_kind())


# ---------------------------------------------------------------- orchestration

def _clear_figures(folder: Path) -> None:
    # Old figures of a comparison with other runs must not linger beside the new ones.
    for old in folder.glob("*.png"):
        old.unlink()


def _json_summary(context: CompareContext) -> dict[str, object]:
    """The machine-readable comparison: runs, metrics and paired tests (no figures)."""
    return {"schema": 1, "name": context["run"], "generated": context["generated"],
            "reference": context["reference"], "runs": context["runs"],
            "metrics": [{"key": row["key"], "values": dict(zip(context["run_names"], row["values"]))}
                        for row in context["metric_rows"]],
            "tests": context["tests"], "alpha": context["alpha"], "n_boot": context["n_boot"],
            "seed": context["seed"]}
