"""ROC and precision-recall curves, one run's (per class, with AUCs and CIs) and several
runs' (``compare_roc``, ``compare_pr``), and the operating points on the ROC.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar, TypedDict

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .. import artifacts
from ..metrics import value_of
from ..errors import ReportError
from .style import (PAIRED_MAX_CLASSES, PAIRED_WIDTH, PALETTE, PRINT_HEIGHT, PRINT_WIDTH, Translate, WIDE,
                    _chance_diagonal, _ci, _figure_and_axes, _fmt, _label_map, _labels, _legend_right, _lit,
                    _new_figure, _series_style, _styled, _unit_square)

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.container import Container


Curve = TypeVar("Curve", artifacts.RocCurve, artifacts.PrCurve)


def _positive_index(metrics: artifacts.Metrics, entries: Sequence[Curve]) -> int:
    """For a binary task, the curve of the positive class (class index 1)."""
    names = list(metrics.get("class_names") or [])
    if len(names) >= 2:
        for i, entry in enumerate(entries):
            if entry.get("class") == names[1]:
                return i
    return len(entries) - 1


def _curves(metrics: artifacts.Metrics) -> artifacts.Curves:
    return metrics.get("curves") or {"roc": [], "pr": []}


def _curve_entries(metrics: artifacts.Metrics, found: Sequence[Curve] | None, kind: str) -> list[Curve]:
    """The curves to draw: the positive class's (binary) or one per class."""
    entries = list(found or [])
    if not entries:
        raise ReportError(f"metrics: no {kind!r} curves to plot (metrics['curves'][{kind!r}] "
                          "is empty)")
    if metrics.get("task") == "binary":
        entries = [entries[_positive_index(metrics, entries)]]
    return entries


def _per_class(metrics: artifacts.Metrics, name: str) -> Mapping[str, object]:
    for row in metrics.get("per_class") or []:
        if row.get("class") == name:
            return row
    return {}


def _class_label(metrics: artifacts.Metrics, name: str) -> str:
    """The chart label of class ``name`` among the task's classes (see :func:`_labels`)."""
    names = list(metrics.get("class_names") or [])
    return _label_map(names).get(name, _lit(name)) if name in names else _labels([*names, name])[-1]


def _score_label(label: str, metric: str, value: object, ci: tuple[float, float] | None,
                 t: Translate) -> str:
    """``label`` (already a chart label, see :func:`_labels`) with its score and interval."""
    text = f"{label} ({metric} = {_fmt(value_of(value))}"
    if ci is not None:
        text += f", {t('chart.ci95')} {_fmt(ci[0])}–{_fmt(ci[1])}"
    return text + ")"


# More curves than this: the legend goes below the axes in two columns (beside them, a
# dozen long class names would squeeze the plot to a stamp).
LEGEND_BESIDE_MAX = 5


def _curve_figure(n_curves: int) -> Figure:
    """Drawn at its printed size: a few curves print paired (ROC beside PR), the legend below
    the plot; many print one per row, the legend beside the plot."""
    if n_curves <= PAIRED_MAX_CLASSES:
        return _new_figure((PAIRED_WIDTH, 2.75 + 0.15 * (n_curves + 1)), fixed_aspect=True)
    # Page-wide: no taller than the legend beside the plot needs (a 92 mm pair of curve
    # figures would leave no room on their page for the confusion-matrix table after them).
    height = min(PRINT_HEIGHT - 0.05, max(2.9, 0.5 + 0.155 * (min(n_curves, 18) + 1)))
    return _new_figure((PRINT_WIDTH - 0.1, height), fixed_aspect=True)


