"""Matplotlib figures for the lab report.

Every function returns a :class:`matplotlib.figure.Figure` built with ``Figure(...)``: no
pyplot state, no global rcParams (settings are applied with ``matplotlib.rc_context`` while a
figure is built and saved), no ``matplotlib.use``. Every visible word comes from the keyword
``t`` (a message lookup, keys ``chart.*`` in ``templates/i18n/<lang>/charts.json``); class and
run names are drawn literally (a ``$`` in them never starts mathtext).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, ParamSpec, TypedDict, TypeVar, Union

import matplotlib
import numpy as np
from cycler import cycler
from matplotlib import font_manager, transforms
import matplotlib.patches
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter
from matplotlib.typing import RcKeyType

from .. import artifacts, languages
from ..artifacts import HISTORY_COLUMNS
from ..data.base import SPLITS
from ..metrics import curve_area, value_of
from ..errors import ReportError
from ..labels import short_labels, size_text
from ..render import rounded
from ..runs import atomic_path

logger = logging.getLogger(__name__)

Translate = Callable[[str], str]

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from .. import models
    from matplotlib.artist import Artist
    from matplotlib.container import Container

# An image as a chart takes it: HxW, HxWxC or CxHxW, uint8 or float, array or tensor.
Image = Union[np.ndarray, "torch.Tensor"]
# Training history: rows of history.csv (artifacts.History) or a DataFrame of them.
HistoryTable = Union[Sequence[artifacts.HistoryRow], "pd.DataFrame"]
P = ParamSpec("P")
R = TypeVar("R")

# Okabe–Ito, reordered so that the first lines are the most distinct on white paper
# (the yellow is last: it is hard to see as a thin line).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000",
           "#F0E442")
TRAIN_COLOR, VAL_COLOR = "#0072B2", "#D55E00"
GRID_COLOR = "#e3e3e3"
CAM_CMAP = "turbo"
WIDE = (6.5, 3.5)  # inches: the text width of an A4 page with 2 cm margins
# The box a single figure prints in (templates/css/print.css: A4 less 16 mm margins each
# side; ``figure.fig img { max-height: 92mm }``), in inches. A chart drawn larger is shrunk
# with its text: charts are sized so their smallest text still prints at MIN_PRINT_PT.
PRINT_WIDTH = (210 - 2 * 16) / 25.4
PRINT_HEIGHT = 92 / 25.4
MIN_PRINT_PT = 6.0
# Two figures side by side (``.fig-row``: ROC beside PR, the two confusion matrices) share
# the width, less the row's gap, and are at most 80 mm tall (so the pair and its heading
# still fit under a table on the same page).
PAIRED_WIDTH = (PRINT_WIDTH - 0.15) / 2
PAIRED_HEIGHT = 80 / 25.4
# At most this many classes keep those figures paired (report.layout's WIDE_CLASSES).
PAIRED_MAX_CLASSES = 4


def print_box(*, paired: bool = False) -> tuple[float, float]:
    """The (width, height) in inches that a figure prints in on the PDF's A4 page."""
    return (PAIRED_WIDTH, PAIRED_HEIGHT) if paired else (PRINT_WIDTH, PRINT_HEIGHT)

# Characters of a run or class name in a small multiple's row or column title (the study's
# CAM grid); a longer one ends in an ellipsis.
NAME_LIMIT = 30

CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK SC")
LATIN_FAMILY = "DejaVu Sans"


# ---------------------------------------------------------------- style

_chart_lang: contextvars.ContextVar[str | None] = contextvars.ContextVar("chart_lang", default=None)


@functools.lru_cache(maxsize=1)
def _installed_cjk() -> tuple[str, ...]:
    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    found = tuple(name for name in CJK_FAMILIES if name in installed)
    if not found:
        logger.warning("no Noto Sans CJK font found (Debian: fonts-noto-cjk); "
                       "Chinese chart text will not render")
    return found


def font_families(lang: str | None = None) -> tuple[str, ...]:
    """The installed CJK families (``lang``'s own first) followed by DejaVu Sans.

    Only installed names are listed, so matplotlib never warns about a missing family.
    """
    found = _installed_cjk()
    # The language's first installed face is the one whose glyph shapes follow its conventions.
    wanted = languages.language(lang).fonts if lang is not None and lang in languages.codes() else ()
    first = next((name for name in wanted if name in found), None)
    if first is not None:
        found = (first,) + tuple(name for name in found if name != first)
    return found + (LATIN_FAMILY,)


def has_cjk_font() -> bool:
    return bool(_installed_cjk())


@contextlib.contextmanager
def chart_language(lang: str | None) -> Iterator[None]:
    """Figures built in this block prefer ``lang``'s CJK glyph forms (zh-TW, zh-CN).

    Optional: without it every figure still renders Chinese, with the default face first.
    """
    token = _chart_lang.set(lang)
    try:
        yield
    finally:
        _chart_lang.reset(token)


def _rc() -> dict[RcKeyType, object]:
    return {
        "font.family": list(font_families(_chart_lang.get())),
        "font.size": 8.5,
        "axes.titlesize": 9.5,
        "axes.labelsize": 8.5,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 7.5,
        "legend.frameon": False,
        "figure.facecolor": "white",
        "axes.facecolor": "white",
        "savefig.facecolor": "white",
        "axes.edgecolor": "#555555",
        "axes.linewidth": 0.8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.axisbelow": True,
        "grid.color": GRID_COLOR,
        "grid.linewidth": 0.6,
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "lines.linewidth": 1.5,
        "image.cmap": "viridis",
        "svg.hashsalt": "xreport",  # stable ids in SVG output
    }


@contextlib.contextmanager
def chart_style() -> Iterator[None]:
    """The report's matplotlib settings, for this block only."""
    with matplotlib.rc_context(_rc()):
        yield


def _styled(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with chart_style():
            return func(*args, **kwargs)
    return wrapper


def _lit(text: object, *, limit: int | None = None) -> str:
    """A user string (class or run name) drawn as is: ``$`` never starts mathtext.

    ``limit`` shortens a long name with an ellipsis (for one-off strings such as layer
    names; class and run names go through :func:`_labels`, which keeps them apart).
    """
    shown = str(text)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown.replace("$", r"\$")


def _labels(names: Sequence[str]) -> list[str]:
    """Chart labels for class (or run) names: ``labels.short_labels``, so a label names one
    class only and is the same in every chart and in the report's key; drawn literally."""
    return [_lit(label) for label in short_labels([str(n) for n in names])]


def _label_map(names: Sequence[str]) -> dict[str, str]:
    return dict(zip((str(n) for n in names), _labels(names)))
_LINESTYLES = ("-", "--", "-.", ":")


class SeriesStyle(TypedDict):
    color: str
    linestyle: str


def _series_style(i: int) -> SeriesStyle:
    """Colour i of the palette; after the palette is used up, the same colours dashed."""
    return {"color": PALETTE[i % len(PALETTE)],
            "linestyle": _LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)]}


