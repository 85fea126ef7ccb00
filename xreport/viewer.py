"""The interactive attention viewer's data: which images, their thumbnails, a map for every class.

``evaluate`` writes ``viewer.json`` beside metrics.json (``artifacts.save_viewer``); ``report.html`` embeds it once (not
once per language) and ``templates/js/viewer.js`` draws it in the browser. The maps are the
target layer's own small uint8 grids (``explain.viewer_maps``), upsampled and coloured in
the browser, and the images are small WebP thumbnails, so a few hundred images cost tens of
kilobytes rather than megabytes of PNG overlays. The PDF never shows the viewer.
"""
from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
import torch

from . import artifacts
from .errors import ReportError
from .explain import content_mask

N_EXTREME = 100          # the 100 most and the 100 least confident images, beside the gallery
THUMB_MAX = 160          # thumbnails wider than this are scaled down (the panel shows 224 px)
THUMB_QUALITY = 85       # WebP: about 250 bytes for a 28 px grey image, ~6 kB for 160 px colour
SETS = ("gallery", "confident", "uncertain")


def select_rows(probs: np.ndarray, gallery_rows: Sequence[int], *,
                n_extreme: int = N_EXTREME) -> dict[int, list[str]]:
    """Row -> the sets it belongs to: the gallery's rows, and the ``n_extreme`` rows with the
    highest ("confident") and the lowest ("uncertain") top-class probability."""
    p = np.asarray(probs, dtype=np.float64)
    top = p.max(axis=1) if p.size else np.zeros(0)
    order = np.argsort(-top, kind="stable")      # ties keep row order: the same data, the same rows
    sets: dict[int, list[str]] = {}
    for row in gallery_rows:
        sets.setdefault(int(row), []).append("gallery")
    for row in order[:n_extreme].tolist():
        sets.setdefault(int(row), []).append("confident")
    for row in order[::-1][:n_extreme].tolist():
        if "uncertain" not in sets.setdefault(int(row), []):
            sets[int(row)].append("uncertain")
    return sets


def thumbnail(image: np.ndarray | torch.Tensor) -> str:
    """A (C, H, W) uint8 image as a WebP data URI, at most THUMB_MAX pixels a side."""
    from PIL import Image

    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.ascontiguousarray(arr.transpose(1, 2, 0)).astype(np.uint8)
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    if max(pil.size) > THUMB_MAX:
        pil.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pil.save(buffer, "WEBP", quality=THUMB_QUALITY, method=6)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def content_box(image: np.ndarray | torch.Tensor) -> list[int] | None:
    """[top, left, bottom, right) of a (C, H, W) image's content, or None when it has no
    keep-aspect padding: the browser leaves the padding uncoloured, as the gallery does."""
    keep = content_mask(image)
    if keep.all() or not keep.any():
        return None
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    return [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1]


def build_viewer(images: torch.Tensor, ids: Sequence[str], y_true: np.ndarray, probs: np.ndarray,
                 maps: torch.Tensor, rows: Sequence[int], sets: dict[int, list[str]], *,
                 class_names: Sequence[str], task: artifacts.Task, split: str, method: str,
                 layer: str) -> artifacts.ViewerData:
    """viewer.json's content: one item per row of ``rows`` (maps[i] belongs to rows[i])."""
    if maps.dim() != 4 or maps.shape[0] != len(rows) or maps.shape[1] != len(class_names):
        raise ReportError(f"viewer: {tuple(maps.shape)} maps for {len(rows)} images and "
                          f"{len(class_names)} classes")
    pred = probs.argmax(axis=1)
    items: list[artifacts.ViewerItem] = []
    for i, row in enumerate(rows):
        items.append({
            "id": str(ids[row]), "row": int(row), "y": int(y_true[row]), "pred": int(pred[row]),
            "p": [round(float(v), 4) for v in probs[row]],
            "sets": sets.get(int(row), []),
            "img": thumbnail(images[row]),
            "maps": base64.b64encode(maps[i].contiguous().numpy().tobytes()).decode("ascii"),
            "content": content_box(images[row]),
        })
    # Most confident first: the list reads from clear calls down to the coin flips.
    items.sort(key=lambda it: (-max(it["p"]), it["row"]))
    return {"schema": artifacts.VIEWER_SCHEMA, "split": split, "method": method, "layer": layer, "task": task,
            "class_names": list(class_names), "grid": [int(maps.shape[2]), int(maps.shape[3])],
            "image_size": int(images.shape[-1]), "channels": int(images.shape[1]), "items": items}
