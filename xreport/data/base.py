"""The one data set interface every adapter returns."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

SPLITS = ("train", "val", "test")
Task = Literal["binary", "multiclass", "ordinal"]


@dataclass
class Split:
    """One split, held in memory as uint8 so batches are augmented as tensors.

    images: uint8 (N, C, H, W), C in {1, 3}, already preprocessed to the run's input size.
    labels: int64 (N,), or None for an unlabelled split (predictions only).
    ids:    one id per image: the file path (relative to the data root) or the index.
    masks:  bool (N, H, W) lesion masks where known (phantom data), else None.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self, num_classes: int) -> list[int]:
        if self.labels is None:
            return [0] * num_classes
        return torch.bincount(self.labels, minlength=num_classes)[:num_classes].tolist()


@dataclass
class Dataset:
    """What every adapter returns."""

    name: str                      # "pneumoniamnist", "phantom", a folder name
    source: str                    # resolved path, or "phantom(seed=...)"
    kind: str                      # medmnist | folder | csv | phantom
    class_names: list[str]
    task: Task
    splits: dict[str, Split]
    fingerprint: str               # sha256 over the split files (or the generator's parameters)
    original_size: tuple[int, int] | None = None     # (H, W) before preprocessing, when uniform
    original_channels: int | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    # Translations of class_names known from the source (MedMNIST's tables); [] otherwise.
    class_names_zh_tw: list[str] = field(default_factory=list)
    class_names_zh_cn: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        first = next(iter(self.splits.values()))
        return int(first.images.shape[1])


def grey_to_rgb(split: Split) -> Split:
    """The split with its one grey channel repeated to three (a new Split; the input is
    left as it is). A colour split is returned unchanged."""
    if split.images.shape[1] != 1:
        return split
    return replace(split, images=split.images.expand(-1, 3, -1, -1).contiguous())