def _fmt(value: float | None, digits: int = 3) -> str:
    # The documents' one rounding rule (render.rounded), so a chart and its table agree.
    if value is None or not math.isfinite(value):
        return "–"
    return f"{rounded(float(value), digits):.{digits}f}"


def _ci(v: object) -> tuple[float, float] | None:
    if isinstance(v, Mapping) and isinstance(v.get("ci95"), Sequence) and len(v["ci95"]) == 2:
        lo, hi = (value_of(x) for x in v["ci95"])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _new_figure(figsize: tuple[float, float], *, fixed_aspect: bool = False) -> Figure:
    # "compressed" is constrained layout for axes of fixed aspect (square plots, images):
    # plain "constrained" leaves gaps around them and needs several draws to settle.
    return Figure(figsize=figsize, layout="compressed" if fixed_aspect else "constrained")


def _figure_and_axes(ax: Axes | None, new_figure: Callable[[], Figure]) -> tuple[Figure, Axes]:
    """Draw into the caller's ``ax`` (their own layout, as scikit-learn's ``Display.plot(ax=)``)
    and return its figure, or into one axes of a new figure."""
    if ax is not None:
        fig = ax.get_figure(root=True)   # the Figure to save, also for an axes in a SubFigure
        if fig is None:
            raise ReportError("the axes given to draw into belong to no figure")
        return fig, ax
    fig = new_figure()
    return fig, fig.add_subplot()


def _unit_square(ax: Axes) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))


def _chance_diagonal(ax: Axes, label: str) -> Line2D:
    (line,) = ax.plot([0, 1], [0, 1], linestyle=":", color="#888888", linewidth=1.0,
                      label=label)
    return line


def _legend_right(ax: Axes, handles: Sequence[Artist | Container], labels: Sequence[str]) -> None:
    # Explicit handles/labels: a name starting with "_" is not dropped from the legend.
    ax.legend(list(handles), list(labels), loc="upper left", bbox_to_anchor=(1.03, 1.0),
              borderaxespad=0.0, handlelength=1.8)


# ---------------------------------------------------------------- saving

_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically (PNG, or SVG/PDF by suffix); returns the path."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ReportError(f"{path}: figure format {path.suffix or '(none)'!r} is not supported; "
                          f"use one of {', '.join(sorted(_FORMATS))}")
    # Metadata without dates or versions keeps the bytes identical from run to run.
    metadata = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else {
        "CreationDate": None}
    old_dpi = fig.get_dpi()
    try:
        with chart_style(), atomic_path(path) as tmp:
            # One layout pass at the output resolution first: the layout engine starts from
            # the last positions (and text sizes vary a little with dpi); without it the first
            # file saved is laid out visibly differently from later ones.
            fig.set_dpi(dpi)
            if fig.get_layout_engine() is not None:  # CAM figures have fixed axes: no pass
                fig.draw_without_rendering()
            fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white", metadata=metadata)
    finally:
        fig.set_dpi(old_dpi)
    return path


# ---------------------------------------------------------------- data

_SPLIT_KEYS = SPLITS   # the known splits first, in their order


def _split_label(name: str, t: Translate) -> str:
    labels = {"train": t("chart.split.train"), "val": t("chart.split.val"),
              "test": t("chart.split.test")}
    return labels.get(name, _lit(name))


@_styled
def class_distribution(dist: artifacts.ClassDistribution, *, t: Translate, ax: Axes | None = None) -> Figure:
    """Grouped bars: images per class, one bar per split, the count written on each bar."""
    names = _labels(dist["class_names"])
    splits = dict(dist["splits"])
    order = [s for s in _SPLIT_KEYS if s in splits] + [s for s in splits if s not in _SPLIT_KEYS]
    order = [s for s in order if splits[s] is not None]
    n_classes, n_splits = len(names), max(len(order), 1)
    own = ax is None
    fig, ax = _figure_and_axes(ax, lambda: _new_figure(WIDE))
    width = 0.8 / n_splits
    x = np.arange(n_classes)
    top = 0
    small = n_classes * n_splits > 18
    for i, split in enumerate(order):
        counts = [int(c) for c in splits[split] or []]
        top = max([top, *counts])
        if len(counts) != n_classes:
            raise ReportError(f"class distribution: split {split!r} has {len(counts)} counts "
                              f"for {n_classes} classes")
        bars = ax.bar(x + (i - (n_splits - 1) / 2) * width, counts, width * 0.95,
                      color=PALETTE[i % len(PALETTE)], label=_split_label(split, t))
        ax.bar_label(bars, labels=[str(c) for c in counts], padding=1.5,
                     fontsize=6 if small else 7, rotation=90 if small else 0)
    ax.set_xticks(x, names, rotation=30 if n_classes > 4 else 0,
                  ha="right" if n_classes > 4 else "center")
    ax.grid(axis="x", visible=False)
    # Head room for the count labels (taller when they are turned on their side).
    ax.set_ylim(0, max(1, top) * (1.16 if small else 1.08))
    ax.set_title(t("chart.class_distribution.title"))
    ax.set_xlabel(t("chart.class_distribution.xlabel"))
    ax.set_ylabel(t("chart.class_distribution.ylabel"))
    handles, labels = ax.get_legend_handles_labels()
    (fig.legend if own else ax.legend)(handles, labels, loc="outside right upper" if own else "best")
    return fig


# ---------------------------------------------------------------- training

def _history_columns(history: HistoryTable) -> dict[str, np.ndarray]:
    """History (list of row dicts or a DataFrame) -> column -> float array (NaN where absent)."""
    if hasattr(history, "to_dict") and hasattr(history, "columns"):
        rows = history.to_dict("records")
    else:
        rows = list(history)
    if not rows:
        raise ReportError("training history is empty: nothing to plot")
    cols: dict[str, np.ndarray] = {}
    for name in HISTORY_COLUMNS:   # artifacts.HISTORY_COLUMNS: what train writes
        values = [value_of(row.get(name)) for row in rows]
        cols[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
    if np.isnan(cols["epoch"]).all():
        cols["epoch"] = np.arange(1, len(rows) + 1, dtype=float)
    return cols


def _has(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).any())


def _fraction_axis(ax: Axes, *arrays: np.ndarray) -> None:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] + [np.array([1.0])])
    ax.set_ylim(max(0.0, float(finite.min()) - 0.05), 1.02)


# Selection metrics that no other panel shows: they get a panel of their own.
SELECTION_PANELS = ("val_qwk", "val_bacc")


