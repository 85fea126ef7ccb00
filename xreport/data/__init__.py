"""Data: adapters -> ``Dataset``, the phantom generator, preprocessing, augmentation,
imbalance helpers and summaries. See docs/ARCHITECTURE.md ("Data").

Every data source is a ``DataSource`` (``sources.py``) in the registry below; the functions
here read the registry and hold no branch per kind."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..config import DataConfig, PreprocessConfig
from ..errors import DataError
from . import folder, manifest, medmnist, phantom
from .augment import augment_batch
from .base import SPLITS, Dataset, Split, grey_to_rgb, hold_out_val
from .images import read_image
from .imbalance import class_weights, sampler_weights
from .preprocess import (compute_mean_std, describe_pipeline, normalize_batch, preprocess_image,
                         resolve_normalization)
from .sources import (DataSource, SourceProbe, check_class_sets, check_kind, checked_probe, kind_of,
                      path_suffixes, register_source, registered_kinds, source_of,
                      sources_in_order)
from .summary import class_distribution, constant_images, leakage_check

__all__ = [
    "Dataset", "Split", "SPLITS", "load_dataset", "resolve_source", "raw_examples",
    "compute_mean_std", "resolve_normalization", "normalize_batch", "augment_batch",
    "preprocess_image", "describe_pipeline", "class_weights", "sampler_weights",
    "class_distribution", "leakage_check", "read_image", "SourceProbe", "probe_source",
    "looks_graded", "source_splits", "DataSource", "register_source", "registered_kinds",
    "check_class_sets", "check_kind",
]

logger = logging.getLogger(__name__)

# The data sources, in the order messages list them (a new source: its module and one line).
register_source(medmnist.MedMNISTSource())
register_source(folder.FolderSource())
register_source(manifest.ManifestSource())
register_source(phantom.PhantomSource())


# ---------------------------------------------------------------- source resolution
def resolve_source(data_cfg: DataConfig, *, image_size: int | None = None) -> tuple[str, str]:
    """(kind, source) for ``data.dataset`` and ``data.kind``: the source is an absolute path,
    or what a source answering to a name gave ("phantom").

    A name that is not a path is asked of the sources by name: "phantom" is the generator;
    any other name is a MedMNIST set, looked up in $XREPORT_DATA_DIR, ``<cwd>/../shared/data``
    and ``<repo>/../shared/data`` (``image_size`` picks among ``<name>_<size>.npz`` files),
    then downloaded with ``medmnist`` when possible.
    """
    wanted = data_cfg.kind
    chosen = None if wanted == "auto" else source_of(wanted)
    asked = [chosen] if chosen is not None else sources_in_order()
    dataset = data_cfg.dataset.strip()
    for source in asked:
        named = source.named(dataset, chosen=source is chosen)
        if named is not None:
            return source.kind, named
    if not dataset:
        raise DataError("data.dataset is empty; give 'phantom', a MedMNIST name, or a path")
    path = Path(dataset).expanduser()
    if path.exists():
        if chosen is not None and chosen.claims(path):
            return chosen.kind, str(path.resolve())
        kind = kind_of(path)
        if chosen is not None:
            raise DataError(f"{path}: data.kind is {wanted!r} but this looks like a {kind} source "
                            f"(valid kinds: auto, {', '.join(registered_kinds())})")
        return kind, str(path.resolve())
    if "/" not in dataset and "\\" not in dataset and path.suffix.lower() not in path_suffixes():
        for source in asked:
            found = source.lookup(dataset, image_size=image_size)
            if found is not None:
                return source.kind, found
    raise DataError(f"{dataset}: no such file or folder (data.dataset)")


# ---------------------------------------------------------------- loading
def load_dataset(data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *, image_size: int,
                 splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load, check and preprocess the requested splits into uint8 tensors (N, C, S, S).

    The fingerprint covers every split of the source, whichever splits are loaded.
    """
    splits = tuple(splits)
    bad = [s for s in splits if s not in SPLITS]
    if not splits or bad:
        raise DataError(f"splits {bad or '()'} invalid; choose from {', '.join(SPLITS)}")
    kind, source = resolve_source(data_cfg, image_size=image_size)
    adapter = source_of(kind)
    present = adapter.splits(source) if "val" in splits and data_cfg.val_fraction > 0 else set()
    carve_val = bool(present) and "val" not in present and "train" in present
    load = tuple(s for s in SPLITS if (s in splits or s == "train") and s != "val") if carve_val else splits
    ds = adapter.load(source, data_cfg, preprocess_cfg, image_size=image_size, splits=load)
    if carve_val:
        ds = _with_held_out_val(ds, data_cfg.val_fraction, keep_train="train" in splits,
                                allow_missing=data_cfg.allow_missing_classes)
    check_class_sets(ds, allow_missing=data_cfg.allow_missing_classes)
    _unify_channels(ds)
    constant = {k: n for k, n in constant_images(ds).items() if n}
    if constant:    # counted here, where the data enters; class_distribution.json records it
        logger.warning("%s: %s image(s) hold one grey value only (blank): %s", ds.source,
                       sum(constant.values()), ", ".join(f"{k} {n} of {len(ds.splits[k])}" for k, n in constant.items()))
    logger.info("loaded %s (%s): %s", ds.name, kind,
                ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items()))
    return ds