def _finish_curve_plot(ax: Axes, handles: list[Artist], labels: list[str], *, title: str,
                       xlabel: str, ylabel: str) -> None:
    """The common end of ROC/PR plots: unit square, titles, legend beside (or below) the axes."""
    _unit_square(ax)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    n_curves = len(handles) - 1  # the last handle is the chance line
    fig = ax.get_figure(root=True)
    if fig is None:
        raise ReportError("the ROC axes belong to no figure")
    if fig.get_figwidth() >= PRINT_WIDTH * 0.9:   # our page-wide figure: beside the plot
        ax.legend(list(handles), list(labels), loc="upper left", bbox_to_anchor=(1.03, 1.0),
                  borderaxespad=0.0, handlelength=1.6, fontsize=7,
                  ncols=1 if n_curves <= 18 else 2)
    elif fig.get_figwidth() <= PAIRED_WIDTH * 1.05:   # our paired figure: below it
        fig.legend(list(handles), list(labels), loc="outside lower center", ncols=1,
                   fontsize=7, handlelength=1.6)
    elif n_curves <= LEGEND_BESIDE_MAX:   # a caller's own axes
        _legend_right(ax, handles, labels)
    else:
        fig.legend(list(handles), list(labels), loc="outside lower center", ncols=2,
                   fontsize=7, handlelength=1.6, columnspacing=1.2)


@_styled
def roc_curves(metrics: artifacts.Metrics, *, t: Translate, ax: Axes | None = None) -> Figure:
    """ROC curve of the positive class (binary) or one-vs-rest per class, AUC in the legend."""
    entries = _curve_entries(metrics, _curves(metrics).get("roc"), "roc")
    binary = metrics.get("task") == "binary"
    fig, ax = _figure_and_axes(ax, lambda: _curve_figure(len(entries)))
    handles: list[Artist] = []
    labels: list[str] = []
    with_ci = len(entries) <= 4  # more curves: keep the legend short; the table has the CIs
    for i, entry in enumerate(entries):
        auc = metrics.get("roc_auc") if binary else _per_class(metrics, entry["class"]).get("auc")
        ci = _ci(auc) if with_ci else None
        (line,) = ax.plot(entry["fpr"], entry["tpr"], **_series_style(i))
        handles.append(line)
        labels.append(_score_label(_class_label(metrics, entry["class"]), t("chart.roc.auc"),
                                   entry.get("auc"), ci, t))
    handles.append(_chance_diagonal(ax, t("chart.chance")))
    labels.append(t("chart.chance"))
    _finish_curve_plot(ax, handles, labels, title=t("chart.roc.title_binary") if binary else t("chart.roc.title_ovr"),
                       xlabel=t("chart.roc.xlabel"), ylabel=t("chart.roc.ylabel"))
    return fig


@_styled
def pr_curves(metrics: artifacts.Metrics, *, t: Translate, ax: Axes | None = None) -> Figure:
    """Precision–recall curves, AP in the legend; chance = the class's prevalence."""
    entries = _curve_entries(metrics, _curves(metrics).get("pr"), "pr")
    binary = metrics.get("task") == "binary"
    n = value_of(metrics.get("n"))
    fig, ax = _figure_and_axes(ax, lambda: _curve_figure(len(entries)))
    handles: list[Artist] = []
    labels: list[str] = []
    with_ci = len(entries) <= 4  # as the ROC legend: more curves keep the legend short
    for i, entry in enumerate(entries):
        style = _series_style(i)
        color = style["color"]
        (line,) = ax.plot(entry["recall"], entry["precision"], **style)
        ap = metrics.get("average_precision") if binary else _per_class(metrics, entry["class"]).get("ap")
        ci = _ci(ap) if with_ci else None
        handles.append(line)
        labels.append(_score_label(_class_label(metrics, entry["class"]), t("chart.pr.ap"),
                                   entry.get("ap"), ci, t))
        support = value_of(_per_class(metrics, entry["class"]).get("support"))
        if n and support is not None:
            ax.axhline(support / n, color="#888888" if binary else color, linestyle=":",
                       linewidth=1.0, alpha=0.8)
    handles.append(Line2D([], [], color="#888888", linestyle=":", linewidth=1.0))
    labels.append(t("chart.pr.chance"))
    _finish_curve_plot(ax, handles, labels, title=t("chart.pr.title_binary") if binary else t("chart.pr.title_ovr"),
                       xlabel=t("chart.pr.xlabel"), ylabel=t("chart.pr.ylabel"))
    return fig