@_styled
def training_curves(history: HistoryTable, *, selected_epoch: int | None, t: Translate,
                    selected_by: str | None = None) -> Figure:
    """Loss, accuracy and macro-F1 panels (train and val), a panel of validation ROC-AUC when
    the history has it (its own axes: an AUC is not an F1), and one of the selection metric
    when no other panel shows it (validation QWK of an ordinal run); the selected epoch
    marked on every panel."""
    cols = _history_columns(history)
    epochs = cols["epoch"]
    with_auc = _has(cols["val_auc"])
    selection = selected_by if selected_by in SELECTION_PANELS and _has(cols[str(selected_by)]) else None
    extra = int(with_auc) + int(selection is not None)
    fig = _new_figure((PRINT_WIDTH - 0.1, PRINT_HEIGHT - 0.05) if extra else WIDE)
    if extra == 2:
        grid = list(fig.subplots(2, 3).flat)
        grid[-1].set_axis_off()
        axes = grid[:-1]
    else:
        axes = list(fig.subplots(2, 2, sharex=True).flat) if extra else list(fig.subplots(1, 3, sharex=True))
    panels = [
        (axes[0], "loss", t("chart.training.loss")),
        (axes[1], "acc", t("chart.training.accuracy")),
        (axes[2], "f1", t("chart.training.f1")),
    ]
    train_label, val_label = t("chart.training.train"), t("chart.training.val")
    for ax, stem, title in panels:
        train, val = cols[f"train_{stem}"], cols[f"val_{stem}"]
        if _has(train):
            ax.plot(epochs, train, color=TRAIN_COLOR, label=train_label)
        if _has(val):
            ax.plot(epochs, val, color=VAL_COLOR, label=val_label)
        ax.set_title(title)
        if stem != "loss":
            _fraction_axis(ax, train, val)
    if with_auc:
        axes[3].plot(epochs, cols["val_auc"], color=VAL_COLOR, label=val_label)
        axes[3].set_title(t("chart.training.val_auc"))
        _fraction_axis(axes[3], cols["val_auc"])
    if selection is not None:
        ax = axes[-1]
        values = cols[selection]
        ax.plot(epochs, values, color=VAL_COLOR, label=val_label)
        ax.set_title(t("chart.training.val_qwk") if selection == "val_qwk" else t("chart.training.val_bacc"))
        if selection == "val_qwk":   # kappa runs from -1: chance is 0, not the bottom
            finite = values[np.isfinite(values)]
            ax.set_ylim(min(-0.05, float(finite.min()) - 0.05), 1.02)
            ax.axhline(0.0, color="#999999", linewidth=0.8)
        else:
            _fraction_axis(ax, values)
    for ax in axes if extra == 2 else axes[-2:] if extra else axes:
        ax.set_xlabel(t("chart.training.epoch"))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    if selected_epoch is not None:
        label = t("chart.training.selected").replace("{epoch}", str(int(selected_epoch)))
        for ax in axes:
            ax.axvline(selected_epoch, color="#555555", linestyle=":", linewidth=1.2,
                       label=label)
    # One legend for the figure: the union of the panels' entries, in first-seen order.
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
    fig.legend(list(entries.values()), list(entries.keys()), loc="outside lower center",
               ncols=len(entries))
    return fig


@_styled
def compare_training_curves(histories: Mapping[str, HistoryTable], *, t: Translate) -> Figure:
    """Runs side by side: validation loss, accuracy and macro-F1, one colour per run."""
    if not histories:
        raise ReportError("compare: no training histories to plot")
    fig = _new_figure(WIDE)
    axes = fig.subplots(1, 3)
    titles = (t("chart.compare.val_loss"), t("chart.compare.val_accuracy"),
              t("chart.compare.val_f1"))
    handles, labels = [], []
    run_labels = _label_map(list(histories))
    for i, (run, history) in enumerate(histories.items()):
        cols = _history_columns(history)
        for ax, column in zip(axes, ("val_loss", "val_acc", "val_f1")):
            (line,) = ax.plot(cols["epoch"], cols[column], **_series_style(i))
        handles.append(line)
        labels.append(run_labels[run])
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel(t("chart.training.epoch"))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    for ax in axes[1:]:
        ax.set_ylim(top=1.02)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))
    return fig


# ---------------------------------------------------------------- curves

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


@_styled
def compare_roc(curves: Mapping[str, RocLine], *, t: Translate,
                ax: Axes | None = None) -> Figure:
    """ROC curves of several runs on one set of axes (``run -> {"fpr", "tpr", "auc"}``)."""
    if not curves:
        raise ReportError("compare: no ROC curves to plot")
    fig, ax = _figure_and_axes(ax, lambda: _new_figure(WIDE, fixed_aspect=True))
    handles: list[Artist] = []
    labels: list[str] = []
    run_labels = _label_map(list(curves))
    for i, (run, roc) in enumerate(curves.items()):
        (line,) = ax.plot(roc["fpr"], roc["tpr"], **_series_style(i))
        handles.append(line)
        labels.append(_score_label(run_labels[run], t("chart.roc.auc"), roc.get("auc"), _ci(roc.get("auc")), t))
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
    handles: list[Artist] = []
    labels: list[str] = []
    run_labels = _label_map(list(curves))
    for i, (run, pr) in enumerate(curves.items()):
        (line,) = ax.plot(pr["recall"], pr["precision"], **_series_style(i))
        handles.append(line)
        labels.append(_score_label(run_labels[run], t("chart.pr.ap"), pr.get("ap"), _ci(pr.get("ap")), t))
    prevalence = next((pr["prevalence"] for pr in curves.values() if pr.get("prevalence") is not None), None)
    if prevalence is not None:
        handles.append(ax.axhline(prevalence, color="#888888", lw=0.8, ls="--"))
        labels.append(t("chart.chance"))
    _finish_curve_plot(ax, handles, labels, title=t("chart.study.pr_title"),
                       xlabel=t("chart.pr.xlabel"), ylabel=t("chart.pr.ylabel"))
    return fig


