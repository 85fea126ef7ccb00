"""Class-imbalance helpers: loss weights and per-sample sampler weights."""
from __future__ import annotations

import logging

import torch

from ..errors import DataError

logger = logging.getLogger(__name__)


def _counts(labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    if labels is None:
        raise DataError("class weights need labels, but this split has none")
    labels = torch.as_tensor(labels).long().reshape(-1)
    if labels.numel() == 0:
        raise DataError("class weights need at least one labelled image")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(f"labels span {int(labels.min())}..{int(labels.max())}, "
                        f"outside 0..{num_classes - 1}")
    return torch.bincount(labels, minlength=num_classes).double()


def class_weights(labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 (float32, one per class).

    A class absent from ``labels`` is counted once, so its weight is large but finite.
    """
    counts = _counts(labels, num_classes)
    if (counts == 0).any():
        missing = [i for i in range(num_classes) if counts[i] == 0]
        logger.warning("classes %s have no training images; their weight is capped", missing)
    inverse = 1.0 / counts.clamp_min(1.0)
    return (inverse / inverse.mean()).float()


def sampler_weights(labels: torch.Tensor | None, num_classes: int, *,
                    power: float = 1.0) -> torch.Tensor:
    """Per-sample weights (float64) for drawing with replacement.

    ``power`` 1: each class equally likely per draw; 0.5: classes drawn in proportion to the
    square root of their size (a softer balance that repeats rare images less).
    """
    counts = _counts(labels, num_classes)
    labels = torch.as_tensor(labels).long().reshape(-1)
    # A class of n images gets n * n**-power of the draws: n**(1 - power).
    return (counts.clamp_min(1.0) ** -power)[labels]
