"""The one interface every data source implements, and the registry of sources.

A data source (``DataSource``) says which ``data.dataset`` values are its own (``named``,
``claims``, ``lookup``), which splits it holds (``splits``), what the auto recipe needs to
know of it (``probe``), a few raw images for the preprocessing figure (``raw_examples``) and
reads it into a ``Dataset`` (``load``). ``register_source`` adds one; ``resolve_source``,
``load_dataset``, ``source_splits``, ``probe_source``, ``raw_examples`` (``data/__init__.py``)
and the check of ``data.kind`` (``config.validate``) read the registry and nothing else, so a
new source is its module plus one ``register_source(...)`` line. The helpers below are the
rules every source shares (class names and task, split checks), owned here once.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..config import DataConfig, PreprocessConfig
from ..errors import ConfigError, DataError
from .base import SPLITS, Dataset, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceProbe:
    """What the auto recipe needs to know of a data source, read without preprocessing it."""

    kind: str
    source: str
    native_size: int          # short side of the train images (median over a sample), px
    colour: bool              # the majority of sampled train images has distinct colour channels
    train_counts: list[int]   # images per class in the train split
    n_val: int
    task: Task
    class_names: tuple[str, ...] = ()   # as the loader will name them (for the grade rule)
    modality: str = ""        # how ``colour`` was decided (images.Modality.describe), "" for arrays


RawExample = tuple[np.ndarray, int | None]


class DataSource(ABC):
    """One kind of data source. ``source`` below is the string ``resolve_source`` returned
    for it (an absolute path, or what ``named`` / ``lookup`` gave)."""

    kind: ClassVar[str]                 # the data.kind value (and Dataset.kind)
    # How the "not a data source" errors name a file / a folder of this kind ("" = none).
    file_form: ClassVar[str] = ""
    folder_form: ClassVar[str] = ""
    # File suffixes that make a data.dataset that does not exist a missing path, not a name.
    suffixes: ClassVar[tuple[str, ...]] = ()
    # Sources are asked in descending priority (then in registration order): a path two
    # sources claim is the first one's, and a name every source may look up goes to the last.
    priority: ClassVar[int] = 0

    def named(self, dataset: str, *, chosen: bool) -> str | None:
        """Asked before data.dataset is taken for a path: the source when this source
        answers to the name (``chosen``: data.kind names this source). None: not by name."""
        return None

    def claims(self, path: Path) -> bool:
        """Whether the existing file or folder ``path`` is a source of this kind (a cheap look)."""
        return False

    def lookup(self, name: str, *, image_size: int | None) -> str | None:
        """Asked last, for a data.dataset that is no existing path: the source it names, None
        when this source does not know it (or a ``DataError`` saying why it cannot be had)."""
        return None

    def splits(self, source: str) -> set[str]:
        """The splits the source holds, as far as a cheap look tells; when unsure, all of them
        (``load`` then names what is missing or broken)."""
        return set(SPLITS)

    @abstractmethod
    def load(self, source: str, data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *,
             image_size: int, splits: tuple[str, ...]) -> Dataset:
        """The requested ``splits`` read and preprocessed to uint8 (N, C, image_size, image_size),
        with the class names (``names_and_task``) and a fingerprint over every split of the
        source. A missing split or a broken file: ``DataError`` naming the file."""

    @abstractmethod
    def probe(self, source: str, data_cfg: DataConfig, *, sample: int) -> SourceProbe:
        """Native size, colour, train class counts, val size and task, read without
        preprocessing (at most ``sample`` decoded images where decoding is the cost)."""

    @abstractmethod
    def raw_examples(self, source: str, data_cfg: DataConfig, n_per_class: int,
                     rng: np.random.Generator, *, split: str) -> list[RawExample]:
        """Up to ``n_per_class`` raw images per class (uint8 (H, W) or (H, W, 3), before any
        preprocessing) from ``split``, else the first split present."""


# ---------------------------------------------------------------- the registry
_REGISTRY: dict[str, DataSource] = {}


def register_source(source: DataSource) -> DataSource:
    """Add ``source`` to the registry (its ``kind`` becomes a valid data.kind)."""
    kind = getattr(source, "kind", "")
    if not kind or kind == "auto" or not isinstance(kind, str):
        raise ValueError(f"a data source needs a kind other than 'auto', got {kind!r}")
    if kind in _REGISTRY:
        raise ValueError(f"a data source of kind {kind!r} is already registered")
    _REGISTRY[kind] = source
    return source


def registered_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order (the order messages list them in)."""
    return tuple(_REGISTRY)


def check_kind(data_cfg: DataConfig, *, source: str = "config") -> None:
    """A config's data.kind names a registered data source (the registry, not a list, says
    which): a ``ConfigError`` naming them, raised when a config is resolved, before any data
    is read."""
    kinds = ("auto", *registered_kinds())
    if data_cfg.kind not in kinds:
        raise ConfigError(f"{source}: data.kind: {data_cfg.kind!r} is not one of {', '.join(kinds)}")