class RocLine(TypedDict):
    """One run's ROC curve for the comparison (the positive class's, or a macro average)."""

    fpr: list[float]
    tpr: list[float]
    auc: artifacts.RocAuc            # the run's ROC-AUC value with its interval


def _run_lines(ax: Axes, lines: Mapping[str, tuple[Sequence[float], Sequence[float], object]], *,
               metric: str, t: Translate) -> tuple[list[Artist], list[str]]:
    """One line per run (``run -> (x, y, score)``) in the series styles, each labelled with
    its score and interval: the study's ROC and precision-recall charts."""
    handles: list[Artist] = []
    labels: list[str] = []
    run_labels = _label_map(list(lines))
    for i, (run, (x, y, score)) in enumerate(lines.items()):
        (line,) = ax.plot(x, y, **_series_style(i))
        handles.append(line)
        labels.append(_score_label(run_labels[run], metric, score, _ci(score), t))
    return handles, labels


@_styled
def compare_roc(curves: Mapping[str, RocLine], *, t: Translate,
                ax: Axes | None = None) -> Figure:
    """ROC curves of several runs on one set of axes (``run -> {"fpr", "tpr", "auc"}``)."""
    if not curves:
        raise ReportError("compare: no ROC curves to plot")
    fig, ax = _figure_and_axes(ax, lambda: _new_figure(WIDE, fixed_aspect=True))
    handles, labels = _run_lines(ax, {run: (roc["fpr"], roc["tpr"], roc.get("auc")) for run, roc in curves.items()},
                                 metric=t("chart.roc.auc"), t=t)
    handles.append(_chance_diagonal(ax, t("chart.chance")))
    labels.append(t("chart.chance"))
    _finish_curve_plot(ax, handles, labels, title=t("chart.compare.roc_title"),
                       xlabel=t("chart.roc.xlabel"), ylabel=t("chart.roc.ylabel"))
    return fig


class PrLine(TypedDict):
    """One run's precision-recall curve for a study (the positive class's, or a macro average)."""

    recall: list[float]
    precision: list[float]
    ap: artifacts.Value | None       # the run's average precision with its interval
    prevalence: float | None         # the no-skill level (binary: the positive share)


@_styled
def compare_pr(curves: Mapping[str, PrLine], *, t: Translate, ax: Axes | None = None) -> Figure:
    """Precision-recall curves of several runs on one set of axes."""
    if not curves:
        raise ReportError("study: no precision-recall curves to plot")
    fig, ax = _figure_and_axes(ax, lambda: _new_figure(WIDE, fixed_aspect=True))
    handles, labels = _run_lines(ax, {run: (pr["recall"], pr["precision"], pr.get("ap")) for run, pr in curves.items()},
                                 metric=t("chart.pr.ap"), t=t)
    prevalence = next((pr["prevalence"] for pr in curves.values() if pr.get("prevalence") is not None), None)
    if prevalence is not None:
        handles.append(ax.axhline(prevalence, color="#888888", lw=0.8, ls="--"))
        labels.append(t("chart.chance"))
    _finish_curve_plot(ax, handles, labels, title=t("chart.study.pr_title"),
                       xlabel=t("chart.pr.xlabel"), ylabel=t("chart.pr.ylabel"))
    return fig


_OP_MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def _op_name(name: str, t: Translate) -> str:
    names = {"default_0.5": t("chart.op.default"), "youden": t("chart.op.youden"),
             "sens_90": t("chart.op.sens_90"), "sens_95": t("chart.op.sens_95")}
    return names.get(name, _lit(name))


