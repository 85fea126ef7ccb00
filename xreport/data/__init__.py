"""Data: adapters -> ``Dataset``, the phantom generator, preprocessing, augmentation,
imbalance helpers and summaries. See docs/ARCHITECTURE.md ("Data")."""
from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig, PreprocessConfig
from ..errors import DataError
from ..runs import sha256_file
from . import folder, manifest, medmnist, phantom
from .augment import augment_batch
from .base import SPLITS, Dataset, Split, Task, grey_to_rgb, hold_out_val, real_path
from .images import Modality, decode_files, probe_modality, read_image
from .imbalance import class_weights, sampler_weights
from .preprocess import (compute_mean_std, describe_pipeline, normalize_batch, preprocess_image,
                         preprocess_stack, resolve_normalization)
from .summary import class_distribution, constant_images, leakage_check

__all__ = [
    "Dataset", "Split", "SPLITS", "load_dataset", "resolve_source", "raw_examples",
    "compute_mean_std", "resolve_normalization", "normalize_batch", "augment_batch",
    "preprocess_image", "describe_pipeline", "class_weights", "sampler_weights",
    "class_distribution", "leakage_check", "read_image", "SourceProbe", "probe_source",
    "looks_graded", "source_splits",
]

logger = logging.getLogger(__name__)

KINDS = ("medmnist", "folder", "csv", "phantom")


# ---------------------------------------------------------------- source resolution
def resolve_source(data_cfg: DataConfig, *, image_size: int | None = None) -> tuple[str, str]:
    """(kind, absolute path or "phantom") for ``data.dataset`` and ``data.kind``.

    A name that is not a path is a MedMNIST set, looked up in $XREPORT_DATA_DIR,
    ``<cwd>/../shared/data`` and ``<repo>/../shared/data`` (``image_size`` picks among
    ``<name>_<size>.npz`` files), then downloaded with ``medmnist`` when possible.
    """
    wanted = data_cfg.kind
    dataset = data_cfg.dataset.strip()
    if wanted == "phantom" or (wanted == "auto" and dataset.lower() == "phantom"):
        return "phantom", "phantom"
    if not dataset:
        raise DataError("data.dataset is empty; give 'phantom', a MedMNIST name, or a path")
    path = Path(dataset).expanduser()
    if path.exists():
        kind = _kind_of(path)
        if wanted not in ("auto", kind) and not _also_fits(path, wanted):
            raise DataError(f"{path}: data.kind is {wanted!r} but this looks like a {kind} source "
                            f"(valid kinds: auto, {', '.join(KINDS)})")
        return (kind if wanted == "auto" else wanted), str(path.resolve())
    looks_like_path = ("/" in dataset or "\\" in dataset or path.suffix.lower() in (".npz", ".csv")
                       or wanted in ("folder", "csv"))
    if looks_like_path:
        raise DataError(f"{dataset}: no such file or folder (data.dataset)")
    return "medmnist", str(medmnist.find_named(dataset, image_size=image_size).resolve())


def _kind_of(path: Path) -> str:
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "medmnist"
        if suffix == ".csv":
            return "csv"
        raise DataError(f"{path}: unsupported data file; expected a MedMNIST .npz, a .csv manifest, "
                        "or a folder")
    if manifest.is_manifest_folder(path):
        return "csv"
    if folder.is_image_folder(path):
        return "folder"
    raise DataError(f"{path}: neither an image folder ({{train,val,test}}/CLASS/*.png) nor a folder "
                    "of train.csv/val.csv/test.csv")


def _also_fits(path: Path, kind: str) -> bool:
    if kind == "folder":
        return path.is_dir() and folder.is_image_folder(path)
    if kind == "csv":
        return (path.is_file() and path.suffix.lower() == ".csv") or manifest.is_manifest_folder(path)
    return False


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
    loader = {"phantom": _load_phantom, "medmnist": _load_medmnist,
              "folder": _load_folder, "csv": _load_csv}[kind]
    present = _source_splits(kind, source) if "val" in splits and data_cfg.val_fraction > 0 else set()
    carve_val = bool(present) and "val" not in present and "train" in present
    load = tuple(s for s in SPLITS if (s in splits or s == "train") and s != "val") if carve_val else splits
    ds = loader(source, data_cfg, preprocess_cfg, image_size=image_size, splits=load)
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
    return _source_splits(kind, source)


