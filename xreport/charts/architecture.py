"""The model's block diagram: each stage's block drawn as a flow of operations with output sizes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import ReportError
from .style import Translate, _lit, _new_figure, _styled, print_box

if TYPE_CHECKING:
    from .. import models


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
