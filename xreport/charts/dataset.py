"""The data set's figures: the class distribution per split, example images per class and
the preprocessing before/after pairs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import artifacts
from ..errors import ReportError
from ..labels import size_text
from .style import (Image, PALETTE, PRINT_HEIGHT, PRINT_WIDTH, Translate, WIDE, _SPLIT_KEYS, _bare,
                    _figure_and_axes, _labels, _new_figure, _show, _split_label, _styled, _to_display)


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
