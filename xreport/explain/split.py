"""One split's whole explanation (``explain_split``): the gallery's CAMs, faithfulness,
the sanity check and, with lesion masks, localisation, with the seconds each took."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NotRequired, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

from .. import artifacts
from ..errors import ReportError
from .cams import CamOptions, compute_cams
from .gallery import GalleryPick, _as_prob_matrix, select_gallery
from .hooks import RowIndexed, _module_path
from .lesions import _localise
from .methods import DEFAULT_CAM_METHOD, cam_method
from .reference_maps import RANDOM_PER_IMAGE
from .removal import faithfulness
from .sanity import SANITY_SEEDS, sanity_check

logger = logging.getLogger(__name__)


class ExplainSummary(TypedDict):
    """What explain_split returns: metrics.json's "explain" as written (evaluate adds
    ``viewer``; artifacts.Explanation is the loaded form). The statistics are written as
    the schema's types (artifacts.Faithfulness, Sanity, Localisation)."""

    method: str
    target_layer: str
    gallery: list[GalleryPick]
    faithfulness: artifacts.Faithfulness
    sanity: artifacts.Sanity
    localisation: artifacts.Localisation | None
    timings: dict[str, float]
    viewer: NotRequired[artifacts.ViewerRef | None]   # None: left out (too many classes)
    protocol: NotRequired[str]


def explain_split(model: nn.Module, images_float: Tensor | RowIndexed, *, y_true: np.ndarray | Tensor | None,
                  probs: np.ndarray | Tensor, class_names: Sequence[str], target_layer: nn.Module,
                  layer_name: str, method: str = DEFAULT_CAM_METHOD, masks: Tensor | None = None,
                  gallery_per_kind: int | None = None, faithfulness_n: int = 64, sanity_n: int = 16,
                  faithfulness_steps: int = 10, faithfulness_baseline: str = "blur",
                  random_per_image: int = RANDOM_PER_IMAGE, sanity_seeds: int = SANITY_SEEDS,
                  seed: int = 0, batch_size: int = 64,
                  device: str | torch.device | None = None,
                  precision: str = "fp32") -> tuple[ExplainSummary, Tensor]:
    """Gallery CAMs, faithfulness, sanity check and (with masks) localisation for one split.

    Returns the "explain" summary of metrics.json (gallery entries without "file"/"id",
    which the caller adds when it writes the overlays) and the gallery CAMs (M, H, W): one
    per entry and target class, in the order of the entries' ``maps``. Faithfulness and the
    sanity check target the predicted class, localisation the true class.
    Faithfulness dominates the cost: 4 * (steps - 1) * (1 + random_per_image) + 2 forward
    passes per sampled image; the sanity check costs one CAM batch per stage and seed.
    """
    cam_method(method)  # an unknown method fails before any work
    n = int(images_float.shape[0])
    p = _as_prob_matrix(probs)
    if p.shape[0] != n:
        raise ReportError(f"explain: {n} images but {p.shape[0]} probability rows")
    pred = torch.from_numpy(p.argmax(axis=1)).long()
    layer_path = _module_path(model, target_layer)
    options: CamOptions = {"method": method, "batch_size": batch_size, "device": device}
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    gallery = [] if y_true is None else select_gallery(y_true, p, class_names=class_names,
                                                       per_kind=gallery_per_kind, seed=seed)
    # One map per (entry, target class), flattened in entry order, then target order.
    rows = torch.tensor([g["index"] for g in gallery for _ in g["targets"]], dtype=torch.long)
    map_targets = torch.tensor([c for g in gallery for c in g["targets"]], dtype=torch.long)
    for entry in gallery:
        entry["target"] = entry["class_index"]  # the class the panel explains (its heading)
        entry["maps"] = [{"target": c, "class": str(class_names[c]), "prob": float(p[entry["index"], c])}
                         for c in entry.pop("targets")]
    gallery_cams = compute_cams(model, images_float[rows], target_layer=target_layer,
                                targets=map_targets, **options)
    timings["gallery_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:faithfulness_n]
    x_f = images_float[sample]
    cams_f = compute_cams(model, x_f, target_layer=target_layer, targets=pred[sample], **options)
    faith = faithfulness(model, x_f, cams_f, targets=pred[sample], steps=faithfulness_steps,
                         baseline=faithfulness_baseline, random_per_image=random_per_image,
                         seed=seed, batch_size=batch_size, device=device, precision=precision)
    timings["faithfulness_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    s_rows = sample[:sanity_n]
    # The sanity images are the first of the faithfulness sample: their trained maps exist.
    sanity = sanity_check(model, images_float[s_rows], targets=pred[s_rows], method=method,
                          target_layer_fn=lambda m: m.get_submodule(layer_path), seed=seed,
                          seeds=sanity_seeds, original=cams_f[:sanity_n], batch_size=batch_size,
                          device=device)
    timings["sanity_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    located = None
    if masks is not None:
        located = _localise(model, images_float, masks, y_true, pred, target_layer,
                                            limit=faithfulness_n, seed=seed, options=options,
                                            random_per_image=random_per_image)
    timings["localisation_s"] = time.perf_counter() - clock
    rounded = {k: round(v, 3) for k, v in timings.items()}
    logger.info("explain (%s at %s): %s", method, layer_name, rounded)
    return ({"method": method, "target_layer": layer_name, "gallery": gallery, "faithfulness": faith,
             "sanity": sanity, "localisation": located, "timings": rounded}, gallery_cams)
