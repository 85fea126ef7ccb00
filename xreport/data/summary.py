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
# Near duplicates: a 256-bit difference hash (dHash) of the grey 17x16 thumbnail of each
# preprocessed image; two images whose hashes differ in at most NEAR_HAMMING bits are the
# same picture re-encoded, resized or slightly shifted in brightness (unrelated images
# differ in about 128 bits). The common 64-bit dHash (9x8) is too coarse for scans of one
# anatomy: on the shared brain MRI set it matched 900 of 1,311 test images to some train
# image, while the thumbnails' mean absolute difference put the knee at about 450 (BENCHMARKS.md).
HASH_SIDE = 16
NEAR_HAMMING = 8
OVERLAP_METHOD = f"exact pixels or a {HASH_SIDE * HASH_SIDE}-bit dHash within {NEAR_HAMMING} bits"
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


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


def dhash(images: torch.Tensor) -> np.ndarray:
    """Difference hashes of uint8 images (N, C, H, W): (N, HASH_SIDE**2 / 8) packed bits."""
    grey = images.float().mean(dim=1, keepdim=True)
    small = F.interpolate(grey, size=(HASH_SIDE, HASH_SIDE + 1), mode="area")[:, 0]
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(images), -1).numpy()
    return np.packbits(bits, axis=1)


def near_matches(query: np.ndarray, pool: np.ndarray, *, max_bits: int = NEAR_HAMMING) -> np.ndarray:
    """For each hash (row) of ``query``, the index of the nearest hash of ``pool`` when it is
    within ``max_bits`` bits, else -1 (blocks of the query keep memory bounded)."""
    out = np.full(len(query), -1, dtype=np.int64)
    if len(query) == 0 or len(pool) == 0:
        return out
    for start in range(0, len(query), 64):
        q = query[start:start + 64][:, None, :]
        dist = _POPCOUNT[np.bitwise_xor(q, pool[None])].sum(axis=2, dtype=np.int32)
        best = dist.argmin(axis=1)
        hit = dist[np.arange(len(best)), best] <= max_bits
        out[start:start + len(best)] = np.where(hit, best, -1)
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
    near = near_matches(dhash(test.images), np.concatenate([dhash(s.images) for s in others])) >= 0
    ids = [i for i, e, n in zip(test.ids, exact, near) if e or n]
    return ids, sum(exact), int(sum(n and not e for e, n in zip(exact, near)))


def leakage_check(ds: Dataset) -> Leakage:
    """Exact duplicates (identical preprocessed pixels) across and within splits, and the
    test images that are exact or near duplicates (``dhash``) of a train or val image.

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
