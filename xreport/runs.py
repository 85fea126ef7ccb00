"""The run folder: every path, atomic writes, and checkpoint save/load.

``train`` writes ``checkpoints/NAME/`` and ``build`` reads it; nothing else passes between
the stages. Every write goes to a temporary file in the same folder and is then renamed, so
a killed process never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from .errors import CheckpointError, OutputError, RunError

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = Path("checkpoints")
DEFAULT_REPORTS = Path("reports")


def check_run_name(name: str) -> str:
    """A run name is one folder name: letters (any script), digits, ``-``, ``_``, ``.``."""
    if not name or name in (".", "..") or name.startswith("."):
        raise RunError(f"run name {name!r} is not allowed: it must be a plain folder name")
    for ch in name:
        if ch.isalnum() or ch in "-_.":
            continue
        if unicodedata.category(ch).startswith(("L", "N")):
            continue
        raise RunError(f"run name {name!r} has {ch!r}; use letters, digits, '-', '_' or '.'")
    if len(name.encode("utf-8")) > 200:
        raise RunError(f"run name {name!r} is too long (200 bytes at most)")
    return name


def seed_run_names(name: str, seeds: Sequence[int]) -> list[str]:
    """The run names of one config trained once per seed: ``NAME-s0``, ``NAME-s1``, ...

    ``xreport train --seeds`` writes these folders; a study of them is
    ``xreport build --runs <these names>``. Duplicate or negative seeds are a ``ConfigError``.
    """
    from .errors import ConfigError

    if not seeds:
        raise ConfigError("--seeds is empty; give one or more seeds (e.g. --seeds 0 1 2)")
    seen: set[int] = set()
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"--seeds: {seed!r} is not a whole number >= 0")
        if seed in seen:
            raise ConfigError(f"--seeds lists seed {seed} twice; each seed is one run")
        seen.add(seed)
    return [check_run_name(f"{name}-s{seed}") for seed in seeds]


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run, under its checkpoints and reports folders."""

    name: str
    checkpoints_root: Path = DEFAULT_CHECKPOINTS
    reports_root: Path = DEFAULT_REPORTS

    def __post_init__(self) -> None:
        check_run_name(self.name)

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_root) / self.name

    @property
    def config(self) -> Path:
        return self.run_dir / "config.toml"

    @property
    def best(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def history(self) -> Path:
        return self.run_dir / "history.csv"

    @property
    def train_log(self) -> Path:
        return self.run_dir / "train.log"

    @property
    def class_distribution(self) -> Path:
        return self.run_dir / "class_distribution.json"

    @property
    def report_dir(self) -> Path:
        return Path(self.reports_root) / self.name

    @property
    def predictions(self) -> Path:
        return self.evaluation("test").predictions  # the run's own test evaluation

    @property
    def metrics(self) -> Path:
        return self.evaluation("test").metrics

    @property
    def figures(self) -> Path:
        return self.report_dir / "figures"

    @property
    def cams(self) -> Path:
        return self.evaluation("test").cams

    @property
    def report_html(self) -> Path:
        return self.report_dir / "report.html"

    def report_pdf(self, lang: str) -> Path:
        return self.report_dir / f"report.{lang}.pdf"

    def evaluation(self, split: str = "test") -> "EvaluationPaths":
        """The run's own evaluation of ``split``: the test split at the top of the report folder
        (its predictions.csv is the submission file), any other split in a subfolder of its own
        so that evaluating it never replaces the test files."""
        return EvaluationPaths(self.report_dir if split == "test" else self.report_dir / split, self.name)

    def external(self, data: str | Path) -> "EvaluationPaths":
        """``reports/NAME/external-<data name>/``: an evaluation on other data, kept apart."""
        return EvaluationPaths(self.report_dir / f"external-{data_name(data)}", self.name)


def data_name(data: str | Path) -> str:
    """A folder-safe name for a data source: ``/x/wbc`` -> ``wbc``, ``/x/set.npz`` -> ``set``."""
    path = Path(str(data).rstrip("/\\") or "data")
    stem = path.stem if path.suffix.lower() in (".npz", ".csv") else path.name
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem).strip("._")
    return safe or "data"