def _source_splits(kind: str, source: str) -> set[str]:
    """The splits the source holds, as far as a cheap look tells; when unsure, all of them
    (the loader then names what is missing or broken)."""
    path = Path(source)
    if kind == "folder":
        return set(folder.split_folders(path))
    if kind == "csv":
        try:
            return set(manifest.find_csvs(path))
        except DataError:
            return set(SPLITS)
    if kind == "medmnist":
        # The zip directory alone (np.load would read a plain .npy passed off as .npz whole).
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            return set(SPLITS)
        return {s for s in SPLITS if f"{s}_images.npy" in names}
    return set(SPLITS)


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


def _names_and_task(data_cfg: DataConfig, found: list[str], *, where: str,
                    default_task: Task | None = None) -> tuple[list[str], Task]:
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


_GRADE_WORD = re.compile(r"(grade|stage|kl|level)[\s_-]*(\d+)", re.IGNORECASE)


def looks_graded(names: list[str]) -> str | None:
    """Why the class names look like ordered grades, or None.

    Three or more classes named by consecutive integers (``0``..``4``), or each named with a
    grade word and a distinct number (``grade_1``, ``KL2``, ``stage 3``, ``level4``)."""
    if len(names) < 3:
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


def _check_classes(names: list[str], where: str, *, labelled: bool) -> None:
    if labelled and len(names) < 2:
        raise DataError(f"{where}: found {len(names)} class(es) ({', '.join(names) or 'none'}); "
                        "at least 2 are needed")


def _require(splits: tuple[str, ...], present: set[str], where: str) -> None:
    missing = [s for s in splits if s not in present]
    if missing:
        raise DataError(f"{where}: no {', '.join(repr(m) for m in missing)} split "
                        f"(found: {', '.join(s for s in SPLITS if s in present) or 'none'})")


def _phantom_seed(seed: int, split: str) -> int:
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def _phantom_params(d: DataConfig) -> dict:
    return {"size": d.phantom_size, "classes": d.phantom_classes, "ordinal": d.phantom_ordinal,
            "seed": d.phantom_seed, "train": d.phantom_train, "val": d.phantom_val, "test": d.phantom_test}


def _load_phantom(source: str, d: DataConfig, p: PreprocessConfig, *, image_size: int,
                  splits: tuple[str, ...]) -> Dataset:
    names, _specs = phantom.class_specs(d.phantom_classes, ordinal=d.phantom_ordinal)
    names, task = _names_and_task(d, names, where="phantom",
                                  default_task="ordinal" if d.phantom_ordinal else None)
    out: dict[str, Split] = {}
    for split in splits:
        n = getattr(d, f"phantom_{split}")
        images, labels, masks = phantom.generate(n, size=d.phantom_size, classes=d.phantom_classes,
                                                 ordinal=d.phantom_ordinal, seed=_phantom_seed(d.phantom_seed, split))
        x, m = preprocess_stack(images, p, image_size, masks=masks)
        out[split] = Split(split, x, torch.from_numpy(labels), [f"phantom-{split}-{i:05d}" for i in range(n)], m)
    return Dataset(name="phantom", source=f"phantom(seed={d.phantom_seed})", kind="phantom",
                   class_names=names, task=task, splits=out, fingerprint=phantom.fingerprint(_phantom_params(d)),
                   original_size=(d.phantom_size, d.phantom_size), original_channels=1)


def _load_medmnist(source: str, d: DataConfig, p: PreprocessConfig, *, image_size: int,
                   splits: tuple[str, ...]) -> Dataset:
    path = Path(source)
    name = medmnist.base_name(path)
    table = medmnist.CLASS_NAMES.get(name)
    expected = len(table) if table else (len(d.class_names) or None)
    arrays, num_classes = medmnist.read_npz(path, splits, num_classes=expected)
    found = table if table and len(table) == num_classes else [f"class_{i}" for i in range(num_classes)]
    names, task = _names_and_task(d, found, where=str(path),
                                  default_task="ordinal" if name in medmnist.ORDINAL else None)
    _check_classes(names, str(path), labelled=True)
    out: dict[str, Split] = {}
    shapes = set()
    for split, (images, labels) in arrays.items():
        shapes.add(images.shape[1:])
        x, _ = preprocess_stack(torch.from_numpy(images), p, image_size)
        out[split] = Split(split, x, torch.from_numpy(labels), [str(i) for i in range(len(labels))])
    (c, h, w), = shapes if len(shapes) == 1 else ((None, None, None),)
    from_table = bool(table) and names == table   # not renamed by data.class_names
    return Dataset(name=name, source=str(path), kind="medmnist", class_names=names, task=task,
                   splits=out, fingerprint=sha256_file(path),
                   original_size=(int(h), int(w)) if h is not None and w is not None else None,
                   original_channels=c, class_names_i18n=medmnist.class_names_i18n(name) if from_table else {})


