"""A run's configuration: frozen dataclasses, read from TOML, overridden from the CLI.

Every default is written out to the run folder's ``config.toml`` so a run can be repeated
from that file alone.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, Mapping

import tomli_w

from .errors import ConfigError, XReportError

# resnet_tiny: a narrow ResNet for fixture checkpoints and smoke tests (kilobytes).
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121", "resnet_tiny")


@dataclass(frozen=True)
class DataConfig:
    # A name ("pneumoniamnist", "phantom") or a path to an .npz, an image folder, or a
    # folder of per-split CSV manifests.
    dataset: str = "phantom"
    # "auto" (from data.dataset) or a registered data source's kind (data.registered_kinds:
    # medmnist, folder, csv, phantom and any source registered with data.register_source);
    # checked against the registry by data.check_kind, which recipe.resolve calls (config
    # sits below data and does not read the registry).
    kind: str = "auto"
    class_names: tuple[str, ...] = ()          # empty: from the data set
    # Optional translations for the report, by language: [data.class_names_i18n] zh-TW = [...]
    class_names_i18n: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Classes renamed onto others (a table old name -> new name): another data set's classes
    # onto the model's at evaluation, and class folders named differently between splits
    # onto the train split's (e.g. {glioma_tumor = "glioma"}). Names that differ only in case,
    # or where one is an unambiguous prefix of the other, match without it
    # (data.base.match_classes, the one rule).
    class_map: dict[str, str] = field(default_factory=dict)
    task: Literal["auto", "binary", "multiclass", "ordinal"] = "auto"
    skip_bad_images: bool = False
    # A class with no training images (it can only be guessed): warn instead of stopping.
    allow_missing_classes: bool = False
    # A source with a labelled train split but no val split: this share of each train class
    # is held out as val (fixed seed, so every run on the data holds out the same images).
    # 0: a missing val split is an error.
    val_fraction: float = 0.1
    # Phantom generator only.
    phantom_size: int = 64
    phantom_train: int = 600
    phantom_val: int = 150
    phantom_test: int = 200
    phantom_classes: int = 2
    phantom_ordinal: bool = False
    phantom_seed: int = 1234


@dataclass(frozen=True)
class PreprocessConfig:
    crop_black_border: bool = False
    equalize: bool = False
    clahe: bool = False
    unsharp: bool = False
    keep_aspect: bool = True          # resize keeping aspect, pad to square
    to_rgb: bool = False              # grey -> 3 channels (needed for ImageNet weights)
    normalize: Literal["dataset", "imagenet", "fixed"] = "dataset"
    mean: tuple[float, ...] = (0.5,)  # used when normalize = "fixed"
    std: tuple[float, ...] = (0.5,)


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5        # probability
    vflip: float = 0.0
    rotation: float = 10.0    # degrees, uniform in [-r, r]
    translate: float = 0.05   # fraction of the side
    scale: float = 0.1        # uniform in [1-s, 1+s]
    brightness: float = 0.1
    contrast: float = 0.1
    blur: float = 0.0         # probability of a 3x3 Gaussian blur
    noise: float = 0.0        # std of Gaussian noise on the [0,1] scale
    # Batch mixing, a regulariser for small sets: each training batch is blended with a
    # shuffled copy of itself at a weight drawn from Beta(alpha, alpha), and the loss mixes
    # the two label sets in the same proportion. mixup blends whole images (Zhang et al.
    # 2018), cutmix pastes a box of the partner image (Yun et al. 2019); alpha 0 = off, and
    # with both on each batch uses one of them, chosen at random.
    mixup: float = 0.0
    cutmix: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet18"
    small_input_stem: Literal["auto", "on", "off"] = "auto"   # auto: on below 96 px
    pretrained: bool = False
    # A torchvision-compatible state_dict file (ImageNet or domain weights) to start from;
    # "" = none. The classifier and, for another channel count, the first conv are adapted.
    weights: str = ""
    # auto: a linear softmax head for every task (an ordinal task gets train.loss soft_ordinal);
    # "ordinal": the cumulative-link head (one score, ordered thresholds; models.OrdinalHead).
    head: Literal["auto", "linear", "ordinal"] = "auto"
    dropout: float = 0.0
    freeze_backbone: bool = False


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = 0
    step_size: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.0
    # auto: soft_ordinal for task "ordinal", else cross_entropy. soft_ordinal trains against
    # soft labels that give neighbouring grades part of the mass (train.soft_ordinal_targets).
    loss: Literal["auto", "cross_entropy", "soft_ordinal"] = "auto"
    # sampler: each class equally likely per draw; sqrt_sampler: draws in proportion to the
    # square root of the class size (a softer balance for heavy imbalance).
    imbalance: Literal["none", "sampler", "sqrt_sampler", "class_weights"] = "none"
    select_metric: Literal["val_auc", "val_acc", "val_f1", "val_bacc", "val_qwk", "val_loss"] = "val_auc"
    # Model choice that survives a small val split: ema = exponential moving average of the
    # weights (every step), swa = equal average of the end-of-epoch weights over the final
    # quarter of the epochs; the averaged model is validated and saved. auto: by val size
    # (recipe.averaging_rule).
    weight_averaging: Literal["auto", "none", "ema", "swa"] = "none"
    # The checkpoint is selected on the mean of select_metric over this many epochs (1: the
    # epoch's own figure), so one lucky epoch on a small val split does not choose it.
    select_smoothing: int = 1
    # auto: keys a TOML / the command line leave unset are chosen from the data (xreport.recipe);
    # plain: the fixed defaults above. Python-built configs are taken as they are.
    recipe: Literal["auto", "plain"] = "auto"
    time_budget_min: float = 10.0     # minutes on the training device the auto recipe sizes epochs and input for
    early_stopping: int = 0           # patience in epochs; 0 = off
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    num_threads: int = 0              # 0: torch's default
    seed: int = 0
    max_steps: int = 0                # 0 = no limit; for smoke tests


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    # Model input side in px. 32 keeps a phantom run to about a minute on 2 CPU cores
    # (small stem, CAMs on an 8x8 grid); set it for real data (28 for MedMNIST, 224 for photos).
    image_size: int = 32
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"data": DataConfig, "preprocess": PreprocessConfig, "augment": AugmentConfig,
            "model": ModelConfig, "train": TrainConfig}
TOP_LEVEL = ("name", "image_size")


def _coerce(value: object, annotation: object, where: str) -> object:
    """Check ``value`` against a field's type; ints are accepted where floats are."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        (key_type, item_type) = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {_coerce(k, key_type, where): _coerce(v, item_type, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: Mapping[str, object], where: str) -> object:
    """An instance of the section dataclass ``cls`` from its TOML table, each value checked."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def from_dict(raw: Mapping[str, object], *, source: str = "config") -> RunConfig:
    """Build and validate a RunConfig from a plain dict (TOML layout)."""
    valid = set(TOP_LEVEL) | set(SECTIONS)
    for key in raw:
        if key not in valid:
            raise ConfigError(f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
    hints = typing.get_type_hints(RunConfig)
    top = {k: _coerce(raw[k], hints[k], f"{source}: {k}") for k in TOP_LEVEL if k in raw}
    sections: dict[str, object] = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {section!r}")
        if name == "data":
            section = migrate_class_names(section, where=f"{source}: data")
        sections[name] = _build(cls, section, f"{source}: {name}")
    config = RunConfig(**top, **sections)  # type: ignore[arg-type]  # each checked by _coerce
    validate(config, source=source)
    return config


# Before the class-name translations were one {language: names} table, each language had a
# key of its own; configs and checkpoints written then are read through this map.
LEGACY_CLASS_NAME_KEYS = {"class_names_zh_tw": "zh-TW", "class_names_zh_cn": "zh-CN"}


def migrate_class_names(table: Mapping[str, object], *, where: str,
                        error: type[XReportError] = ConfigError) -> dict[str, object]:
    """``table`` (a [data] section, or a checkpoint meta) with the per-language keys of older
    versions folded into ``class_names_i18n`` (an empty list there meant "not translated")."""
    out = dict(table)
    legacy = {lang: out.pop(key) for key, lang in LEGACY_CLASS_NAME_KEYS.items() if key in out}
    given = {lang: names for lang, names in legacy.items() if names}
    if not given:
        return out
    current = out.get("class_names_i18n", {})
    if not isinstance(current, Mapping):
        return out   # the type check names it
    merged = dict(current)
    for lang, names in given.items():
        if lang in merged and list(merged[lang]) != list(names):  # type: ignore[call-overload]
            raise error(f"{where}: class_names_i18n.{lang} and the older key for it disagree; keep one")
        merged[lang] = names
    out["class_names_i18n"] = merged
    return out


def load_raw(path: str | Path, *, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
    """A TOML config as a plain dict with dotted ``overrides`` applied, not yet validated."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: config file cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML (nested deeper than Python can read)") from None
    return apply_overrides(raw, overrides or {})


