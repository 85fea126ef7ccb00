"""The reliability diagram: confidence against accuracy per bin, over- and under-confidence
hatched, sparse bins pale.
"""
from __future__ import annotations

import matplotlib
import numpy as np
import matplotlib.patches
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import artifacts
from ..metrics import value_of
from ..errors import ReportError
from .style import PALETTE, PRINT_HEIGHT, PRINT_WIDTH, Translate, _ci, _fmt, _new_figure, _styled


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
