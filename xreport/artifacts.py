"""Typed run-folder artifacts: one schema, one load and one save per file.

The stages talk only through the run folder (``train`` -> ``checkpoints/NAME/`` ->
``evaluate`` -> ``reports/NAME/`` -> ``build``). Each file there has a schema below and is
read and written here and nowhere else:

| file | type | load / save |
| --- | --- | --- |
| ``best.pt`` / ``last.pt`` meta | `CheckpointMeta` | `load_checkpoint_meta` / `runs.save_checkpoint` after `check_checkpoint_meta` |
| ``history.csv`` | `History` (rows of `HistoryRow`) | `load_history` / `save_history` |
| ``class_distribution.json`` | `ClassDistribution` | `load_class_distribution` / `save_class_distribution` |
| ``predictions.csv`` | `Predictions` | `load_predictions` / `save_predictions` |
| ``metrics.json`` | `Evaluation` (`Metrics`, `Explanation`) | `load_evaluation` / `save_evaluation` |
| ``viewer.json`` | `ViewerData` (`ViewerItem`) | `load_viewer` / `save_viewer` |
| ``cams.npz`` | `GalleryCams` | `load_gallery_cams` / `save_gallery_cams` |

Writers construct these types directly, and every save checks what it writes as the load
checks it (types, then values), so a writer's mistake fails where it is made.

The schemas are ``TypedDict``: on disk and in memory an artifact is plain JSON data, so a
template or a test can read it like any mapping, and the validator below checks a loaded
file against the declared types (a stale or foreign file fails with one line naming the
file and the field).

Forward compatibility (how to extend a schema): a writer may add keys at any level; readers
ignore keys they do not know and the loaders keep them (nothing is dropped on a load/save
round trip). Declare a new key in its ``TypedDict`` as ``NotRequired`` so that older files
still load, or as ``X | None`` (or with a default in ``_ABSENT``): the loader then fills it
in when a file lacks it, so every reader indexes it directly and handles None once. Changing the meaning or type of an existing key, or removing one, bumps the
file's schema version (``EVALUATION_SCHEMA``) and adds a step to ``_MIGRATIONS`` (or leaves
the old version to the "re-run `xreport evaluate`" message).
"""
# No `from __future__ import annotations`: TypedDict must see NotRequired[...] unquoted.

import copy
import csv
import functools
import io
import json
import math
import types
import typing
from pathlib import Path
from typing import Literal, NotRequired, Required, TypedDict, Union

import numpy as np

from . import runs
from .errors import CheckpointError, ReportError, XReportError
from .languages import FALLBACK

# ---------------------------------------------------------------- metrics.json: metrics

