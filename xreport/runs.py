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
import os
import pickle
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import CheckpointError, RunError

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
    """The files one evaluation writes: predictions, metrics, CAM overlays, viewer data."""

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


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)
os.umask(_UMASK)

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; reports are for sharing
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
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
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / ".lock"
    fh = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{folder}: another xreport process is writing this {what}; "
                           "wait for it to finish") from None
        yield
    finally:
        fh.close()


# ---------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, *, state_dict: dict[str, torch.Tensor],
                    meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write a checkpoint that loads with ``weights_only=True``.

    ``meta`` must hold only JSON-able values; it is stored as a JSON string so that the
    file never needs a pickle of arbitrary objects. ``extra`` holds tensors and plain
    containers (optimiser state, RNG states) for resuming.
    """
    payload = {"format": CHECKPOINT_FORMAT, "meta_json": json.dumps(meta, ensure_ascii=False),
               "state_dict": state_dict}
    if extra:
        payload["extra"] = extra
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's long weights_only message that names the refused object."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "unsupported" in line.lower() or "WeightsUnpickler" in line]
    return ((named or lines or ["unsafe content"])[0])[:160]


@dataclass
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    extra: dict[str, Any]


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True``: a pickled payload is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    # torch.save writes a zip archive; anything else (text, an old pickle) is not ours.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a checkpoint (not a torch.save zip archive; "
                              "empty, truncated or another kind of file)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors "
                              f"({_unpickling_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in many ways inside torch
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
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
