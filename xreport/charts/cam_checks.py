"""Whether to believe the CAMs: the faithfulness curves (deletion, insertion, ROAD against
random maps) and the sanity cascade's similarity per randomised stage.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from matplotlib import transforms
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .. import artifacts
from ..metrics import curve_area, value_of
from ..errors import ReportError
from .style import PALETTE, Translate, WIDE, _fmt, _lit, _new_figure, _styled

if TYPE_CHECKING:
    from matplotlib.artist import Artist


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