Task = Literal["binary", "multiclass", "ordinal"]
# A test-time view (data.augment owns what each is and which are valid for a run).
TtaView = Literal["identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "antitranspose"]


class Message(TypedDict):
    """Words for the catalogs to fill: ``t(key, **params)`` in each report language (a
    parameter may itself be a Message; see ``render.message_text``)."""

    key: str
    params: NotRequired[dict[str, object]]   # numbers, names, nested Messages


class Value(TypedDict, total=False):
    """A metric: ``value`` with an optional bootstrap interval, or None and why."""

    value: float | None
    ci95: list[float | None] | None
    reason: Message        # why ``value`` is None
    ci95_reason: Message   # why ``ci95`` is None


class RocAuc(Value, total=False):
    average: str


# "class" is a Python keyword, hence the functional form for the rows that carry it.
ClassRow = TypedDict("ClassRow", {
    "class": str, "index": int, "precision": Value, "recall": Value, "specificity": Value,
    "f1": Value, "support": int, "auc": Value | None,
    "ap": Value | None})   # one-vs-rest average precision (multi-class; binary: average_precision)


class AverageRow(TypedDict):
    """A macro or weighted average (a column a writer left out reads as None)."""

    precision: Value | None
    recall: Value | None
    specificity: Value | None
    f1: Value | None
    support: int | None
    auc: Value | None


Matrix = list[list[float | None]]


class ConfusionMatrix(TypedDict):
    labels: list[str]
    raw: list[list[int]]
    # The shares below are written up to limits.REPORT_CLASSES classes; beyond, readers take
    # the shown classes' row shares from ``raw`` (shown_confusion): 10^6 cells nobody reads.
    by_true: NotRequired[Matrix]
    by_pred: NotRequired[Matrix]
    by_all: NotRequired[Matrix]


RocCurve = TypedDict("RocCurve", {"class": str, "fpr": list[float], "tpr": list[float],
                                  "auc": NotRequired[float | None]})
PrCurve = TypedDict("PrCurve", {"class": str, "precision": list[float], "recall": list[float],
                                "ap": NotRequired[float | None]})


class Curves(TypedDict):
    roc: list[RocCurve]
    pr: list[PrCurve]


class CalibrationBin(TypedDict, total=False):
    lo: float
    hi: float
    count: int
    confidence: float | None
    accuracy: float | None


class Calibration(TypedDict):
    ece: Value
    brier: Value
    bins: list[CalibrationBin]


class OperatingPoint(TypedDict):
    name: str
    threshold: float | None
    chosen_on: str
    sensitivity: Value
    specificity: Value
    ppv: Value
    npv: Value
    confusion_matrix: list[list[int]] | None


class Ordinal(TypedDict):
    qwk: Value
    mae: Value


class Bootstrap(TypedDict, total=False):
    resamples: int
    seed: int
    stratified: bool


class Metrics(TypedDict):
    """``metrics.compute_all``'s output: everything measured on one labelled split."""

    task: Task
    class_names: list[str]
    n: int
    accuracy: Value
    balanced_accuracy: Value
    mcc: Value
    roc_auc: RocAuc
    roc_auc_weighted: Value | None
    average_precision: Value
    per_class: list[ClassRow]
    macro_avg: AverageRow
    weighted_avg: AverageRow
    confusion_matrix: ConfusionMatrix
    curves: Curves
    calibration: Calibration | None
    operating_points: list[OperatingPoint]
    ordinal: Ordinal | None
    bootstrap: Bootstrap | None


# ---------------------------------------------------------------- metrics.json: explain

# One map of a gallery panel: the CAM of ``class`` (index ``target``) with its probability.
GalleryMap = TypedDict("GalleryMap", {
    "target": int, "class": str, "prob": float | None, "file": str | None})

# A gallery panel explains ``class`` (its heading) on one image. ``maps`` (explain.gallery_targets)
# hold the panel class's map and, for an error, the true and predicted class's maps; ``file``
# is the first map's. Files written before per-class maps have ``file`` and ``target`` only.
GalleryEntry = TypedDict("GalleryEntry", {
    "class": str, "class_index": int, "kind": str, "index": int,   # kind: TP | TN | FP | FN
    "prob": float | None, "target": int | None, "id": str | None,
    "file": str | None, "true": str | None, "true_index": int | None,
    "prob_true": float | None, "pred": str | None, "pred_index": int | None,
    "prob_pred": float | None, "repeated": bool,
    "maps": list[GalleryMap] | None,
    # True: the overlays outline the image's known lesion (figures.draw_cam_gallery, phantom
    # data); None in files written before outlines were drawn.
    "lesion_outline": bool | None})


class PairedStatistic(TypedDict):
    """One score, CAM against its per-image reference (xreport.verdicts.paired); files
    from before the statistics have the means alone (the rest reads as None)."""

    cam: float | None
    random: float | None               # the mean of the random maps (empirical reference)
    chance: float | None               # localisation only: the analytic chance level
    difference: float | None           # mean over images of CAM minus reference
    ci95: list[float] | None           # bootstrap interval of that mean
    p_value: float | None              # of ``test``
    test: str | None                   # wilcoxon (two-sided) | sign_flip | poisson_binomial (one-sided)
    n: int | None
    margin: float | None
    higher_is_better: bool | None
    verdict: str | None                # better | below_margin | not_distinguishable | worse


class RandomMaps(TypedDict, total=False):
    per_image: Required[int]           # an older file without it: 1 (_ABSENT)
    grid: int
    made: str                          # how they are made, in English


class CamCurves(TypedDict):
    cam: list[float]
    random: list[float]


FaithScore = Literal["deletion_auc", "insertion_auc", "road_morf", "road_lerf"]
# The faithfulness scores in the report's order: the keys of Faithfulness that hold a
# PairedStatistic (explain.FAITH_SCORES says which curve each summarises).
FAITH_SCORES: tuple[FaithScore, ...] = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf")


class Faithfulness(TypedDict):
    n: int | None
    steps: NotRequired[int]
    baseline: NotRequired[str]
    random_maps: RandomMaps
    ties: NotRequired[str]
    road_noise: NotRequired[float]
    scores: list[str]                  # deletion_auc, insertion_auc, road_morf, road_lerf
    precision: str | None              # of the removal passes: fp32 | bf16 (None: an older file)
    verdict: str | None                # over all scores (xreport.verdicts.overall; mixed when they disagree)
    deletion_auc: PairedStatistic | None
    insertion_auc: PairedStatistic | None
    road_morf: PairedStatistic | None
    road_lerf: PairedStatistic | None
    deletion_curve: CamCurves | None
    insertion_curve: CamCurves | None
    road_morf_curve: CamCurves | None
    road_lerf_curve: CamCurves | None


class Similarity(TypedDict):
    """A similarity of one cascade stage (xreport.verdicts.below_limit plus the seeds' spread)."""

    mean: float | None
    ci95: list[float] | None
    n: int | None
    sd_seeds: float | None
    per_seed: NotRequired[list[float]]
    limit: NotRequired[float]          # Spearman only
    verdict: NotRequired[str]          # Spearman only: pass | inconclusive | fail


class SanityStage(TypedDict):
    randomised: str | None             # the module re-initialised at this stage (cumulative)
    spearman: Similarity | None
    ssim: Similarity | None
    verdict: str | None


class Sanity(TypedDict):
    n: int | None
    seeds: int
    layers_randomised: NotRequired[list[str]]
    stages: list[SanityStage]
    verdict: str | None                # the last stage's
    rule: NotRequired[dict[str, object]]


class Localisation(TypedDict):
    n: int | None
    tolerance: int
    random_per_image: int
    mask_area: NotRequired[float | None]
    pointing_game: PairedStatistic | None
    energy_inside: PairedStatistic | None
    verdict: str | None


class ViewerRef(TypedDict):
    """Where the interactive viewer's data (``viewer.py``) sits, beside metrics.json."""

    file: str
    n: int


class Explanation(TypedDict):
    """``explain.explain_split``'s summary (with gallery files), inside metrics.json.

    The statistics grow over time: a key an older writer did not write reads as None (or
    its default in `_ABSENT`) once loaded, so readers index every declared key directly.
    """

    method: str
    target_layer: str | None
    gallery: list[GalleryEntry]
    faithfulness: Faithfulness | None
    sanity: Sanity | None
    localisation: Localisation | None
    viewer: ViewerRef | None
    # "fast" or "full" (evaluate.EXPLAIN_PROTOCOLS); None in files from before the choice.
    protocol: str | None
    # The explanation's stages in seconds (gallery, faithfulness, sanity, localisation, ...).
    timings: NotRequired[dict[str, float]]


# ---------------------------------------------------------------- metrics.json: the file

# 2: reasons are Messages (schema 1 had English sentences)
# 3: paired verdicts know below_margin and mixed (schema 2 called them not_distinguishable);
#    the evaluation precision is recorded
EVALUATION_SCHEMA = 3


class CheckpointRef(TypedDict, total=False):
    path: str
    sha256: str
    epoch: int | None


class DataRef(TypedDict, total=False):
    source: str
    fingerprint: str
    n: int
    external: bool


class Skipped(TypedDict):
    file: str
    reason: str


class Deduplicated(TypedDict):
    """The test metrics again without the test images that duplicate a train or val image
    (exact or near, ``data.summary.overlap_with_test``): the figures to believe."""

    method: str
    removed: int             # test images left out
    exact: int
    near: int
    n: int                   # test images kept
    metrics: Metrics | None  # None when too few images (or classes) are left to score


# ---------------------------------------------------------------- metrics.json: the model

# A model's stages at one input size (models.architecture_summary), recorded by evaluate,
# where the model is loaded, so the report and the study do not rebuild it.
BlockKind = Literal["basic", "bottleneck", "dense_layer", "transition"]
LayerOp = Literal["conv", "norm", "relu", "pool", "linear", "other"]


class LayerStep(TypedDict):
    """One layer call inside a block, as the forward pass made it."""

    module: str                    # its path in the model ("layer1.0.conv1")
    op: LayerOp
    kernel: int | None             # conv / pool: the (square) kernel side
    stride: int | None
    in_channels: int | None
    out_channels: int | None
    out_shape: list[int]           # C, H, W at the summary's input size


class BlockStructure(TypedDict):
    """The first block of one kind in the model, layer by layer."""

    kind: BlockKind
    module: str                    # "layer1.0", "features.denseblock1.denselayer1"
    count: int                     # blocks of this kind in the whole model
    in_shape: list[int]
    out_shape: list[int]
    steps: list[LayerStep]         # the main path, in call order, up to the merge
    merge: Literal["add", "concat"]
    shortcut: list[LayerStep]      # "add": the projection's layers; [] is the identity
    after_merge: list[LayerStep]   # ResNet: the ReLU applied to the sum
    growth_rate: int | None        # dense layer: channels each layer adds


class StageRow(TypedDict):
    name: str                      # "stem", "layer1", "denseblock1", "transition1", "head"
    module: str                    # its path in the model ("features.denseblock1")
    block: BlockKind | None        # None: stem and head (single layers)
    blocks: int                    # blocks in the stage (1 for stem, transition and head)
    out_shape: list[int]           # C, H, W (the head: its outputs)
    params: int
    flops: int


class ArchitectureSummary(TypedDict):
    """A model's stages at one input size, from one forward pass (``architecture_summary``)."""

    family: Literal["resnet", "densenet"]
    input_size: int
    in_channels: int
    stages: list[StageRow]
    blocks: list[BlockStructure]   # one per drawn block kind present, in model order
    params: int
    trainable: int
    flops: int                     # as count_flops counts them (a multiply-add is 2)


class Evaluation(TypedDict):
    """metrics.json: one evaluation of a checkpoint on a split."""

    schema: int
    metrics: Metrics | None            # None when the split has no labels
    run: NotRequired[str]
    split: NotRequired[str]            # absent in files from before splits: not assumed
    created: str | None
    device: NotRequired[str]
    precision: str | None              # fp32 | bf16 | fp16 of inference; None: not recorded (before schema 3)
    tta: NotRequired[bool]             # test-time augmentation asked for
    # The views whose probabilities were averaged (data.augment.tta_views: those the run's
    # training augmentation declared valid), identity first; ["identity"] without TTA.
    # Absent in older files: ["identity", "hflip"] when tta, else ["identity"] (tta_views_of).
    tta_views: NotRequired[list[TtaView]]
    checkpoint: CheckpointRef
    data: DataRef
    class_names: NotRequired[list[str]]
    task: NotRequired[Task]
    explain: Explanation | None
    predicted_counts: list[int] | None   # images per predicted class, labels or not
    timings: NotRequired[dict[str, float]]
    skipped: list[Skipped]
    # Present when test images duplicate train/val images (absent in older files and when
    # none do): the same metrics on the test split without them.
    deduplicated: NotRequired[Deduplicated]
    # The evaluated model's stages, params and FLOPs; None in files from before it (the
    # report then summarises the model itself: report.architecture).
    architecture: ArchitectureSummary | None


# ---------------------------------------------------------------- checkpoint meta

class ValMetrics(TypedDict, total=False):
    loss: float | None
    acc: float | None
    f1: float | None
    auc: float | None
    bacc: float | None
    qwk: float | None


class RecipeChoice(TypedDict):
    """One choice of the auto recipe (xreport.recipe.Choice.as_dict)."""

    key: str            # dotted config key
    value: object       # the TOML value chosen
    rule: str           # size | epochs | stem | imbalance | select | batch | flip | head | base
    why: str            # the figures it rests on, in English


class RecipeMeta(TypedDict):
    name: str                       # "auto" | "plain"
    choices: list[RecipeChoice]     # [] when nothing was chosen from the data


class PipelineStep(TypedDict):
    step: str
    params: NotRequired[dict[str, object]]   # TOML-like values of the step's settings


class ImportedWeights(TypedDict):
    """Where an imported run's weights came from (``xreport import``)."""

    file: str                       # the weights file's name (not its path: it may be private)
    sha256: str
    bytes: int


class CheckpointMeta(TypedDict):
    """The JSON meta stored in best.pt / last.pt by ``train`` (or ``import``)."""

    arch: str
    num_classes: int
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    small_input_stem: bool
    config: dict[str, object]       # config.to_dict of the run; config.from_dict validates it
    class_names_i18n: dict[str, list[str]]   # translations by language (older metas: migrated on load)
    task: Task                      # older metas without it: binary for 2 classes, else multiclass
    # CONFIG_SETTINGS (dropout, pretrained, freeze_backbone, weights, preprocess, seed,
    # select_smoothing) are stored once, in config; loading sets them here from it.
    dropout: float
    pretrained: bool
    freeze_backbone: bool
    head: str                       # "linear" | "ordinal" (models.HEADS)
    loss: str                       # "cross_entropy" | "soft_ordinal" (train.LOSSES)
    weights: str                    # the local state_dict the backbone started from, "" if none
    recipe: RecipeMeta | None
    preprocess: dict[str, object]
    pipeline: list[PipelineStep]
    data: dict[str, object]         # the [data] table as trained (dataset resolved)
    data_fingerprint: str | None
    epoch: int | None
    val_metrics: ValMetrics
    selected_by: str                # older metas without it: their config's train.select_metric
    selected_by_reason: NotRequired[str]   # why selected_by is the fallback metric (train)
    # How the saved model was chosen beyond selected_by (older checkpoints: none and 1):
    # train.weight_averaging as resolved (none | ema | swa) and train.select_smoothing.
    weight_averaging: str
    select_smoothing: int
    seed: int
    versions: dict[str, str]
    params: int | dict[str, int] | None   # count_parameters: {"total", "trainable"}
    flops: NotRequired[int | None]
    created: str | None
    command: list[str] | None
    device: NotRequired[str]
    precision: NotRequired[str]
    channels_last: NotRequired[bool]
    world_size: NotRequired[int]
    imported: NotRequired[ImportedWeights | None]   # set by `xreport import`: trained elsewhere


# ---------------------------------------------------------------- history and the rest

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "train_f1", "val_loss", "val_acc",
                   "val_f1", "val_auc", "lr", "seconds", "val_bacc", "val_qwk")


