"""Image folders: ``ROOT/{train,val,test}/CLASS/*.{png,jpg,jpeg,dcm}``.

Class names are the sorted class-folder names, which must be the same in every split. A
split folder holding images but no class folders is an unlabelled split (labels None).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..runs import sha256_file
from .base import SPLITS, real_path
from .images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)


@dataclass
class FolderSplit:
    files: list[Path]
    labels: list[int] | None


def is_image_folder(root: Path) -> bool:
    return any((root / s).is_dir() for s in SPLITS)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_in(folder: Path, root: Path, *, skip_bad: bool,
               skipped: list[dict[str, str]]) -> list[Path]:
    """The image files of one folder; a symlink whose target leaves the data root is refused
    (or, with ``skip_bad``, recorded and left out) before anything opens it."""
    kept = []
    real_root = real_path(root)
    for p in sorted(folder.iterdir()):
        if not (_visible(p) and p.suffix.lower() in IMAGE_SUFFIXES):
            continue
        try:
            real = real_path(p)
            reason = "" if real.is_relative_to(real_root) else (
                f"{p}: leads outside the data folder {real_root} (to {real}); "
                "copy the file into the data folder instead of linking it")
        except DataError as exc:     # a symlink loop
            reason = str(exc)
        if reason:
            if not skip_bad:
                raise DataError(reason)
            skipped.append({"file": p.relative_to(root).as_posix(), "reason": reason})
            logger.warning("skipped %s", reason)
            continue
        if p.is_file():
            kept.append(p)
    return kept


def scan(root: Path, *, skip_bad: bool = False,
         skipped: list[dict[str, str]] | None = None) -> tuple[dict[str, FolderSplit], list[str]]:
    """Every present split's files and labels, and the class names.

    Files that are symlinks out of ``root`` are refused, or with ``skip_bad`` appended to
    ``skipped`` as {"file", "reason"}.
    """
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    skipped = [] if skipped is None else skipped
    found: dict[str, tuple[list[str], Path]] = {}
    unlabelled: dict[str, list[Path]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
        if classes:
            found[split] = (classes, folder)
        else:
            unlabelled[split] = _images_in(folder, root, skip_bad=skip_bad, skipped=skipped)
    if not found and not unlabelled:
        raise DataError(f"{root}: no split folders; expected {root}/{{train,val,test}}/CLASS/*.png")
    class_sets = {split: classes for split, (classes, _f) in found.items()}
    reference = next(iter(class_sets.values()), [])
    for split, classes in class_sets.items():
        if classes != reference:
            first = next(iter(class_sets))
            raise DataError(f"{root}: class folders differ between splits: {first} has "
                            f"{', '.join(reference)}; {split} has {', '.join(classes)}")
    out: dict[str, FolderSplit] = {}
    for split, (classes, folder) in found.items():
        files: list[Path] = []
        labels: list[int] = []
        for index, name in enumerate(classes):
            these = _images_in(folder / name, root, skip_bad=skip_bad, skipped=skipped)
            files += these
            labels += [index] * len(these)
        out[split] = FolderSplit(files, labels)
    for split, files in unlabelled.items():
        out[split] = FolderSplit(files, None)
    _check_conflicting_labels(out, list(reference))
    for index, name in enumerate(reference):
        if not any(fs.labels is not None and index in fs.labels for fs in out.values()):
            raise DataError(f"{root}: class folder {name!r} holds no images in any split; "
                            "remove it or add its images")
    for split, fs in out.items():
        if not fs.files:
            raise DataError(f"{root / split}: no images ({', '.join(IMAGE_SUFFIXES)}) in this split")
    return out, list(reference)


def _check_conflicting_labels(splits: dict[str, FolderSplit], names: list[str]) -> None:
    """One image (the same file reached through links) in two class folders."""
    seen: dict[Path, tuple[Path, int]] = {}
    for fs in splits.values():
        if fs.labels is None:
            continue
        for path, label in zip(fs.files, fs.labels):
            first = seen.setdefault(real_path(path), (path, label))
            if first[1] != label:
                raise DataError(f"{path}: the same image as {first[0]}, but in class folder "
                                f"{names[label]!r} instead of {names[first[1]]!r}; one image has one label")


def fingerprint(root: Path, splits: dict[str, FolderSplit]) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of every split's files."""
    pairs = sorted((p.relative_to(root).as_posix(), sha256_file(p))
                   for fs in splits.values() for p in fs.files)
    digest = hashlib.sha256()
    for rel, sha in pairs:
        digest.update(f"{rel}\0{sha}\n".encode("utf-8"))
    return digest.hexdigest()