@dataclass(frozen=True)
class EvaluationPaths:
    """The files one evaluation writes: predictions, metrics, the CAM gallery's maps, viewer data
    (and the gallery's overlays, which the figures stage draws from its maps)."""

    folder: Path
    name: str = "NAME"  # the run's name, for messages that say what to re-run

    @property
    def predictions(self) -> Path:
        return Path(self.folder) / "predictions.csv"

    @property
    def metrics(self) -> Path:
        return Path(self.folder) / "metrics.json"

    @property
    def cams(self) -> Path:
        return Path(self.folder) / "cams"

    @property
    def viewer(self) -> Path:
        return Path(self.folder) / "viewer.json"

    @property
    def gallery_cams(self) -> Path:
        """The CAM gallery's maps and images (``artifacts.GalleryCams``), drawn by the figures stage."""
        return Path(self.folder) / "cams.npz"


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)
os.umask(_UMASK)

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    A write that fails (disk full, read-only folder, a file where the folder should be)
    leaves ``path`` as it was and raises ``OutputError`` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({_os_reason(exc)})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; reports are for sharing
            os.replace(tmp_path, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot be written ({_os_reason(exc)}); "
                              "the previous file, if any, is unchanged") from None
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()


def _os_reason(exc: OSError) -> str:
    return exc.strerror or " ".join(str(exc).split()) or type(exc).__name__


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def run_lock(folder: str | Path, *, what: str = "run") -> Iterator[None]:
    """Refuse a second writer of the same folder at once (the first keeps going)."""
    import fcntl

    folder = Path(folder)
    lock_path = folder / ".lock"
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+")
    except OSError as exc:
        raise OutputError(f"{folder}: cannot be used as the {what} folder ({_os_reason(exc)})") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{folder}: another xreport process is writing this {what}; "
                           "wait for it to finish") from None
        try:
            yield
        finally:
            # A command that failed before writing anything leaves no folder it created.
            if created:
                with contextlib.suppress(OSError):
                    if [p.name for p in folder.iterdir()] == [".lock"]:
                        lock_path.unlink()
                        folder.rmdir()
    finally:
        fh.close()


def write_together(files: dict[Path, bytes]) -> None:
    """Write several files so that a failure (disk full) changes none of them: each goes to a
    temporary beside its target first, and only when all are written are they renamed, in
    the given order (put the file that marks the set complete last)."""
    temps: list[tuple[Path, Path]] = []
    current = next(iter(files), Path("."))
    try:
        for current, data in files.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{current.name}.", suffix=".tmp", dir=current.parent)
            temps.append((current, Path(tmp_name)))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o666 & ~_UMASK)
        for current, tmp in temps:
            os.replace(tmp, current)
    except OSError as exc:
        raise OutputError(f"{current}: cannot be written ({_os_reason(exc)}); the files written "
                          "before this step are unchanged") from None
    finally:
        for _path, tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()


# ---------------------------------------------------------------- report folders: staged, swapped whole

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


_COMPLETE = ".complete"