class HistoryRow(TypedDict, total=False):
    """One epoch of history.csv; an empty cell (NaN when written) reads as None."""

    epoch: int
    train_loss: float | None
    train_acc: float | None
    train_f1: float | None
    val_loss: float | None
    val_acc: float | None
    val_f1: float | None
    val_auc: float | None
    lr: float | None
    seconds: float | None
    val_bacc: float | None          # balanced accuracy
    val_qwk: float | None           # quadratic weighted kappa


History = list[HistoryRow]


class LeakageExample(TypedDict):
    pair: str                # "train-test": an image of b whose pixels also occur in a
    a: str
    b: str


class TestOverlap(TypedDict):
    """Test images that are exact or near duplicates of a train or val image."""

    method: str
    exact: int
    near: int                # near duplicates that are not exact ones
    ids: list[str]


class Leakage(TypedDict):
    """Exact duplicates across and within splits (``data.summary.leakage_check``)."""

    method: str
    exact_duplicates: dict[str, int | None]   # "a-b" -> count, None when a split is not loaded
    within_split: dict[str, int]
    examples: list[LeakageExample]
    test_overlap: NotRequired[TestOverlap]    # absent before near duplicates were looked for


# A class folder matched to a class of another name (``data.base.match_classes``): the folder's name
# as found, the class it was taken for, the rule (class_map | case | prefix), its split.
# ("class" is a keyword, hence the functional form.)
ClassMatch = TypedDict("ClassMatch", {"folder": str, "class": str, "rule": str,
                                      "split": NotRequired[str]})


class ClassDistribution(TypedDict):
    """Images per class and split (``data.class_distribution``); test may be None."""

    class_names: list[str]
    splits: dict[str, list[int] | None]
    sizes: NotRequired[dict[str, int]]      # images per split (a loaded data set's, labels or not)
    val_held_out: float | None              # share of each train class held out as val, if any
    leakage: NotRequired[Leakage]
    constant_images: NotRequired[dict[str, int]]   # images of one grey value per split (data.constant_images)
    class_matches: NotRequired[list[ClassMatch]]   # class folders taken for another name


class Predictions(typing.NamedTuple):
    """predictions.csv: one row per image of the evaluated split."""

    ids: list[str]
    y_true: np.ndarray | None       # int64 (N,), None for an unlabelled split
    probs: np.ndarray               # float64 (N, K)


# ---------------------------------------------------------------- viewer.json

VIEWER_SCHEMA = 1


class ViewerItem(TypedDict):
    """One image of the interactive viewer (``viewer.build_viewer``)."""

    id: str
    row: int                 # row in the evaluated split
    y: int                   # true class index
    pred: int                # predicted class index
    p: list[float]           # probability per class
    sets: list[str]          # "gallery" / "confident" / "uncertain"
    img: str                 # data URI of a small WebP thumbnail
    maps: str                # base64 of K x h x w uint8: a map per class on the grid
    content: list[int] | None  # [top, left, bottom, right) of the image's content in pixels;
                               # None: no keep-aspect padding (the map covers the whole image)


class ViewerData(TypedDict):
    """viewer.json: what report.html embeds once for its interactive attention viewer."""

    schema: int
    split: str
    method: str
    layer: str
    task: Task
    class_names: list[str]
    grid: list[int]          # [h, w] of every map
    image_size: int
    channels: int
    items: list[ViewerItem]


# ---------------------------------------------------------------- absent keys

# What a declared key that is absent on disk reads as once loaded: files from older writers
# lack statistics added since. A key declared ``X | None`` and missing here reads as None;
# one missing here and not admitting None is an error ("... is missing").
_ABSENT: dict[object, dict[str, object]] = {
    Evaluation: {"checkpoint": {}, "data": {}, "skipped": []},
    Faithfulness: {"random_maps": {}, "scores": []},
    RandomMaps: {"per_image": 1},
    Sanity: {"seeds": 1, "stages": []},
    Localisation: {"tolerance": 0, "random_per_image": 1},
    GalleryEntry: {"repeated": False},
    CheckpointMeta: {"class_names_i18n": {}, "head": "linear",
                     "loss": "cross_entropy", "pipeline": [],
                     "data": {}, "val_metrics": {}, "versions": {}, "weight_averaging": "none"},
}


def _fill_absent(value: dict[str, object], tp: type, missing: str) -> bool:
    """Set an absent key to its declared default (or None when its type admits None);
    False when the key has neither."""
    defaults = _ABSENT.get(tp, {})
    if missing in defaults:
        value[missing] = copy.deepcopy(defaults[missing])
        return True
    declared = _hints(tp)[missing]
    if typing.get_origin(declared) in (Union, types.UnionType) and type(None) in typing.get_args(declared):
        value[missing] = None
        return True
    return False