def source_of(kind: str) -> DataSource:
    """The registered source of ``kind``; an unknown kind is a ``DataError`` listing them."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise DataError(f"data.kind {kind!r} is not one of auto, {', '.join(_REGISTRY)}") from None


def sources_in_order() -> list[DataSource]:
    """Every registered source in the order they are asked (``DataSource.priority``)."""
    return sorted(_REGISTRY.values(), key=lambda s: -s.priority)


def kind_of(path: Path) -> str:
    """The kind of the first source that claims the existing ``path``; none: a ``DataError``
    naming what a file or a folder would have to be."""
    for source in sources_in_order():
        if source.claims(path):
            return source.kind
    registered = list(_REGISTRY.values())
    if path.is_file():
        forms = [s.file_form for s in registered if s.file_form]
        raise DataError(f"{path}: unsupported data file; expected {', '.join(forms)}, or a folder")
    forms = [s.folder_form for s in registered if s.folder_form]
    raise DataError(f"{path}: neither {' nor '.join(forms)}")


def path_suffixes() -> set[str]:
    return {suffix for source in _REGISTRY.values() for suffix in source.suffixes}


# ---------------------------------------------------------------- rules every source shares
def names_and_task(data_cfg: DataConfig, found: list[str], *, where: str,
                   default_task: Task | None = None) -> tuple[list[str], Task]:
    """The class names (``data.class_names`` over what the source found, checked against it and
    against the translations) and the task (``data.task``, else ``default_task``, else binary
    for two classes and multiclass otherwise)."""
    names = list(found)
    if data_cfg.class_names:
        if names and len(data_cfg.class_names) != len(names):
            raise DataError(f"{where}: data.class_names has {len(data_cfg.class_names)} names but the "
                            f"data has {len(names)} classes ({', '.join(names)})")
        names = list(data_cfg.class_names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"{where}: class name(s) {', '.join(map(repr, duplicated))} name more than "
                        "one class; each class needs its own name")
    for lang, translated in data_cfg.class_names_i18n.items():
        if translated and names and len(translated) != len(names):
            raise DataError(f"{where}: data.class_names_i18n.{lang} has {len(translated)} names but the data has "
                            f"{len(names)} classes ({', '.join(names)}); give one per class, in order")
    k = len(names)
    if data_cfg.task != "auto":
        if data_cfg.task == "binary" and k not in (0, 2):
            raise DataError(f"{where}: data.task is 'binary' but there are {k} classes; "
                            "use 'multiclass' or 'ordinal'")
        return names, data_cfg.task
    if default_task is not None:
        return names, default_task
    return names, ("binary" if k == 2 else "multiclass")


def check_classes(names: list[str], where: str, *, labelled: bool) -> None:
    """A labelled source needs at least two classes."""
    if labelled and len(names) < 2:
        raise DataError(f"{where}: found {len(names)} class(es) ({', '.join(names) or 'none'}); "
                        "at least 2 are needed")


def require_splits(splits: tuple[str, ...], present: set[str], where: str) -> None:
    """Every requested split is present, else a ``DataError`` naming the missing ones."""
    missing = [s for s in splits if s not in present]
    if missing:
        raise DataError(f"{where}: no {', '.join(repr(m) for m in missing)} split "
                        f"(found: {', '.join(s for s in SPLITS if s in present) or 'none'})")


def check_class_sets(ds: Dataset, *, allow_missing: bool = False) -> None:
    """Across splits: the train split must hold at least two classes, and every class needs
    training images (val/test labels of a class the model never saw are an error, or with
    ``data.allow_missing_classes`` a warning)."""
    train = ds.splits.get("train")
    k = ds.num_classes
    if train is None or train.labels is None or len(train) == 0 or k < 2:
        return
    counts = train.class_counts(k)
    present = [i for i in range(k) if counts[i] > 0]
    if len(present) == 1:
        raise DataError(f"{ds.source}: the train split holds only class {ds.class_names[present[0]]!r} "
                        f"({counts[present[0]]} images); a classifier needs at least 2 classes to learn")
    missing = [i for i in range(k) if counts[i] == 0]
    if not missing:
        return
    found = {name: sum(split.class_counts(k)[i] for i in missing) for name, split in ds.splits.items()
             if name != "train" and split.labels is not None}
    elsewhere = ", ".join(f"{name} {n}" for name, n in found.items() if n) or "the labels of another split"
    message = (f"{ds.source}: class(es) {', '.join(repr(ds.class_names[i]) for i in missing[:5])} have "
               f"no training images (images of them in: {elsewhere})")
    if not allow_missing:
        raise DataError(f"{message}; add training images, or set data.allow_missing_classes = true "
                        "to train anyway")
    logger.warning("%s; training anyway (data.allow_missing_classes)", message)


def held_out_size(data_cfg: DataConfig, n_train: int) -> int:
    """About how many train images become val when the source has none (``hold_out_val``)."""
    return round(data_cfg.val_fraction * n_train)


def checked_probe(probe: SourceProbe) -> SourceProbe:
    """A probe of a train split the recipe can plan for (two classes, some images)."""
    if len(probe.train_counts) < 2 or sum(probe.train_counts) == 0:
        raise DataError(f"{probe.source}: the train split has {sum(probe.train_counts)} images in "
                        f"{len(probe.train_counts)} class(es); training needs at least 2 classes")
    return probe


def pick_per_class(labels: np.ndarray, n_per_class: int, rng: np.random.Generator) -> list[int]:
    """Up to ``n_per_class`` indices of each label, drawn with ``rng``, each class's in order."""
    picked: list[int] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        picked += sorted(rng.choice(idx, size=min(n_per_class, idx.size), replace=False).tolist())
    return picked


def hwc(chw: np.ndarray) -> np.ndarray:
    """A (C, H, W) image as (H, W) (grey) or (H, W, 3)."""
    return chw[0] if chw.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(chw, 0, 2))
