"""The auto recipe: training defaults chosen from the data a user brings.

``resolve(raw)`` takes a config as given (TOML and command-line keys, not yet defaulted),
looks at the data source once (``data.probe_source``: native image size, colour, train class
counts, task) and fills every key the user left unset by the rules below. A key the user set
is never changed; ``train.recipe = "plain"`` turns all of this off. Each choice comes back
with the rule and the figures it rests on, for ``config.toml``, the checkpoint meta and the
report. The rules are about the data (size, balance, modality, task), never about one data
set: they must hold for sets nobody here has seen.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
import math
import time
from dataclasses import dataclass, field, replace
import torch

from .artifacts import RecipeChoice
from .config import BOUNDS, MAX_IMAGE_SIZE, RunConfig, apply_overrides, from_dict, given_keys
from .data import SourceProbe, check_kind, looks_graded, probe_source
from .device import resolve_device
from .errors import ConfigError, DataError
from .models import build_model, count_flops, resolve_small_stem

logger = logging.getLogger(__name__)

# Nominal training throughput of 2 CPU cores (bf16 autocast), in FLOPs as count_flops counts
# them (a multiply-add is 2): ResNet-18 with the small stem at 28 px trained at ~135 images/s
# and a 10-epoch PneumoniaMNIST run took ~40 s an epoch (BENCHMARKS.md, quiet machine): ~3.3e11.
CPU_TRAIN_FLOPS = 3.0e11
CPU_NOMINAL_CORES = 2
# A GPU's throughput is measured (a few training steps, ``measured_flops``); this nominal
# figure (a data-centre GPU at bf16 on ResNet-sized inputs) is used when measuring fails.
GPU_NOMINAL_FLOPS = 2.0e13
# Native sides at or below this are used as they are (MedMNIST 28/64); larger images are
# resized to the largest of SIZE_LADDER (not above the native side) that fits the budget.
KEEP_NATIVE_UP_TO = 64
SIZE_LADDER = (224, 192, 160, 128, 112, 96, 64)
# Epochs: about TARGET_IMAGE_PASSES images seen in all (small sets get more epochs), within
# [MIN_EPOCHS, MAX_EPOCHS] and then within the time budget.
TARGET_IMAGE_PASSES = 50_000
MIN_EPOCHS, MAX_EPOCHS = 8, 40
# Imbalance: largest/smallest train class. Below BALANCED_BELOW nothing is done; up to
# FULL_BALANCE_UP_TO each class is drawn equally often (each rare image repeats at most that
# many times per epoch); beyond it the draws follow sqrt(class size), which repeats rare
# images less and keeps the prior closer to the data's.
BALANCED_BELOW = 1.5
FULL_BALANCE_UP_TO = 4.0
# Model choice: below SMALL_VAL_BELOW val images, one epoch's val figure is mostly noise (the
# standard error of an accuracy near 0.8 is ~0.045 at 78 images, ~0.018 at 500, against
# differences of a point or two between late epochs), so the weights are averaged (EMA)
# and the checkpoint is selected on the mean of SMOOTH_EPOCHS epochs.
SMALL_VAL_BELOW = 1000
SMOOTH_EPOCHS = 3
SELECT_BY_TASK = {"binary": "val_auc", "multiclass": "val_f1", "ordinal": "val_qwk"}
# Ingredients that helped in the PneumoniaMNIST ablation (BENCHMARKS.md) and are generic:
# warm-up + cosine, label smoothing, mild geometric/intensity augmentation, no dropout.
BASE = {
    "train.lr": 2e-3, "train.weight_decay": 5e-4, "train.optimizer": "adamw",
    "train.schedule": "cosine", "train.warmup_epochs": 1, "train.label_smoothing": 0.05,
    "model.dropout": 0.0, "augment.rotation": 10.0, "augment.translate": 0.06,
    "augment.scale": 0.1, "augment.brightness": 0.1, "augment.contrast": 0.15,
}


@dataclass(frozen=True)
class Choice:
    key: str          # dotted config key
    value: object     # a TOML value for ``key``
    rule: str         # which rule chose it (a message key suffix in the report)
    why: str          # the figures it rests on, in English

    def as_dict(self) -> RecipeChoice:
        return {"key": self.key, "value": self.value, "rule": self.rule, "why": self.why}


@dataclass
class Resolved:
    config: RunConfig
    choices: list[RecipeChoice] = field(default_factory=list)
    probe: SourceProbe | None = None


# ---------------------------------------------------------------- the rules

def imbalance_rule(counts: list[int]) -> Choice:
    present = [c for c in counts if c > 0]
    ratio = max(present) / min(present)
    where = f"train classes {'/'.join(map(str, counts))}: largest/smallest {ratio:.2f}"
    if ratio < BALANCED_BELOW:
        return Choice("train.imbalance", "none", "imbalance", f"{where} < {BALANCED_BELOW}")
    if ratio <= FULL_BALANCE_UP_TO:
        return Choice("train.imbalance", "sampler", "imbalance",
                      f"{where} in [{BALANCED_BELOW}, {FULL_BALANCE_UP_TO}]: balanced sampler")
    return Choice("train.imbalance", "sqrt_sampler", "imbalance",
                  f"{where} > {FULL_BALANCE_UP_TO}: sampler by sqrt(class size)")


def select_rule(task: str) -> Choice:
    return Choice("train.select_metric", SELECT_BY_TASK[task], "select", f"task {task}")


def averaging_for_val(n_val: int) -> tuple[str, int, str]:
    """(train.weight_averaging, train.select_smoothing, why) for a val split of ``n_val``
    images: the one rule, also behind ``train.weight_averaging = "auto"``."""
    if n_val < SMALL_VAL_BELOW:
        se = math.sqrt(0.8 * 0.2 / max(1, n_val))
        return ("ema", SMOOTH_EPOCHS,
                f"{n_val} val images < {SMALL_VAL_BELOW}: one epoch's val figure is noisy (SE of an "
                f"accuracy of 0.8 is {se:.3f}); EMA of the weights, selection on the mean of "
                f"{SMOOTH_EPOCHS} epochs")
    return "none", 1, f"{n_val} val images >= {SMALL_VAL_BELOW}: the epoch's own val figure selects"


def averaging_rule(n_val: int) -> list[Choice]:
    averaging, window, why = averaging_for_val(n_val)
    return [Choice("train.weight_averaging", averaging, "averaging", why),
            Choice("train.select_smoothing", window, "averaging", why)]


def loss_rule(task: str) -> Choice:
    if task == "ordinal":
        return Choice("train.loss", "soft_ordinal", "loss",
                      "task ordinal: soft labels, a near grade costs less than a far one")
    return Choice("train.loss", "cross_entropy", "loss", f"task {task}")


def batch_rule(n_train: int) -> Choice:
    # At least ~16 steps an epoch: BatchNorm and the schedule need some steps on tiny sets.
    size = 128 if n_train >= 2048 else 64 if n_train >= 512 else 32
    return Choice("train.batch_size", size, "batch", f"{n_train} train images")


def flip_rule(colour: bool, modality: str = "") -> Choice:
    seen = f"{modality}; " if modality else ""
    if colour:
        return Choice("augment.hflip", 0.5, "flip",
                      f"{seen}colour images (microscopy, skin, fundus): mirror images are valid samples")
    return Choice("augment.hflip", 0.0, "flip",
                  f"{seen}grey images (radiographs, scans): left and right are anatomy, no mirroring")


def task_rule(probe: SourceProbe) -> Choice | None:
    """Say aloud how classes that look like grades are treated, and how to switch."""
    graded = looks_graded(list(probe.class_names))
    if probe.task == "ordinal":
        why = graded or "the source marks its classes as ordered grades"
        return Choice("data.task", "ordinal", "task",
                      f"{why}: trained and selected as ordered grades; set data.task = "
                      "'multiclass' to treat them as unordered classes")
    if probe.task == "multiclass" and graded:
        return Choice("data.task", "ordinal", "task",
                      f"{graded}: trained and selected as ordered grades; set data.task = "
                      "'multiclass' to treat them as unordered classes")
    return None


@dataclass(frozen=True)
class Throughput:
    """Training FLOPs per second of the device the run will use, and where the figure came from."""

    flops: float
    device: str          # "cpu" | "cuda"
    source: str          # "nominal" | "measured"
    detail: str          # e.g. "2 threads", "NVIDIA H100"

    def describe(self) -> str:
        return f"{self.device} ({self.detail}), {self.flops:.1e} FLOP/s {self.source}"


def cpu_throughput(threads: int) -> Throughput:
    """The nominal 2-core figure scaled by the threads torch will use."""
    n = threads if threads > 0 else torch.get_num_threads()
    return Throughput(CPU_TRAIN_FLOPS * n / CPU_NOMINAL_CORES, "cpu", "nominal", f"{n} threads")


def measured_flops(device: torch.device, *, arch: str, channels: int, size: int = 112,
                   batch: int = 64, steps: int = 3) -> float:
    """Training FLOPs per second of ``arch`` on ``device``: ``steps`` timed steps after one
    warm-up step, bf16 autocast where supported (as training runs)."""
    model = build_model(arch, num_classes=2, in_channels=channels,
                        small_input_stem=resolve_small_stem("auto", size)).to(device)
    flops = count_flops(model, size, channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, channels, size, size, device=device)
    y = torch.zeros(batch, dtype=torch.int64, device=device)
    dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 3 * flops * batch * steps / max(time.perf_counter() - started, 1e-9)


def device_throughput(config: RunConfig, *, channels: int) -> Throughput:
    """The throughput of the device ``train.device`` resolves to: a GPU is measured (a
    GPU trains one to two orders of magnitude faster than 2 CPU cores), a CPU is nominal."""
    try:
        device = resolve_device(config.train.device)
    except ConfigError:
        return cpu_throughput(config.train.num_threads)   # training names the bad device itself
    if device.type != "cuda":
        return cpu_throughput(config.train.num_threads)
    name = torch.cuda.get_device_name(device)
    try:
        return Throughput(measured_flops(device, arch=config.model.arch, channels=channels), "cuda",
                          "measured", name)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        logger.warning("could not measure %s (%s); using the nominal GPU figure", name, exc)
        return Throughput(GPU_NOMINAL_FLOPS, "cuda", "nominal", name)


def epoch_cost_s(arch: str, *, size: int, channels: int, n_train: int, n_val: int,
                 num_classes: int, small_stem: str = "auto", flops_per_s: float = CPU_TRAIN_FLOPS) -> float:
    """Seconds of one epoch at ``flops_per_s``: forward+backward of the train split, forward of val."""
    with torch.device("meta"):
        model = build_model(arch, num_classes=num_classes, in_channels=channels,
                            small_input_stem=resolve_small_stem(small_stem, size))
    flops = count_flops(model, size, channels)
    return (3 * n_train + n_val) * flops / flops_per_s


MIN_IMAGE_SIZE = int(BOUNDS["image_size"][0])   # the smallest image_size config.validate accepts


def _ladder_size(ladder: Sequence[int], cost: Callable[[int], float], *, wanted: int,
                 budget_s: float) -> int | None:
    """The largest size of ``ladder`` (largest first) whose ``wanted`` epochs fit the budget;
    failing that, the size with the cheapest epoch (the most epochs). Not simply the smallest
    size: below 96 px the stride-1 stem makes an epoch dearer than at 96-112 px, so the
    smallest size can leave a single epoch where 96 px leaves 7."""
    size = next((s for s in ladder if wanted * cost(s) <= budget_s), None)
    return size if size is not None or not ladder else min(ladder, key=cost)


def size_and_epochs(probe: SourceProbe, *, arch: str, budget_s: float, size: int | None,
                    epochs: int | None, small_stem: str,
                    throughput: Throughput | None = None) -> tuple[int, int, str]:
    """(image_size, epochs, why) within ``budget_s`` on ``throughput`` (default: 2 CPU cores,
    nominal); a given size / epoch count is kept. ``why`` says what the budget cost."""
    speed = throughput or Throughput(CPU_TRAIN_FLOPS, "cpu", "nominal", f"{CPU_NOMINAL_CORES} threads")
    n_train = sum(probe.train_counts)
    channels = 3 if probe.colour else 1
    wanted = epochs or min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_IMAGE_PASSES / n_train)))

    def cost(s: int) -> float:
        return epoch_cost_s(arch, size=s, channels=channels, n_train=n_train, n_val=probe.n_val,
                            num_classes=len(probe.train_counts), small_stem=small_stem,
                            flops_per_s=speed.flops)

    if size is None:
        if probe.native_size <= KEEP_NATIVE_UP_TO:
            size = probe.native_size
        else:
            size = _ladder_size([s for s in SIZE_LADDER if s <= probe.native_size], cost,
                                wanted=wanted, budget_s=budget_s) or probe.native_size
        # Never a size the config would refuse (1x1 images would pick 1): the smallest allowed.
        size = min(max(size, MIN_IMAGE_SIZE), MAX_IMAGE_SIZE)
    per_epoch = cost(size)
    if epochs is None:
        epochs = max(1, min(wanted, int(budget_s // per_epoch)))
    best_size = min(probe.native_size, SIZE_LADDER[0]) if probe.native_size > KEEP_NATIVE_UP_TO \
        else probe.native_size
    cost_note = ", ".join(note for note in (
        f"{size} px instead of {best_size} px" if size < best_size else "",
        f"{epochs} of the {wanted} epochs wanted" if epochs < wanted else "") if note) or "nothing"
    why = (f"native side {probe.native_size} px, {n_train} train images, {arch} at {size} px "
           f"~{per_epoch:.0f} s/epoch on {speed.describe()}, budget {budget_s / 60:.0f} min "
           f"-> {epochs} epochs; the budget cost {cost_note}")
    return size, epochs, why


def choose(probe: SourceProbe, config: RunConfig, given: set[str]) -> list[Choice]:
    """Every rule's choice for the keys not in ``given``."""
    t = config.train
    n_train = sum(probe.train_counts)
    task_choice = task_rule(probe) if "data.task" not in given else None
    if task_choice is not None and probe.task != task_choice.value:
        probe = replace(probe, task=task_choice.value)   # type: ignore[arg-type]  # a Task
    if task_choice is not None:
        logger.info("auto recipe: %s", task_choice.why)
    throughput = device_throughput(config, channels=3 if probe.colour else 1)
    size, epochs, why = size_and_epochs(
        probe, arch=config.model.arch, budget_s=t.time_budget_min * 60,
        size=config.image_size if "image_size" in given else None,
        epochs=t.epochs if "train.epochs" in given else None,
        small_stem=config.model.small_input_stem, throughput=throughput)
    stem = resolve_small_stem(config.model.small_input_stem, size)
    choices = [
        Choice("image_size", size, "size", why),
        Choice("train.epochs", epochs, "epochs", why),
        Choice("model.small_input_stem", "on" if stem else "off", "stem",
               f"input {size} px {'<' if stem else '>='} 96 px: "
               f"{'3x3 stride-1 stem, no max-pool' if stem else 'standard 7x7/2 stem'}"),
        imbalance_rule(probe.train_counts),
        select_rule(probe.task),
        batch_rule(n_train),
        flip_rule(probe.colour, probe.modality),
        Choice("model.head", "linear", "head", f"task {probe.task}: softmax head"),
        loss_rule(probe.task),
        *averaging_rule(probe.n_val),
    ]
    if task_choice is not None:
        choices.insert(0, task_choice)
    choices += [Choice(k, v, "base", "generic ingredients (BENCHMARKS.md ablation)")
                for k, v in BASE.items()]
    return [c for c in choices if c.key not in given]


def resolve(raw: dict[str, object], *, source: str = "config") -> Resolved:
    """The config ``raw`` describes, with the auto recipe's choices filled in; its
    ``data.kind`` is checked against the data-source registry here."""
    config = from_dict(raw, source=source)
    check_kind(config.data, source=source)
    if config.train.recipe == "plain":
        return Resolved(config)
    given = given_keys(raw)
    try:
        probe = probe_source(config.data)
    except DataError as exc:
        # Bad data is reported by the loader's own checks when training starts, with the
        # message users and tests expect; the recipe only steps aside.
        logger.warning("auto recipe skipped, the data could not be probed: %s", exc)
        return Resolved(config)
    choices = choose(probe, config, given)
    resolved = from_dict(apply_overrides(raw, {c.key: c.value for c in choices}), source=source)
    return Resolved(resolved, [c.as_dict() for c in choices], probe)