def marker_sizes(points: Sequence[tuple[float, float]], *, near: float, base: float = 6.0,
                 step: float = 3.5) -> list[float]:
    """Marker size per point (drawn in order): a point within ``near`` of earlier ones gets a
    size ``step`` smaller than the smallest of them, and those earlier ones are grown so the
    smallest stays ``base``; alone, ``base``."""
    groups: list[list[int]] = []
    for k, (x, y) in enumerate(points):
        for group in groups:
            if any(math.hypot(x - points[j][0], y - points[j][1]) <= near for j in group):
                group.append(k)
                break
        else:
            groups.append([k])
    sizes = [base] * len(points)
    for group in groups:
        for rank, k in enumerate(group):
            sizes[k] = base + step * (len(group) - 1 - rank)
    return sizes


@_styled
def operating_point_chart(metrics: artifacts.Metrics, *, t: Translate,
                          ax: Axes | None = None) -> Figure:
    """The positive class's ROC with each operating point marked (95% CI as error bars)."""
    if metrics.get("task") != "binary":
        raise ReportError(f"operating points are drawn for binary tasks only; this task is "
                          f"{metrics.get('task')!r}")
    points = list(metrics.get("operating_points") or [])
    if not points:
        raise ReportError("metrics: no operating points to plot (metrics['operating_points'] "
                          "is empty)")
    roc = _curve_entries(metrics, _curves(metrics).get("roc"), "roc")[0]
    fig, ax = _figure_and_axes(ax, lambda: _new_figure(WIDE, fixed_aspect=True))
    (curve,) = ax.plot(roc["fpr"], roc["tpr"], color="#777777", linewidth=1.3)
    handles: list[Artist | Container] = [curve]
    labels = [_score_label(_class_label(metrics, roc["class"]), t("chart.roc.auc"), roc.get("auc"),
                           _ci(metrics.get("roc_auc")), t)]
    reach = 0.0  # how far from the top-left corner the points (with their CIs) go
    drawn: list[tuple[int, float, float, list[list[float]] | None, list[list[float]] | None]] = []
    for i, op in enumerate(points):
        sens, spec = value_of(op.get("sensitivity")), value_of(op.get("specificity"))
        if sens is None or spec is None:
            continue
        x, y = 1.0 - spec, sens
        xerr = yerr = None
        if (ci := _ci(op.get("specificity"))) is not None:
            xerr = [[max(0.0, x - (1 - ci[1]))], [max(0.0, (1 - ci[0]) - x)]]
        if (ci := _ci(op.get("sensitivity"))) is not None:
            yerr = [[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]]
        reach = max(reach, x + (xerr[1][0] if xerr else 0.0),
                    1.0 - y + (yerr[0][0] if yerr else 0.0))
        drawn.append((i, x, y, xerr, yerr))
    side = min(1.0, max(0.2, reach * 1.2 + 0.02))
    # Points that fall on (or within a marker of) each other are drawn as concentric
    # markers, the first largest, so each one stays visible as a ring around the next.
    sizes = marker_sizes([(x, y) for _, x, y, _, _ in drawn], near=0.03 * side)
    for (i, x, y, xerr, yerr), size in zip(drawn, sizes):
        op = points[i]
        color = PALETTE[(i + 1) % len(PALETTE)]
        handle = ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=_OP_MARKERS[i % len(_OP_MARKERS)],
                             color=color, markersize=size, markeredgecolor="white",
                             markeredgewidth=0.8, elinewidth=0.9, capsize=2,
                             zorder=3 + 0.01 * i)
        handles.append(handle)
        threshold = value_of(op.get("threshold"))
        labels.append(f"{_op_name(str(op.get('name')), t)} "
                      f"({t('chart.op.threshold')} = {_fmt(threshold)})")
    # Zoom on the top-left square that holds every point: good models crowd them there.
    if side > 0.6:
        handles.append(_chance_diagonal(ax, t("chart.chance")))
        labels.append(t("chart.chance"))
    _unit_square(ax)
    pad = 0.01 * side
    ax.set_xlim(-pad, side + pad)
    ax.set_ylim(1.0 - side - pad, 1.0 + pad)
    ax.set_title(t("chart.op.title"))
    ax.set_xlabel(t("chart.roc.xlabel"))
    ax.set_ylabel(t("chart.roc.ylabel"))
    _legend_right(ax, handles, labels)
    return fig