def _split_from_files(split: str, files: list[Path], labels: list[int] | None, *, root: Path,
                      d: DataConfig, p: PreprocessConfig, image_size: int, skipped: list[dict],
                      sizes: set, channels: set, colour: bool | None = None) -> Split:
    decoded = decode_files(files, root=root, preprocess_cfg=p, image_size=image_size,
                           skip_bad=d.skip_bad_images, desc=split, colour=colour)
    skipped += decoded.skipped
    sizes |= decoded.original_sizes
    channels |= decoded.original_channels
    if not decoded.kept:
        raise DataError(f"{root}: every image of the {split} split was unreadable "
                        f"(first: {decoded.skipped[0]['reason'] if decoded.skipped else 'none'})")
    ids = [real_path(files[i]).relative_to(real_path(root)).as_posix() for i in decoded.kept]
    y = None if labels is None else torch.tensor([labels[i] for i in decoded.kept], dtype=torch.int64)
    return Split(split, decoded.images, y, ids)


def _finish_files(name: str, source: Path, kind: str, names: list[str], task: Task,
                  out: dict[str, Split], fingerprint: str, skipped: list[dict], sizes: set,
                  channels: set) -> Dataset:
    return Dataset(name=name, source=str(source), kind=kind, class_names=names, task=task, splits=out,
                   fingerprint=fingerprint, original_size=next(iter(sizes)) if len(sizes) == 1 else None,
                   original_sizes=len(sizes) or None,
                   original_channels=next(iter(channels)) if len(channels) == 1 else None,
                   skipped=skipped)


def source_modality(files_by_split: Mapping[str, list[Path]], *, where: str) -> Modality:
    """The modality of a file source, from its train files (else all of its files), so that
    every call on the source (train, evaluate of one split) decides the same way."""
    files = files_by_split.get("train") or [f for fs in files_by_split.values() for f in fs]
    modality = probe_modality(files)
    logger.info("%s: modality from the pixels: %s", where, modality.describe())
    return modality


def _load_folder(source: str, d: DataConfig, p: PreprocessConfig, *, image_size: int,
                 splits: tuple[str, ...]) -> Dataset:
    root = Path(source)
    skipped: list[dict] = []
    scanned, found = folder.scan(root, skip_bad=d.skip_bad_images, skipped=skipped,
                                 class_map=d.class_map)
    _require(splits, set(scanned), str(root))
    names, task = _names_and_task(d, found, where=str(root))
    _check_classes(names, str(root), labelled=any(scanned[s].labels is not None for s in splits))
    sizes: set = set()
    channels: set = set()
    colour = source_modality({s: fs.files for s, fs in scanned.items()}, where=str(root)).colour
    out = {s: _split_from_files(s, scanned[s].files, scanned[s].labels, root=root, d=d, p=p,
                                image_size=image_size, skipped=skipped, sizes=sizes, channels=channels,
                                colour=colour)
           for s in splits}
    ds = _finish_files(root.name, root, "folder", names, task, out, folder.fingerprint(root, scanned),
                       skipped, sizes, channels)
    ds.class_matches = [m for fs in scanned.values() for m in fs.matches]
    return ds


