"""CAM pictures: an overlay of a map on its image (with the lesion outline where known), the
panel of a map alone, the shared colour scale, and the cross-run CAM grid of a study.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import matplotlib.patches
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ..errors import ReportError
from .style import CAM_CMAP, Image, Translate, _bare, _labels, _show, _styled, _to_display


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