# ---------------------------------------------------------------- the validator

class SchemaProblem(Exception):
    """Where a value does not match its declared type (internal: the loaders add the file)."""


def _type_name(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return "a list" if origin is list else "a mapping"
    if typing.is_typeddict(tp):
        return "a mapping"
    return {type(None): "null", float: "a number", int: "a whole number", bool: "true/false",
            str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))  # type: ignore[call-overload]


@functools.lru_cache(maxsize=None)
def _hints(tp: type) -> dict[str, object]:
    hints = typing.get_type_hints(tp)
    hints.update({k: v for k, v in tp.__annotations__.items() if k not in hints})
    return hints


def _check(value: object, tp: object, where: str) -> None:
    """Raise SchemaProblem naming ``where`` when ``value`` does not match ``tp`` (a declared
    type: a TypedDict, list/dict of one, a union, Literal, a scalar, or ``object``)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        problems = []
        for arm in typing.get_args(tp):
            try:
                _check(value, arm, where)
                return
            except SchemaProblem as exc:
                problems.append(exc)
        # A mapping that fails inside names the inner field, which says more than "or".
        inner = [p for p in problems if not str(p).startswith(f"{where} ")]
        raise inner[0] if inner else _mismatch(value, tp, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _mismatch(value, tp, where)
        return
    if origin is list:
        if not isinstance(value, list):
            raise _mismatch(value, tp, where)
        (item,) = typing.get_args(tp) or (object,)
        for i, v in enumerate(value):
            _check(v, item, f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise _mismatch(value, tp, where)
        _, item = typing.get_args(tp) or (str, object)
        for k, v in value.items():
            _check(v, item, f"{where}.{k}")
        return
    if isinstance(tp, type) and typing.is_typeddict(tp):
        if not isinstance(value, dict):
            raise _mismatch(value, tp, where)
        hints = _hints(tp)
        for key in sorted(getattr(tp, "__required_keys__")):
            if key not in value and not _fill_absent(value, tp, key):
                raise SchemaProblem(f"{where}.{key} is missing" if where else f"{key} is missing")
        for key, v in value.items():
            if key in hints:      # unknown keys are a newer writer's: kept, not checked
                _check(v, hints[key], f"{where}.{key}" if where else key)
        return
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is type(None):
        ok = value is None
    elif isinstance(tp, type):
        ok = isinstance(value, tp)
    else:
        raise TypeError(f"the schema declares {tp!r}, which the validator does not know")
    if not ok:
        raise _mismatch(value, tp, where)


def _mismatch(value: object, tp: object, where: str) -> SchemaProblem:
    found = "null" if value is None else type(value).__name__
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        found = f"{found} {value!r}"[:60]
    return SchemaProblem(f"{where} must be {_type_name(tp)}, not {found}")


def validate(value: object, tp: object, *, path: str | Path, error: type[XReportError] = ReportError,
             hint: str = "") -> None:
    """Check a loaded artifact against its schema; one line naming the file and the field."""
    try:
        _check(value, tp, "")
    except SchemaProblem as exc:
        problem = str(exc).lstrip(".")
        raise error(f"{path}: {problem}" + (f"; {hint}" if hint else "")) from None


# ---------------------------------------------------------------- JSON files

# What json.loads returns: the one place where data has no declared type yet (validate next).
JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]


# Deeper than any file xreport writes (metrics.json nests about 8 levels); far below the
# interpreter's recursion limit, so validating a loaded file can never overflow the stack.
MAX_JSON_DEPTH = 64


def json_depth_problem(data: object, limit: int = MAX_JSON_DEPTH) -> str | None:
    """"nested deeper than N levels" when ``data`` is, else None (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                return f"nested deeper than {limit} levels"
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return None


def parse_json(text: str, *, path: str | Path, error: type[XReportError] = ReportError,
               what: str = "JSON") -> JSONValue:
    """The one JSON reader of files from outside (run-folder files, message catalogs): a
    file nested too deep is one line naming it, never a RecursionError."""
    try:
        data: JSONValue = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid {what} ({str(exc).splitlines()[0][:120]})") from None
    except RecursionError:
        raise error(f"{path}: not valid {what} (nested deeper than Python can read)") from None
    if (problem := json_depth_problem(data)) is not None:
        raise error(f"{path}: not valid {what} ({problem})")
    return data


def _read_json(path: Path, *, error: type[XReportError], missing: str) -> JSONValue:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: not found; {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    return parse_json(text, path=path, error=error)


def read_json_file(path: Path, *, error: type[XReportError] = ReportError) -> JSONValue:
    """A JSON file that is not a run-folder artifact (package data, a cache entry), read by the
    one depth-limited reader; a missing or bad file is one line naming it."""
    return _read_json(path, error=error, missing="it belongs to xreport or its cache")


def _rerun(paths: runs.RunPaths | runs.EvaluationPaths | None) -> str:
    name = paths.name if paths is not None else "NAME"
    return f"re-run `xreport evaluate --run {name}` (or `xreport build --run {name} --force`)"


# Older metrics.json schemas that can be brought up to date without the data; a version
# missing here (and below EVALUATION_SCHEMA) asks for `xreport evaluate` again.
def _reasons_as_messages(value: JSONValue) -> JSONValue:
    """Schema 1 -> 2 inside metrics: an English reason becomes ``reason.text`` (shown as is)."""
    if isinstance(value, list):
        return [_reasons_as_messages(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _reasons_as_messages(v) for k, v in value.items()}
    for key in ("reason", "ci95_reason"):
        if isinstance(out.get(key), str) and (key == "ci95_reason" or "value" in out):
            out[key] = {"key": "reason.text", "params": {"text": out[key]}}
    return out


def _migrate_1_to_2(data: dict[str, JSONValue]) -> dict[str, JSONValue]:
    return {**data, "schema": 2, "metrics": _reasons_as_messages(data["metrics"])}


def _migrate_2_to_3(data: dict[str, JSONValue]) -> dict[str, JSONValue]:
    """Re-derive the paired verdicts from their own numbers by today's rule (a significant
    difference below the margin is ``below_margin``, disagreeing scores are ``mixed``)."""
    from . import verdicts

    out = copy.deepcopy(data)
    explain = out.get("explain")
    if isinstance(explain, dict):
        faith = explain.get("faithfulness")
        if isinstance(faith, dict):
            found = []
            scores = faith.get("scores")
            for score in scores if isinstance(scores, list) else []:
                stat = faith.get(score) if isinstance(score, str) else None
                if isinstance(stat, dict):
                    verdicts.rederive(stat)
                    found.append(str(stat.get("verdict")))
            if found:
                faith["verdict"] = verdicts.overall(found)
        loc = explain.get("localisation")
        if isinstance(loc, dict):
            for metric in ("pointing_game", "energy_inside"):
                if isinstance(stat := loc.get(metric), dict):
                    verdicts.rederive(stat)
            if isinstance(pg := loc.get("pointing_game"), dict) and pg.get("verdict"):
                loc["verdict"] = pg["verdict"]
    return {**out, "schema": 3}


_MIGRATIONS: dict[int, typing.Callable[[dict[str, JSONValue]], dict[str, JSONValue]]] = {
    1: _migrate_1_to_2, 2: _migrate_2_to_3}


# ---------------------------------------------------------------- values: ranges and consistency

_UNIT = (0.0, 1.0)
# Values that are not rates in [0, 1]: correlations/kappas in [-1, 1], errors >= 0.
_VALUE_RANGES: dict[str, tuple[float, float]] = {"mcc": (-1.0, 1.0), "qwk": (-1.0, 1.0),
                                                 "mae": (0.0, math.inf)}


class _Values:
    """Collects the first value out of its range (the types were checked by ``validate``)."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def fail(self, where: str, what: str) -> None:
        if self.problem is None:
            self.problem = f"{where} {what}"

    def number(self, x: object, where: str, lo: float, hi: float) -> None:
        if isinstance(x, (int, float)) and not isinstance(x, bool) and not lo <= x <= hi:
            bounds = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
            self.fail(where, f"is {x!r}; it must be {bounds}")

    def value(self, v: object, where: str, rng: tuple[float, float] = _UNIT) -> None:
        if isinstance(v, dict):
            self.number(v.get("value"), f"{where}.value", *rng)
            for i, c in enumerate(v.get("ci95") or []):
                self.number(c, f"{where}.ci95[{i}]", *rng)

    def count(self, x: object, where: str) -> None:
        self.number(x, where, 0, math.inf)

    def matrix(self, m: object, where: str, k: int, *, counts: bool) -> None:
        if m is None:
            return
        if not isinstance(m, list) or len(m) != k or any(not isinstance(r, list) or len(r) != k for r in m):
            self.fail(where, f"is not {k}x{k} (one row and column per class)")
            return
        for i, row in enumerate(m):
            for j, x in enumerate(row):
                self.number(x, f"{where}[{i}][{j}]", *((0, math.inf) if counts else _UNIT))


def _check_metrics_values(m: Metrics, v: _Values, class_names: typing.Sequence[str] | None) -> None:
    k = len(m["class_names"])
    if class_names is not None and list(m["class_names"]) != list(class_names):
        v.fail("metrics.class_names", f"({', '.join(m['class_names'])}) are not the checkpoint's "
               f"({', '.join(class_names)})")
    v.count(m["n"], "metrics.n")
    for key in ("accuracy", "balanced_accuracy", "mcc", "roc_auc", "roc_auc_weighted", "average_precision"):
        v.value(m.get(key), f"metrics.{key}", _VALUE_RANGES.get(key, _UNIT))
    if len(m["per_class"]) > k:
        v.fail("metrics.per_class", f"has {len(m['per_class'])} rows for {k} classes")
    for i, row in enumerate(m["per_class"]):
        if not 0 <= row["index"] < k:
            v.fail(f"metrics.per_class[{i}].index", f"is {row['index']}, not a class index")
        v.count(row["support"], f"metrics.per_class[{i}].support")
        for key in ("precision", "recall", "specificity", "f1", "auc", "ap"):
            v.value(row.get(key), f"metrics.per_class[{i}].{key}")
    for avg in ("macro_avg", "weighted_avg"):
        for key in ("precision", "recall", "specificity", "f1", "auc"):
            v.value(m[avg].get(key), f"metrics.{avg}.{key}")
        v.count(m[avg].get("support"), f"metrics.{avg}.support")
    cm = m["confusion_matrix"]
    if list(cm["labels"]) != list(m["class_names"]):
        v.fail("metrics.confusion_matrix.labels", "are not metrics.class_names")
    v.matrix(cm["raw"], "metrics.confusion_matrix.raw", k, counts=True)
    if v.problem is None and sum(sum(r) for r in cm["raw"]) != m["n"]:
        v.fail("metrics.confusion_matrix.raw", f"counts {sum(sum(r) for r in cm['raw'])} images, not n = {m['n']}")
    for key in ("by_true", "by_pred", "by_all"):
        v.matrix(cm.get(key), f"metrics.confusion_matrix.{key}", k, counts=False)
    for kind, curves in (("roc", m["curves"]["roc"]), ("pr", m["curves"]["pr"])):
        for i, curve in enumerate(curves):
            fields: typing.Mapping[str, object] = curve
            for key in ("fpr", "tpr", "precision", "recall"):
                values = fields.get(key)
                for j, x in enumerate(values if isinstance(values, list) else []):
                    v.number(x, f"metrics.curves.{kind}[{i}].{key}[{j}]", *_UNIT)
    if m["calibration"]:
        v.value(m["calibration"]["ece"], "metrics.calibration.ece")
        # Multi-class Brier sums the squared errors over the classes: at most 2 (binary: 1).
        v.value(m["calibration"]["brier"], "metrics.calibration.brier", (0.0, 1.0 if k == 2 else 2.0))
        for i, b in enumerate(m["calibration"]["bins"]):
            v.count(b.get("count"), f"metrics.calibration.bins[{i}].count")
            for key in ("confidence", "accuracy", "lo", "hi"):
                v.number(b.get(key), f"metrics.calibration.bins[{i}].{key}", *_UNIT)
    for i, op in enumerate(m["operating_points"]):
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            v.value(op[key], f"metrics.operating_points[{i}].{key}")  # type: ignore[literal-required]
        v.matrix(op["confusion_matrix"], f"metrics.operating_points[{i}].confusion_matrix", 2, counts=True)
    if m["ordinal"]:
        v.value(m["ordinal"]["qwk"], "metrics.ordinal.qwk", _VALUE_RANGES["qwk"])
        v.value(m["ordinal"]["mae"], "metrics.ordinal.mae", _VALUE_RANGES["mae"])


def check_evaluation_values(data: Evaluation, *, path: Path, hint: str = "",
                            class_names: typing.Sequence[str] | None = None) -> None:
    """What the types cannot say: probabilities and rates in [0, 1], counts >= 0, matrices of
    one row and column per class, and the class names of every part (and of the checkpoint,
    when given) the same. One line naming the file and the first value out of place."""
    v = _Values()
    names = data.get("class_names")
    if class_names is not None and names is not None and list(names) != list(class_names):
        v.fail("class_names", f"({', '.join(names)}) are not the checkpoint's ({', '.join(class_names)})")
    reference = list(class_names) if class_names is not None else names
    if data["metrics"] is not None:
        _check_metrics_values(data["metrics"], v, reference)
    k = len(reference) if reference is not None else None
    counts = data["predicted_counts"]
    if counts is not None:
        if k is not None and len(counts) != k:
            v.fail("predicted_counts", f"has {len(counts)} entries for {k} classes")
        for i, c in enumerate(counts):
            v.count(c, f"predicted_counts[{i}]")
    v.count(data["data"].get("n"), "data.n")
    views = data.get("tta_views")
    if views is not None:
        if not views or views[0] != "identity" or len(set(views)) != len(views):
            v.fail("tta_views", f"is {views!r}; it must start with \"identity\" and name each view once")
        elif len(views) > 1 and not data.get("tta"):
            v.fail("tta_views", f"names {len(views)} views but tta is not true")
    explain = data["explain"]
    for i, entry in enumerate(explain["gallery"] if explain else []):
        for key in ("prob", "prob_true", "prob_pred"):
            v.number(entry[key], f"explain.gallery[{i}].{key}", *_UNIT)
        for key in ("class_index", "true_index", "pred_index", "target"):
            x = entry[key]  # type: ignore[literal-required]
            if k is not None and isinstance(x, int) and not 0 <= x < k:
                v.fail(f"explain.gallery[{i}].{key}", f"is {x}, not one of the {k} class indices")
    if v.problem is not None:
        raise ReportError(f"{path}: {v.problem}" + (f"; {hint}" if hint else ""))


def tta_views_of(evaluation: Evaluation) -> list[TtaView]:
    """The views an evaluation's probabilities average: as recorded, or for a file from
    before they were, what its ``tta`` flag did then (a horizontal flip beside the image)."""
    views = evaluation.get("tta_views")
    if views is not None:
        return list(views)
    return ["identity", "hflip"] if evaluation.get("tta") else ["identity"]


def load_evaluation(paths: runs.RunPaths | runs.EvaluationPaths, *,
                    class_names: typing.Sequence[str] | None = None) -> Evaluation:
    """metrics.json of a run, validated (and migrated from an older schema when possible):
    its types, then its values (``check_evaluation_values``; ``class_names``: the checkpoint's)."""
    path = paths.metrics
    data = _read_json(path, error=ReportError,
                      missing=f"evaluate the run first (`xreport build --run {paths.name}` does it)")
    if not isinstance(data, dict) or "metrics" not in data:
        raise ReportError(f"{path}: not an xreport metrics file (no \"metrics\" key)")
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ReportError(f"{path}: schema must be a whole number, not {schema!r}; {_rerun(paths)}")
    if schema > EVALUATION_SCHEMA:
        raise ReportError(f"{path}: schema {schema} is newer than this xreport reads "
                          f"({EVALUATION_SCHEMA}); upgrade xreport or {_rerun(paths)}")
    while schema < EVALUATION_SCHEMA:
        if schema not in _MIGRATIONS:
            raise ReportError(f"{path}: schema {schema} is out of date (now {EVALUATION_SCHEMA}); "
                              f"{_rerun(paths)}")
        data = _MIGRATIONS[schema](data)
        schema += 1     # each migration is one version up
    validate(data, Evaluation, path=path, hint=_rerun(paths))
    check_evaluation_values(typing.cast(Evaluation, data), path=path, hint=_rerun(paths),
                            class_names=class_names)
    return typing.cast(Evaluation, data)


def evaluation_split(evaluation: Evaluation) -> str:
    """The split an evaluation shows: a file from before the ``split`` key is of the test
    split (the one default of every reader that shows or compares it; evaluate's freshness
    check reads the key itself, since there an absent one means stale)."""
    return evaluation.get("split", "test")


def record_timings(paths: runs.RunPaths | runs.EvaluationPaths, timings: typing.Mapping[str, float]) -> None:
    """Merge ``timings`` (stage -> seconds) into metrics.json's ``timings``: the build's stages
    beside the evaluation's own. Read and written through the one validated load/save."""
    evaluation = load_evaluation(paths)
    evaluation["timings"] = {**(evaluation.get("timings") or {}), **timings}
    save_evaluation(paths, evaluation)


def save_evaluation(paths: runs.RunPaths | runs.EvaluationPaths, evaluation: Evaluation) -> None:
    """metrics.json, checked as ``load_evaluation`` checks it (types, then values): a
    writer's mistake fails here, naming the field, not in the next reader."""
    from .limits import REPORT_CLASSES

    validate(evaluation, Evaluation, path=paths.metrics)
    check_evaluation_values(evaluation, path=paths.metrics)
    if len(evaluation.get("class_names") or []) > REPORT_CLASSES:
        # Indented, a 1000-class matrix puts each of its 10^6 cells on a line of its own.
        runs.write_text(paths.metrics, json.dumps(evaluation, ensure_ascii=False, separators=(",", ":"),
                                                  allow_nan=False) + "\n")
        return
    runs.write_json(paths.metrics, evaluation)


def load_class_distribution(paths: runs.RunPaths) -> ClassDistribution | None:
    """class_distribution.json written by ``train``; None when the run has none."""
    if not paths.class_distribution.is_file():
        return None
    data = _read_json(paths.class_distribution, error=ReportError, missing="")
    validate(data, ClassDistribution, path=paths.class_distribution)
    return typing.cast(ClassDistribution, data)


def save_class_distribution(paths: runs.RunPaths, distribution: ClassDistribution) -> None:
    validate(distribution, ClassDistribution, path=paths.class_distribution)   # as it is loaded
    runs.write_json(paths.class_distribution, distribution)


# ---------------------------------------------------------------- checkpoint meta

def migrate_meta_config(raw: object, *, path: Path) -> dict[str, object]:
    """A checkpoint's saved config (``meta["config"]``) in today's layout."""
    from .config import migrate_class_names

    if not isinstance(raw, dict):
        return {}
    data = raw.get("data")
    if isinstance(data, dict):
        return {**raw, "data": migrate_class_names(data, where=f"{path}: config.data", error=CheckpointError)}
    return dict(raw)


def _migrate_meta(raw: object, *, path: Path) -> object:
    """An older checkpoint meta in today's layout: the per-language class-name keys become
    ``class_names_i18n`` (in the meta, its ``data`` and its ``config``), and an absent task
    is derived from the number of classes."""
    from .config import migrate_class_names

    if not isinstance(raw, dict):
        return raw
    meta = migrate_class_names(raw, where=f"{path}: meta", error=CheckpointError)
    # The one default for a meta written before the task was recorded (the validator checks
    # num_classes): every reader then indexes meta["task"].
    if "task" not in meta and isinstance(meta.get("num_classes"), int):
        meta["task"] = "binary" if meta["num_classes"] == 2 else "multiclass"
    if isinstance(meta.get("data"), dict):
        meta["data"] = migrate_class_names(typing.cast(dict, meta["data"]), where=f"{path}: meta.data",
                                           error=CheckpointError)
    if "config" in meta:
        meta["config"] = migrate_meta_config(meta["config"], path=path)
    _settings_from_config(meta)
    return meta


# Settings of the run that the loaded meta shows at its top level but that are stored once, in
# its ``config`` (table, key; None: the whole table). Metas written before this held both.
CONFIG_SETTINGS: dict[str, tuple[str, str | None]] = {
    "dropout": ("model", "dropout"), "pretrained": ("model", "pretrained"),
    "freeze_backbone": ("model", "freeze_backbone"), "weights": ("model", "weights"),
    "preprocess": ("preprocess", None), "seed": ("train", "seed"),
    "select_smoothing": ("train", "select_smoothing")}


def _settings_from_config(meta: dict[str, object]) -> None:
    """The meta's settings stored in its config (``CONFIG_SETTINGS``), and the one default of
    ``selected_by`` of a meta from before it was recorded: the config's value, else the
    config's default."""
    from .config import RunConfig, to_dict

    missing = [key for key in (*CONFIG_SETTINGS, "selected_by") if key not in meta]
    if not missing:
        return
    saved, defaults = meta.get("config"), to_dict(RunConfig())

    def setting(table: str, key: str | None) -> object:
        found = saved.get(table) if isinstance(saved, dict) else None
        default = defaults[table]
        if key is None:
            return {**typing.cast(dict, default), **(found if isinstance(found, dict) else {})}
        return (found if isinstance(found, dict) and key in found else typing.cast(dict, default))[key]

    for key in missing:
        meta[key] = setting("train", "select_metric") if key == "selected_by" else setting(*CONFIG_SETTINGS[key])


def stored_meta(meta: CheckpointMeta) -> dict[str, object]:
    """The meta as a checkpoint stores it: ``CONFIG_SETTINGS`` only in its config (loading
    puts them back at the top)."""
    return {key: value for key, value in meta.items() if key not in CONFIG_SETTINGS}


def check_checkpoint_meta(raw: object, *, path: Path) -> CheckpointMeta:
    """Refuse checkpoint meta whose fields have the wrong type before anything uses them
    (an older meta is migrated first)."""
    hint = "was it written by `xreport train`?"
    raw = _migrate_meta(raw, path=path)
    validate(raw, CheckpointMeta, path=path, error=CheckpointError, hint=hint)
    meta = typing.cast(CheckpointMeta, raw)
    from .config import MAX_IMAGE_SIZE

    checks = [
        (2 <= meta["num_classes"] <= 100_000, "num_classes must be a whole number >= 2"),
        (len(meta["class_names"]) == meta["num_classes"], "class_names must list num_classes strings"),
        (meta["in_channels"] in (1, 3), "in_channels must be 1 or 3"),
        (8 <= meta["image_size"] <= MAX_IMAGE_SIZE, "image_size must be a whole number of pixels"),
        (bool(meta["mean"]) and bool(meta["std"]), "mean and std must be lists of numbers"),
    ]
    for ok, message in checks:
        if not ok:
            raise CheckpointError(f"{path}: checkpoint meta is not usable: {message}; {hint}")
    return meta


def load_checkpoint_meta(path: Path) -> CheckpointMeta:
    """The validated meta of a checkpoint file (weights are loaded and dropped)."""
    return check_checkpoint_meta(runs.load_checkpoint(path).meta, path=Path(path))


def checkpoint_path(paths: runs.RunPaths) -> Path:
    """best.pt, or last.pt when a run was stopped before any best was kept."""
    for candidate in (paths.best, paths.last):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{paths.run_dir}: no best.pt or last.pt; train the run first "
                          f"(xreport train --name {paths.name})")


# ---------------------------------------------------------------- CSV files

def _history_cell(text: str, *, path: Path, row: int, column: str) -> int | float | None:
    if text == "" or text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{path}: row {row} column {column} must be a number, not {text!r}") from None
    if column == "epoch" or (value.is_integer() and "." not in text and "e" not in text.lower()):
        return int(value)
    return value


def load_history(paths: runs.RunPaths) -> History:
    """history.csv as rows of numbers; [] when the file is absent. Unknown columns are kept."""
    path = paths.history
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read the training history ({exc})") from None
    history: History = []
    for i, row in enumerate(rows, start=1):
        parsed = {k: _history_cell(v, path=path, row=i, column=k) for k, v in row.items() if k}
        validate(parsed, HistoryRow, path=path)
        _check_history_row(parsed, path=path, row=i)
        history.append(typing.cast(HistoryRow, parsed))
    return history


def _check_history_row(values: typing.Mapping[str, object], *, path: Path, row: int) -> None:
    """Rates in [0, 1], losses and times >= 0, epochs >= 1 (the types were checked)."""
    v = _Values()
    for key, x in values.items():
        if key == "epoch":
            v.number(x, f"row {row} epoch", 1, math.inf)
        elif key.endswith(("_acc", "_f1", "_auc", "_bacc")):
            v.number(x, f"row {row} {key}", *_UNIT)
        elif key.endswith("_qwk"):
            v.number(x, f"row {row} {key}", -1.0, 1.0)
        elif key.endswith("_loss") or key in ("lr", "seconds"):
            v.number(x, f"row {row} {key}", 0.0, math.inf)
    if v.problem is not None:
        raise ReportError(f"{path}: {v.problem}")


def history_csv(history: typing.Sequence[typing.Mapping[str, float | int | None]]) -> str:
    """The text of history.csv (NaN written as an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                         for k in HISTORY_COLUMNS for v in (row[k],)})
    return out.getvalue()


def save_history(paths: runs.RunPaths, history: typing.Sequence[typing.Mapping[str, float | int | None]]) -> None:
    runs.write_text(paths.history, history_csv(history))


def save_predictions(paths: runs.RunPaths | runs.EvaluationPaths, ids: typing.Sequence[str],
                     y_true: np.ndarray | None, probs: np.ndarray, *,
                     class_names: typing.Sequence[str]) -> None:
    """One row per image: id, y_true (when known), y_pred and its class name y_pred_name,
    prob_0.. in class-index order, each the shortest text that reads back as the same
    float32 (the model's output precision), so metrics recomputed from this file (compare's
    tests) use the very numbers the report's tables came from."""
    k = probs.shape[1]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id"] + (["y_true"] if y_true is not None else []) + ["y_pred", "y_pred_name"]
                    + [f"prob_{i}" for i in range(k)])
    preds = probs.argmax(axis=1)
    labels = y_true.tolist() if y_true is not None else None
    for i, ident in enumerate(ids):
        row = [ident] + ([labels[i]] if labels is not None else []) + [int(preds[i]), class_names[int(preds[i])]]
        row += [np.format_float_positional(np.float32(p), unique=True, trim="0") for p in probs[i]]
        writer.writerow(row)
    runs.write_text(paths.predictions, buffer.getvalue())


def load_predictions(paths: runs.RunPaths | runs.EvaluationPaths, *,
                     class_names: typing.Sequence[str] | None = None) -> Predictions:
    """(ids, y_true or None, probs) from predictions.csv: probabilities in [0, 1], labels and
    probability columns for each class (``class_names``: the checkpoint's, when known)."""
    import pandas as pd

    path = paths.predictions
    if not path.is_file():
        raise ReportError(f"{path}: not found; {_rerun(paths)}")
    try:
        frame = pd.read_csv(path, dtype={"id": str}, float_precision="round_trip")
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read predictions ({exc})") from None
    prob_cols = [c for c in frame.columns if c.startswith("prob_")]
    if not prob_cols or "id" not in frame.columns:
        raise ReportError(f"{path}: not a predictions file (needs id and prob_0.. columns)")
    try:
        # Written as float32 (save_predictions): read back to exactly those values.
        probs = frame[prob_cols].to_numpy(dtype=np.float64).astype(np.float32).astype(np.float64)
        y_true = frame["y_true"].to_numpy(dtype=np.int64) if "y_true" in frame.columns else None
    except (ValueError, TypeError) as exc:
        raise ReportError(f"{path}: y_true and prob_* must be numbers ({exc})") from None
    k = len(prob_cols)
    problem = (f"has {k} prob_* columns for {len(class_names)} classes ({', '.join(class_names)})"
               if class_names is not None and k != len(class_names) else
               "prob_* columns are not prob_0..prob_{k-1} in order" if prob_cols != [f"prob_{i}" for i in range(k)] else
               "a probability is missing, NaN or outside [0, 1]"
               if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()) else
               f"a y_true is not a class index 0..{k - 1}"
               if y_true is not None and len(y_true) and not (0 <= y_true.min() and y_true.max() < k) else None)
    if problem:
        raise ReportError(f"{path}: {problem}; {_rerun(paths)}")
    return Predictions(frame["id"].astype(str).tolist(), y_true, probs)


# ---------------------------------------------------------------- classes a report shows

class ShownConfusion(typing.NamedTuple):
    """The confusion matrix restricted to the classes a report shows (limits.shown_classes)."""

    indices: list[int]
    labels: list[str]
    raw: list[list[int]]
    by_true: list[list[float | None]]
    total: int                 # classes in the run


def shown_confusion(metrics: Metrics) -> ShownConfusion:
    """Rows and columns of the classes shown in full: all of them up to limits.REPORT_CLASSES,
    else those with the most test errors (then the most images)."""
    from .limits import shown_classes

    cm = metrics["confusion_matrix"]
    labels = list(cm["labels"] or metrics["class_names"])
    raw = cm["raw"]
    support = [sum(row) for row in raw]
    keep = shown_classes(support, [support[i] - raw[i][i] for i in range(len(raw))])
    # Each cell's share of its true class's images: the whole row's count, shown columns or not.
    by_true = [[raw[i][j] / support[i] if support[i] else None for j in keep] for i in keep]
    return ShownConfusion(keep, [labels[i] for i in keep], [[raw[i][j] for j in keep] for i in keep],
                          by_true, len(labels))


# ---------------------------------------------------------------- class names by language

def class_name_map(names: typing.Sequence[str], translated: typing.Sequence[str] | None) -> dict[str, str]:
    """name -> its translation at the same position (the name itself where there is none)."""
    translated = translated or []
    return {n: (translated[i] if i < len(translated) and translated[i] else n)
            for i, n in enumerate(names)}


def class_name_translations(meta: CheckpointMeta) -> dict[str, list[str]]:
    """The class names a run was trained with, by report language (empty: not translated)."""
    return {FALLBACK: list(meta["class_names"]),
            **{lang: list(names) for lang, names in meta["class_names_i18n"].items() if lang != FALLBACK}}


def class_names_in(meta: CheckpointMeta, lang: str,
                   names: typing.Sequence[str] | None = None) -> list[str]:
    """``names`` (default: all the run's classes) in ``lang``: the run's translation where it
    has one, else the name itself."""
    mapping = class_name_map(meta["class_names"], class_name_translations(meta).get(lang))
    return [mapping.get(n, n) for n in (meta["class_names"] if names is None else names)]


# ---------------------------------------------------------------- class balance

class TrainImbalance(TypedDict):
    """The training split's largest and smallest class (by image count)."""

    ratio: float              # largest / smallest count
    majority: str
    minority: str
    n_majority: int
    n_minority: int
    majority_share: float     # largest count / all training images
    balanced: bool            # every class has the same count


def train_imbalance(distribution: ClassDistribution | None) -> TrainImbalance | None:
    """Imbalance of the training split; None without counts for every class (or a class
    without images, where the ratio is undefined)."""
    if not distribution:
        return None
    names = list(distribution.get("class_names") or [])
    counts = list((distribution.get("splits") or {}).get("train") or [])
    if len(counts) < 2 or len(counts) != len(names) or min(counts) <= 0:
        return None
    big, small = counts.index(max(counts)), counts.index(min(counts))
    return {"ratio": max(counts) / min(counts), "majority": names[big], "minority": names[small],
            "n_majority": int(counts[big]), "n_minority": int(counts[small]),
            "majority_share": max(counts) / sum(counts), "balanced": max(counts) == min(counts)}


def runtime_versions() -> dict[str, str]:
    """The library versions recorded in checkpoint meta (and shown in the reports)."""
    import platform

    import sklearn
    import torch
    import torchvision

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "xreport": __version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__}