def _load_csv(source: str, d: DataConfig, p: PreprocessConfig, *, image_size: int,
              splits: tuple[str, ...]) -> Dataset:
    src = Path(source)
    csvs = manifest.find_csvs(src)
    _require(splits, set(csvs), str(src))
    manifests = {s: manifest.read_manifest(path) for s, path in csvs.items()}
    found = manifest.class_names(list(manifests.values()), configured=d.class_names)
    names, task = _names_and_task(d, found, where=str(src))
    manifest.check_conflicting_labels(list(manifests.values()), names)
    labelled = any(manifests[s].has_labels for s in splits)
    _check_classes(names, str(src), labelled=labelled)
    if not names:
        logger.warning("%s: no labels and no data.class_names; class names must come from the checkpoint", src)
    root = next(iter(csvs.values())).parent
    skipped: list[dict] = []
    sizes: set = set()
    channels: set = set()
    out = {}
    colour = source_modality({s: [r.path for r in m.rows] for s, m in manifests.items()},
                             where=str(src)).colour
    for s in splits:
        m = manifests[s]
        out[s] = _split_from_files(s, [r.path for r in m.rows], manifest.encode_labels(m, names), root=root,
                                   d=d, p=p, image_size=image_size, skipped=skipped, sizes=sizes,
                                   channels=channels, colour=colour)
    name = src.name if src.is_dir() else src.stem
    return _finish_files(name, src, "csv", names, task, out, manifest.fingerprint(list(manifests.values())),
                         skipped, sizes, channels)


def _unify_channels(ds: Dataset) -> None:
    """A data set with any colour split gets 3 channels everywhere."""
    if len({s.images.shape[1] for s in ds.splits.values()}) > 1:
        ds.splits = {name: grey_to_rgb(split) for name, split in ds.splits.items()}


# ---------------------------------------------------------------- probing (for the auto recipe)
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


def probe_source(data_cfg: DataConfig, *, sample: int = 16) -> SourceProbe:
    """Native size, colour, train class counts and task of ``data.dataset``.

    MedMNIST: the validated train arrays; image folders / CSV manifests: the file list
    and ``sample`` decoded train images; phantom: its generator's train split."""
    kind, source = resolve_source(data_cfg)
    if kind == "phantom":
        ds = load_dataset(data_cfg, PreprocessConfig(), image_size=data_cfg.phantom_size,
                          splits=("train",))
        train = ds.splits["train"]
        return SourceProbe(kind, source, data_cfg.phantom_size, False, train.class_counts(ds.num_classes),
                           data_cfg.phantom_val, ds.task, tuple(ds.class_names))
    if kind == "medmnist":
        path = Path(source)
        name = medmnist.base_name(path)
        table = medmnist.CLASS_NAMES.get(name)
        arrays, k = medmnist.read_npz(path, ("train",), num_classes=len(table) if table else None)
        images, y_train = arrays["train"]
        with np.load(path, allow_pickle=False) as npz:
            n_val = (int(npz["val_labels"].shape[0]) if "val_labels" in npz.files
                     else _held_out_size(data_cfg, len(y_train)))
        names = table if table and len(table) == k else [str(i) for i in range(k)]
        names, task = _names_and_task(data_cfg, names, where=str(path),
                                      default_task="ordinal" if name in medmnist.ORDINAL else None)
        return _checked_probe(SourceProbe(kind, source, min(images.shape[2:]), images.shape[1] == 3,
                                          np.bincount(y_train, minlength=k).tolist(), n_val, task,
                                          tuple(names)))
    root = Path(source)
    files, labels, found = _file_split(kind, root, "train", configured=data_cfg.class_names,
                                       class_map=data_cfg.class_map)
    if labels is None or not files:
        raise DataError(f"{root}: the train split has no labels; training needs them")
    n_val = (len(_file_split(kind, root, "val", configured=data_cfg.class_names,
                             class_map=data_cfg.class_map)[0])
             if "val" in _source_splits(kind, source) else _held_out_size(data_cfg, len(files)))
    k = max(labels) + 1
    if data_cfg.class_names:
        k = max(k, len(data_cfg.class_names))
    picks = np.linspace(0, len(files) - 1, num=min(sample, len(files))).round().astype(int)
    sides = []
    for i in sorted(set(picks.tolist())):
        try:
            img = read_image(files[i])
        except DataError as exc:   # the loader stops on it or skips it (data.skip_bad_images)
            logger.debug("probe: %s", exc)
            continue
        sides.append(min(img.shape[0], img.shape[1]))
    if not sides:
        raise DataError(f"{root}: none of {len(picks)} sampled train images could be read "
                        f"(first: {files[int(picks[0])]})")
    # The same decision (same files, same rule) as the loader's source_modality.
    modality = probe_modality(files)
    names = found if len(found) == k else [str(i) for i in range(k)]
    names, task = _names_and_task(data_cfg, names, where=str(root))
    return _checked_probe(SourceProbe(kind, source, int(np.median(sides)), modality.colour,
                                      np.bincount(np.asarray(labels), minlength=k).tolist(),
                                      n_val, task, tuple(names), modality.describe()))


