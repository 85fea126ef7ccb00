"""The one data set interface every adapter returns."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from ..errors import DataError

SPLITS = ("train", "val", "test")
# The splits a report can be about (a train split is never reported on).
REPORT_SPLITS = ("test", "val")
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

    def known_labels(self) -> torch.Tensor:
        """The labels of a split that must have them (train, val; a labelled test split)."""
        if self.labels is None:
            raise DataError(f"the {self.name} split has no labels")
        return self.labels

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
    # Translations of class_names known from the source (MedMNIST's tables), by language.
    class_names_i18n: dict[str, list[str]] = field(default_factory=dict)
    # The share of each train class held out as val when the source has no val split; None
    # when val came from the source (data.hold_out_val).
    val_held_out: float | None = None

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


# The held-out val split depends on the data alone, never on train.seed: runs that differ in
# seed are compared on the same val images.
VAL_HOLDOUT_SEED = 20261130


def hold_out_val(train: Split, fraction: float, num_classes: int) -> tuple[Split, Split]:
    """(train, val): ``fraction`` of each class of the labelled ``train`` split, at random.

    A class of n >= 2 images gives max(1, round(fraction * n)) of them, and always keeps one
    for training; a class with one image stays in train. Images keep their order and ids.
    """
    labels = train.labels
    assert labels is not None
    generator = torch.Generator().manual_seed(VAL_HOLDOUT_SEED)
    held = torch.zeros(len(train), dtype=torch.bool)
    for k in range(num_classes):
        members = (labels == k).nonzero().flatten()
        n = len(members)
        if n < 2:
            continue
        take = min(n - 1, max(1, round(fraction * n)))
        held[members[torch.randperm(n, generator=generator)[:take]]] = True

    def part(name: str, keep: torch.Tensor) -> Split:
        index = keep.nonzero().flatten()
        return Split(name, train.images[index], labels[index], [train.ids[i] for i in index.tolist()],
                     None if train.masks is None else train.masks[index])

    return part("train", ~held), part("val", held)