def save_viewer(paths: runs.EvaluationPaths, data: ViewerData) -> None:
    validate(data, ViewerData, path=paths.viewer)
    _check_viewer_values(data, path=paths.viewer, hint="")   # as load_viewer checks it
    # Compact: report.html embeds the file as it is.
    runs.write_text(paths.viewer, json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


def load_viewer(paths: runs.EvaluationPaths, file: str = "viewer.json", *,
                class_names: typing.Sequence[str] | None = None) -> ViewerData:
    """viewer.json validated, and each item checked against the class count and map grid
    (and the file's class names against ``class_names``, the checkpoint's, when given)."""
    path = Path(paths.folder) / file
    raw = _read_json(path, error=ReportError, missing=_rerun(paths))
    validate(raw, ViewerData, path=path, hint=_rerun(paths))
    data = typing.cast(ViewerData, raw)
    _check_viewer_values(data, path=path, hint=_rerun(paths), class_names=class_names)
    return data


def _check_viewer_values(data: ViewerData, *, path: Path, hint: str,
                         class_names: typing.Sequence[str] | None = None) -> None:
    """What viewer.json's types cannot say: the schema version, the class names (the
    checkpoint's, when given), and each item against the class count and the map grid."""
    import base64
    import binascii

    hint = f"; {hint}" if hint else ""
    if data["schema"] != VIEWER_SCHEMA:
        raise ReportError(f"{path}: schema {data['schema']!r}, this xreport reads {VIEWER_SCHEMA}{hint}")
    if class_names is not None and list(data["class_names"]) != list(class_names):
        raise ReportError(f"{path}: class_names ({', '.join(data['class_names'])}) are not the "
                          f"checkpoint's ({', '.join(class_names)}){hint}")
    k = len(data["class_names"])
    if len(data["grid"]) != 2 or min(data["grid"]) < 1:
        raise ReportError(f"{path}: grid must be [height, width], got {data['grid']}")
    cells = k * data["grid"][0] * data["grid"][1]
    for item in data["items"]:
        try:
            size = len(base64.b64decode(item["maps"], validate=True))
        except (binascii.Error, ValueError):
            size = -1
        box = item["content"]
        box_ok = box is None or (len(box) == 4 and 0 <= box[0] < box[2] <= data["image_size"]
                                 and 0 <= box[1] < box[3] <= data["image_size"])
        if (len(item["p"]) != k or not (0 <= item["y"] < k and 0 <= item["pred"] < k) or size != cells
                or not all(0.0 <= p <= 1.0 for p in item["p"])
                or not item["img"].startswith("data:image/") or not box_ok):
            raise ReportError(f"{path}: item {item['id']!r} does not fit {k} classes and a "
                              f"{data['grid'][0]}x{data['grid'][1]} grid{hint}")


# ---------------------------------------------------------------- cams.npz: the gallery's maps

# What evaluate computed for the CAM gallery, for the figures stage to draw (evaluate draws
# nothing): metrics.json's gallery entries say which image and classes, this file holds the
# pixels. 1: images, maps, counts, masks (+ schema)
GALLERY_CAMS_SCHEMA = 1


class GalleryCams(typing.NamedTuple):
    """The arrays of cams.npz, in the order of metrics.json's ``explain.gallery``."""

    images: np.ndarray          # uint8 (G, C, H, W), C in {1, 3}: each entry's image as evaluated
    maps: np.ndarray            # float32 (M, H, W): every entry's maps, entry after entry
    counts: np.ndarray          # int64 (G,): how many of ``maps`` each entry has
    masks: np.ndarray | None    # bool (G, H, W): the lesion masks where the data know them


def _check_gallery_cams(cams: GalleryCams, *, path: Path, gallery: typing.Sequence[GalleryEntry],
                        hint: str) -> None:
    """The shapes and dtypes of ``cams`` against each other and against the gallery entries."""
    images, maps, counts, masks = cams
    g = len(gallery)
    wanted = [len(entry["maps"] or []) or 1 for entry in gallery]
    problems = [
        (images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] == g
         and images.shape[1] in (1, 3), f"images must be uint8 (G={g}, C in 1|3, H, W), got "
                                        f"{images.dtype} {images.shape}"),
        (counts.ndim == 1 and counts.dtype.kind in "iu" and counts.tolist() == wanted,
         f"counts {counts.tolist()} are not the gallery's maps per entry {wanted}"),
        (maps.dtype == np.float32 and maps.ndim == 3 and maps.shape[0] == sum(wanted)
         and maps.shape[1:] == images.shape[2:],
         f"maps must be float32 ({sum(wanted)}, H, W) at the images' size, got {maps.dtype} {maps.shape}"),
        (masks is None or (masks.dtype == np.bool_ and masks.shape == (g, *images.shape[2:])),
         "masks must be bool (G, H, W) at the images' size"),
    ]
    for ok, message in problems:
        if not ok:
            raise ReportError(f"{path}: {message}; {hint}")


