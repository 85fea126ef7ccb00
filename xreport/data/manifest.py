"""CSV manifests: one CSV per split (``train.csv``, ``val.csv``, ``test.csv``) or one CSV.

Columns: a path column (``path|filepath|img|image``, any case) and a ``label`` column (a
class index or a class name); an optional ``class_name`` column names the indices. Paths
are relative to the CSV and must stay inside its folder. A CSV without a label column
(or with every label empty) is an unlabelled split: predictions only.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig, PreprocessConfig
from ..errors import DataError
from ..limits import check_class_count
from ..runs import sha256_file
from .base import SPLITS, Dataset, Split, real_path
from .files import FileSource, finish_files, first_present, source_modality, split_from_files
from .sources import check_classes, names_and_task, require_splits

logger = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "filepath", "img", "image")
LABEL_COLUMN = "label"
CLASS_NAME_COLUMN = "class_name"


@dataclass
class ManifestRow:
    line: int             # line number in the CSV (1 = header)
    path: Path            # resolved file path
    label: str | None     # as written (stripped), None when empty
    class_name: str | None


@dataclass
class Manifest:
    csv_path: Path
    rows: list[ManifestRow]
    has_labels: bool


def find_csvs(source: Path) -> dict[str, Path]:
    """Split -> CSV for a folder of per-split CSVs or one CSV (named by its stem, else test)."""
    if source.is_file():
        split = source.stem.lower() if source.stem.lower() in SPLITS else "test"
        return {split: source}
    found = {s: source / f"{s}.csv" for s in SPLITS if (source / f"{s}.csv").is_file()}
    if not found:
        raise DataError(f"{source}: no train.csv, val.csv or test.csv in this folder")
    return found


def is_manifest_folder(folder: Path) -> bool:
    return any((folder / f"{s}.csv").is_file() for s in SPLITS)


def read_manifest(csv_path: Path) -> Manifest:
    """Parse and check one CSV (BOM and blank lines are fine; paths must stay inside)."""
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            lines = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not UTF-8 text") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read CSV ({exc})") from None
    numbered = [(i + 1, row) for i, row in enumerate(lines) if any(cell.strip() for cell in row)]
    if not numbered:
        raise DataError(f"{csv_path}: empty CSV; expected a header with a path column and a label column")
    _header_line, header = numbered[0]
    # Quoted header cells may hold line breaks; the message must stay on one line.
    columns = [" ".join(c.split()).lower() for c in header]
    path_col = next((columns.index(c) for c in PATH_COLUMNS if c in columns), None)
    if path_col is None:
        raise DataError(f"{csv_path}: no path column; found {', '.join(columns) or 'none'}, "
                        f"expected one of {', '.join(PATH_COLUMNS)}")
    label_col = columns.index(LABEL_COLUMN) if LABEL_COLUMN in columns else None
    name_col = columns.index(CLASS_NAME_COLUMN) if CLASS_NAME_COLUMN in columns else None
    root = csv_path.parent.resolve()
    rows: list[ManifestRow] = []
    for line, row in numbered[1:]:
        cell = lambda col: (row[col].strip() or None) if col is not None and col < len(row) else None  # noqa: E731
        raw_path = cell(path_col)
        if raw_path is None:
            raise DataError(f"{csv_path}: line {line} has an empty path")
        rows.append(ManifestRow(line, _inside(root, raw_path, csv_path, line), cell(label_col), cell(name_col)))
    if not rows:
        raise DataError(f"{csv_path}: no rows after the header")
    has_labels = label_col is not None and any(r.label is not None for r in rows)
    if has_labels:
        missing = next((r for r in rows if r.label is None), None)
        if missing is not None:
            raise DataError(f"{csv_path}: line {missing.line} has no label (other rows have one)")
    return Manifest(csv_path, rows, has_labels)


def _inside(root: Path, raw: str, csv_path: Path, line: int) -> Path:
    """Resolve a path relative to the CSV's folder; refuse one that leaves it."""
    if "\x00" in raw:
        raise DataError(f"{csv_path}: line {line}: path {raw!r} holds a NUL character")
    target = real_path(root / raw)
    if not target.is_relative_to(root):
        raise DataError(f"{csv_path}: line {line}: path {raw!r} points outside the data folder {root}")
    return target


def class_names(manifests: list[Manifest], *, configured: tuple[str, ...]) -> list[str]:
    """Class names from the config, else the class_name column, else the labels."""
    labels = [r.label for m in manifests if m.has_labels for r in m.rows]
    if configured:
        return list(configured)
    if not labels:
        return []
    ints = [_as_int(v) for v in labels]
    if all(i is not None for i in ints):
        named: dict[int, str] = {}
        for m in manifests:
            for r in m.rows:
                if m.has_labels and r.class_name is not None:
                    previous = named.setdefault(_as_int(r.label), r.class_name)  # type: ignore[arg-type]
                    if previous != r.class_name:
                        raise DataError(f"{m.csv_path}: line {r.line}: label {r.label} is named "
                                        f"{r.class_name!r} here and {previous!r} elsewhere")
        clash = sorted({n for n in named.values() if list(named.values()).count(n) > 1})
        if clash:
            raise DataError(f"{manifests[0].csv_path}: class_name {clash[0]!r} names more than one "
                            "label; each class needs its own name")
        count = max(max(i for i in ints if i is not None) + 1, max(named, default=-1) + 1)
        check_class_count(count, where=str(manifests[0].csv_path), what=f"the highest label, {count - 1},")
        _check_no_gaps(manifests, set(ints) | set(named), count)  # type: ignore[arg-type]
        return [named.get(i, f"class_{i}") for i in range(count)]
    if any(i is not None for i in ints):
        m, r = next((m, r) for m in manifests if m.has_labels for r in m.rows if _as_int(r.label) is None)
        raise DataError(f"{m.csv_path}: line {r.line}: label {r.label!r} is not a class index but other "
                        "labels are: the labels mix class indices and class names; use one or the other")
    return sorted(set(labels))  # type: ignore[arg-type]