@_styled
def study_cams(images: Sequence[Image], maps: Sequence[Sequence[Image | None]], *,
               row_labels: Sequence[str], run_labels: Sequence[str], t: Translate,
               alpha: float = 0.55) -> Figure:
    """The same test images (rows) with each run's CAM (columns) on one fixed 0..1 scale;
    a cell without a map (that run has none for the image) shows the image alone."""
    if not images or not run_labels:
        raise ReportError("study: no CAMs to draw")
    rows, cols = len(images), len(run_labels) + 1
    cell = 1.25
    fig = Figure(figsize=(cell * cols + 0.5, cell * rows + 0.45))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.07],
                            left=0.02, right=0.95, top=1 - 0.4 / (cell * rows + 0.45),
                            bottom=0.01, wspace=0.05, hspace=0.12)
    heat = None
    shown_rows, shown_runs = _labels(row_labels), _labels(run_labels)
    for r in range(rows):
        ax = fig.add_subplot(grid[r, 0])
        _show(ax, images[r])
        ax.set_ylabel(shown_rows[r], fontsize=6.5)
        ax.yaxis.set_visible(True)
        ax.set_yticks([])
        if r == 0:
            ax.set_title(t("chart.study.image"), fontsize=7.5)
        for c in range(1, cols):
            ax = fig.add_subplot(grid[r, c])
            cam = maps[r][c - 1]
            if cam is None:
                _show(ax, images[r])
                ax.text(0.5, 0.5, "–", transform=ax.transAxes, ha="center", va="center", color="#ffffff")
            else:
                heat = _draw_overlay(ax, images[r], cam, alpha)
            if r == 0:
                ax.set_title(shown_runs[c - 1], fontsize=7.5)
    if heat is not None:
        _cam_colorbar(fig, heat, fig.add_subplot(grid[:, cols]))
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


# ---------------------------------------------------------------- confusion / calibration

def _text_color(rgba: Sequence[float]) -> str:
    """White on dark cells, near-black on light ones (WCAG relative luminance)."""
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgba[:3])
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.35 else "#222222"


def _matrix(matrix: Sequence[Sequence[float | None]], n: int, *, normalized: bool) -> np.ndarray:
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix],
                      dtype=float)
    if values.shape != (n, n):
        raise ReportError(f"confusion matrix is {values.shape[0]}x"
                          f"{values.shape[1] if values.ndim == 2 else '?'} but there are "
                          f"{n} class names")
    if normalized and np.nanmax(values, initial=0.0) > 1.0 + 1e-9:
        raise ReportError("a normalized confusion matrix must hold fractions in [0, 1] "
                          "(e.g. metrics['confusion_matrix']['by_true']); got values above 1")
    return values


@_styled
def confusion_matrix(matrix: Sequence[Sequence[float | None]], class_names: Sequence[str], *,
                     normalized: bool, t: Translate, ax: Axes | None = None) -> Figure:
    """Annotated confusion matrix (rows = true class); ``normalized`` takes fractions."""
    n = len(class_names)
    values = _matrix(matrix, n, normalized=normalized)
    # Drawn at its printed size: paired (two side by side) for a few classes, page-wide
    # beyond, so the cell numbers and names print at 6.5 pt or more.
    size = ((PAIRED_WIDTH, PAIRED_WIDTH * 0.92) if n <= PAIRED_MAX_CLASSES
            else (PRINT_WIDTH - 0.1, PRINT_HEIGHT - 0.05))
    fig, ax = _figure_and_axes(ax, lambda: _new_figure(size, fixed_aspect=True))
    ax.grid(False)
    vmax = 1.0 if normalized else max(float(np.nanmax(values, initial=0.0)), 1.0)
    norm = Normalize(vmin=0.0, vmax=vmax)
    shown = np.ma.masked_invalid(values)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#eeeeee")
    image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="equal")
    fontsize = 8 if n <= 4 else 7 if n <= 8 else 6.5
    for i in range(n):
        for j in range(n):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "–", ha="center", va="center", fontsize=fontsize, color="#666666")
                continue
            text = (f"{100 * v:.{1 if n <= 10 else 0}f}%" if normalized
                    else f"{int(round(v))}")
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color=_text_color(image.cmap(norm(v))))
    # The same label heads column k and row k (and names class k in every other chart).
    names = _labels(class_names)
    rotate = n > 3 or max((len(c) for c in names), default=0) > 12
    ax.set_xticks(range(n), names, rotation=35 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(t("chart.cm.predicted"))
    ax.set_ylabel(t("chart.cm.true"))
    ax.set_title(t("chart.cm.title_normalized") if normalized else t("chart.cm.title_counts"))
    cbar = fig.colorbar(image, ax=ax, shrink=0.85, fraction=0.06, pad=0.03)
    cbar.outline.set_visible(False)
    cbar.ax.tick_params(labelsize=7)
    if normalized:
        cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        cbar.set_label(t("chart.cm.colorbar_fraction"))
    else:
        cbar.ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        cbar.set_label(t("chart.cm.colorbar_counts"))
    return fig


# A bin with fewer images than this is drawn pale and its count written on it: its accuracy
# moves by a third or more with one image.
SMALL_BIN = 10
OVER_COLOR, UNDER_COLOR = "#D55E00", "#009E73"


@_styled
def reliability_diagram(calibration: artifacts.Calibration, *, t: Translate) -> Figure:
    """Accuracy per confidence bin against the diagonal, counts below. The gap between a
    bin's accuracy and its mean confidence is drawn in the direction it goes: above the bar,
    red and hatched ///, where confidence exceeds accuracy (over-confident); over the top of
    the bar, green and hatched \\\\, where accuracy exceeds confidence (under-confident). A black
    tick marks each bin's mean confidence; bins under SMALL_BIN images are pale."""
    bins = list(calibration.get("bins") or [])
    if not bins:
        raise ReportError("calibration: no bins to plot (metrics['calibration']['bins'] is empty)")
    fig = _new_figure((PRINT_WIDTH - 0.1, PRINT_HEIGHT - 0.05))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lo = np.array([float(b["lo"]) for b in bins])
    hi = np.array([float(b["hi"]) for b in bins])
    counts = np.array([int(b.get("count") or 0) for b in bins])
    acc = np.array([value_of(b.get("accuracy")) if b.get("count") else None for b in bins],
                   dtype=float)
    conf = np.array([value_of(b.get("confidence")) if b.get("count") else None for b in bins],
                    dtype=float)
    filled = (counts > 0) & np.isfinite(acc) & np.isfinite(conf)
    width = hi - lo
    small = filled & (counts < SMALL_BIN)
    for mask, alpha in ((filled & ~small, 1.0), (small, 0.35)):
        if mask.any():
            top.bar(lo[mask], acc[mask], width[mask], align="edge", color=PALETTE[0], alpha=alpha,
                    edgecolor="white", linewidth=0.6,
                    label=t("chart.calibration.accuracy_bars") if alpha == 1.0 or not (filled & ~small).any() else None,
                    gid="accuracy")
    over = filled & (conf > acc)
    under = filled & (acc > conf)
    if over.any():
        top.bar(lo[over], (conf - acc)[over], width[over], bottom=acc[over], align="edge",
                facecolor=matplotlib.colors.to_rgba(OVER_COLOR, 0.18), edgecolor=OVER_COLOR,
                hatch="///", linewidth=0.8, label=t("chart.calibration.over"), gid="over")
    if under.any():
        top.bar(lo[under], (acc - conf)[under], width[under], bottom=conf[under], align="edge",
                facecolor=matplotlib.colors.to_rgba("white", 0.55), edgecolor=UNDER_COLOR,
                hatch="\\\\\\", linewidth=0.8, label=t("chart.calibration.under"), gid="under")
    if filled.any():
        top.hlines(conf[filled], lo[filled], hi[filled], colors="#111111", linewidth=1.4,
                   label=t("chart.calibration.mean_confidence"), gid="confidence")
    for x, n in zip((lo + width / 2)[small], counts[small]):
        top.text(x, 0.02, f"n={n}", rotation=90, ha="center", va="bottom", fontsize=6.5,
                 color="#333333")
    top.plot([0, 1], [0, 1], linestyle="--", color="#555555", linewidth=1.0,
             label=t("chart.calibration.perfect"))
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.0)
    top.set_aspect("auto")
    top.set_ylabel(t("chart.calibration.ylabel"))
    ece = calibration.get("ece")
    title = f"{t('chart.calibration.title')} ({t('chart.calibration.ece')} = {_fmt(value_of(ece))}"
    if (ci := _ci(ece)) is not None:
        title += f", {t('chart.ci95')} {_fmt(ci[0])}–{_fmt(ci[1])}"
    top.set_title(title + ")")
    handles, labels = top.get_legend_handles_labels()
    if small.any():
        handles.append(matplotlib.patches.Patch(color=PALETTE[0], alpha=0.35))
        labels.append(t("chart.calibration.small_bin").replace("{n}", str(SMALL_BIN)))
    # Beside the plot, not over it: bars reach every corner of the unit square.
    top.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
               fontsize=7)
    bottom.bar(lo, counts, width, align="edge", color="#999999", edgecolor="white",
               linewidth=0.6)
    bottom.set_ylabel(t("chart.calibration.count"))
    bottom.set_xlabel(t("chart.calibration.xlabel"))
    bottom.xaxis.set_major_locator(MaxNLocator(6))
    return fig