def _staging_roots(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.staging-*"))


def recover_staged(folder: Path) -> None:
    """Finish or drop what an interrupted swap left (call with the folder's lock held):
    a complete staged set whose swap was cut between its two renames is moved in; any other
    staging folder is deleted."""
    for root in _staging_roots(folder):
        staged = root / folder.name
        if not folder.exists() and (staged / _COMPLETE).is_file():
            os.replace(staged, folder)
        shutil.rmtree(root, ignore_errors=True)


def _link_tree(src: Path, dst: Path) -> None:
    """dst mirrors src with hard links (cheap; every later write replaces, never edits, a
    file), copies where links are not supported. ``.lock`` is linked too, so the lock held
    on the old folder's inode still guards the swapped-in folder."""
    for item in src.iterdir():
        if item.name == _COMPLETE:
            continue
        target = dst / item.name
        if item.is_dir() and not item.is_symlink():
            target.mkdir()
            _link_tree(item, target)
        elif item.is_file() and not item.is_symlink():
            try:
                os.link(item, target)
            except OSError:
                shutil.copy2(item, target)


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a staging copy of ``folder``; on success swap it in whole, on failure drop it.

    Every file of a report (predictions, metrics, CAMs, figures, HTML, PDF) is written into
    the staging copy, so an interrupted or failed command leaves the previous complete set,
    and a finished one the new complete set, never a mix. Hold the folder's ``run_lock``.
    Reusable for any output folder (external evaluations, comparisons).
    """
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        recover_staged(folder)
        root = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
        staged = root / folder.name
        staged.mkdir()
        if folder.is_dir():
            _link_tree(folder, staged)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot prepare the new files ({_os_reason(exc)})") from None
    try:
        yield staged
        (staged / _COMPLETE).write_bytes(b"")
        _fsync_tree(staged)
        if folder.exists():
            if not _exchange(staged, folder):
                old = root / ".previous"
                os.replace(folder, old)      # a crash here is finished by recover_staged
                os.replace(staged, folder)
        else:
            os.replace(staged, folder)
        with contextlib.suppress(OSError):
            (folder / _COMPLETE).unlink()
        logger.info("wrote %s", folder)   # the files inside were logged under the staging name
    except OSError as exc:
        raise OutputError(f"{folder}: the new files cannot be put in place ({_os_reason(exc)}); "
                          "the previous files are unchanged") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def staged_report(paths: RunPaths) -> Iterator[RunPaths]:
    """``paths`` whose report folder is a staging copy (see ``staged_folder``)."""
    with staged_folder(paths.report_dir) as staged:
        yield RunPaths(paths.name, checkpoints_root=paths.checkpoints_root,
                       reports_root=staged.parent)


# ---------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, *, state_dict: dict[str, torch.Tensor],
                    meta: Mapping[str, object], extra: Mapping[str, object] | None = None) -> None:
    """Write a checkpoint that loads with ``weights_only=True``.

    ``meta`` must hold only JSON-able values; it is stored as a JSON string so that the
    file never needs a pickle of arbitrary objects. ``extra`` holds tensors and plain
    containers (optimiser state, RNG states) for resuming.
    """
    write_bytes(path, checkpoint_bytes(state_dict=state_dict, meta=meta, extra=extra))


def checkpoint_bytes(*, state_dict: dict[str, torch.Tensor], meta: Mapping[str, object],
                     extra: Mapping[str, object] | None = None) -> bytes:
    """The bytes ``save_checkpoint`` writes (for ``write_together``)."""
    payload = {"format": CHECKPOINT_FORMAT, "meta_json": json.dumps(meta, ensure_ascii=False),
               "state_dict": state_dict}
    if extra:
        payload["extra"] = extra
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def unpickling_reason(exc: Exception) -> str:
    """The line of torch's long weights_only message that names the refused object."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "unsupported" in line.lower() or "WeightsUnpickler" in line]
    return ((named or lines or ["unsafe content"])[0])[:160]


def checkpoint_storage_bytes(path: Path) -> int:
    """Bytes of tensor data a checkpoint declares, from its zip directory alone."""
    with zipfile.ZipFile(path) as zf:
        return sum(i.file_size for i in zf.infolist() if "/data/" in i.filename)


def check_checkpoint_storages(path: Path) -> None:
    """torch.save stores tensors uncompressed; a compressed storage is a forged file that
    could inflate to any size, and the declared total must fit in memory."""
    from .limits import human, memory_budget

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(f"{path}: not written by torch.save (member {compressed[0]!r} is "
                              "compressed); refused: it could inflate to any size")
    declared = sum(i.file_size for i in infos)
    if declared > path.stat().st_size:    # stored members cannot hold more than the file
        raise CheckpointError(f"{path}: declares {human(declared)} of tensors in a file of "
                              f"{human(path.stat().st_size)}; refused (a forged or damaged file)")
    if declared > memory_budget():
        raise CheckpointError(f"{path}: declares {human(declared)} of tensors, more than the "
                              f"{human(memory_budget())} this machine allows for one input")


def check_finite(state: dict[str, torch.Tensor], *, path: Path) -> None:
    """NaN or infinite weights would give NaN predictions and a report of nothing."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {key} holds NaN or infinite values (training "
                                  "diverged); use another checkpoint or retrain with a lower train.lr")


@dataclass
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, object]      # checked by artifacts.check_checkpoint_meta before use
    extra: dict[str, object]     # last.pt: optimiser, scheduler, RNG state, history


def load_tensor_file(path: str | Path, *, what: str = "checkpoint",
                     map_location: str | torch.device = "cpu") -> object:
    """The one loader of a torch file from outside (checkpoints, ``model.weights``, the torch
    hub cache, decode-cache entries): a torch.save zip archive whose storages are stored
    uncompressed and declare no more than the memory budget, loaded with ``weights_only=True``
    (a pickled payload is refused, never run) and memory-mapped (tensor data is read only when
    used, after the caller checked the shapes). ``CheckpointError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    # torch.save writes a zip archive; anything else (text, an old pickle) is not ours.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a {what} (not a torch.save zip archive; "
                              "empty, truncated or another kind of file)")
    check_checkpoint_storages(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors "
                              f"({unpickling_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in many ways inside torch
        raise CheckpointError(f"{path}: not a readable {what} (truncated or corrupt: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True``: a pickled payload is refused, never run."""
    path = Path(path)
    payload = load_tensor_file(path, what="checkpoint", map_location=map_location)
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta_json" not in payload:
        raise CheckpointError(f"{path}: not an xreport checkpoint (no state_dict/meta); "
                              "train one with `xreport train`")
    try:
        meta = json.loads(payload["meta_json"])
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupt") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is a {type(meta).__name__}, not a mapping")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: state_dict is not a mapping of parameter names to tensors")
    return Checkpoint(path=path, state_dict=payload["state_dict"], meta=meta,
                      extra=payload.get("extra", {}) or {})
