"""Summaries of a loaded data set for the report: class distribution and leakage."""
from __future__ import annotations

import hashlib
import itertools
import logging

from ..artifacts import ClassDistribution, Leakage, LeakageExample
from .base import SPLITS, Dataset

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5


def class_distribution(ds: Dataset) -> ClassDistribution:
    """{"class_names": [...], "splits": {split: [count per class] or None}, "sizes": {split: n}}."""
    return {
        "class_names": list(ds.class_names),
        "splits": {name: (None if s.labels is None else s.class_counts(ds.num_classes))
                   for name, s in ds.splits.items()},
        "sizes": {name: len(s) for name, s in ds.splits.items()},
        "val_held_out": ds.val_held_out,
        "constant_images": constant_images(ds),
    }


def constant_images(ds: Dataset) -> dict[str, int]:
    """Images of one value (every pixel alike) per split: no content a classifier can use
    (a blank export, a broken window, NaN tags decoded to one grey)."""
    out = {}
    for name, split in ds.splits.items():
        flat = split.images.reshape(len(split), -1)
        out[name] = int((flat.amax(dim=1) == flat.amin(dim=1)).sum()) if len(split) else 0
    return out


def _hashes(images) -> list[str]:  # noqa: ANN001 - uint8 tensor (N, C, H, W)
    arr = images.contiguous().numpy()
    return [hashlib.blake2b(arr[i].tobytes(), digest_size=16).hexdigest() for i in range(arr.shape[0])]


def leakage_check(ds: Dataset) -> Leakage:
    """Exact duplicates (identical preprocessed pixels) across and within splits.

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
    return {"method": "identical preprocessed pixels (blake2b of the image bytes)",
            "exact_duplicates": counts, "within_split": within, "examples": examples}