# ---------------------------------------------------------------- images

def _to_display(img: Image) -> tuple[np.ndarray, bool]:
    """An image (HxW, HxWxC or CxHxW; uint8 or other) -> (array for imshow in [0,1], is grey)."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ReportError(f"image of shape {np.asarray(img).shape} cannot be drawn; "
                          "expected HxW, HxWx3 or CxHxW with C in (1, 3)")
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    else:
        f = a.astype(np.float32)
        lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
        f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
    if f.ndim == 3 and np.allclose(f[..., 0], f[..., 1]) and np.allclose(f[..., 0], f[..., 2]):
        f = f[..., 0]
    return f, f.ndim == 2


def _show(ax: Axes, img: Image) -> None:
    f, is_grey = _to_display(img)
    if is_grey:
        ax.imshow(f, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(f, 0.0, 1.0), interpolation="nearest")
    _bare(ax)


def _bare(ax: Axes) -> None:
    """No ticks or spines, but the axis labels stay visible (unlike ``axis('off')``)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


# A thumbnail side (inches) below which a class shows fewer images rather than smaller ones.
MIN_THUMB = 0.7


def _example_layout(n: int, per_class: int) -> tuple[int, int, float]:
    """(class blocks side by side, images per class, thumbnail side in inches) for the
    printed figure box (PRINT_WIDTH x PRINT_HEIGHT): as many images per class as keep
    thumbnails at MIN_THUMB or more, then the layout with the largest thumbnails."""
    options = []
    for blocks in range(1, 5):
        for shown in range(1, min(per_class, 4) + 1):
            rows = math.ceil(n / blocks)
            label_w = 0.0 if blocks > 1 else 1.9   # one block: the class name on the left
            side = min((PRINT_WIDTH - label_w - 0.12 * blocks) / (blocks * shown),
                       (PRINT_HEIGHT - 0.3) / rows - (0.2 if blocks > 1 else 0.03), 1.35)
            options.append((side >= MIN_THUMB, shown if side >= MIN_THUMB else 0, side, -blocks,
                            blocks, shown))
    _, _, side, _, blocks, shown = max(options)
    return blocks, shown, side


@_styled
def example_grid(images: Sequence[Image] | Image, labels: Sequence[int], class_names: Sequence[str], *,
                 t: Translate, per_class: int = 4) -> Figure:
    """Up to ``per_class`` images of each class (pass a shuffled selection), laid out for the
    printed page: one row per class with its name on the left for a few classes, for many
    classes blocks of a class's images side by side, each under its name, so thumbnails and
    names keep a legible size inside one page-wide figure."""
    items = [images[i] for i in range(len(images))]
    labels = [int(x) for x in labels]
    if len(items) != len(labels):
        raise ReportError(f"example grid: {len(items)} images but {len(labels)} labels")
    if per_class < 1:
        raise ReportError(f"example grid: per_class must be >= 1, got {per_class}")
    n = len(class_names)
    row_labels = _labels(class_names)
    blocks, shown, side = _example_layout(n, per_class)
    rows = [[items[i] for i, y in enumerate(labels) if y == c][:shown] for c in range(n)]
    n_rows = math.ceil(n / blocks)
    label_w = 0.0 if blocks > 1 else 1.9
    gap = 0.12
    title_h, label_h = 0.3, (0.2 if blocks > 1 else 0.03)
    width = label_w + blocks * (shown * side + gap)
    height = title_h + n_rows * (side + label_h)
    # Fixed axes (no layout engine): every thumbnail square and every name where it belongs.
    fig = Figure(figsize=(width, height))
    for c in range(n):
        r, b = divmod(c, blocks)
        top = height - title_h - r * (side + label_h) - label_h
        left = label_w + b * (shown * side + gap)
        for j in range(shown):
            ax = fig.add_axes(((left + j * side + 0.02) / width, (top - side + 0.02) / height,
                               (side - 0.04) / width, (side - 0.04) / height))
            if j < len(rows[c]):
                _show(ax, rows[c][j])
            else:
                _bare(ax)
        if blocks > 1:
            fig.text((left + 0.02) / width, (top + 0.03) / height, row_labels[c], fontsize=6.5,
                     ha="left", va="bottom")
        else:
            fig.text((label_w - 0.06) / width, (top - side / 2) / height, row_labels[c],
                     fontsize=7, ha="right", va="center")
    fig.suptitle(t("chart.examples.title"), fontsize=9.5, y=1 - 0.04 / height, va="top")
    return fig


