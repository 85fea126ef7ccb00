"""Matplotlib figures for the lab report.

Every function returns a :class:`matplotlib.figure.Figure` built with ``Figure(...)``: no
pyplot state, no global rcParams (settings are applied with ``matplotlib.rc_context`` while a
figure is built and saved), no ``matplotlib.use``. Every visible word comes from the keyword
``t`` (a message lookup, keys ``chart.*`` in ``templates/i18n/<lang>/charts.json``); class and
run names are drawn literally (a ``$`` in them never starts mathtext). One file per concern:

- ``style.py``: palette, print sizes, fonts per language, the rc settings, literal text, the
  shared axes and image helpers, ``save_figure``
- ``dataset.py``: class distribution, example images, preprocessing before/after
- ``training.py``: the training curves (one run, several runs)
- ``curves.py``: ROC and PR curves (one run, several runs) and the operating points
- ``confusion.py``: the confusion matrix
- ``calibration.py``: the reliability diagram
- ``cams.py``: CAM overlays and panels, the colour scale, the study's CAM grid
- ``cam_checks.py``: the faithfulness curves and the sanity cascade's similarities
- ``architecture.py``: the model's block diagram

The names other modules use are imported here, so ``from xreport import charts;
charts.roc_curves(...)`` reads the same as before the split. A helper is changed (or
monkeypatched) where it is read: ``charts.style._installed_cjk``, not ``charts._installed_cjk``.
"""
from __future__ import annotations

from .style import (CAM_CMAP, CJK_FAMILIES, GRID_COLOR, HistoryTable, Image, LATIN_FAMILY, MIN_PRINT_PT,
                    NAME_LIMIT, PAIRED_HEIGHT, PAIRED_MAX_CLASSES, PAIRED_WIDTH, PALETTE, PRINT_HEIGHT,
                    PRINT_WIDTH, SeriesStyle, Translate, WIDE, _fmt, _lit, chart_language, chart_style,
                    font_families, has_cjk_font, print_box, save_figure)
from .dataset import MIN_THUMB, class_distribution, example_grid, preprocessing_before_after
from .training import SELECTION_PANELS, compare_training_curves, training_curves
from .curves import (Curve, LEGEND_BESIDE_MAX, PrLine, RocLine, compare_pr, compare_roc, marker_sizes,
                     operating_point_chart, pr_curves, roc_curves)
from .confusion import confusion_matrix
from .calibration import SMALL_BIN, reliability_diagram
from .cams import LESION_COLOR, cam_overlay, cam_panel, cam_scale_colors, colormap_lut, study_cams
from .cam_checks import faithfulness_curves, sanity_similarity
from .architecture import block_diagram

__all__ = [
    "CAM_CMAP", "CJK_FAMILIES", "GRID_COLOR", "LATIN_FAMILY", "LEGEND_BESIDE_MAX", "LESION_COLOR",
    "MIN_PRINT_PT", "MIN_THUMB", "NAME_LIMIT", "PAIRED_HEIGHT", "PAIRED_MAX_CLASSES", "PAIRED_WIDTH",
    "PALETTE", "PRINT_HEIGHT", "PRINT_WIDTH", "SELECTION_PANELS", "SMALL_BIN", "WIDE", "Curve",
    "HistoryTable", "Image", "PrLine", "RocLine", "SeriesStyle", "Translate", "block_diagram",
    "cam_overlay", "cam_panel", "cam_scale_colors", "chart_language", "chart_style",
    "class_distribution", "colormap_lut", "compare_pr", "compare_roc", "compare_training_curves",
    "confusion_matrix", "example_grid", "faithfulness_curves", "font_families", "has_cjk_font",
    "marker_sizes", "operating_point_chart", "pr_curves", "preprocessing_before_after", "print_box",
    "reliability_diagram", "roc_curves", "sanity_similarity", "save_figure", "study_cams",
    "training_curves",
]