def load(path: str | Path, *, overrides: Mapping[str, object] | None = None) -> RunConfig:
    """Read a TOML config; ``overrides`` maps dotted keys ("train.epochs") to values."""
    return from_dict(load_raw(path, overrides=overrides), source=str(path))


def given_keys(raw: Mapping[str, object]) -> set[str]:
    """The dotted keys ("train.epochs", "image_size") a raw config sets explicitly."""
    return {f"{k}.{sub}" if isinstance(v, dict) else k
            for k, v in raw.items() for sub in (v if isinstance(v, dict) else [None])}


def apply_overrides(raw: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, object]:
    """Return a copy of ``raw`` with dotted keys set (None values are ignored)."""
    out: dict[str, object] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # type: ignore[assignment]  # a TOML table
        node[parts[-1]] = value
    return out


MAX_IMAGE_SIZE = 2048   # far above any radiograph input; a typo here would exhaust memory
_PROBABILITIES = ("hflip", "vflip", "blur")
_NON_NEGATIVE = ("rotation", "translate", "scale", "brightness", "contrast", "noise", "mixup", "cutmix")


def _non_finite(config: RunConfig) -> str | None:
    """The first float option that is NaN or infinite (TOML allows both), as "section.key"."""
    for name in SECTIONS:
        section = getattr(config, name)
        for f in fields(section):
            values = getattr(section, f.name)
            for v in values if isinstance(values, tuple) else (values,):
                if isinstance(v, float) and not math.isfinite(v):
                    return f"{name}.{f.name}"
    return None


