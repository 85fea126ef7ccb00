"""Where the model looked, and whether to believe it.

Batched class-activation maps (CAMs), the gallery of the most confident TP/TN/FP/FN per
class, deletion/insertion/ROAD faithfulness against random maps, a cascading
model-randomisation sanity check (Adebayo et al., 2018) and, on phantom data with known
lesion masks, localisation scores. One file per concern:

- ``methods.py``: the CAM methods, one class each, and their registry (``register_cam_method``)
- ``cams.py``: the batched CAMs (``compute_cams``) and every class's maps for the viewer (``viewer_maps``)
- ``hooks.py``: the model prepared and hooked at the target layer; input checks
- ``reference_maps.py``: the seeded random maps every score is compared against
- ``gallery.py``: which images and classes the gallery shows; maps on padded images
- ``removal.py``: faithfulness by pixel removal (deletion, insertion, ROAD)
- ``imputation.py``: ROAD's noisy linear imputation (multigrid-preconditioned CG)
- ``sanity.py``: the cascading randomisation check
- ``lesions.py``: localisation against lesion masks (pointing game, energy inside)
- ``split.py``: ``explain_split``, one split's whole explanation

The names other modules use are imported here, so ``from xreport import explain;
explain.compute_cams(...)`` reads the same as before the split.
"""
from __future__ import annotations

from .cams import VIEWER_MAX_GRID, CamOptions, compute_cams, viewer_maps
from .gallery import (KINDS, GalleryPick, MapPick, content_mask, gallery_classes, gallery_per_kind,
                      gallery_targets, select_gallery, without_padding)
from .hooks import RowIndexed, TargetLayerFn
from .imputation import IMPUTE_MAX_ITER, IMPUTE_TOL, ROAD_NOISE, noisy_linear_impute
from .lesions import localisation
from .methods import (DEFAULT_CAM_METHOD, CamBatch, CamMethod, cam_method, cam_methods, gradient_methods,
                      register_cam_method, weighted_sum)
from .reference_maps import RANDOM_PER_IMAGE, random_maps
from .removal import BASELINES, CURVES, FAITH_SCORES, faithfulness, gaussian_blur
from .sanity import SANITY_SEEDS, cascade_stages, sanity_check, spearman, ssim
from .split import ExplainSummary, explain_split

__all__ = [
    "BASELINES", "CURVES", "DEFAULT_CAM_METHOD", "FAITH_SCORES", "IMPUTE_MAX_ITER", "IMPUTE_TOL", "KINDS", "RANDOM_PER_IMAGE",
    "ROAD_NOISE", "SANITY_SEEDS", "VIEWER_MAX_GRID", "CamBatch", "CamMethod", "CamOptions",
    "ExplainSummary", "GalleryPick", "MapPick", "RowIndexed", "TargetLayerFn", "cam_method",
    "cam_methods", "cascade_stages", "compute_cams", "content_mask", "explain_split", "faithfulness",
    "gallery_classes", "gallery_per_kind", "gallery_targets", "gaussian_blur", "gradient_methods",
    "localisation", "noisy_linear_impute", "random_maps", "register_cam_method", "sanity_check",
    "select_gallery", "spearman", "ssim", "viewer_maps", "weighted_sum", "without_padding",
]