@_styled
def preprocessing_before_after(pairs: Sequence[tuple[Image, Image]], *, t: Translate) -> Figure:
    """Top row the raw images, bottom row after preprocessing; pixel size under each."""
    if not pairs:
        raise ReportError("preprocessing figure: no image pairs to show")
    cols = len(pairs)
    cell = min(1.5, 5.6 / cols)
    fig = _new_figure((cell * cols + 1.0, 2 * cell + 0.8), fixed_aspect=True)
    axes = fig.subplots(2, cols, squeeze=False)
    for j, (raw, processed) in enumerate(pairs):
        for row, img in enumerate((raw, processed)):
            ax = axes[row, j]
            _show(ax, img)
            h, w = _to_display(img)[0].shape[:2]
            ax.set_xlabel(size_text(w, h), fontsize=7, labelpad=2)
    axes[0, 0].set_ylabel(t("chart.preprocess.before"))
    axes[1, 0].set_ylabel(t("chart.preprocess.after"))
    fig.suptitle(t("chart.preprocess.title"), fontsize=9.5)
    return fig


def _cam_array(cam: Image) -> np.ndarray:
    c = np.asarray(cam, dtype=np.float32)
    c = np.squeeze(c)
    if c.ndim != 2:
        raise ReportError(f"CAM of shape {np.shape(cam)} cannot be drawn; expected HxW")
    return np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)


def _draw_overlay(ax: Axes, image: Image, cam: Image, alpha: float) -> AxesImage:
    """The image as the model saw it (colour stays colour, grey stays grey) with the map on
    top; the map's opacity grows with its value, so cold regions leave the image visible."""
    shown, is_grey = _to_display(image)
    h, w = shown.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # the CAM is stretched over the image if smaller
    if is_grey:
        ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", extent=extent)
    else:
        ax.imshow(np.clip(shown, 0.0, 1.0), interpolation="nearest", extent=extent)
    heat_map = _cam_array(cam)
    heat = ax.imshow(heat_map, cmap=CAM_CMAP, vmin=0.0, vmax=1.0,
                     alpha=alpha * (0.25 + 0.75 * heat_map), interpolation="bilinear",
                     extent=extent)
    _bare(ax)
    return heat


def cam_scale_colors(steps: int = 7) -> list[str]:
    """The CAM colour map as ``steps`` hex colours from 0 to 1 (for an HTML colour bar)."""
    cmap = matplotlib.colormaps[CAM_CMAP]
    return [matplotlib.colors.to_hex(cmap(i / (steps - 1))) for i in range(steps)]


def _cam_colorbar(fig: Figure, mappable: AxesImage, cax: Axes) -> None:
    # The colour bar shows the map at full strength with the fixed 0..1 scale.
    solid = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=mappable.get_cmap())
    cbar = fig.colorbar(solid, cax=cax, ticks=[0.0, 0.5, 1.0])
    cbar.ax.set_yticklabels(["0", "0.5", "1"])
    cbar.ax.tick_params(labelsize=6.5, length=2, pad=1.5)
    cbar.outline.set_linewidth(0.5)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ReportError(f"CAM overlay alpha must be in [0, 1], got {alpha}")


def colormap_lut(name: str = CAM_CMAP) -> str:
    """The CAM colour map as 256 RGB byte triples, base64: the report's interactive viewer
    colours its maps in the browser with the same scale as the static overlays."""
    import base64

    rgb = np.round(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    return base64.b64encode(rgb.tobytes()).decode("ascii")


LESION_COLOR = "white"


def _draw_outline(ax: Axes, mask: Image) -> None:
    """The known lesion's outline (a mask of the image's size): white over a dark edge, so it
    shows on both the cold and the warm end of the colour map."""
    m = np.squeeze(np.asarray(mask)).astype(float)
    if m.ndim != 2 or not m.any():
        return
    for color, width in (("#000000", 2.2), (LESION_COLOR, 1.0)):
        ax.contour(m, levels=[0.5], colors=color, linewidths=width, gid="lesion")


@_styled
def cam_overlay(image: Image, cam: Image, *, alpha: float = 0.55, colorbar: bool = True,
                lesion: Image | None = None) -> Figure:
    """The image with the CAM (fixed 0..1 scale) blended on top; a slim colour bar unless
    ``colorbar`` is False (the report's gallery draws one shared colour scale instead);
    ``lesion`` (a mask of the image's size, where known) is outlined."""
    _check_alpha(alpha)
    if not colorbar:
        fig = Figure(figsize=(1.6, 1.6))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        _draw_overlay(ax, image, cam, alpha)
        if lesion is not None:
            _draw_outline(ax, lesion)
        return fig
    fig = Figure(figsize=(2.45, 2.2))
    ax = fig.add_axes((0.02, 0.02, 0.78, 0.96))
    cax = fig.add_axes((0.83, 0.12, 0.045, 0.76))
    heat = _draw_overlay(ax, image, cam, alpha)
    if lesion is not None:
        _draw_outline(ax, lesion)
    _cam_colorbar(fig, heat, cax)
    return fig


@_styled
def cam_panel(image: Image, cam: Image, *, alpha: float = 0.55) -> Figure:
    """The original and the overlay side by side, with a slim colour bar."""
    _check_alpha(alpha)
    fig = Figure(figsize=(4.5, 2.2))
    left = fig.add_axes((0.01, 0.02, 0.43, 0.96))
    right = fig.add_axes((0.46, 0.02, 0.43, 0.96))
    cax = fig.add_axes((0.91, 0.12, 0.025, 0.76))
    _show(left, image)
    heat = _draw_overlay(right, image, cam, alpha)
    _cam_colorbar(fig, heat, cax)
    return fig


# ---------------------------------------------------------------- faithfulness

def _auc(curve: np.ndarray) -> float | None:
    if curve.size < 2 or not np.isfinite(curve).all():
        return None
    return float(curve_area(curve))


def _delta_text(stat: artifacts.PairedStatistic | None) -> str | None:
    """"Δ 0.123 [0.080, 0.170]" from a paired statistic of metrics.json (None when absent)."""
    if not isinstance(stat, Mapping) or value_of(stat.get("difference")) is None:
        return None
    ci: Sequence[float | None] = stat.get("ci95") or [None, None]
    return f"{_fmt(value_of(stat['difference']))} [{_fmt(value_of(ci[0]))}, {_fmt(value_of(ci[1]))}]"


_CAM_AND_RANDOM: tuple[Literal["cam", "random"], ...] = ("cam", "random")

# Tick length and pad, a tick label and the axis label below an axes (rc sizes above), in points.
_BELOW_XLABEL_PT = 3.5 + 3.5 + 8 * 1.25 + 4 + 8.5 * 1.25


@_styled
def faithfulness_curves(faith: artifacts.Faithfulness, *, t: Translate) -> Figure:
    """Deletion, insertion and (when measured) ROAD curves of the CAM against the mean of the
    random maps; each legend entry gives the score, each panel the paired Δ with its 95% CI and n."""
    panels: list[tuple[str, str, str, tuple[str, ...]]] = [
        ("deletion", t("chart.faith.deletion_title"), t("chart.faith.deletion_xlabel"), ("deletion",)),
        ("insertion", t("chart.faith.insertion_title"), t("chart.faith.insertion_xlabel"), ("insertion",)),
    ]
    if faith.get("road_morf_curve") or faith.get("road_lerf_curve"):
        panels.append(("road", t("chart.faith.road_title"), t("chart.faith.road_xlabel"),
                       ("road_morf", "road_lerf")))
    curve_of: dict[str, artifacts.CamCurves | None] = {
        "deletion": faith.get("deletion_curve"), "insertion": faith.get("insertion_curve"),
        "road_morf": faith.get("road_morf_curve"), "road_lerf": faith.get("road_lerf_curve")}
    stat_of: dict[str, artifacts.PairedStatistic | None] = {
        "deletion": faith.get("deletion_auc"), "insertion": faith.get("insertion_auc"),
        "road_morf": faith.get("road_morf"), "road_lerf": faith.get("road_lerf")}
    if not any(curve_of[kind] for kind, _, _, _ in panels[:2]):
        raise ReportError("faithfulness: no deletion_curve or insertion_curve to plot")
    fig = _new_figure((WIDE[0], WIDE[1] * (1.1 if len(panels) == 3 else 1.0)))
    axes = fig.subplots(1, len(panels), sharey=True)
    names = {"cam": t("chart.faith.cam"), "random": t("chart.faith.random")}
    curve_names = {"road_morf": t("chart.faith.morf"), "road_lerf": t("chart.faith.lerf")}
    n = faith.get("n")
    for ax, (kind, title, xlabel, curves_in_panel) in zip(axes, panels):
        handles: list[Artist] = []
        labels: list[str] = []
        deltas: list[str] = []
        for j, curve in enumerate(curves_in_panel):
            curves = curve_of[curve]
            stat = stat_of[curve]
            for which in _CAM_AND_RANDOM:
                if curves is None or curves.get(which) is None:
                    continue
                y = np.asarray(curves[which], dtype=float)
                # ROAD samples only the interior removal levels; the others span 0..1.
                x = (np.arange(1, y.size + 1) / (y.size + 1)) if kind == "road" else np.linspace(0.0, 1.0, y.size)
                style: dict[str, str | int] = (dict(color=PALETTE[1 + 2 * j]) if which == "cam"
                                               else dict(color="#777777", linestyle="--"))
                if j:
                    style["marker"] = "o" if which == "cam" else "s"
                    style["markersize"] = 3
                (line,) = ax.plot(x, y, **style)
                area = (value_of(stat.get(which)) if stat and which in stat
                        else (_auc(y) if kind != "road" else None))
                prefix = f"{curve_names[curve]} " if curve in curve_names else ""
                handles.append(line)
                # Two lines keep the legend narrower than the panel.
                labels.append(f"{prefix}{names[which]}\n{t('chart.faith.area')} = {_fmt(area)}")
            delta = _delta_text(stat)
            if delta:
                prefix = f"{curve_names[curve]} " if curve in curve_names else ""
                deltas.append(f"{prefix}{t('chart.faith.delta')} {delta}")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        if deltas:
            # Insertion rises from the lower left: its box goes to the empty upper left.
            top = kind == "insertion"
            ax.text(0.02, 0.98 if top else 0.02, "\n".join(deltas + ([f"n = {n}"] if n else [])),
                    transform=ax.transAxes, fontsize="x-small", va="top" if top else "bottom", ha="left",
                    bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor="#cccccc", alpha=0.9))
        if handles:
            # Below the panel, under its axis label: inside, the four ROAD curves leave no
            # free corner (constrained layout makes room for a legend outside its axes).
            below_label = transforms.offset_copy(ax.transAxes, fig=fig, y=-_BELOW_XLABEL_PT, units="points")
            ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      bbox_transform=below_label, labelspacing=0.6, fontsize="x-small")
    axes[0].set_ylabel(t("chart.faith.ylabel"))
    axes[0].set_ylim(0, 1.02)
    return fig