def _augment_checks(a: AugmentConfig) -> list[tuple[bool, str]]:
    return ([(0 <= getattr(a, k) <= 1, f"augment.{k} is a probability in [0, 1], got {getattr(a, k)}")
             for k in _PROBABILITIES]
            + [(getattr(a, k) >= 0, f"augment.{k} must be >= 0, got {getattr(a, k)}") for k in _NON_NEGATIVE]
            + [(a.translate < 1 and a.scale < 1, "augment.translate and augment.scale must be below 1")])


# Ranges of the numeric options, as (low, high) inclusive. Upper bounds are far above any
# real use and far below what exhausts memory or time; a typo must not reach an allocation.
BOUNDS: dict[str, tuple[float, float]] = {
    "image_size": (8, MAX_IMAGE_SIZE),
    "data.phantom_size": (8, 1024),
    "data.phantom_train": (1, 200_000),
    "data.phantom_val": (1, 200_000),
    "data.phantom_test": (1, 200_000),
    "data.phantom_classes": (2, 64),
    "data.phantom_seed": (0, 2**32 - 1),
    "train.epochs": (1, 100_000),
    "train.batch_size": (1, 65_536),
    "train.lr": (0, 100),
    "train.seed": (0, 2**32 - 1),
    "train.warmup_epochs": (0, 100_000),
    "train.step_size": (1, 100_000),
    "train.gamma": (0, 1_000),
    "train.early_stopping": (0, 100_000),
    "train.num_threads": (0, 4_096),
    "train.max_steps": (0, 10**12),
    "train.weight_decay": (0, 100),
    "model.dropout": (0, 1),
    "data.val_fraction": (0, 0.5),
    "augment.rotation": (0, 360),
    "augment.mixup": (0, 100),
    "augment.cutmix": (0, 100),
}
# Every other number: a magnitude far above every option's use (new options get this too).
GENERIC_BOUND = 10**9
# Pixels the phantom generator may draw over all splits (float64 while drawing).
MAX_PHANTOM_PIXELS = 400_000_000


def _numbers(config: RunConfig) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = [("image_size", config.image_size)]
    for name in SECTIONS:
        section = getattr(config, name)
        for f in fields(section):
            values = getattr(section, f.name)
            for v in values if isinstance(values, tuple) else (values,):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append((f"{name}.{f.name}", v))
    return out


def _bound_checks(config: RunConfig, source: str) -> None:
    for key, value in _numbers(config):
        low, high = BOUNDS.get(key, (-GENERIC_BOUND, GENERIC_BOUND))
        if not low <= value <= high:
            raise ConfigError(f"{source}: {key} must be between {low:g} and {high:g}, got {value!r}")
    d = config.data
    drawn = (d.phantom_train + d.phantom_val + d.phantom_test) * d.phantom_size ** 2
    uses_phantom = d.kind == "phantom" or (d.kind == "auto" and d.dataset.strip().lower() == "phantom")
    if uses_phantom and drawn > MAX_PHANTOM_PIXELS:
        raise ConfigError(f"{source}: data.phantom_train/val/test x phantom_size^2 is {drawn:,} pixels, "
                          f"more than the limit of {MAX_PHANTOM_PIXELS:,}; use fewer or smaller images")


