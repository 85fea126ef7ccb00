"""The one data set every source adapter returns (the adapters: data/sources.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Mapping, Sequence

import torch

from ..artifacts import ClassMatch
from ..errors import DataError

SPLITS = ("train", "val", "test")
# The splits a report can be about (a train split is never reported on).
REPORT_SPLITS = ("test", "val")
Task = Literal["binary", "multiclass", "ordinal"]


def real_path(path: Path) -> Path:
    """``path`` with every symlink followed; a symlink loop (or a link that cannot be followed)
    is a ``DataError`` naming the path, not the RuntimeError/OSError ``Path.resolve`` raises."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:
        raise DataError(f"{path}: a symlink loop or a link that cannot be followed "
                        f"({exc.strerror if isinstance(exc, OSError) and exc.strerror else 'loop'}); "
                        "remove or fix the link") from None


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
    kind: str                      # the DataSource.kind that read it (medmnist, folder, csv, phantom)
    class_names: list[str]
    task: Task
    splits: dict[str, Split]
    fingerprint: str               # sha256 over the split files (or the generator's parameters)
    original_size: tuple[int, int] | None = None     # (H, W) before preprocessing, when uniform
    original_sizes: int | None = None                 # how many distinct (H, W) the files have
    original_channels: int | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    # Translations of class_names known from the source (MedMNIST's tables), by language.
    class_names_i18n: dict[str, list[str]] = field(default_factory=dict)
    # The share of each train class held out as val when the source has no val split; None
    # when val came from the source (data.hold_out_val).
    val_held_out: float | None = None
    # Class folders taken for a class of another name (match_classes), for the log and report.
    class_matches: list[ClassMatch] = field(default_factory=list)

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


# ---------------------------------------------------------------- classes matched by name

def placeholder_names(k: int) -> list[str]:
    """The names a source without class names gets (integer labels 0..k-1)."""
    return [f"class_{i}" for i in range(k)]


def match_classes(found: Sequence[str], reference: Sequence[str], *, where: str,
                  class_map: Mapping[str, str] | None = None, strict_map: bool = True,
                  found_what: str = "the data", reference_what: str = "the checkpoint",
                  matches: list[ClassMatch] | None = None) -> list[int]:
    """For each class of ``found`` (in its order) its index in ``reference``, matched by name.

    ``class_map`` (``data.class_map``, old name -> new name) renames ``found``'s classes first;
    with ``strict_map`` a key that names no class of ``found`` is an error. The same names in
    another order are re-ordered (never read by position). A name still not in ``reference``
    matches one that differs only in case, else one of which it is (or which is) a prefix,
    case-insensitively, when exactly one does (``glioma`` / ``glioma_tumor``); two candidates
    are an error. Anything else is refused in one line naming both sets. Every match that is
    not by the same name is appended to ``matches`` (for the log and the report). A source
    that names no classes (integer labels 0..K-1, see ``placeholder_names``) is read in
    ``reference``'s order: an index is all it says. The one owner of this rule: evaluation,
    build, compare and the image-folder loader (one split's folders onto another's) call it.
    """
    found, reference = list(found), list(reference)
    class_map = dict(class_map or {})
    unknown = [k for k in class_map if k not in found]
    if unknown and strict_map:
        raise DataError(f"{where}: data.class_map renames {', '.join(map(repr, unknown))}, which "
                        f"{found_what} does not have (its classes: {', '.join(found)})")
    renamed = [class_map.get(name, name) for name in found]
    clash = sorted({n for n in renamed if renamed.count(n) > 1})
    if clash:
        raise DataError(f"{where}: data.class_map maps two classes onto {clash[0]!r}; "
                        "each class needs its own name")
    if not class_map and found == placeholder_names(len(found)) and len(found) == len(reference):
        return list(range(len(found)))
    position = {name: i for i, name in enumerate(reference)}
    notes = matches if matches is not None else []
    for i, (old, name) in enumerate(zip(found, renamed)):
        if old in class_map and class_map[old] != old:
            notes.append({"folder": old, "class": name, "rule": "class_map"})
        if name in position:
            continue
        same = [r for r in reference if r.lower() == name.lower()]
        near = same or [r for r in reference
                        if r.lower().startswith(name.lower()) or name.lower().startswith(r.lower())]
        if len(near) > 1:
            raise DataError(f"{where}: class {name!r} of {found_what} could be any of "
                            f"{', '.join(map(repr, near))} of {reference_what}; set data.class_map "
                            f"({found_what} has {', '.join(found)}; {reference_what} has {', '.join(reference)})")
        if near:
            renamed[i] = near[0]
            notes.append({"folder": old, "class": near[0], "rule": "case" if same else "prefix"})
    clash = sorted({n for n in renamed if renamed.count(n) > 1})
    if clash:
        raise DataError(f"{where}: classes {', '.join(repr(o) for o, n in zip(found, renamed) if n == clash[0])} "
                        f"of {found_what} all match {clash[0]!r}; set data.class_map")
    missing = [n for n in renamed if n not in position]
    if missing:
        raise DataError(f"{where}: class(es) {', '.join(map(repr, missing[:5]))} of {found_what} are "
                        f"not classes of {reference_what}: {found_what} has {', '.join(renamed)}; "
                        f"{reference_what} has {', '.join(reference)}; map the names with "
                        "data.class_map (--class-map OLD=NEW,...)")
    return [position[n] for n in renamed]


def remap_labels(split: Split, order: Sequence[int]) -> Split:
    """The split with label i replaced by ``order[i]`` (see ``match_classes``)."""
    if split.labels is None or list(order) == list(range(len(order))):
        return split
    return replace(split, labels=torch.tensor(list(order), dtype=torch.int64)[split.labels])