def _check_no_gaps(manifests: list[Manifest], used: set[int], count: int) -> None:
    """Labels 0, 1, 7 would make classes 2..6 with no image at all: almost surely a typo."""
    unused = [i for i in range(count) if i not in used]
    if not unused:
        return
    top = max(used)
    m, r = next((m, r) for m in manifests if m.has_labels for r in m.rows if _as_int(r.label) == top)
    raise DataError(f"{m.csv_path}: line {r.line}: label {top} leaves class(es) "
                    f"{', '.join(map(str, unused[:5]))} without any image; labels must be 0..K-1 "
                    "(or name every class in a class_name column)")


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def encode_labels(manifest: Manifest, names: list[str]) -> list[int] | None:
    """Class indices for a manifest's rows (by index or by name)."""
    if not manifest.has_labels:
        return None
    lookup = {n: i for i, n in enumerate(names)}
    out: list[int] = []
    for r in manifest.rows:
        index = _as_int(r.label)
        if index is None:
            index = lookup.get(r.label)  # type: ignore[arg-type]
        if index is None or not 0 <= index < len(names):
            raise DataError(f"{manifest.csv_path}: line {r.line}: label {r.label!r} is not a class; "
                            f"valid: 0..{len(names) - 1} or {', '.join(names)}")
        out.append(index)
    return out


def check_conflicting_labels(manifests: list[Manifest], names: list[str]) -> None:
    """The same image listed twice (in one CSV or across splits) with different labels."""
    seen: dict[Path, tuple[Manifest, ManifestRow, int]] = {}
    for m in manifests:
        labels = encode_labels(m, names) if names else None
        if labels is None:
            continue
        for row, label in zip(m.rows, labels):
            first = seen.setdefault(row.path, (m, row, label))
            if first[2] != label:
                fm, fr, fl = first
                raise DataError(f"{m.csv_path}: line {row.line}: {row.path.name} is labelled "
                                f"{names[label]!r} here but {names[fl]!r} at {fm.csv_path.name} line "
                                f"{fr.line}; one image has one label")


def fingerprint(manifests: list[Manifest]) -> str:
    """sha256 over the CSVs and the sorted (path, sha256) of every file they list."""
    digest = hashlib.sha256()
    root = manifests[0].csv_path.parent.resolve()
    for m in sorted(manifests, key=lambda m: m.csv_path.name):
        digest.update(f"{m.csv_path.name}\0{sha256_file(m.csv_path)}\n".encode("utf-8"))
    files = sorted({r.path for m in manifests for r in m.rows})
    for path in files:
        sha = sha256_file(path) if path.is_file() else "missing"
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        digest.update(f"{rel}\0{sha}\n".encode("utf-8"))
    return digest.hexdigest()


class ManifestSource(FileSource):
    """``data.kind = "csv"``: a folder of ``train.csv``/``val.csv``/``test.csv``, or one CSV."""

    kind = "csv"
    file_form = "a .csv manifest"
    folder_form = "a folder of train.csv/val.csv/test.csv"
    suffixes = (".csv",)
    # A folder holding train.csv is a manifest even when it has split folders too.
    priority = 1

    def claims(self, path: Path) -> bool:
        return (path.is_file() and path.suffix.lower() == ".csv") or is_manifest_folder(path)

    def splits(self, source: str) -> set[str]:
        try:
            return set(find_csvs(Path(source)))
        except DataError:
            return set(SPLITS)

    def file_split(self, source: Path, split: str, data_cfg: DataConfig,
                   ) -> tuple[list[Path], list[int] | None, list[str]]:
        csvs = find_csvs(source)
        manifests = {s: read_manifest(p) for s, p in csvs.items()}
        names = class_names(list(manifests.values()), configured=data_cfg.class_names)
        use = first_present(split, manifests)
        return [r.path for r in manifests[use].rows], encode_labels(manifests[use], names), names

    def load(self, source: str, data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *,
             image_size: int, splits: tuple[str, ...]) -> Dataset:
        d, p = data_cfg, preprocess_cfg
        src = Path(source)
        csvs = find_csvs(src)
        require_splits(splits, set(csvs), str(src))
        manifests = {s: read_manifest(path) for s, path in csvs.items()}
        found = class_names(list(manifests.values()), configured=d.class_names)
        names, task = names_and_task(d, found, where=str(src))
        check_conflicting_labels(list(manifests.values()), names)
        labelled = any(manifests[s].has_labels for s in splits)
        check_classes(names, str(src), labelled=labelled)
        if not names:
            logger.warning("%s: no labels and no data.class_names; class names must come from the checkpoint", src)
        root = next(iter(csvs.values())).parent
        skipped: list[dict] = []
        sizes: set = set()
        channels: set = set()
        out: dict[str, Split] = {}
        colour = source_modality({s: [r.path for r in m.rows] for s, m in manifests.items()},
                                 where=str(src)).colour
        for s in splits:
            m = manifests[s]
            out[s] = split_from_files(s, [r.path for r in m.rows], encode_labels(m, names), root=root,
                                      d=d, p=p, image_size=image_size, skipped=skipped, sizes=sizes,
                                      channels=channels, colour=colour)
        name = src.name if src.is_dir() else src.stem
        return finish_files(name, src, self.kind, names, task, out, fingerprint(list(manifests.values())),
                            skipped, sizes, channels)
