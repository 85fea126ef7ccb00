"""Training history: loss and the selection scores per epoch (``training_curves``) and the
same for several runs (``compare_training_curves``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..artifacts import HISTORY_COLUMNS
from ..metrics import value_of
from ..errors import ReportError
from .style import (HistoryTable, PRINT_HEIGHT, PRINT_WIDTH, TRAIN_COLOR, Translate, VAL_COLOR, WIDE,
                    _label_map, _new_figure, _series_style, _styled)

if TYPE_CHECKING:
    from matplotlib.artist import Artist


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