def _held_out_size(data_cfg: DataConfig, n_train: int) -> int:
    """About how many train images become val when the source has none (``hold_out_val``)."""
    return round(data_cfg.val_fraction * n_train)


def _checked_probe(probe: SourceProbe) -> SourceProbe:
    if len(probe.train_counts) < 2 or sum(probe.train_counts) == 0:
        raise DataError(f"{probe.source}: the train split has {sum(probe.train_counts)} images in "
                        f"{len(probe.train_counts)} class(es); training needs at least 2 classes")
    return probe


# ---------------------------------------------------------------- raw examples
def raw_examples(data_cfg: DataConfig, n_per_class: int, seed: int, *,
                 split: str = "train") -> list[tuple[np.ndarray, int | None]]:
    """Up to ``n_per_class`` raw images per class (uint8 (H, W) or (H, W, 3), before any
    preprocessing) from ``split`` (else the first split present), for the before/after figure."""
    rng = np.random.default_rng(seed)
    kind, source = resolve_source(data_cfg)
    if kind == "phantom":
        n = getattr(data_cfg, f"phantom_{split}")
        images, ph_labels, _m = phantom.generate(n, size=data_cfg.phantom_size, classes=data_cfg.phantom_classes,
                                                 ordinal=data_cfg.phantom_ordinal,
                                                 seed=_phantom_seed(data_cfg.phantom_seed, split))
        return [(images[i, 0], int(ph_labels[i])) for i in _pick(ph_labels, n_per_class, rng)]
    if kind == "medmnist":
        path = Path(source)
        with np.load(path, allow_pickle=False) as npz:
            present = [s for s in (split, *SPLITS) if f"{s}_images" in npz.files]
        if not present:
            raise DataError(f"{path}: no split with images")
        arrays, _k = medmnist.read_npz(path, (present[0],), num_classes=None)
        images, npz_labels = arrays[present[0]]
        return [(_hwc(images[i]), int(npz_labels[i])) for i in _pick(npz_labels, n_per_class, rng)]
    files, labels, _names = _file_split(kind, Path(source), split, configured=data_cfg.class_names,
                                        class_map=data_cfg.class_map)
    out: list[tuple[np.ndarray, int | None]] = []
    label_arr = np.asarray(labels if labels is not None else [-1] * len(files))
    for cls in (np.unique(label_arr) if labels is not None else [-1]):
        order = rng.permutation(np.flatnonzero(label_arr == cls))
        taken = 0
        for i in order:
            if taken >= n_per_class:
                break
            try:
                out.append((read_image(files[i]), None if cls < 0 else int(cls)))
                taken += 1
            except DataError as exc:
                logger.warning("raw_examples: skipped %s", exc)
    return out


def _file_split(kind: str, source: Path, split: str, *, configured: tuple[str, ...],
                class_map: Mapping[str, str]) -> tuple[list[Path], list[int] | None, list[str]]:
    """(files, labels, class names) of ``split`` (else the first split present)."""
    if kind == "folder":
        scanned, names = folder.scan(source, skip_bad=True, class_map=class_map)
        use = next(s for s in (split, *SPLITS) if s in scanned)
        return scanned[use].files, scanned[use].labels, names
    csvs = manifest.find_csvs(source)
    manifests = {s: manifest.read_manifest(p) for s, p in csvs.items()}
    names = manifest.class_names(list(manifests.values()), configured=configured)
    use = next(s for s in (split, *SPLITS) if s in manifests)
    return [r.path for r in manifests[use].rows], manifest.encode_labels(manifests[use], names), names


def _pick(labels: np.ndarray, n_per_class: int, rng: np.random.Generator) -> list[int]:
    picked: list[int] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        picked += sorted(rng.choice(idx, size=min(n_per_class, idx.size), replace=False).tolist())
    return picked


def _hwc(chw: np.ndarray) -> np.ndarray:
    return chw[0] if chw.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(chw, 0, 2))