def save_gallery_cams(paths: runs.EvaluationPaths, cams: GalleryCams, *,
                      gallery: typing.Sequence[GalleryEntry]) -> None:
    """cams.npz, checked as it is read, written whole or not at all."""
    _check_gallery_cams(cams, path=paths.gallery_cams, gallery=gallery, hint=_rerun(paths))
    schema, counts = np.array(GALLERY_CAMS_SCHEMA), cams.counts.astype(np.int64)
    with runs.atomic_path(paths.gallery_cams) as tmp, open(tmp, "wb") as fh:
        if cams.masks is None:
            np.savez_compressed(fh, schema=schema, images=cams.images, maps=cams.maps, counts=counts)
        else:
            np.savez_compressed(fh, schema=schema, images=cams.images, maps=cams.maps, counts=counts,
                                masks=cams.masks)


def load_gallery_cams(paths: runs.EvaluationPaths, *,
                      gallery: typing.Sequence[GalleryEntry]) -> GalleryCams | None:
    """cams.npz checked against ``gallery`` (its metrics.json's); None when the evaluation has
    none (written before the figures stage drew the overlays: they are in cams/ already)."""
    import zipfile

    path = paths.gallery_cams
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ReportError(f"{path}: not a readable .npz ({exc}); {_rerun(paths)}") from None
    missing = [key for key in ("schema", "images", "maps", "counts") if key not in found]
    if missing:
        raise ReportError(f"{path}: lacks {', '.join(missing)}; {_rerun(paths)}")
    if found["schema"].shape != () or int(found["schema"]) != GALLERY_CAMS_SCHEMA:
        raise ReportError(f"{path}: schema {found['schema'].tolist()!r}, this xreport reads "
                          f"{GALLERY_CAMS_SCHEMA}; {_rerun(paths)}")
    cams = GalleryCams(found["images"], found["maps"], found["counts"], found.get("masks"))
    _check_gallery_cams(cams, path=path, gallery=gallery, hint=_rerun(paths))
    return cams
