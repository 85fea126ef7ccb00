"""The confusion matrix (counts or row shares, short class labels beyond a few classes).
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import matplotlib.patches
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..errors import ReportError
from .style import (PAIRED_MAX_CLASSES, PAIRED_WIDTH, PRINT_HEIGHT, PRINT_WIDTH, Translate, _figure_and_axes,
                    _labels, _new_figure, _styled)


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
