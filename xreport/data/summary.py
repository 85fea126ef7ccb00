"""Summaries of a loaded data set for the report: class distribution and leakage."""
from __future__ import annotations

import hashlib
import itertools
import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..artifacts import ClassDistribution, Leakage, LeakageExample
from .base import SPLITS, Dataset

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5
# Near duplicates: each image's detail signature is its grey 32x32 thumbnail minus a 5x5 local
# mean (the high-pass keeps edges and texture, and drops the layout every image of a set
# shares: a fundus disc, a chest outline), standardised. A test image whose signature
# correlates at NEAR_CORRELATION or more with a train/val image's is the same picture
# re-encoded, resized or shifted in brightness or contrast. Calibrated on the shared sets
# (BENCHMARKS.md, "Near duplicates"): brain MRI's re-encoded copies sit at 0.995-1.000 with none
# in 0.990-0.993, at 64, 96 and 160 px alike, while the closest pair of distinct pictures
# reaches 0.990 (RetinaMNIST), 0.951 (wbc) and 0.859 (PneumoniaMNIST). The 256-bit difference
# hash used before matched two distinct RetinaMNIST fundus photos at 28 px and not at 56 px.
SIGNATURE_SIDE = 32
NEAR_CORRELATION = 0.995
OVERLAP_METHOD = (f"exact pixels, or a {SIGNATURE_SIDE}x{SIGNATURE_SIDE} high-pass thumbnail "
                  f"correlating at >= {NEAR_CORRELATION}")
_BLOCK = 256   # images a step: signatures drawn, and test images against the pool (a 256 x pool block)


def class_distribution(ds: Dataset) -> ClassDistribution:
    """{"class_names": [...], "splits": {split: [count per class] or None}, "sizes": {split: n}}."""
    out: ClassDistribution = {
        "class_names": list(ds.class_names),
        "splits": {name: (None if s.labels is None else s.class_counts(ds.num_classes))
                   for name, s in ds.splits.items()},
        "sizes": {name: len(s) for name, s in ds.splits.items()},
        "val_held_out": ds.val_held_out,
        "constant_images": constant_images(ds),
    }
    if ds.class_matches:
        out["class_matches"] = [dict(m) for m in ds.class_matches]  # type: ignore[misc]
    return out


def constant_images(ds: Dataset) -> dict[str, int]:
    """Images of one value (every pixel alike) per split: no content a classifier can use
    (a blank export, a broken window, NaN tags decoded to one grey)."""
    out = {}
    for name, split in ds.splits.items():
        if len(split) == 0:   # an empty split is refused by its own check, with its own words
            out[name] = 0
            continue
        flat = split.images.reshape(len(split), -1)
        out[name] = int((flat.amax(dim=1) == flat.amin(dim=1)).sum())
    return out


def _hashes(images) -> list[str]:  # noqa: ANN001 - uint8 tensor (N, C, H, W)
    arr = images.contiguous().numpy()
    return [hashlib.blake2b(arr[i].tobytes(), digest_size=16).hexdigest() for i in range(arr.shape[0])]


def detail_signatures(images: torch.Tensor) -> torch.Tensor:
    """Unit-norm detail signatures of uint8 images (N, C, H, W): (N, SIGNATURE_SIDE**2) float32,
    so the dot product of two is their correlation. A flat image's signature is zero."""
    # Blocks of images: a whole split in float would take four times its uint8 memory.
    side = (SIGNATURE_SIDE, SIGNATURE_SIDE)
    thumb = torch.cat([F.interpolate(images[i:i + _BLOCK].float().mean(dim=1, keepdim=True), size=side,
                                     mode="area") for i in range(0, len(images), _BLOCK)]
                      or [torch.zeros(0, 1, *side)])
    local_mean = F.avg_pool2d(F.pad(thumb, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    detail = (thumb - local_mean).flatten(1)
    detail = detail - detail.mean(dim=1, keepdim=True)
    return detail / detail.norm(dim=1, keepdim=True).clamp_min(1e-6)


def near_matches(query: torch.Tensor, pool: torch.Tensor, *,
                 min_correlation: float = NEAR_CORRELATION) -> np.ndarray:
    """For each signature (row) of ``query``, the index of the best-correlated signature of
    ``pool`` when the correlation reaches ``min_correlation``, else -1 (blocks of the query
    keep memory bounded)."""
    out = np.full(len(query), -1, dtype=np.int64)
    if len(query) == 0 or len(pool) == 0:
        return out
    for start in range(0, len(query), _BLOCK):
        best, index = (query[start:start + _BLOCK] @ pool.T).max(dim=1)
        out[start:start + len(best)] = np.where(best.numpy() >= min_correlation, index.numpy(), -1)
    return out


def overlap_with_test(ds: Dataset) -> tuple[list[str], int, int] | None:
    """(ids of test images that are exact or near duplicates of a train/val image, exact
    count, near-only count); None when the test split or both others are not loaded."""
    test = ds.splits.get("test")
    others = [ds.splits[s] for s in ("train", "val") if s in ds.splits]
    if test is None or not others:
        return None
    seen = {h for s in others for h in _hashes(s.images)}
    exact = [h in seen for h in _hashes(test.images)]
    pool = torch.cat([detail_signatures(s.images) for s in others])
    near = near_matches(detail_signatures(test.images), pool) >= 0
    ids = [i for i, e, n in zip(test.ids, exact, near) if e or n]
    return ids, sum(exact), int(sum(n and not e for e, n in zip(exact, near)))


def leakage_check(ds: Dataset) -> Leakage:
    """Exact duplicates (identical preprocessed pixels) across and within splits, and the
    test images that are exact or near duplicates (``detail_signatures``) of a train or val image.

    ``exact_duplicates[a-b]`` counts the images of split b whose pixels also occur in split a
    (None when either split is not loaded); ``examples`` lists up to 5 id pairs.
    """
    hashes = {name: _hashes(split.images) for name, split in ds.splits.items()}
    first_index: dict[str, dict[str, int]] = {name: {} for name in hashes}
    for name, hs in hashes.items():
        for i, h in enumerate(hs):
            first_index[name].setdefault(h, i)
    counts: dict[str, int | None] = {}
    examples: list[LeakageExample] = []
    for a, b in itertools.combinations(SPLITS, 2):
        key = f"{a}-{b}"
        if a not in hashes or b not in hashes:
            counts[key] = None
            continue
        hits = [(first_index[a][h], j) for j, h in enumerate(hashes[b]) if h in first_index[a]]
        counts[key] = len(hits)
        for i, j in hits[:max(0, MAX_EXAMPLES - len(examples))]:
            examples.append({"pair": key, "a": ds.splits[a].ids[i], "b": ds.splits[b].ids[j]})
    within = {name: len(hs) - len(set(hs)) for name, hs in hashes.items()}
    if any(counts.values()):
        logger.warning("exact duplicates across splits: %s", counts)
    out: Leakage = {"method": "identical preprocessed pixels (blake2b of the image bytes)",
                    "exact_duplicates": counts, "within_split": within, "examples": examples}
    overlap = overlap_with_test(ds)
    if overlap is not None:
        ids, n_exact, n_near = overlap
        out["test_overlap"] = {"method": OVERLAP_METHOD,
                               "exact": n_exact, "near": n_near, "ids": ids}
        if ids:
            logger.warning("%d of %d test images duplicate a train/val image (%d exact, %d near)",
                           len(ids), len(ds.splits["test"]), n_exact, n_near)
    return out
