"""What every chart shares: the palette and print sizes, the fonts of each language
(``chart_language``, ``font_families``), the rc settings applied while a figure is built and
saved (``chart_style``, ``_styled``), literal text (``_lit``: a ``$`` never starts mathtext), the
shared axes helpers, image display and ``save_figure``.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, TypedDict, Union

import matplotlib
import numpy as np
from cycler import cycler
from matplotlib import font_manager
import matplotlib.patches
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType

from .. import artifacts, languages
from ..data.base import SPLITS
from ..metrics import value_of
from ..errors import ReportError
from ..labels import short_labels
from ..render.numbers import rounded
from ..runs import atomic_path

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from matplotlib.artist import Artist
    from matplotlib.container import Container


logger = logging.getLogger(__name__)

Translate = Callable[[str], str]

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


_SPLIT_KEYS = SPLITS   # the known splits first, in their order


def _split_label(name: str, t: Translate) -> str:
    labels = {"train": t("chart.split.train"), "val": t("chart.split.val"),
              "test": t("chart.split.test")}
    return labels.get(name, _lit(name))


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
