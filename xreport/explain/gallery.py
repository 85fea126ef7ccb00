"""The CAM gallery: which images and classes it shows (the most confident TP/TN/FP/FN per
class, each image once), and how a map is shown on an image with black padding."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

import numpy as np
from torch import Tensor

from ..errors import ReportError
from .cams import _EPS


KINDS = ("TP", "TN", "FP", "FN")  # the gallery's panels per class, in display order

# Kinds are filled in this order, so that an image goes to its most telling panel first:
# a true positive of its own class, then the errors; true negatives take what is left.
_SELECTION_ORDER = ("TP", "FN", "FP", "TN")


def gallery_per_kind(num_classes: int) -> int:
    """Images per class and kind: two for up to four classes, one beyond (the PDF stays short)."""
    return 2 if num_classes <= 4 else 1


def gallery_classes(y: np.ndarray, pred: np.ndarray, k: int) -> list[int]:
    """The classes with gallery panels: every class up to limits.REPORT_CLASSES, else the
    ones the report shows in full (most test errors, then most images): at 1000 classes
    the gallery would otherwise draw some 5,000 maps."""
    from ..limits import shown_classes

    support = np.bincount(y, minlength=k)
    hits = np.bincount(y[pred == y], minlength=k)
    return shown_classes(support.tolist(), (support - hits).tolist())


def gallery_targets(class_index: int, true: int, pred: int) -> list[int]:
    """The classes whose maps a gallery panel shows, in display order.

    Every panel shows the map of its own class (the class its heading names). An error shows
    the true and the predicted class's maps side by side, in that order (after the panel's
    class when it is neither); a true negative's own map comes first, then the map of the
    class the image was rightly given.
    """
    if true != pred:  # an error: the true class, then the predicted one
        return ([] if class_index in (true, pred) else [class_index]) + [true, pred]
    return list(dict.fromkeys([class_index, true]))


# One map of a panel as explain_split makes it; ``file`` is added when the overlay is drawn.
MapPick = TypedDict("MapPick", {"target": int, "class": str, "prob": float, "file": NotRequired[str]})

# A gallery panel as select_gallery picks it (``targets``: the classes whose maps it shows);
# explain_split turns ``targets`` into ``maps``, figures.draw_cam_gallery adds ``file``/``id``.
# metrics.json holds it as artifacts.GalleryEntry.
GalleryPick = TypedDict("GalleryPick", {
    "class": str, "class_index": int, "kind": str, "index": int, "prob": float,
    "true": str, "true_index": int, "prob_true": float, "pred": str, "pred_index": int,
    "prob_pred": float, "targets": NotRequired[list[int]], "repeated": bool,
    "target": NotRequired[int], "maps": NotRequired[list[MapPick]],
    "file": NotRequired[str], "id": NotRequired[str], "lesion_outline": NotRequired[bool]})


def select_gallery(y_true: np.ndarray | Tensor | Sequence[int], probs: np.ndarray | Tensor, *,
                   class_names: Sequence[str], per_kind: int | None = None,
                   seed: int = 0) -> list[GalleryPick]:
    """The most confident TP, TN, FP and FN per class (one-vs-rest), each image once.

    A binary task uses the positive class (index 1) only. Confidence is the class
    probability for TP/FP (highest first) and one minus it for TN/FN. Ties are broken by a
    seeded shuffle; a kind with no members is left out. An image already shown elsewhere
    in the gallery is passed over; when a kind has only such images, its most confident
    one is shown once, marked ``repeated``. Each entry names the true and predicted class,
    their probabilities, and ``targets``: the classes whose maps it shows
    (:func:`gallery_targets`). ``per_kind`` None: :func:`gallery_per_kind`.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = _as_prob_matrix(probs)
    if p.shape[0] != y.shape[0]:
        raise ReportError(f"gallery: {y.shape[0]} labels but {p.shape[0]} probability rows")
    if p.shape[1] != len(class_names):
        raise ReportError(f"gallery: probabilities have {p.shape[1]} columns but there are "
                          f"{len(class_names)} class names")
    k = gallery_per_kind(p.shape[1]) if per_kind is None else per_kind
    pred = p.argmax(axis=1)
    shuffled = np.random.default_rng(seed).permutation(y.shape[0])
    classes = [1] if p.shape[1] == 2 else gallery_classes(y, pred, p.shape[1])
    shown: set[int] = set()
    picked: dict[tuple[int, str], list[tuple[int, bool]]] = {}
    for kind in _SELECTION_ORDER:
        for c in classes:
            ranked = _most_confident(y, pred, p[:, c], c, kind, shuffled, y.shape[0])
            fresh = [row for row in ranked if row not in shown][:k]
            rows = [(row, False) for row in fresh] or [(row, True) for row in ranked[:1]]
            shown.update(row for row, _ in rows)
            picked[(c, kind)] = rows
    gallery: list[GalleryPick] = []
    for c in classes:
        for kind in KINDS:
            for row, repeated in picked.get((c, kind), []):
                t, q = int(y[row]), int(pred[row])
                gallery.append({"class": str(class_names[c]), "class_index": int(c), "kind": kind,
                                "index": int(row), "prob": float(p[row, c]),
                                "true": str(class_names[t]), "true_index": t, "prob_true": float(p[row, t]),
                                "pred": str(class_names[q]), "pred_index": q, "prob_pred": float(p[row, q]),
                                "targets": gallery_targets(c, t, q), "repeated": repeated})
    return gallery


def content_mask(image: np.ndarray | Tensor) -> np.ndarray:
    """True where a (C, H, W) uint8 image has content, False on the black padding that a
    keep-aspect resize adds as whole rows or columns at the borders."""
    a = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    lit = np.asarray((a.reshape(-1, *a.shape[-2:]) > 0).any(axis=0))
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    keep = np.zeros(lit.shape, dtype=bool)
    if rows.size and cols.size:
        keep[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    return keep


def without_padding(cam: np.ndarray | Tensor, content: np.ndarray) -> np.ndarray:
    """A map with the padding zeroed and the content rescaled to [0, 1], so that the
    colours compare regions of the image, not the image with its black border."""
    c = cam.detach().cpu().numpy() if isinstance(cam, Tensor) else np.asarray(cam, dtype=np.float32)
    if content.all() or not content.any():
        return c
    inside = c[content]
    lo, hi = float(inside.min()), float(inside.max())
    scaled = (c - lo) / (hi - lo) if hi - lo > _EPS else np.zeros_like(c)
    return np.where(content, np.clip(scaled, 0.0, 1.0), 0.0).astype(np.float32)


def _as_prob_matrix(probs: np.ndarray | Tensor) -> np.ndarray:
    p = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else np.asarray(probs)
    p = p.astype(np.float64)
    if p.ndim == 1:  # a single positive-class probability
        p = np.stack([1 - p, p], axis=1)
    return p


def _most_confident(y: np.ndarray, pred: np.ndarray, p_c: np.ndarray, c: int, kind: str,
                    shuffled: np.ndarray, k: int) -> list[int]:
    truth, said = y[shuffled] == c, pred[shuffled] == c
    member = {"TP": truth & said, "TN": ~truth & ~said, "FP": ~truth & said, "FN": truth & ~said}[kind]
    rows = shuffled[member]
    # The positive calls are most confident at a high p_c, the negative calls at a low one.
    key = -p_c[rows] if kind in ("TP", "FP") else p_c[rows]
    return rows[np.argsort(key, kind="stable")][:k].tolist()