def validate(config: RunConfig, *, source: str = "config") -> None:
    t, m, d = config.train, config.model, config.data
    bad_float = _non_finite(config)
    if bad_float:
        raise ConfigError(f"{source}: {bad_float} must be a finite number, not NaN or infinity")
    checks = [
        (config.image_size >= 8, f"image_size must be at least 8, got {config.image_size}"),
        (config.image_size <= MAX_IMAGE_SIZE,
         f"image_size must be at most {MAX_IMAGE_SIZE}, got {config.image_size}"),
        (t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}"),
        (0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}"),
        (t.step_size >= 1, f"train.step_size must be at least 1, got {t.step_size}"),
        (t.gamma > 0, f"train.gamma must be positive, got {t.gamma}"),
        (t.max_steps >= 0, f"train.max_steps must be >= 0, got {t.max_steps}"),
        (t.num_threads >= 0, f"train.num_threads must be >= 0, got {t.num_threads}"),
        (d.phantom_size >= 8, f"data.phantom_size must be at least 8, got {d.phantom_size}"),
        (t.epochs >= 1, f"train.epochs must be at least 1, got {t.epochs}"),
        (t.time_budget_min > 0, f"train.time_budget_min must be positive, got {t.time_budget_min}"),
        (t.select_smoothing >= 1, f"train.select_smoothing must be at least 1, got {t.select_smoothing}"),
        (t.batch_size >= 2, f"train.batch_size must be at least 2 (BatchNorm needs two images "
                            f"per batch), got {t.batch_size}"),
        (t.lr > 0, f"train.lr must be positive, got {t.lr}"),
        (0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}"),
        (t.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}"),
        (t.early_stopping >= 0, f"train.early_stopping must be >= 0, got {t.early_stopping}"),
        (0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}"),
        (m.arch in ARCHS, f"model.arch {m.arch!r} is not one of {', '.join(ARCHS)}"),
        (d.phantom_classes >= 2, f"data.phantom_classes must be at least 2, got {d.phantom_classes}"),
        (t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
         f"train.device {t.device!r} is not auto, cpu, cuda or cuda:N"),
    ]
    for ok, message in checks + _augment_checks(config.augment):
        if not ok:
            raise ConfigError(f"{source}: {message}")
    _bound_checks(config, source)
    _class_name_checks(d, source)
    p = config.preprocess
    if p.normalize == "fixed" and len(p.mean) != len(p.std):
        raise ConfigError(f"{source}: preprocess.mean and preprocess.std differ in length")
    if p.normalize == "fixed" and not all(s > 0 for s in p.std):
        raise ConfigError(f"{source}: preprocess.std values must be positive, got {list(p.std)}")


def _class_name_checks(d: DataConfig, source: str) -> None:
    """Duplicate names, translations into a language the report does not have, and
    translations whose length differs from the names they translate."""
    from .languages import codes

    unknown = sorted(set(d.class_names_i18n) - set(codes()))
    if unknown:
        raise ConfigError(f"{source}: data.class_names_i18n has {unknown[0]!r}, not a report language "
                          f"({', '.join(codes())})")
    named = {"class_names": d.class_names,
             **{f"class_names_i18n.{lang}": names for lang, names in d.class_names_i18n.items()}}
    for key, names in named.items():
        seen = {n for n in names if names.count(n) > 1}
        if seen:
            raise ConfigError(f"{source}: data.{key} lists {', '.join(map(repr, sorted(seen)))} more "
                              "than once; each class needs its own name")
        if any(not n.strip() for n in names):
            raise ConfigError(f"{source}: data.{key} has an empty name")
    if any(not str(k).strip() or not str(v).strip() for k, v in d.class_map.items()):
        raise ConfigError(f"{source}: data.class_map has an empty class name")
    for lang, translated in d.class_names_i18n.items():
        if d.class_names and translated and len(translated) != len(d.class_names):
            raise ConfigError(f"{source}: data.class_names_i18n.{lang} has {len(translated)} names but "
                              f"data.class_names has {len(d.class_names)}; give one translation per "
                              "class, in order")


def dotted_items(d: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """A nested config mapping as {"section.key": value}, tuples as lists (as TOML and
    JSON give them back): how two configs are compared key by key."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(dotted_items(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def to_dict(config: RunConfig) -> dict[str, object]:
    """Plain dict in TOML layout, every default written out."""
    raw = dataclasses.asdict(config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.items()}


def to_toml(config: RunConfig) -> str:
    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value
    return tomli_w.dumps({k: plain(v) for k, v in dataclasses.asdict(config).items()})
