"""Image folders: ``ROOT/{train,val,test}/CLASS/*.{png,jpg,jpeg,dcm}``.

Split folders are matched case-insensitively with their usual aliases (``Training``,
``valid``, ``Testing``; ``SPLIT_ALIASES``). Class names are the sorted class-folder names of
the train split (renamed by ``data.class_map``); another split's class folders are matched
to them by ``base.match_classes``. A split folder holding images but no class
folders is an unlabelled split (labels None).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import ClassMatch
from ..config import DataConfig, PreprocessConfig
from ..errors import DataError
from ..runs import sha256_file
from .base import SPLITS, Dataset, match_classes, real_path
from .files import FileSource, finish_files, first_present, source_modality, split_from_files
from .images import IMAGE_SUFFIXES
from .sources import check_classes, names_and_task, require_splits

logger = logging.getLogger(__name__)


# The folder names public data sets use for each split (compared in lower case).
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}
_SPLIT_OF = {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}


@dataclass
class FolderSplit:
    files: list[Path]
    labels: list[int] | None
    folder: Path | None = None
    # class folders whose name is not the class name they were matched to
    matches: list[ClassMatch] = field(default_factory=list)


def split_folders(root: Path) -> dict[str, Path]:
    """split -> its folder under ``root``, by ``SPLIT_ALIASES`` in any case; two folders
    naming one split (``val`` and ``valid``) are an error."""
    if not root.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        split = _SPLIT_OF.get(p.name.lower())
        if split is not None and _visible(p) and p.is_dir():
            found.setdefault(split, []).append(p)
    for split, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{root}: folders {', '.join(p.name for p in paths)} all name the {split} "
                            "split; keep one of them")
    return {s: found[s][0] for s in SPLITS if s in found}


def is_image_folder(root: Path) -> bool:
    return bool(split_folders(root))


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


def scan(root: Path, *, skip_bad: bool = False, skipped: list[dict[str, str]] | None = None,
         class_map: Mapping[str, str] | None = None) -> tuple[dict[str, FolderSplit], list[str]]:
    """Every present split's files and labels, and the class names.

    Files that are symlinks out of ``root`` are refused, or with ``skip_bad`` appended to
    ``skipped`` as {"file", "reason"}. ``class_map`` (``data.class_map``) renames class
    folders; other differences between splits are matched by ``match_class_names``.
    """
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    skipped = [] if skipped is None else skipped
    class_map = dict(class_map or {})
    found: dict[str, tuple[list[str], Path]] = {}
    unlabelled: dict[str, tuple[list[Path], Path]] = {}
    for split, folder in split_folders(root).items():
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
        if classes:
            found[split] = (classes, folder)
        else:
            unlabelled[split] = (_images_in(folder, root, skip_bad=skip_bad, skipped=skipped), folder)
    if not found and not unlabelled:
        raise DataError(f"{root}: no split folders; expected {root}/{{train,val,test}}/CLASS/*.png "
                        f"(or {', '.join(a for aliases in SPLIT_ALIASES.values() for a in aliases[1:])})")
    every = {c for classes, _f in found.values() for c in classes}
    unknown = sorted(k for k in class_map if k not in every)
    if unknown:
        raise DataError(f"{root}: data.class_map names {', '.join(map(repr, unknown))}, which is not a "
                        f"class folder here (found: {', '.join(sorted(every))})")
    first = next(iter(found), None)
    reference = sorted({class_map.get(c, c) for c in found[first][0]}) if first else []
    out: dict[str, FolderSplit] = {}
    for split, (classes, folder) in found.items():
        matches: list[ClassMatch] = []
        first_name = found[first][1].name   # type: ignore[index]  # found is not empty here
        try:
            order = match_classes(classes, reference, where=str(root), class_map=class_map,
                                  strict_map=False, found_what=folder.name, reference_what=first_name,
                                  matches=matches)
        except DataError as exc:
            raise DataError(f"{root}: class folders differ between splits: "
                            f"{str(exc).removeprefix(f'{root}: ')}") from None
        if set(order) != set(range(len(reference))):
            lacking = [r for i, r in enumerate(reference) if i not in order]
            raise DataError(f"{root}: class folders differ between splits: {first_name} has "
                            f"{', '.join(reference)}; {folder.name} has {', '.join(classes)} "
                            f"(nothing matches {', '.join(map(repr, lacking))})")
        for m in matches:
            m["split"] = split
            logger.info("%s: class folder %s/%s is class %r (%s)", root, folder.name, m["folder"],
                        m["class"], m["rule"])
        files: list[Path] = []
        labels: list[int] = []
        for name, index in zip(classes, order):
            these = _images_in(folder / name, root, skip_bad=skip_bad, skipped=skipped)
            files += these
            labels += [index] * len(these)
        out[split] = FolderSplit(files, labels, folder, matches)
    for split, (files, folder) in unlabelled.items():
        out[split] = FolderSplit(files, None, folder)
    out = {s: out[s] for s in SPLITS if s in out}
    _check_conflicting_labels(out, list(reference))
    for index, name in enumerate(reference):
        if not any(fs.labels is not None and index in fs.labels for fs in out.values()):
            raise DataError(f"{root}: class folder {name!r} holds no images in any split; "
                            "remove it or add its images")
    for split, fs in out.items():
        if not fs.files:
            raise DataError(f"{fs.folder or root / split}: no images ({', '.join(IMAGE_SUFFIXES)}) "
                            "in this split")
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


class FolderSource(FileSource):
    """``data.kind = "folder"``: ``ROOT/{train,val,test}/CLASS/*.png``."""

    kind = "folder"
    folder_form = "an image folder ({train,val,test}/CLASS/*.png)"

    def claims(self, path: Path) -> bool:
        return path.is_dir() and is_image_folder(path)

    def splits(self, source: str) -> set[str]:
        return set(split_folders(Path(source)))

    def file_split(self, source: Path, split: str, data_cfg: DataConfig,
                   ) -> tuple[list[Path], list[int] | None, list[str]]:
        scanned, names = scan(source, skip_bad=True, class_map=data_cfg.class_map)
        use = first_present(split, scanned)
        return scanned[use].files, scanned[use].labels, names

    def load(self, source: str, data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *,
             image_size: int, splits: tuple[str, ...]) -> Dataset:
        d, p = data_cfg, preprocess_cfg
        root = Path(source)
        skipped: list[dict] = []
        scanned, found = scan(root, skip_bad=d.skip_bad_images, skipped=skipped, class_map=d.class_map)
        require_splits(splits, set(scanned), str(root))
        names, task = names_and_task(d, found, where=str(root))
        check_classes(names, str(root), labelled=any(scanned[s].labels is not None for s in splits))
        sizes: set = set()
        channels: set = set()
        colour = source_modality({s: fs.files for s, fs in scanned.items()}, where=str(root)).colour
        out = {s: split_from_files(s, scanned[s].files, scanned[s].labels, root=root, d=d, p=p,
                                   image_size=image_size, skipped=skipped, sizes=sizes,
                                   channels=channels, colour=colour)
               for s in splits}
        ds = finish_files(root.name, root, self.kind, names, task, out, fingerprint(root, scanned),
                          skipped, sizes, channels)
        ds.class_matches = [m for fs in scanned.values() for m in fs.matches]
        return ds
