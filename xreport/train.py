"""The training loop: writes ``checkpoints/NAME/`` (config, best/last checkpoints, history, log).

Images stay in memory as uint8; each batch is gathered by index, moved to the device,
augmented and normalised there as one tensor, so no DataLoader workers are needed.
Randomness: the model is initialised from ``train.seed``; each epoch's shuffle and
augmentation generators are derived from (seed, epoch, rank), and the global RNG states
(dropout) are saved in ``last.pt``, so ``resume`` reproduces an uninterrupted run exactly.
"""
from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, NotRequired, TypedDict, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import artifacts, metrics, runs
from .artifacts import HISTORY_COLUMNS  # noqa: F401  (re-exported: the columns train writes)
from .config import RunConfig, TrainConfig, dotted_items, to_dict, to_toml
from .data.augment import mix_batch, mix_loss
from .data.base import Dataset, Split
from .device import autocast as device_autocast
from .device import (resolve_channels_last, resolve_device, torch_threads,
                     resolve_precision)
from .errors import CheckpointError, ConfigError, DataError, OutputError, RunError, TrainingError
from .models import (build_model, count_parameters, load_weights, resolve_head,
                     resolve_small_stem, set_train_mode)

logger = logging.getLogger(__name__)

# Keys that may differ between a run and its resume (they do not change the maths of the
# epochs already done).
RESUMABLE_CHANGES = ("train.epochs", "train.early_stopping", "train.max_steps", "train.device",
                     "train.num_threads")
_RUN_FILES = ("config.toml", "best.pt", "last.pt", "history.csv", "class_distribution.json",
              "train.log")


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    seconds: float
    selected_by: str = "val_auc"        # the metric that chose best_epoch (see _State)


@dataclass(frozen=True)
class EpochEnd:
    """What an ``on_epoch_end`` hook sees, after the epoch's files are written."""

    row: dict[str, float]                       # the history row just recorded
    trained: nn.Module                          # the weights the optimiser moves
    validated: nn.Module                        # the model the row's val figures are of (the
                                                # weight average once it exists, else ``trained``)
    validate: Callable[[nn.Module], dict[str, float]]   # any model's val row, by the same pass


FALLBACK_METRIC = "val_loss"            # defined whenever val holds an image


@dataclass
class _Setup:
    """Everything fixed for the whole run."""

    device: torch.device
    precision: str              # fp32 | bf16 | fp16
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> AbstractContextManager:
        return device_autocast(self.device, self.precision)


@dataclass
class _State:
    """What changes from epoch to epoch and is saved in ``last.pt`` for resuming."""

    epoch: int = 0                      # epochs completed
    global_step: int = 0
    best_score: float = math.nan
    best_epoch: int = 0
    bad_epochs: int = 0                 # epochs since the selection metric last improved
    stopped: str = ""                   # why training ended early ("" while it goes on)
    history: list[dict[str, float]] = field(default_factory=list)
    # The metric that chooses best.pt: train.select_metric, or FALLBACK_METRIC once that was
    # NaN (a val split lacking a class has no AUC); never a NaN that "wins" by default.
    select_metric: str = ""


# ---------------------------------------------------------------- device and precision

# ---------------------------------------------------------------- distributed

def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes, if any."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _local_device(device: torch.device, world_size: int) -> torch.device:
    if device.type == "cuda" and world_size > 1 and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def _all_reduce(t: torch.Tensor, setup: _Setup) -> torch.Tensor:
    if setup.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


# ---------------------------------------------------------------- randomness

def _epoch_generator(seed: int, epoch: int, stream: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one (epoch, purpose, rank): resuming needs no generator state."""
    mixed = (seed * 1_000_003 + epoch * 9_176 + stream * 101 + rank * 7_919) % (2 ** 63)
    return torch.Generator().manual_seed(mixed)


class _NumpyRng(TypedDict):
    keys: torch.Tensor
    pos: int
    has_gauss: int
    cached_gaussian: float


class _PythonRng(TypedDict):
    version: int
    internal: list[int]
    gauss: float | None


class RngState(TypedDict):
    """Global RNG states as tensors and plain lists (weights_only-loadable), in last.pt."""

    torch: torch.Tensor
    numpy: _NumpyRng
    python: _PythonRng
    cuda: NotRequired[list[torch.Tensor]]


def _rng_state() -> RngState:
    """Global RNG states as tensors and plain lists (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=True)
    if not isinstance(np_state, tuple):   # legacy=True gives the tuple for numpy's MT19937
        raise TypeError(f"numpy's global generator is not MT19937 ({type(np_state).__name__})")
    py_state = random.getstate()
    state: RngState = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "internal": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: RngState) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


# ---------------------------------------------------------------- batches