def source_splits(data_cfg: DataConfig) -> set[str]:
    """The splits ``data.dataset`` holds, as far as a cheap look tells (all when unsure)."""
    kind, source = resolve_source(data_cfg)
    return source_of(kind).splits(source)


def _with_held_out_val(ds: Dataset, fraction: float, *, keep_train: bool,
                       allow_missing: bool = False) -> Dataset:
    """``ds`` with a val split held out of its train split (the source has none)."""
    train = ds.splits["train"]
    if train.labels is None:
        return ds   # unlabelled train: training stops on it with its own message
    rest, val = hold_out_val(train, fraction, ds.num_classes)
    if len(val) == 0:
        raise DataError(f"{ds.source}: no val split, and the train split ({len(train)} images) is too "
                        "small to hold one out (each class needs at least 2 images); add a val split")
    in_train, in_val = train.class_counts(ds.num_classes), val.class_counts(ds.num_classes)
    lacking = [i for i in range(ds.num_classes) if in_train[i] and not in_val[i]]
    if lacking:
        # A val split without a class has no AUC: the checkpoint would be chosen by NaN.
        message = (f"{ds.source}: no val split, and class(es) "
                   f"{', '.join(repr(ds.class_names[i]) for i in lacking[:5])} have "
                   f"{', '.join(str(in_train[i]) for i in lacking[:5])} training image(s): a held-out "
                   "val split cannot hold them and keep one for training")
        if not allow_missing:
            raise DataError(f"{message}; add images of them or a val split, or set "
                            "data.allow_missing_classes = true to train anyway")
        logger.warning("%s; training anyway (data.allow_missing_classes)", message)
    logger.info("%s has no val split: held out %d of %d train images (%.0f%% of each class) as val",
                ds.source, len(val), len(train), 100 * fraction)
    splits = {"train": rest} if keep_train else {}
    splits |= {"val": val} | {k: v for k, v in ds.splits.items() if k != "train"}
    ds.splits = {k: splits[k] for k in SPLITS if k in splits}
    ds.val_held_out = fraction
    return ds


_GRADE_WORD = re.compile(r"(grade|stage|kl|level)[\s_-]*(\d+)", re.IGNORECASE)


# Clinical grading scales have a handful of grades (KL 0-4, Gleason grade groups 1-5, ICDR
# 0-4, ETDRS levels); more integer-named classes than this are indices, not grades.
MAX_GRADES = 20


def looks_graded(names: list[str]) -> str | None:
    """Why the class names look like ordered grades, or None.

    Three to MAX_GRADES classes named by consecutive integers (``0``..``4``), or each named
    with a grade word and a distinct number (``grade_1``, ``KL2``, ``stage 3``, ``level4``)."""
    if not 3 <= len(names) <= MAX_GRADES:
        return None
    numbers = [n.strip() for n in names]
    if all(n.lstrip("-").isdigit() for n in numbers):
        values = sorted(int(n) for n in numbers)
        if values == list(range(values[0], values[0] + len(values))):
            return f"class names {', '.join(names)} are consecutive integers"
        return None
    found = [_GRADE_WORD.search(n) for n in names]
    if all(found) and len({int(m.group(2)) for m in found if m}) == len(names):
        return f"class names {', '.join(names)} carry grade/stage/KL/level numbers"
    return None


# The per-split seed of the generator, under the name the tests use.
_phantom_seed = phantom.split_seed


def _unify_channels(ds: Dataset) -> None:
    """A data set with any colour split gets 3 channels everywhere."""
    if len({s.images.shape[1] for s in ds.splits.values()}) > 1:
        ds.splits = {name: grey_to_rgb(split) for name, split in ds.splits.items()}


# ---------------------------------------------------------------- probing (for the auto recipe)
def probe_source(data_cfg: DataConfig, *, sample: int = 16) -> SourceProbe:
    """Native size, colour, train class counts and task of ``data.dataset``, from its source's
    ``probe`` (MedMNIST: the validated train arrays; image folders / CSV manifests: the file
    list and ``sample`` decoded train images; phantom: its generator's train split)."""
    kind, source = resolve_source(data_cfg)
    return checked_probe(source_of(kind).probe(source, data_cfg, sample=sample))


# ---------------------------------------------------------------- raw examples
def raw_examples(data_cfg: DataConfig, n_per_class: int, seed: int, *,
                 split: str = "train") -> list[tuple[np.ndarray, int | None]]:
    """Up to ``n_per_class`` raw images per class (uint8 (H, W) or (H, W, 3), before any
    preprocessing) from ``split`` (else the first split present), for the before/after figure."""
    rng = np.random.default_rng(seed)
    kind, source = resolve_source(data_cfg)
    return source_of(kind).raw_examples(source, data_cfg, n_per_class, rng, split=split)