@_styled
def sanity_similarity(sanity: artifacts.Sanity, *, t: Translate) -> Figure:
    """Similarity of the randomised model's maps to the trained model's, stage by stage
    (Adebayo et al. 2018, Fig. 2): mean ± sd over the seeds, the pass limit dashed."""
    stages = [st for st in sanity.get("stages") or [] if isinstance(st, Mapping)]
    if not stages:
        raise ReportError("sanity: no stages to plot")
    fig = _new_figure(WIDE)
    ax = fig.subplots()
    labels = [t("chart.sanity.trained")] + [_lit(st.get("randomised", "?"), limit=22) for st in stages]
    x = np.arange(len(labels))
    series = [([st.get("spearman") for st in stages], t("chart.sanity.spearman")),
              ([st.get("ssim") for st in stages], t("chart.sanity.ssim"))]
    for i, (similarities, name) in enumerate(series):
        means = [1.0] + [value_of(s.get("mean")) if s else None for s in similarities]
        sds = [0.0] + [(value_of(s.get("sd_seeds")) if s else None) or 0.0 for s in similarities]
        y = np.array([np.nan if m is None else m for m in means], dtype=float)
        ax.errorbar(x, y, yerr=np.array(sds, dtype=float), label=name, capsize=3,
                    marker="o" if i == 0 else "s", color=PALETTE[i], linestyle="-" if i == 0 else "--")
    last = stages[-1].get("spearman")
    limit = value_of(last.get("limit")) if last else None
    if limit is not None:
        ax.axhline(limit, color="#777777", linestyle=":", linewidth=1, label=t("chart.sanity.limit"))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=35 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                       fontsize="small")
    ax.set_ylim(min(-0.1, float(np.nanmin(ax.get_ylim()[0]))), 1.05)
    ax.set_xlabel(t("chart.sanity.xlabel"))
    ax.set_ylabel(t("chart.sanity.ylabel"))
    ax.set_title(t("chart.sanity.title"))
    ax.legend(loc="upper right", fontsize="x-small")
    return fig


# ---------------------------------------------------------------- architecture

_OP_FILL = {"conv": "#cfe3f3", "norm": "#ececec", "relu": "#fde0c5", "pool": "#d6efe0",
            "linear": "#e6dcf0", "other": "#f5f5f5"}
_ROW = 0.3       # inches per row of the flow chart
_PANEL_W = 5.0   # inches per block drawn
_MAIN_X, _BOX_W = 3.0, 5.4     # data units (axes span 0..10): the main path's boxes
_SIDE_X, _SIDE_W = 8.0, 3.7    # the shortcut's line and boxes


def _fill(text: str, **params: object) -> str:
    """A looked-up message with its ``{name}`` placeholders filled (any plain ``t`` works)."""
    for name, value in params.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def _shape_text(shape: Sequence[int]) -> str:
    return " × ".join(str(int(s)) for s in shape) if shape else "–"