def epoch_indices(n: int, *, generator: torch.Generator,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """One epoch's order: a permutation, or n draws with replacement by ``weights``."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights.double(), n, replacement=True, generator=generator)


def shard(indices: torch.Tensor, *, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share; padded by wrapping so every rank takes the same number of steps."""
    if world_size == 1:
        return indices
    per_rank = math.ceil(len(indices) / world_size)
    padded = torch.cat([indices, indices[: per_rank * world_size - len(indices)]])
    return padded[rank::world_size]


def batches(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Chunks of ``batch_size``; a trailing single image is dropped (BatchNorm needs two)."""
    chunks = list(torch.split(indices, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks.pop()
    return chunks


def _to_device(images_u8: torch.Tensor, setup: _Setup) -> torch.Tensor:
    if setup.device.type == "cuda":
        return images_u8.pin_memory().to(setup.device, non_blocking=True)
    return images_u8


# ---------------------------------------------------------------- metrics

def tally(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts as float64 on the tensors' device, so DDP can all-reduce
    them; ``metrics.selection_scores`` turns them into the recorded figures."""
    flat = target.long() * num_classes + pred.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).double()


def _better(score: float, best: float, metric: str) -> bool:
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    return score < best if metric == "val_loss" else score > best


# ---------------------------------------------------------------- schedule and optimiser

def make_optimizer(params: Sequence[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ConfigError(f"train.optimizer {cfg.optimizer!r} is not one of adamw, adam, sgd")


def lr_factor(step: int, *, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based), updated per step."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // max(1, cfg.step_size))
    return 1.0


# ---------------------------------------------------------------- losses

LOSSES = ("cross_entropy", "soft_ordinal")


def resolve_loss(setting: str, task: str) -> str:
    """``auto``: soft ordinal labels for graded (ordinal) tasks, plain cross-entropy otherwise."""
    if setting == "auto":
        return "soft_ordinal" if task == "ordinal" else "cross_entropy"
    if setting in LOSSES:
        return setting
    raise ConfigError(f"train.loss {setting!r} is not one of auto, {', '.join(LOSSES)}")


def soft_ordinal_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Soft labels for grades 0..K-1 (SORD, Diaz & Marathe 2019): ``q_k ~ exp(-(k - y)^2)``.

    A neighbouring grade gets e^-1 of the true grade's weight and one two grades away e^-4,
    so mistaking grade 2 for 3 costs less than for 0; the true grade keeps the largest mass,
    so argmax predictions still name the most likely grade.
    """
    grades = torch.arange(num_classes, device=labels.device, dtype=torch.float32)
    return torch.softmax(-(grades[None, :] - labels[:, None].float()) ** 2, dim=1)


class SoftOrdinalLoss(nn.Module):
    """Cross-entropy against ``soft_ordinal_targets``; weights and smoothing as in CrossEntropyLoss."""

    def __init__(self, num_classes: int, *, weight: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.weight: torch.Tensor | None   # a buffer: it moves with the module
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = soft_ordinal_targets(labels, self.num_classes)
        return F.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.label_smoothing)


def make_criterion(loss: str, *, num_classes: int, weight: torch.Tensor | None,
                   label_smoothing: float) -> nn.Module:
    if loss == "soft_ordinal":
        return SoftOrdinalLoss(num_classes, weight=weight, label_smoothing=label_smoothing)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


# ---------------------------------------------------------------- the run folder

def _prepare_run_dir(paths: runs.RunPaths, *, resume: bool, overwrite: bool) -> None:
    run_dir = paths.run_dir
    if resume:
        if not paths.last.is_file():
            raise RunError(f"{paths.last}: nothing to resume (no last.pt); train without --resume")
        return
    existing = [name for name in _RUN_FILES if (run_dir / name).exists()]
    # A folder without a checkpoint is a run that failed before its first epoch (bad data,
    # say): the corrected command may reuse it.
    has_checkpoint = paths.best.exists() or paths.last.exists()
    if existing and has_checkpoint and not overwrite:
        raise RunError(f"{run_dir}: a run already exists ({', '.join(existing)}); use --resume "
                       "to continue it, --overwrite to replace it, or another --name")
    for name in existing:
        (run_dir / name).unlink()


@contextmanager
def _log_to_file(path: Path, *, enabled: bool, append: bool) -> Iterator[None]:
    """Send the package's INFO logs to the run's train.log while training."""
    if not enabled:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("xreport")
    old_level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)
        handler.close()


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def _data_meta(config: RunConfig, ds: Dataset) -> dict[str, object]:
    data = asdict(config.data)
    data["dataset"] = "phantom" if ds.kind == "phantom" else str(ds.source)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


def _static_meta(config: RunConfig, ds: Dataset, *, model: nn.Module, small_stem: bool,
                 head: str, loss: str, mean: Sequence[float], std: Sequence[float], setup: _Setup,
                 command: Sequence[str], recipe: Sequence[artifacts.RecipeChoice],
                 averaging: str = "none") -> artifacts.CheckpointMeta:
    """The checkpoint meta that does not change from epoch to epoch (``epoch``,
    ``val_metrics`` and ``created`` are set as each epoch is saved)."""
    from .data import describe_pipeline

    return {
        "arch": config.model.arch, "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
        # The config's translations win over the source's, language by language.
        "class_names_i18n": {lang: list(names) for lang, names in
                             {**ds.class_names_i18n, **config.data.class_names_i18n}.items() if names},
        "task": ds.task, "in_channels": ds.channels, "image_size": config.image_size,
        "small_input_stem": small_stem, "head": head, "dropout": config.model.dropout,
        "loss": loss,
        "pretrained": config.model.pretrained, "freeze_backbone": config.model.freeze_backbone,
        "weights": config.model.weights,
        # What the auto recipe chose and why (xreport.recipe); [] for a plain recipe.
        "recipe": {"name": config.train.recipe, "choices": [c.copy() for c in recipe]},
        "mean": list(mean), "std": list(std), "preprocess": asdict(config.preprocess),
        # data.describe_pipeline's steps; their types are checked as the meta is saved
        "pipeline": cast(list[artifacts.PipelineStep], describe_pipeline(config.preprocess, config.image_size)),
        "data": _data_meta(config, ds), "data_fingerprint": ds.fingerprint,
        "selected_by": config.train.select_metric, "seed": config.train.seed,
        "weight_averaging": averaging, "select_smoothing": config.train.select_smoothing,
        "config": to_dict(config), "versions": artifacts.runtime_versions(), "params": count_parameters(model),
        "device": setup.device.type, "precision": setup.precision,
        "channels_last": setup.channels_last, "world_size": setup.world_size,
        "command": list(command),
        "epoch": None, "val_metrics": {}, "created": None,
    }


# ---------------------------------------------------------------- one epoch

@dataclass
class _Loop:
    """The pieces one epoch needs."""

    config: RunConfig
    setup: _Setup
    model: nn.Module               # possibly DDP-wrapped
    bare: nn.Module                # the model itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    loss: str                      # train.LOSSES: what criterion computes
    train: Split
    val: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    sample_weights: torch.Tensor | None
    averaging: str = "none"          # none | ema | swa (resolve_weight_averaging)
    averaged: torch.optim.swa_utils.AveragedModel | None = None
    swa_start: int = 0               # swa: the first epoch whose weights enter the average

    def selected_model(self, epoch: int) -> nn.Module:
        """The model validated and saved as best.pt after ``epoch``: the averaged weights
        once they exist, else the trained ones."""
        if self.averaged is not None and (self.averaging == "ema" or epoch >= self.swa_start):
            return self.averaged.module
        return self.bare

    def prepare(self, images_u8: torch.Tensor, *, augment_generator: torch.Generator | None) -> torch.Tensor:
        from .data import augment_batch, normalize_batch

        x = _to_device(images_u8, self.setup).float().div_(255.0)
        if augment_generator is not None:
            x = augment_batch(x, self.config.augment, generator=augment_generator)
        x = normalize_batch(x, self.mean, self.std)
        if self.setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _train_epoch(loop: _Loop, state: _State, *, epoch: int) -> dict[str, float]:
    cfg, setup = loop.config.train, loop.setup
    set_train_mode(loop.model, freeze_backbone=loop.config.model.freeze_backbone)
    order = epoch_indices(len(loop.train), generator=_epoch_generator(cfg.seed, epoch, 0),
                          weights=loop.sample_weights)
    order = shard(order, rank=setup.rank, world_size=setup.world_size)
    aug_gen = _epoch_generator(cfg.seed, epoch, 1, setup.rank)
    mix_gen = _epoch_generator(cfg.seed, epoch, 2, setup.rank)   # its own stream: mixing on or
                                                                 # off leaves the augmentation as it was
    chunks = batches(order, cfg.batch_size)
    if cfg.max_steps > 0:
        chunks = chunks[: max(0, cfg.max_steps - state.global_step)]
    lr = loop.optimizer.param_groups[0]["lr"]   # the lr of the epoch's last step
    loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
    cm = torch.zeros(loop.num_classes, loop.num_classes, dtype=torch.float64, device=setup.device)
    bar = tqdm(chunks, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
               disable=not (setup.is_main and sys.stderr.isatty()))
    for step_in_epoch, idx in enumerate(bar, start=1):
        x = loop.prepare(loop.train.images[idx], augment_generator=aug_gen)
        y = _to_device(loop.train.known_labels()[idx], setup)
        mix = mix_batch(x, loop.config.augment, generator=mix_gen)
        with setup.autocast():
            logits = loop.model(x if mix is None else mix.images)
            loss = mix_loss(loop.criterion, logits.float(), y, mix)
        if not torch.isfinite(loss):
            kept = (f"the checkpoints of epoch {state.epoch} were kept" if state.epoch
                    else "no checkpoint was written")
            raise TrainingError(
                f"loss became {float(loss.detach())} at epoch {epoch}, step {step_in_epoch} "
                f"(optimiser step {state.global_step + 1}); {kept}; lower train.lr "
                f"(now {cfg.lr}) or use fp32")
        lr = loop.optimizer.param_groups[0]["lr"]
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loop.scheduler.step()
        if loop.averaging == "ema" and loop.averaged is not None:
            loop.averaged.update_parameters(loop.bare)
        state.global_step += 1
        loss_sum += loss.detach().double() * len(idx)
        cm += tally(logits.detach().argmax(1), y if mix is None else mix.dominant_labels(y), loop.num_classes)
    bar.close()
    totals = _all_reduce(torch.cat([loss_sum.view(1), cm.flatten()]), setup).cpu()
    cm_all = totals[1:].view(loop.num_classes, loop.num_classes)
    seen = float(cm_all.sum())
    scores = metrics.selection_scores(cm_all.numpy())
    return {"train_loss": float(totals[0]) / seen if seen else math.nan,
            "train_acc": scores["accuracy"], "train_f1": scores["macro_f1"], "lr": lr}


def _sync_buffers(model: nn.Module, setup: _Setup) -> None:
    """Give every rank rank 0's BatchNorm running stats (DDP leaves each rank its own after
    the last step), so all ranks validate, select and stop on the same model rank 0 saves."""
    if setup.world_size > 1:
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _gather_logits(logits: torch.Tensor, idx: torch.Tensor, n: int, setup: _Setup) -> torch.Tensor:
    """All ranks' logits of their (equal-sized, wrapped) shards, back in split order."""
    import torch.distributed as dist

    pieces = [torch.empty_like(logits) for _ in range(setup.world_size)]
    positions = [torch.empty_like(idx) for _ in range(setup.world_size)]
    dist.all_gather(pieces, logits)
    dist.all_gather(positions, idx)
    out = torch.empty(n, logits.shape[1], dtype=logits.dtype, device=logits.device)
    out[torch.cat(positions)] = torch.cat(pieces)   # padded duplicates write the same rows
    return out


@torch.no_grad()
def evaluate_split(loop: _Loop, split: Split, model: nn.Module | None = None) -> dict[str, float]:
    """Loss (plain cross-entropy), accuracy, macro-F1 and AUC of ``model`` (default: the bare
    model) on ``split``.

    Under DDP each rank scores its shard and the logits are gathered, so every rank gets
    the same figures."""
    setup = loop.setup
    model = loop.bare if model is None else model
    _sync_buffers(model, setup)
    model.eval()
    idx = shard(torch.arange(len(split)), rank=setup.rank, world_size=setup.world_size)
    size = loop.config.train.batch_size * 2
    chunks = []
    for start in range(0, len(idx), size):
        x = loop.prepare(split.images[idx[start:start + size]], augment_generator=None)
        with setup.autocast():
            chunks.append(model(x).float())
    logits = torch.cat(chunks)
    if setup.world_size > 1:
        logits = _gather_logits(logits, idx.to(logits.device), len(split), setup)
    logits = logits.cpu()
    labels = split.known_labels()
    loss = F.cross_entropy(logits, labels, reduction="sum").double()
    p = logits.softmax(1)
    scores = metrics.selection_scores(tally(p.argmax(1), labels, loop.num_classes).numpy())
    return {"val_loss": float(loss) / len(split), "val_acc": scores["accuracy"],
            "val_f1": scores["macro_f1"], "val_auc": metrics.selection_auc(labels.numpy(), p.numpy()),
            "val_bacc": scores["balanced_accuracy"], "val_qwk": scores["qwk"]}


# ---------------------------------------------------------------- checkpoints

class ResumeState(TypedDict):
    """What last.pt holds beyond the weights so that --resume continues exactly."""

    optimizer: dict[str, object]
    scheduler: dict[str, object]
    scaler: dict[str, object]
    rng: RngState
    epoch: int
    global_step: int
    best_score: float
    best_epoch: int
    bad_epochs: int
    stopped: str
    history: list[dict[str, float]]
    averaged: NotRequired[dict[str, torch.Tensor]]    # the weight average so far (ema / swa)


def _resume_extra(loop: _Loop, state: _State) -> ResumeState:
    extra: ResumeState = {
        "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict(), "rng": _rng_state(), "epoch": state.epoch,
        "global_step": state.global_step, "best_score": state.best_score,
        "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "stopped": state.stopped, "history": [dict(r) for r in state.history]}
    if loop.averaged is not None:
        extra["averaged"] = {k: v.detach().cpu().clone() for k, v in loop.averaged.state_dict().items()}
    return extra


def _save_epoch(loop: _Loop, state: _State, *, paths: runs.RunPaths, meta: artifacts.CheckpointMeta,
                row: dict[str, float], improved: bool) -> None:
    """best.pt (when improved; the selected model's weights), last.pt (the trained weights,
    for resuming), then history.csv; each write atomic."""
    weights = {k: v.detach().cpu().clone() for k, v in loop.bare.state_dict().items()}
    selected = loop.selected_model(state.epoch)
    chosen = weights if selected is loop.bare else {k: v.detach().cpu().clone()
                                                    for k, v in selected.state_dict().items()}
    epoch_meta = meta.copy()
    epoch_meta["epoch"] = state.epoch
    epoch_meta["val_metrics"] = {"loss": _json_float(row["val_loss"]), "acc": _json_float(row["val_acc"]),
                                 "f1": _json_float(row["val_f1"]), "auc": _json_float(row["val_auc"]),
                                 "bacc": _json_float(row["val_bacc"]), "qwk": _json_float(row["val_qwk"])}
    epoch_meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # Checked as it will be loaded: a writer's mistake fails here, naming the field.
    epoch_meta = artifacts.check_checkpoint_meta(epoch_meta, path=paths.best)
    # All or nothing: a failed write (disk full) leaves the previous epoch's set, which
    # --resume continues; last.pt is renamed last because it marks the epoch complete.
    stored = artifacts.stored_meta(epoch_meta)
    files = {paths.best: runs.checkpoint_bytes(state_dict=chosen, meta=stored)} if improved else {}
    files[paths.history] = artifacts.history_csv(state.history).encode("utf-8")
    files[paths.last] = runs.checkpoint_bytes(state_dict=weights, meta=stored,
                                              extra=_resume_extra(loop, state))
    try:
        runs.write_together(files)
    except OutputError as exc:
        kept = (f"the files of epoch {state.epoch - 1} were kept; run the same command with --resume"
                if state.epoch > 1 else "no epoch was kept; run the same command again")
        raise OutputError(f"epoch {state.epoch} could not be saved: {exc}; {kept}") from None


def _restore(loop: _Loop, paths: runs.RunPaths, config: RunConfig) -> _State:
    ckpt = runs.load_checkpoint(paths.last)
    saved = artifacts.migrate_meta_config(ckpt.meta.get("config", {}), path=paths.last)  # by _static_meta
    _check_resume_config(saved, to_dict(config), path=paths.last)
    _check_resume_world_size(int(cast(int, ckpt.meta.get("world_size", 1))), loop.setup.world_size,
                             path=paths.last)
    needed = ("optimizer", "scheduler", "scaler", "rng", "epoch", "history")
    if any(k not in ckpt.extra for k in needed):
        raise CheckpointError(f"{paths.last}: holds no training state to resume from")
    extra = cast(ResumeState, ckpt.extra)
    load_weights(loop.bare, ckpt.state_dict, path=paths.last)
    if loop.averaged is not None and "averaged" in extra:
        loop.averaged.load_state_dict(extra["averaged"])
    loop.optimizer.load_state_dict(extra["optimizer"])
    loop.scheduler.load_state_dict(extra["scheduler"])
    loop.scaler.load_state_dict(extra["scaler"])
    _set_rng_state(extra["rng"])
    state = _State(epoch=int(extra["epoch"]), global_step=int(extra["global_step"]),
                   best_score=float(extra["best_score"]), best_epoch=int(extra["best_epoch"]),
                   bad_epochs=int(extra["bad_epochs"]), history=[dict(r) for r in extra["history"]])
    # Re-judged with the (possibly changed) epochs / patience / max_steps of this call.
    state.stopped = stop_reason(state, config.train)
    return state


def _check_resume_config(saved: Mapping[str, object], current: Mapping[str, object], *,
                         path: Path) -> None:
    old, new = dotted_items(saved), dotted_items(current)
    changed = sorted(k for k in set(old) | set(new)
                     if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        key = changed[0]
        raise ConfigError(f"{path}: cannot resume with a different {key} "
                          f"({old.get(key)!r} -> {new.get(key)!r}); only "
                          f"{', '.join(RESUMABLE_CHANGES)} may change")
    if old.get("train.epochs") != new.get("train.epochs") and new.get("train.schedule") != "none":
        logger.warning("train.epochs changed from %s to %s on resume: the lr schedule is "
                       "stretched from here on", old.get("train.epochs"), new.get("train.epochs"))


def _check_resume_world_size(saved: int, current: int, *, path: Path) -> None:
    # Another process count changes the images per optimiser step (batch_size x processes) and
    # each rank's share of the shuffled order: the resumed run would be a different experiment.
    if saved != current:
        how = f"torchrun --nproc_per_node {saved}" if saved > 1 else "a single process (no torchrun)"
        raise ConfigError(f"{path}: trained with {saved} process(es), resuming with {current}: the "
                          f"images per step and the data order would change; resume with {how}")


# ---------------------------------------------------------------- the run

def _load_data(config: RunConfig) -> Dataset:
    from .data import load_dataset

    return load_dataset(config.data, config.preprocess, image_size=config.image_size,
                        splits=("train", "val"))


def _check_data(ds: Dataset) -> tuple[Split, Split]:
    for name in ("train", "val"):
        split = ds.splits.get(name)
        if split is None or len(split) == 0:
            raise DataError(f"{ds.source}: the {name} split is missing or empty; "
                            "training needs labelled train and val splits")
        if split.labels is None:
            raise DataError(f"{ds.source}: the {name} split has no labels; training needs them")
    if len(ds.splits["train"]) < 2:
        raise DataError(f"{ds.source}: the train split has {len(ds.splits['train'])} image; training "
                        "needs at least 2 (BatchNorm normalises over the images of a batch)")
    return ds.splits["train"], ds.splits["val"]


def _build_loop(config: RunConfig, ds: Dataset, setup: _Setup, *, small_stem: bool,
                head: str = "linear") -> _Loop:
    from .data import class_weights, resolve_normalization, sampler_weights

    train_split, val_split = _check_data(ds)
    cfg = config.train
    mean, std = resolve_normalization(config.preprocess, train_split)
    _seed_everything(cfg.seed)
    bare = build_model(config.model.arch, num_classes=ds.num_classes, in_channels=ds.channels,
                       small_input_stem=small_stem, dropout=config.model.dropout,
                       pretrained=config.model.pretrained,
                       freeze_backbone=config.model.freeze_backbone,
                       weights=config.model.weights, head=head)
    memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
    bare = bare.to(setup.device).to(memory_format=memory_format)
    model: nn.Module = bare
    if setup.world_size > 1:
        device_ids = [setup.device.index] if setup.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(bare, device_ids=device_ids)
    weight = None
    if cfg.imbalance == "class_weights":
        weight = class_weights(train_split.labels, ds.num_classes).float().to(setup.device)
    sample_weights = (sampler_weights(train_split.labels, ds.num_classes,
                                      power=0.5 if cfg.imbalance == "sqrt_sampler" else 1.0)
                      if cfg.imbalance in ("sampler", "sqrt_sampler") else None)
    optimizer = make_optimizer([p for p in bare.parameters() if p.requires_grad], cfg)
    per_rank = math.ceil(len(train_split) / setup.world_size)
    steps_per_epoch = max(1, len(batches(torch.arange(per_rank), cfg.batch_size)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg=cfg, steps_per_epoch=steps_per_epoch))
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.precision == "fp16")
    loss = resolve_loss(cfg.loss, ds.task)
    criterion = make_criterion(loss, num_classes=ds.num_classes, weight=weight,
                               label_smoothing=cfg.label_smoothing)
    averaging = resolve_weight_averaging(cfg.weight_averaging, n_val=len(val_split))
    averaged = _averaged_model(bare, averaging, steps_per_epoch=steps_per_epoch)
    return _Loop(config=config, setup=setup, model=model, bare=bare, optimizer=optimizer,
                 scheduler=scheduler, scaler=scaler, criterion=criterion, loss=loss, train=train_split,
                 val=val_split, mean=tuple(mean), std=tuple(std), num_classes=ds.num_classes,
                 sample_weights=sample_weights, averaging=averaging, averaged=averaged,
                 swa_start=swa_start_epoch(cfg.epochs))


# ---------------------------------------------------------------- weight averaging

# EMA: the average's horizon is about one epoch of steps, and never under EMA_MIN_STEPS
# (tiny sets take few steps an epoch; a shorter horizon would average almost nothing).
EMA_MIN_STEPS = 20
# SWA: the end-of-epoch weights of the final SWA_SHARE of the epochs are averaged.
SWA_SHARE = 0.25
AVERAGINGS = ("none", "ema", "swa")


def resolve_weight_averaging(setting: str, *, n_val: int) -> str:
    """``auto``: by the size of the val split (recipe.averaging_rule, the one rule)."""
    if setting == "auto":
        from .recipe import averaging_for_val

        return averaging_for_val(n_val)[0]
    if setting in AVERAGINGS:
        return setting
    raise ConfigError(f"train.weight_averaging {setting!r} is not one of auto, {', '.join(AVERAGINGS)}")


def swa_start_epoch(epochs: int) -> int:
    """The first (1-based) epoch whose weights enter an SWA average."""
    return max(1, epochs - max(1, round(SWA_SHARE * epochs)) + 1)


def ema_decay(steps_per_epoch: int) -> float:
    return 1.0 - 1.0 / max(EMA_MIN_STEPS, steps_per_epoch)


def _averaged_model(bare: nn.Module, averaging: str, *,
                    steps_per_epoch: int) -> torch.optim.swa_utils.AveragedModel | None:
    """The running average of ``bare``'s weights and BatchNorm statistics (use_buffers: the
    average is validated as it is, with no extra pass over the train split)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    if averaging == "ema":
        return AveragedModel(bare, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(steps_per_epoch)),
                             use_buffers=True)
    if averaging == "swa":
        return AveragedModel(bare, use_buffers=True)
    return None


def smoothed_score(history: Sequence[Mapping[str, float]], metric: str, window: int) -> float:
    """The mean of ``metric`` over the last ``window`` epochs of ``history`` (NaN epochs left
    out; NaN when all are)."""
    values = [float(r[metric]) for r in history[-max(1, window):] if not math.isnan(float(r[metric]))]
    return sum(values) / len(values) if values else math.nan


def _make_setup(config: RunConfig) -> _Setup:
    device = resolve_device(config.train.device)
    rank, world_size = _init_distributed(device)
    device = _local_device(device, world_size)
    precision = resolve_precision(config.train.precision, device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision 'bf16' is not supported by {torch.cuda.get_device_name(device)}; "
                          "use fp16 or auto")
    return _Setup(device=device, precision=precision,
                  channels_last=resolve_channels_last(config.train.channels_last, device, precision),
                  rank=rank, world_size=world_size)


def stop_reason(state: _State, cfg: TrainConfig) -> str:
    """Why training ends before ``train.epochs`` ("" when it goes on)."""
    if cfg.early_stopping and state.bad_epochs >= cfg.early_stopping:
        return f"early stopping: {cfg.select_metric} did not improve for {state.bad_epochs} epochs"
    if cfg.max_steps and state.global_step >= cfg.max_steps:
        return f"max_steps {cfg.max_steps} reached"
    return ""


def _run_epochs(loop: _Loop, state: _State, *, paths: runs.RunPaths, meta: artifacts.CheckpointMeta,
                on_epoch_end: Callable[[EpochEnd], None] | None) -> None:
    cfg, setup = loop.config.train, loop.setup
    while state.epoch < cfg.epochs and not state.stopped:
        epoch = state.epoch + 1
        started = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch}
        row.update(_train_epoch(loop, state, epoch=epoch))
        if loop.averaging == "swa" and loop.averaged is not None and epoch >= loop.swa_start:
            loop.averaged.update_parameters(loop.bare)
        validated = loop.selected_model(epoch)
        row.update(evaluate_split(loop, loop.val, validated))
        row["seconds"] = round(time.perf_counter() - started, 3)
        state.epoch = epoch
        state.history.append(row)
        metric = _selection_metric(state, row, cfg.select_metric, meta)
        score = smoothed_score(state.history, metric, cfg.select_smoothing)
        improved = _better(score, state.best_score, metric) or state.best_epoch == 0
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
        else:
            state.bad_epochs += 1
        state.stopped = stop_reason(state, cfg)
        logger.info("epoch %d/%d  train loss %.4f acc %.4f f1 %.4f | val loss %.4f acc %.4f "
                    "f1 %.4f auc %.4f | lr %.3g  %.1fs%s", epoch, cfg.epochs, row["train_loss"],
                    row["train_acc"], row["train_f1"], row["val_loss"], row["val_acc"],
                    row["val_f1"], row["val_auc"], row["lr"], row["seconds"],
                    "  (best)" if improved else "")
        if setup.is_main:
            _save_epoch(loop, state, paths=paths, meta=meta, row=row, improved=improved)
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(row=row, trained=loop.bare, validated=validated,
                                  validate=lambda model: evaluate_split(loop, loop.val, model)))
    if state.stopped:
        logger.info("stopped after epoch %d: %s", state.epoch, state.stopped)


def _selection_metric(state: _State, row: dict[str, float], configured: str,
                      meta: artifacts.CheckpointMeta) -> str:
    """The metric choosing best.pt this epoch: ``configured`` until it is NaN, then
    FALLBACK_METRIC for the rest of the run (logged, and recorded as the checkpoint's
    ``selected_by``); the best epoch so far keeps its place, compared by the fallback."""
    metric = state.select_metric or configured
    if metric != FALLBACK_METRIC and math.isnan(row[metric]) and not math.isnan(row[FALLBACK_METRIC]):
        logger.warning("%s is NaN at epoch %d (the val split lacks a class, or predicts one class "
                       "only); best.pt is chosen by %s from now on", metric, int(row["epoch"]),
                       FALLBACK_METRIC)
        metric = FALLBACK_METRIC
        best = next((r for r in state.history if r["epoch"] == state.best_epoch), None)
        state.best_score = best[metric] if best is not None else math.nan
        meta["selected_by"] = metric
        meta["selected_by_reason"] = f"{configured} was NaN at epoch {int(row['epoch'])}"
    state.select_metric = metric
    return metric


@contextmanager
def _main_lock(paths: runs.RunPaths, *, setup: _Setup, resume: bool,
               overwrite: bool) -> Iterator[None]:
    """Rank 0 holds the run folder's lock, then checks / clears the folder under it."""
    if not setup.is_main:
        yield
        return
    with runs.run_lock(paths.run_dir):
        _prepare_run_dir(paths, resume=resume, overwrite=overwrite)
        yield


def train(config: RunConfig, *, checkpoints_root: Path = Path("checkpoints"), resume: bool = False,
          command: Sequence[str] | None = None, overwrite: bool = False,
          dataset: Dataset | None = None,
          on_epoch_end: Callable[[EpochEnd], None] | None = None,
          recipe_choices: Sequence[artifacts.RecipeChoice] = ()) -> TrainResult:
    """Train ``config`` into ``checkpoints_root/config.name/`` and return the summary.

    ``resume`` continues from ``last.pt`` (the next epoch onward) to the same weights and
    history as an uninterrupted run. ``overwrite`` replaces an existing run's files (without
    it, an existing run is an error). ``dataset`` skips ``load_dataset`` (already loaded data);
    ``on_epoch_end`` is called with each epoch's ``EpochEnd`` (its history row, the trained and
    the validated model, a validation pass for any other) after the epoch's files are written.
    ``recipe_choices`` (from ``xreport.recipe.resolve``) go into the checkpoint meta.
    """
    started = time.perf_counter()
    paths = runs.RunPaths(config.name, checkpoints_root=Path(checkpoints_root))
    setup = _make_setup(config)
    with _main_lock(paths, setup=setup, resume=resume, overwrite=overwrite), \
            torch_threads(config.train.num_threads), \
            _log_to_file(paths.train_log, enabled=setup.is_main, append=resume):
        logger.info("training %s on %s (%s%s, %d process%s)", config.name, setup.device,
                    setup.precision, ", channels-last" if setup.channels_last else "",
                    setup.world_size, "es" if setup.world_size > 1 else "")
        ds = dataset if dataset is not None else _load_data(config)
        small_stem = resolve_small_stem(config.model.small_input_stem, config.image_size)
        head = resolve_head(config.model.head, ds.task)
        loop = _build_loop(config, ds, setup, small_stem=small_stem, head=head)
        meta = _static_meta(config, ds, model=loop.bare, small_stem=small_stem, head=head, loss=loop.loss,
                            mean=loop.mean, std=loop.std, setup=setup,
                            command=command if command is not None else sys.argv,
                            recipe=recipe_choices, averaging=loop.averaging)
        state = _restore(loop, paths, config) if resume else _State()
        if resume:
            logger.info("resuming %s after epoch %d", config.name, state.epoch)
        if setup.is_main:
            from .data import class_distribution

            runs.write_text(paths.config, to_toml(config))
            artifacts.save_class_distribution(paths, class_distribution(ds))
        _run_epochs(loop, state, paths=paths, meta=meta, on_epoch_end=on_epoch_end)
        selected_by = state.select_metric or config.train.select_metric
        logger.info("best epoch %d: %s %.4f%s%s", state.best_epoch, selected_by, state.best_score,
                    f" (mean over up to {config.train.select_smoothing} epochs)"
                    if config.train.select_smoothing > 1 else "",
                    f", {loop.averaging} weight average" if loop.averaging != "none" else "")
    return TrainResult(run_dir=paths.run_dir, best_epoch=state.best_epoch,
                       best_score=state.best_score, history=state.history,
                       seconds=time.perf_counter() - started, selected_by=selected_by)


# ---------------------------------------------------------------- one config, several seeds

def _seed_command(command: Sequence[str], *, name: str, seed: int) -> list[str]:
    """The command line that trains this one seed: ``--seeds ...`` replaced by
    ``--name NAME-sK --seed K`` (the run folder's config.toml repeats it too)."""
    out: list[str] = []
    skipping = False
    for arg in command:
        if arg == "--seeds" or arg.startswith("--seeds="):
            skipping = arg == "--seeds"
            continue
        if skipping and not arg.startswith("-"):
            continue
        skipping = False
        out.append(arg)
    cleaned: list[str] = []
    drop_next = False
    for arg in out:          # the base run's --name / --seed give way to this seed's
        if drop_next:
            drop_next = False
            continue
        if arg in ("--name", "--seed"):
            drop_next = True
            continue
        if arg.startswith(("--name=", "--seed=")):
            continue
        cleaned.append(arg)
    return [*cleaned, "--name", name, "--seed", str(seed)]


def train_seeds(config: RunConfig, seeds: Sequence[int], *, checkpoints_root: Path = Path("checkpoints"),
                command: Sequence[str] | None = None, overwrite: bool = False, dataset: Dataset | None = None,
                recipe_choices: Sequence[artifacts.RecipeChoice] = ()) -> list[TrainResult]:
    """Train ``config`` once per seed, one after the other, into ``NAME-s<seed>`` folders
    (``runs.seed_run_names``): each a complete run of its own, its seed in its config.

    Every name is checked before the first run starts: an existing run of one of these names
    is refused (``overwrite`` replaces them), so a half-done set is never mixed with an old one.
    """
    names = runs.seed_run_names(config.name, seeds)
    if not overwrite:
        for name in names:
            paths = runs.RunPaths(name, checkpoints_root=Path(checkpoints_root))
            existing = [f for f in _RUN_FILES if (paths.run_dir / f).exists()]
            if existing:
                raise RunError(f"{paths.run_dir}: a run already exists ({', '.join(existing)}); "
                               "--seeds makes new runs: use another --name, or --overwrite")
    base = list(command) if command is not None else list(sys.argv)
    results: list[TrainResult] = []
    for name, seed in zip(names, seeds):
        logger.info("seed %d: training %s (%d of %d)", seed, name, len(results) + 1, len(names))
        run_config = replace(config, name=name, train=replace(config.train, seed=seed))
        results.append(train(run_config, checkpoints_root=checkpoints_root, overwrite=overwrite,
                             command=_seed_command(base, name=name, seed=seed), dataset=dataset,
                             recipe_choices=recipe_choices))
    return results
