"""What the sources that list image files share (image folders, CSV manifests): decoding a
split's files, the modality decision, the probe and the raw examples, all read through one
method a file source implements, ``file_split``."""
from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig, PreprocessConfig
from ..errors import DataError
from .base import SPLITS, Dataset, Split, Task, real_path
from .images import Modality, decode_files, probe_modality, read_image
from .sources import DataSource, RawExample, SourceProbe, held_out_size, names_and_task

logger = logging.getLogger(__name__)


class FileSource(DataSource):
    """A source whose splits are lists of image files (PNG, JPEG, DICOM) with labels."""

    @abstractmethod
    def file_split(self, source: Path, split: str, data_cfg: DataConfig,
                   ) -> tuple[list[Path], list[int] | None, list[str]]:
        """(files, labels or None when unlabelled, class names) of ``split``, else of the
        first split present; cheap (no image is decoded)."""

    def probe(self, source: str, data_cfg: DataConfig, *, sample: int) -> SourceProbe:
        """The file list and ``sample`` decoded train images."""
        root = Path(source)
        files, labels, found = self.file_split(root, "train", data_cfg)
        if labels is None or not files:
            raise DataError(f"{root}: the train split has no labels; training needs them")
        n_val = (len(self.file_split(root, "val", data_cfg)[0])
                 if "val" in self.splits(source) else held_out_size(data_cfg, len(files)))
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
        names, task = names_and_task(data_cfg, names, where=str(root))
        return SourceProbe(self.kind, source, int(np.median(sides)), modality.colour,
                           np.bincount(np.asarray(labels), minlength=k).tolist(),
                           n_val, task, tuple(names), modality.describe())

    def raw_examples(self, source: str, data_cfg: DataConfig, n_per_class: int,
                     rng: np.random.Generator, *, split: str) -> list[RawExample]:
        files, labels, _names = self.file_split(Path(source), split, data_cfg)
        out: list[RawExample] = []
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


def split_from_files(split: str, files: list[Path], labels: list[int] | None, *, root: Path,
                     d: DataConfig, p: PreprocessConfig, image_size: int, skipped: list[dict],
                     sizes: set, channels: set, colour: bool | None = None) -> Split:
    """One split decoded and preprocessed; what it skipped, its original sizes and channel
    counts are added to ``skipped``, ``sizes`` and ``channels``."""
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


def finish_files(name: str, source: Path, kind: str, names: list[str], task: Task,
                 out: dict[str, Split], fingerprint: str, skipped: list[dict], sizes: set,
                 channels: set) -> Dataset:
    """The ``Dataset`` of a file source, with its original sizes and channels when uniform."""
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


def first_present(split: str, present: Mapping[str, object]) -> str:
    """``split`` when present, else the first present split in ``SPLITS`` order."""
    return next(s for s in (split, *SPLITS) if s in present)