def _step_label(step: models.LayerStep, t: Translate) -> str:
    op = step["op"]
    if op == "conv":
        text = _fill(t("chart.block.conv"), k=step["kernel"], cin=step["in_channels"],
                    cout=step["out_channels"])
        if (step["stride"] or 1) > 1:
            text += " · " + _fill(t("chart.block.stride"), s=step["stride"])
        return text
    if op == "norm":
        return _fill(t("chart.block.norm"), c=step["out_channels"])
    if op == "relu":
        return t("chart.block.relu")
    if op == "pool":
        return _fill(t("chart.block.pool"), k=step["kernel"])
    return _lit(step["module"].rsplit(".", 1)[-1])


def _path_rows(steps: Sequence[models.LayerStep], t: Translate) -> list[tuple[str, str, str]]:
    """("step", label, fill) per box; a BatchNorm directly followed by its ReLU shares one box
    (the pair every block repeats), so the tallest block fits the printed figure box."""
    rows: list[tuple[str, str, str]] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        if step["op"] == "norm" and i + 1 < len(steps) and steps[i + 1]["op"] == "relu":
            rows.append(("step", _fill(t("chart.block.norm_relu"), c=step["out_channels"]), _OP_FILL["relu"]))
            i += 2
            continue
        rows.append(("step", _step_label(step, t), _OP_FILL[step["op"]]))
        i += 1
    return rows


def _box(ax: Axes, x: float, y: float, width: float, text: str, fill: str, *,
         fontsize: float = 7.5, style: str = "round,pad=0.02,rounding_size=0.12") -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.34), width, 0.68, boxstyle=style,
                                facecolor=fill, edgecolor="#555555", linewidth=0.7))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 0.8,
                            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 7})


def _draw_block(ax: Axes, block: models.BlockStructure, *, t: Translate) -> None:
    """One block as a vertical flow chart: input, main path, merge, output; the shortcut
    (identity or projection) beside it, or the concatenation of a dense layer."""
    rows: list[tuple[str, str, str]] = [("io", _fill(t("chart.block.input"), shape=_shape_text(block["in_shape"])),
                                         "#ffffff")]
    rows += _path_rows(block["steps"], t)
    if block["merge"] == "add":
        rows.append(("merge", "+", "#ffffff"))
    else:
        cin = block["in_shape"][0] if block["in_shape"] else "?"
        k = block["growth_rate"]
        total = cin + k if isinstance(cin, int) and isinstance(k, int) else "?"
        rows.append(("merge", _fill(t("chart.block.concat"), cin=cin, k=k, cout=total), "#fff6cc"))
    rows += _path_rows(block["after_merge"], t)
    out_shape = list(block["out_shape"])
    if block["merge"] == "concat" and block["in_shape"] and out_shape:
        out_shape = [block["in_shape"][0] + out_shape[0], *out_shape[1:]]   # after the concat
    rows.append(("io", _fill(t("chart.block.output"), shape=_shape_text(out_shape)), "#ffffff"))
    n = len(rows)
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.7, n - 0.3)
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_xticks([])   # a flow chart has no scale
    ax.set_yticks([])
    cx = _MAIN_X
    merge_row = next(i for i, r in enumerate(rows) if r[0] == "merge")
    for i, (kind, text, fill) in enumerate(rows):
        if kind == "merge" and block["merge"] == "add":
            ax.text(cx, i, "+", ha="center", va="center", fontsize=9,
                    bbox={"boxstyle": "circle,pad=0.2", "facecolor": "#ffffff", "edgecolor": "#555555",
                          "linewidth": 0.8})
        elif kind == "io":
            _box(ax, cx, i, _BOX_W, text, fill, style="square,pad=0.02")
        else:
            _box(ax, cx, i, _BOX_W, text, fill)
        if i + 1 < n:
            _arrow(ax, cx, i + (0.3 if kind == "merge" and block["merge"] == "add" else 0.34),
                   cx, i + 1 - (0.3 if rows[i + 1][0] == "merge" and block["merge"] == "add" else 0.34))
    # The second input of the merge: the shortcut (add) or the block's input itself (concat).
    top, bottom = 0.0, float(merge_row)
    right = cx + _BOX_W / 2
    ax.plot([right, _SIDE_X, _SIDE_X], [top, top, bottom], color="#555555", linewidth=0.8)
    edge = cx + (0.3 if block["merge"] == "add" else _BOX_W / 2)
    _arrow(ax, _SIDE_X, bottom, edge, bottom)
    middle = (top + bottom) / 2
    if block["merge"] == "add" and block["shortcut"]:
        # The projection's layers as boxes on the shortcut line, centred between input and merge.
        steps = block["shortcut"]
        first = middle - (len(steps) - 1) / 2
        for j, step in enumerate(steps):
            _box(ax, _SIDE_X, first + j, _SIDE_W, _step_label(step, t), _OP_FILL[step["op"]], fontsize=7)
        ax.text(_SIDE_X, first - 0.62, t("chart.block.projection"), ha="center", va="bottom", fontsize=7,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "#ffffff", "edgecolor": "none"})
    else:
        label = t("chart.block.identity") if block["merge"] == "add" else t("chart.block.concat_input")
        ax.text(_SIDE_X, middle, label, ha="center", va="center", fontsize=7, rotation=90,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "#ffffff", "edgecolor": "none"})
    if block["kind"] == "basic":
        title = t("chart.block.title_basic")
    elif block["kind"] == "bottleneck":
        title = t("chart.block.title_bottleneck")
    elif block["kind"] == "dense_layer":
        title = _fill(t("chart.block.title_dense"), k=block["growth_rate"] if block["growth_rate"] is not None else "–")
    else:
        title = t("chart.block.title_other")
    where = _fill(t("chart.block.where"), module=_lit(block["module"]), n=block["count"])
    ax.set_title(f"{title}\n{where}", fontsize=8.5)


@_styled
def block_diagram(blocks: Sequence[models.BlockStructure], *, t: Translate) -> Figure:
    """The building block(s) the model actually uses (``models.architecture_summary``'s
    ``blocks``: basic, bottleneck, dense layer), each drawn layer by layer with the kernel
    sizes and channel counts of its first instance in the model, side by side."""
    if not blocks:
        raise ReportError("block diagram: the model has no block to draw")
    rows = max(len(_path_rows(b["steps"], t)) + len(_path_rows(b["after_merge"], t)) + 3 for b in blocks)
    # Within the printed box (no shrinking below MIN_PRINT_PT for 7 pt text).
    width, height = print_box()
    fig = _new_figure((min(width, _PANEL_W * len(blocks)), min(height, rows * _ROW + 0.6)))
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    for ax, block in zip(axes, blocks):
        ax.grid(False)
        _draw_block(ax, block, t=t)
    return fig
