"""Assemble the language-neutral report context from a run folder.

``load_inputs`` reads ``checkpoints/NAME/`` and ``reports/NAME/`` (never anything else,
except the data set the caller already loaded); the figures stage draws every chart from
those inputs (``figures.draw_report_figures``; ``build.report_context`` runs the stages);
``build_context`` assembles a plain dict from the inputs and the drawn figures, drawing
nothing: numbers, names, figure paths relative to the report folder, and discussion items
as message keys with parameters. All wording is left to the templates and message catalogs.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, NotRequired, Required, Sequence, TypedDict

import numpy as np
import tomli_w

from . import artifacts, discussion
from .config import RunConfig
from .config import from_dict as config_from_dict
from .data.augment import MixKind, mixing_kinds
from .data.base import Dataset
from .errors import ReportError, XReportError
from .figures import FigurePaths, Figures, ReportFigures
from .labels import size_text
from .metrics import Baselines, CalibrationDirection, baselines, calibration_direction
from .notes import Notes
from .render.numbers import DASH
from .runs import EvaluationPaths, RunPaths, sha256_file

if TYPE_CHECKING:
    import torch

    from .models import ArchitectureSummary

logger = logging.getLogger(__name__)

KIND_ORDER = ("TP", "TN", "FP", "FN")
SUMMARY_VERSIONS = ("python", "torch", "torchvision", "xreport")


# Beyond this many classes a table with one column per class no longer fits an A4 page
# with the names in full: the distribution table turns (one row per class), the confusion
# matrix heads its columns with numbers (the rows carry number and name), and paired
# figures are stacked instead of side by side.
WIDE_CLASSES = 4

# ---------------------------------------------------------------- the context's pieces
# Plain data for the templates (TypedDicts, so a template reads them like any mapping).

class Headline(TypedDict):
    key: str                              # the metric's catalog key
    value: artifacts.Value | None
    baseline: artifacts.Message | None   # what the metric is worth without a model


class Summary(TypedDict):
    task: str
    num_classes: int
    dataset: str
    arch: str
    pretrained: bool
    imported: bool                 # trained elsewhere (`xreport import`)
    n_test: int | None
    date: str
    versions: list[tuple[str, str]]
    headline: list[Headline]
    synthetic: str | None                 # the generator's source when the data are synthetic


class Layout(TypedDict):
    n_classes: int
    transpose_splits: bool
    numbered_columns: bool
    stack_figures: bool


class Predicted(TypedDict):
    """The predicted class counts of an unlabelled split."""

    split: str
    n: int
    counts: list[int]
    file: str


class SplitRow(TypedDict):
    split: str
    counts: list[int] | None       # None: an unlabelled split (its size alone)
    total: int
    predicted: bool


class LeakagePair(TypedDict):
    pair: str                      # "train-test"
    n: int


class Leakage(TypedDict):
    pairs: list[LeakagePair]
    total: int


class Imbalance(TypedDict):
    method: str
    ratio: float | None
    balanced: bool
    majority: str | None
    minority: str | None
    n_majority: int | None
    n_minority: int | None


class PipelineParam(TypedDict):
    key: str
    value: object                  # a JSON scalar or list from the meta
    slug: str | None               # word-like values: their catalog key part


class PipelineRow(TypedDict):
    name: str
    params: list[PipelineParam]


class ModelInfo(TypedDict):
    arch: str
    stem: str
    params: int | dict[str, int] | None
    trainable: int | None
    flops: int | None
    pretrained: bool
    imported: bool
    cam_layer: str | None
    in_channels: int
    image_size: int
    num_classes: int
    dropout: float
    # Stages, block structure, parameters and FLOPs from one forward pass (None: the model
    # could not be rebuilt from the meta); the block diagram drawn from it.
    architecture: ArchitectureSummary | None
    figures: dict[str, FigurePaths | None]


class Training(TypedDict):
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    warmup_epochs: int
    epochs_planned: int
    epochs_run: int | None
    early_stopping: int
    batch_size: int
    imbalance: str
    label_smoothing: float
    seed: int
    selected_epoch: int | None
    selected_by: str
    selected_value: float | None   # the selection metric's validation value at that epoch
    val_metrics: list[tuple[str, float]]
    head: str
    loss: str
    weight_averaging: str          # none | ema | swa (train.weight_averaging as resolved)
    select_smoothing: int          # epochs whose mean val figure selected the checkpoint
    # Batch mixing on (augment.mixup / augment.cutmix) as (kind, alpha): the train curves are
    # then figures on blended images, and the section says so.
    mixing: list[tuple[MixKind, float]]
    recipe: list[artifacts.RecipeChoice]
    figures: dict[str, FigurePaths | None]
    # `xreport import`: the weights file (name, sha256); the training is not known, so the
    # section says so instead of showing the config's unused training keys.
    imported: artifacts.ImportedWeights | None


class ReportRow(TypedDict):
    label: str
    kind: str                      # class | macro | weighted
    support: int | None
    precision: artifacts.Value | None
    recall: artifacts.Value | None
    specificity: artifacts.Value | None
    f1: artifacts.Value | None
    auc: artifacts.Value | None


class OperatingPointRow(TypedDict):
    name: str
    threshold: float | None
    chosen_on: str
    sensitivity: artifacts.Value
    specificity: artifacts.Value
    ppv: artifacts.Value
    npv: artifacts.Value
    cm: list[list[int]] | None


class Confusion(TypedDict):
    labels: list[str]
    raw: list[list[int]]
    by_true: artifacts.Matrix


class Results(TypedDict, total=False):
    available: Required[bool]      # False: the split has no labels, nothing else is set
    task: artifacts.Task
    n: int
    positive: str | None
    split: str
    bootstrap: artifacts.Bootstrap | None
    every_value_has_interval: bool   # the results sentence may say "every metric" has one
    overall: list[tuple[str, artifacts.Value]]
    report_rows: list[ReportRow]
    confusion: Confusion
    classes_shown: NotRequired[dict[str, int] | None]   # {"n", "of"} when not every class is shown
    operating_points: list[OperatingPointRow]
    calibration: artifacts.Calibration | None
    calibration_direction: CalibrationDirection | None
    ordinal: artifacts.Ordinal | None
    baselines: Baselines | None
    baseline_notes: dict[str, artifacts.Message]   # metric key -> its chance / majority note
    precision: str | None          # of the inference; None: not recorded (older metrics.json)
    device: str | None
    tta_views: list[artifacts.TtaView] | None   # the views averaged; None: the image alone
    figures: Figures
    deduplicated: Deduplicated | None


class Deduplicated(TypedDict):
    """The headline metrics on the full test split beside the split without the images that
    duplicate train/val images (metrics.json ``deduplicated``)."""

    removed: int
    exact: int
    near: int
    n: int
    n_full: int
    method: str
    rows: list[tuple[str, artifacts.Value, artifacts.Value | None]]   # key, full, without


class GalleryMapRow(TypedDict):
    file: str | None               # relative to the report folder once found
    cls: str | None
    prob: float | None
    roles: list[str]               # "true" / "pred": the class is the image's true / predicted


class GalleryPanel(TypedDict):
    kind: str
    id: str
    prob: float | None
    true: str | None
    prob_true: float | None
    pred: str | None
    prob_pred: float | None
    repeated: bool
    maps: list[GalleryMapRow]


class GalleryGroup(TypedDict):
    cls: str
    panels: list[GalleryPanel]


class ViewerPayload(artifacts.ViewerData):
    colormap: str                  # charts.colormap_lut: the CAM colours for the browser


class Viewer(TypedDict):
    data: ViewerPayload
    n: int
    task: artifacts.Task
    split: str
    classes: list[int]
    sets: list[str]
    names: dict[str, list[str]]    # language -> class names


class StatRow(TypedDict):
    """A paired statistic as a table row (older metrics.json lacks some statistics: None)."""

    metric: str
    cam: float | None
    random: float | None
    difference: float | None
    ci95: list[float] | None
    p_value: float | None
    test: str | None
    n: int | None
    margin: float | None
    verdict: str | None
    chance: NotRequired[float | None]   # localisation only


class FaithfulnessContext(TypedDict):
    n: int | None
    rows: list[StatRow]
    verdict: str | None
    maps: int                      # random maps per image
    margin: float
    road: bool
    better: int                    # scores whose verdict is better / worse (the headline's counts)
    worse: int


class SimilarityCell(TypedDict, total=False):
    mean: float | None
    sd_seeds: float | None
    ci95: list[float] | None
    n: int | None
    per_seed: list[float]
    limit: float
    verdict: str


class SanityRow(TypedDict):
    randomised: str | None
    verdict: str | None
    spearman: SimilarityCell
    ssim: SimilarityCell


class SanityContext(TypedDict):
    n: int | None
    seeds: int
    stages: list[SanityRow]
    verdict: str | None
    limit: float


class LocalisationContext(TypedDict):
    n: int
    rows: list[StatRow]
    verdict: str | None
    tolerance: int
    maps: int
    margin: float


class ExplainContext(TypedDict, total=False):
    available: Required[bool]      # False: the evaluation has no explanation
    method: str
    target_layer: str | None
    gallery: list[GalleryGroup]
    viewer: Viewer | None
    cam_scale: list[str]
    lesion_outlines: bool          # some gallery overlay outlines its image's known lesion
    faithfulness: FaithfulnessContext | None
    sanity: SanityContext | None
    localisation: LocalisationContext | None
    protocol: Protocol | None
    figures: dict[str, FigurePaths | None]


class Protocol(TypedDict):
    """The explanation checks' settings as run (chosen with --explain, the same default on
    every device: evaluate.EXPLAIN_PROTOCOLS)."""

    name: str | None               # "fast" or "full"; None in evaluations from before the choice
    total: int | None              # images evaluated, of which faithfulness_n were explained
    faithfulness_n: int | None
    steps: int | None
    maps: int | None
    sanity_n: int | None
    seeds: int | None
    precision: str | None


class Repro(TypedDict):
    config_toml: str
    seed: int
    checkpoint_path: str
    checkpoint_sha256: str
    data_fingerprint: str | None
    versions: dict[str, str]
    command: str | None
    train_command: str | None
    created: str | None


class SkippedFile(TypedDict):
    file: str
    reason: str


# ---------------------------------------------------------------- sections

def _baseline_notes(metrics: artifacts.Metrics, base: Baselines | None) -> dict[str, artifacts.Message]:
    """Per metric key, what it is worth without a model: chance and the majority class."""
    if base is None:
        return {}
    notes: dict[str, artifacts.Message] = {
        "metric.accuracy": {"key": "baseline.accuracy", "params": {
            "chance": base["chance"], "majority": base["majority"], "cls": base["majority_class"]}},
        "metric.balanced_accuracy": {"key": "baseline.balanced", "params": {"chance": base["chance"]}},
        "metric.mcc": {"key": "baseline.zero", "params": {"value": 0.0}},
        "metric.roc_auc": {"key": "baseline.auc", "params": {"value": 0.5}},
        "metric.roc_auc_macro": {"key": "baseline.auc", "params": {"value": 0.5}},
    }
    if metrics["ordinal"]:
        notes["metric.qwk"] = {"key": "baseline.zero", "params": {"value": base["kappa"]}}
    return notes


def _baselines(metrics: artifacts.Metrics | None) -> Baselines | None:
    if not metrics or not metrics["confusion_matrix"]["raw"]:
        return None
    cm = metrics["confusion_matrix"]
    return baselines(cm["raw"], cm["labels"] or metrics["class_names"])


def headline(metrics: artifacts.Metrics) -> list[Headline]:
    """The summary's four numbers with what each is worth without a model (also the
    notebook summary's, ``api.Report``)."""
    ordinal = metrics["ordinal"]
    binary = metrics["task"] == "binary"
    notes = _baseline_notes(metrics, _baselines(metrics))
    keyed = [("metric.accuracy", metrics["accuracy"]),
             ("metric.roc_auc" if binary else "metric.roc_auc_macro", metrics["roc_auc"]),
             ("metric.macro_f1", metrics["macro_avg"]["f1"]),
             ("metric.qwk", ordinal["qwk"]) if ordinal else
             ("metric.balanced_accuracy", metrics["balanced_accuracy"])]
    # A tile has no room for a class name: the majority class is named in the results table.
    if "metric.accuracy" in notes:
        notes["metric.accuracy"] = {"key": "baseline.accuracy_short",
                                    "params": notes["metric.accuracy"].get("params", {})}
    return [{"key": key, "value": value, "baseline": notes.get(key)} for key, value in keyed]


def _summary(meta: artifacts.CheckpointMeta, metrics: artifacts.Metrics | None,
             evaluation: artifacts.Evaluation, dataset_name: str, *, synthetic: str | None = None) -> Summary:
    versions = meta["versions"]
    data = evaluation["data"]
    return {
        "task": metrics["task"] if metrics else meta["task"],
        "num_classes": meta["num_classes"],
        "dataset": dataset_name,
        "arch": meta["arch"],
        "pretrained": meta["pretrained"],
        "imported": bool(meta.get("imported")),
        "n_test": data["n"] if "n" in data else (metrics["n"] if metrics else None),
        "date": _minutes(meta["created"]),
        "versions": [(k, versions[k]) for k in SUMMARY_VERSIONS if k in versions],
        "headline": headline(metrics) if metrics else [],
        "synthetic": synthetic,
    }


def _synthetic_source(meta: artifacts.CheckpointMeta, dataset: Dataset | None,
                      evaluation: artifacts.Evaluation) -> str | None:
    """The generator's source ("phantom(seed=1234)") when the evaluated images are synthetic."""
    kind = dataset.kind if dataset is not None else meta["data"].get("kind")
    source = str(evaluation["data"].get("source") or (dataset.source if dataset else "") or "")
    if evaluation["data"].get("external"):
        return source if source.startswith("phantom") else None
    return (source or "phantom") if kind == "phantom" or source.startswith("phantom") else None


def _minutes(created: str | None) -> str:
    """An ISO time to the minute ("2026-01-02 10:30"), or a dash."""
    return str(created or "")[:16].replace("T", " ") or DASH


def _dataset_name(meta: artifacts.CheckpointMeta, dataset: Dataset | None) -> str:
    if dataset is not None:
        return dataset.name
    source = str(meta["data"].get("dataset", "")) or "?"
    return Path(source).stem if "/" in source or source.endswith(".npz") else source


def _distribution(paths: RunPaths, dataset: Dataset | None) -> artifacts.ClassDistribution | None:
    # The loaded data set has the test split too; the run folder's file only train and val.
    if dataset is not None:
        from .data.summary import class_distribution
        return class_distribution(dataset)
    return artifacts.load_class_distribution(paths)


def layout(num_classes: int) -> Layout:
    """How tables and figures are laid out for ``num_classes`` (see WIDE_CLASSES)."""
    wide = num_classes > WIDE_CLASSES
    return {"n_classes": num_classes, "transpose_splits": wide, "numbered_columns": wide,
            "stack_figures": wide}


def _split_rows(dist: artifacts.ClassDistribution | None,
                predicted: Predicted | None = None) -> list[SplitRow]:
    """One row per split: class counts, or (an unlabelled split) its size alone; then the
    predicted class counts of an unlabelled split, marked as predictions."""
    if not dist:
        return []
    rows: list[SplitRow] = []
    sizes = dist.get("sizes") or {}
    for split, counts in dist["splits"].items():
        if counts is None:
            if sizes.get(split):
                rows.append({"split": split, "counts": None, "total": int(sizes[split]), "predicted": False})
            continue
        rows.append({"split": split, "counts": [int(c) for c in counts], "total": int(sum(counts)),
                     "predicted": False})
    if predicted:
        rows.append({"split": predicted["split"], "counts": list(predicted["counts"]),
                     "total": int(predicted["n"]), "predicted": True})
    return rows


def _leakage(dist: artifacts.ClassDistribution | None, dataset: Dataset | None) -> Leakage | None:
    found = dist.get("leakage") if dist else None
    if found is None and dataset is not None:
        from .data.summary import leakage_check
        found = leakage_check(dataset)
    if not found:
        return None
    pairs: list[LeakagePair] = [{"pair": k, "n": int(v)}
                                for k, v in found["exact_duplicates"].items() if v is not None]
    return {"pairs": pairs, "total": sum(p["n"] for p in pairs)}


def _imbalance(method: str, dist: artifacts.ClassDistribution | None) -> Imbalance:
    """The handling method and the training split's largest-to-smallest class ratio;
    ``balanced`` when every class has the same count (the sentence then says so)."""
    found = artifacts.train_imbalance(dist)
    if found is None:
        return {"method": method, "ratio": None, "balanced": False, "majority": None,
                "minority": None, "n_majority": None, "n_minority": None}
    return {"method": method, "ratio": found["ratio"], "balanced": found["balanced"],
            "majority": found["majority"], "minority": found["minority"],
            "n_majority": found["n_majority"], "n_minority": found["n_minority"]}


def _param_slug(value: object) -> str:
    """A parameter value as a catalog key part: "black, centred" -> "black_centred"."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")


def _pipeline(meta: artifacts.CheckpointMeta) -> list[PipelineRow]:
    """Each step's name and parameters; the templates translate parameter names and the
    word-like values (``pipeline.param.*``, ``pipeline.value.*``), numbers stay as they are."""
    steps: list[PipelineRow] = []
    for step in meta["pipeline"]:
        params: list[PipelineParam] = [
            {"key": str(k), "value": v, "slug": _param_slug(v) if isinstance(v, (str, bool)) else None}
            for k, v in (step["params"] if "params" in step else {}).items() if v is not None]
        steps.append({"name": str(step["step"]), "params": params})
    return steps


def _join_floats(values: Sequence[float]) -> str:
    return ", ".join(f"{float(v):.3f}" for v in values)


def architecture(meta: artifacts.CheckpointMeta, evaluation: artifacts.Evaluation,
                 model: torch.nn.Module | None = None
                 ) -> tuple[ArchitectureSummary | None, torch.nn.Module | None]:
    """The model's architecture summary at the run's input size, and the model it came from
    (None when the summary was read).

    The evaluation's recorded summary (evaluate summarises the model it loaded). The one
    default for an evaluation from before it: ``model`` summarised when the caller has it,
    else the model rebuilt from the meta ONCE here and returned, so the caller reuses it (a
    DenseNet or ResNet-152 is not rebuilt twice). None when the meta describes no buildable
    model.
    """
    from . import models

    if evaluation["architecture"] is not None:
        return evaluation["architecture"], model
    try:
        if model is None:
            model = models.model_from_meta(meta)
        return models.architecture_summary(model, meta["image_size"], meta["in_channels"]), model
    except (XReportError, KeyError, ValueError, RuntimeError) as exc:
        logger.warning("model details from the checkpoint meta are incomplete: %s", exc)
        return None, model


def _model(meta: artifacts.CheckpointMeta, explain: artifacts.Explanation | None,
           model: torch.nn.Module | None, summary: ArchitectureSummary | None,
           figures: Mapping[str, FigurePaths | None]) -> ModelInfo:
    from . import models

    info: ModelInfo = {
        "arch": meta["arch"],
        "stem": "small" if meta["small_input_stem"] else "standard",
        "params": meta["params"], "trainable": None, "flops": None,
        "pretrained": meta["pretrained"], "imported": bool(meta.get("imported")),
        "cam_layer": explain["target_layer"] if explain else None,
        "in_channels": meta["in_channels"], "image_size": meta["image_size"],
        "num_classes": meta["num_classes"], "dropout": float(meta["dropout"]),
        "architecture": summary, "figures": dict(figures),
    }
    if summary is not None:
        info["params"], info["trainable"], info["flops"] = summary["params"], summary["trainable"], summary["flops"]
    try:
        if not info["cam_layer"] and model is not None:
            info["cam_layer"] = models.cam_target_layer(model, input_size=meta["image_size"],
                                                        in_channels=meta["in_channels"])[1]
    except (XReportError, KeyError, ValueError, RuntimeError) as exc:
        logger.warning("CAM layer of the checkpoint's model unknown: %s", exc)
    return info


VAL_COLUMNS: tuple[Literal["loss", "acc", "f1", "auc", "bacc", "qwk"], ...] = ("loss", "acc", "f1", "auc", "bacc", "qwk")


def _training(meta: artifacts.CheckpointMeta, run_config: RunConfig, history: artifacts.History,
              curves: FigurePaths | None) -> Training:
    train, augment = run_config.train, run_config.augment
    val = meta["val_metrics"]
    choices = meta["recipe"]["choices"] if meta["recipe"] else []
    selected_by = meta["selected_by"]
    selected = selected_by.removeprefix("val_")
    # The pills: loss, accuracy, F1, AUC, and the selection metric whatever it is (QWK, ...).
    shown = [k for k in VAL_COLUMNS if k in ("loss", "acc", "f1", "auc") or k == selected]
    return {
        "optimizer": train.optimizer, "lr": train.lr,
        "weight_decay": train.weight_decay, "schedule": train.schedule,
        "warmup_epochs": train.warmup_epochs, "epochs_planned": train.epochs,
        "epochs_run": len(history) if history else None, "early_stopping": train.early_stopping,
        "batch_size": train.batch_size, "imbalance": train.imbalance,
        "label_smoothing": train.label_smoothing, "seed": meta["seed"],
        "selected_epoch": meta["epoch"], "selected_by": selected_by,
        "selected_value": next((val.get(k) for k in VAL_COLUMNS if k == selected), None),
        "val_metrics": [(k, v) for k in shown if (v := val.get(k)) is not None],
        "head": meta["head"], "loss": meta["loss"],
        # How the saved model was chosen beyond the metric.
        "weight_averaging": meta["weight_averaging"],
        "select_smoothing": meta["select_smoothing"],
        "mixing": mixing_kinds(augment),
        # What the auto recipe chose from the data (the "why" figures in English, as a tooltip).
        "recipe": [c for c in choices if c["rule"] != "base"],
        "figures": {"curves": curves},
        "imported": meta.get("imported"),
    }


def _report_row(label: str, kind: str, row: artifacts.ClassRow | artifacts.AverageRow) -> ReportRow:
    # "auc" (and an average's other columns) may be None: the cell shows a dash.
    return {"label": label, "kind": kind, "support": row["support"], "precision": row["precision"],
            "recall": row["recall"], "specificity": row["specificity"], "f1": row["f1"], "auc": row["auc"]}


def _table_rows(dist: artifacts.ClassDistribution | None, k: int) -> list[int]:
    from .limits import largest_classes

    if not dist:
        return list(range(k))
    counts = [c for c in dist["splits"].values() if c is not None and len(c) == k]
    return largest_classes([sum(c[i] for c in counts) for i in range(k)])


def _report_rows(metrics: artifacts.Metrics, shown: Sequence[int] | None = None) -> list[ReportRow]:
    keep = None if shown is None else set(shown)
    return ([_report_row(r["class"], "class", r) for r in metrics["per_class"]
             if keep is None or r["index"] in keep]
            + [_report_row("macro", "macro", metrics["macro_avg"]),
               _report_row("weighted", "weighted", metrics["weighted_avg"])])


def _every_value_has_interval(metrics: object) -> bool:
    """Whether every defined metric value carries a 95% interval: only then may the results
    sentence say so (an interval can be missing: too few resamples defined, or one that
    leaves out the estimate)."""
    if isinstance(metrics, Mapping):
        if "value" in metrics and metrics["value"] is not None and not metrics.get("ci95"):
            return False
        return all(_every_value_has_interval(v) for v in metrics.values())
    if isinstance(metrics, list):
        return all(_every_value_has_interval(v) for v in metrics)
    return True


def _operating_point(op: artifacts.OperatingPoint, split: str) -> OperatingPointRow:
    # metrics.py says "test" for thresholds chosen on the evaluated data itself: on a
    # validation report that is the validation split, still optimistic.
    chosen_on = "evaluated" if op["chosen_on"] == "test" and split != "test" else op["chosen_on"]
    return {"name": op["name"], "threshold": op["threshold"], "chosen_on": chosen_on,
            "sensitivity": op["sensitivity"], "specificity": op["specificity"],
            "ppv": op["ppv"], "npv": op["npv"], "cm": op["confusion_matrix"]}


def _headline(metrics: artifacts.Metrics) -> list[tuple[str, artifacts.Value]]:
    binary = metrics["task"] == "binary"
    return [("metric.accuracy", metrics["accuracy"]),
            ("metric.balanced_accuracy", metrics["balanced_accuracy"]),
            ("metric.mcc", metrics["mcc"]),
            ("metric.roc_auc" if binary else "metric.roc_auc_macro", metrics["roc_auc"])]


def _deduplicated(metrics: artifacts.Metrics, found: artifacts.Deduplicated | None) -> Deduplicated | None:
    if not found:
        return None
    kept = found["metrics"]
    rows = [(key, value, dict(_headline(kept)).get(key) if kept else None)
            for key, value in _headline(metrics)]
    return {"removed": found["removed"], "exact": found["exact"], "near": found["near"], "n": found["n"],
            "n_full": metrics["n"], "method": found["method"], "rows": rows}


def _results(metrics: artifacts.Metrics | None, split: str, figures: Figures, *,
             evaluation: artifacts.Evaluation | None = None) -> Results:
    if not metrics:
        return {"available": False}
    base = _baselines(metrics)
    binary = metrics["task"] == "binary"
    overall = _headline(metrics)
    weighted = metrics["roc_auc_weighted"]
    if weighted is not None:
        overall.append(("metric.roc_auc_weighted", weighted))
    overall.append(("metric.average_precision", metrics["average_precision"]))
    shown = artifacts.shown_confusion(metrics)
    return {
        "available": True, "task": metrics["task"], "n": metrics["n"],
        # Binary: the positive class, named in the 0.5-threshold sentence.
        "positive": metrics["class_names"][1] if binary and len(metrics["class_names"]) > 1 else None,
        "split": split, "bootstrap": metrics["bootstrap"],
        "every_value_has_interval": _every_value_has_interval(metrics),
        "overall": overall, "report_rows": _report_rows(metrics, shown.indices),
        "confusion": {"labels": shown.labels, "raw": shown.raw, "by_true": shown.by_true},
        # Beyond limits.REPORT_CLASSES the tables and charts show some classes; the note says which.
        "classes_shown": {"n": len(shown.indices), "of": shown.total} if len(shown.indices) < shown.total else None,
        "operating_points": [_operating_point(op, split) for op in metrics["operating_points"]],
        "calibration": metrics["calibration"],
        "calibration_direction": calibration_direction(metrics["calibration"]),
        "ordinal": metrics["ordinal"], "baselines": base,
        "baseline_notes": _baseline_notes(metrics, base),
        "precision": evaluation["precision"] if evaluation else None,
        "device": evaluation.get("device") if evaluation else None,
        # Said only when more than the image itself was averaged (a run trained without flips
        # has no other valid view, and its "TTA" predictions are the plain ones).
        "tta_views": (views if evaluation and len(views := artifacts.tta_views_of(evaluation)) > 1
                      else None),
        "figures": figures,
        "deduplicated": (_deduplicated(metrics, evaluation.get("deduplicated"))
                         if split == "test" and evaluation else None),
    }


def _gallery_maps(entry: artifacts.GalleryEntry, class_names: Sequence[str]) -> list[GalleryMapRow]:
    """The entry's maps, each naming its class and role (true / predicted class).

    metrics.json from before per-class maps has one ``file`` whose map is for ``target``
    (a class index)."""
    found: list[tuple[str | None, str | None, float | None]]
    if entry["maps"]:
        found = [(m["file"], m["class"], m["prob"]) for m in entry["maps"]]
    else:
        target = entry["target"]
        named = class_names[target] if target is not None and 0 <= target < len(class_names) else None
        found = [(entry["file"], named, None)]
    return [{"file": file, "cls": cls, "prob": prob,
             "roles": [role for role in ("true", "pred") if cls is not None and entry[role] == cls]}
            for file, cls, prob in found]


def _panel(entry: artifacts.GalleryEntry, maps: list[GalleryMapRow]) -> GalleryPanel:
    # Entries from before the true/predicted columns have None there: the template shows dashes.
    return {"kind": entry["kind"], "id": str(entry["index"] if entry["id"] is None else entry["id"]),
            "prob": entry["prob"], "true": entry["true"], "prob_true": entry["prob_true"],
            "pred": entry["pred"], "prob_pred": entry["prob_pred"],
            "repeated": entry["repeated"], "maps": maps}


def _gallery(explain: artifacts.Explanation, paths: RunPaths, class_names: Sequence[str], *,
             folder: Path, drawn: Sequence[Sequence[str]] | None = None) -> list[GalleryGroup]:
    """Gallery panels grouped by the class they explain, in class order then TP/TN/FP/FN.
    ``drawn``: the overlays the figures stage drew (``figures.draw_cam_gallery``), per
    entry; None: the files metrics.json names (an evaluation that drew them itself)."""
    groups: dict[str, list[GalleryPanel]] = {}
    for i, entry in enumerate(explain["gallery"]):
        maps = _gallery_maps(entry, class_names)
        if drawn is not None:
            for m, file in zip(maps, drawn[i], strict=True):
                m["file"] = file
        missing = [m["file"] for m in maps if not m["file"] or not (folder / m["file"]).is_file()]
        if missing:
            logger.warning("gallery image(s) %s missing; panel left out", ", ".join(map(str, missing)))
            continue
        for m in maps:  # the files sit in their evaluation's folder; the report resolves them from its own
            m["file"] = os.path.relpath(folder / str(m["file"]), paths.report_dir)
        groups.setdefault(str(entry["class"]), []).append(_panel(entry, maps))
    order = {name: i for i, name in enumerate(class_names)}
    kind_rank = {k: i for i, k in enumerate(KIND_ORDER)}
    return [{"cls": cls, "panels": sorted(panels, key=lambda e: kind_rank.get(e["kind"], len(KIND_ORDER)))}
            for cls, panels in sorted(groups.items(), key=lambda g: order.get(g[0], len(order)))]


def _viewer(explain: artifacts.Explanation, folder: Path,
            mappings: Mapping[str, Mapping[str, str]],
            class_names: Sequence[str] | None = None) -> Viewer | None:
    """The interactive viewer's data (embedded once in the HTML) and what its markup needs."""
    from . import charts, viewer

    ref = explain["viewer"]
    if not ref:
        return None
    try:
        data: ViewerPayload = {**artifacts.load_viewer(EvaluationPaths(folder), ref["file"],
                                                       class_names=class_names),
                               "colormap": charts.colormap_lut()}
    except ReportError as exc:
        # The static gallery stays: a damaged viewer file costs only the viewer.
        logger.warning("interactive viewer left out: %s", exc)
        return None
    names = data["class_names"]
    return {"data": data, "n": len(data["items"]), "task": data["task"], "split": data["split"],
            "classes": list(range(len(names))),
            "sets": [s for s in viewer.SETS if any(s in it["sets"] for it in data["items"])],
            "names": {lang: [m.get(n, n) for n in names] for lang, m in mappings.items()}}


FAITH_ROWS = artifacts.FAITH_SCORES
LOCALISATION_ROWS: tuple[Literal["pointing_game", "energy_inside"], ...] = ("pointing_game", "energy_inside")


def _stat_row(metric: str, stat: artifacts.PairedStatistic) -> StatRow:
    """One table row of a paired statistic from metrics.json (older files lack the statistics)."""
    return {"metric": metric, "cam": stat["cam"], "random": stat["random"],
            "difference": stat["difference"], "ci95": stat["ci95"], "p_value": stat["p_value"],
            "test": stat["test"], "n": stat["n"], "margin": stat["margin"], "verdict": stat["verdict"]}


def _faithfulness(faith: artifacts.Faithfulness | None) -> FaithfulnessContext | None:
    from .verdicts import FAITHFULNESS_MARGIN

    if not faith:
        return None
    rows = [_stat_row(m, stat) for m in FAITH_ROWS if (stat := faith[m]) and stat["cam"] is not None]
    if not rows:
        return None
    return {"n": faith["n"], "rows": rows, "verdict": faith["verdict"],
            "maps": faith["random_maps"]["per_image"],
            "margin": FAITHFULNESS_MARGIN, "road": any(r["metric"].startswith("road") for r in rows),
            "better": sum(r["verdict"] == "better" for r in rows),
            "worse": sum(r["verdict"] == "worse" for r in rows)}


def _similarity(found: artifacts.Similarity | None) -> SimilarityCell:
    # A stage without this similarity: every column a dash.
    return {"mean": None, "sd_seeds": None, "ci95": None, "n": None, **(found or {})}


def _sanity(sanity: artifacts.Sanity | None) -> SanityContext | None:
    from .verdicts import SANITY_SPEARMAN_LIMIT

    if not sanity or not sanity["stages"]:
        return None
    stages: list[SanityRow] = [{"randomised": st["randomised"], "verdict": st["verdict"],
                                "spearman": _similarity(st["spearman"]), "ssim": _similarity(st["ssim"])}
                               for st in sanity["stages"]]
    return {"n": sanity["n"], "seeds": sanity["seeds"], "stages": stages,
            "verdict": sanity["verdict"], "limit": SANITY_SPEARMAN_LIMIT}


def _localisation(loc: artifacts.Localisation | None) -> LocalisationContext | None:
    from .verdicts import LOCALISATION_MARGIN

    if not loc or not loc["n"]:
        return None
    rows: list[StatRow] = [{**_stat_row(m, stat), "chance": stat["chance"]}
                           for m in LOCALISATION_ROWS if (stat := loc[m])]
    return {"n": loc["n"], "rows": rows, "verdict": loc["verdict"], "tolerance": loc["tolerance"],
            "maps": loc["random_per_image"], "margin": LOCALISATION_MARGIN}


def _protocol(explain: artifacts.Explanation, precision: str | None, total: int | None) -> Protocol:
    faith, sanity = explain["faithfulness"], explain["sanity"]
    return {"name": explain["protocol"], "total": total,
            "faithfulness_n": faith["n"] if faith else None,
            "steps": faith.get("steps") if faith else None,
            "maps": faith["random_maps"]["per_image"] if faith else None,
            "sanity_n": sanity["n"] if sanity else None, "seeds": sanity["seeds"] if sanity else None,
            "precision": precision}


def _explain(explain: artifacts.Explanation | None, paths: RunPaths,
             figures: Mapping[str, FigurePaths | None], class_names: Sequence[str], *,
             folder: Path | None = None,
             mappings: Mapping[str, Mapping[str, str]] | None = None,
             precision: str | None = None, total: int | None = None,
             drawn: Sequence[Sequence[str]] | None = None) -> ExplainContext:
    from . import charts

    if not explain:
        return {"available": False}
    folder = folder or paths.report_dir
    return {"available": True, "method": explain["method"],
            "target_layer": explain["target_layer"],
            "gallery": _gallery(explain, paths, class_names, folder=folder, drawn=drawn),
            "viewer": _viewer(explain, folder, mappings or {}, class_names),
            "cam_scale": charts.cam_scale_colors(),
            "lesion_outlines": any(entry["lesion_outline"] for entry in explain["gallery"]),
            "faithfulness": _faithfulness(explain["faithfulness"]),
            "sanity": _sanity(explain["sanity"]),
            "localisation": _localisation(explain["localisation"]),
            "protocol": _protocol(explain, precision, total),
            "figures": dict(figures)}


def _repro(meta: artifacts.CheckpointMeta, run_config: RunConfig, paths: RunPaths,
           evaluation: artifacts.Evaluation, command: str | None) -> Repro:
    if paths.config.is_file():
        config_toml = paths.config.read_text(encoding="utf-8")
    else:
        config_toml = tomli_w.dumps(_toml_safe(meta["config"]))
    sha = evaluation["checkpoint"].get("sha256") or (sha256_file(paths.best) if paths.best.is_file() else None)
    train_cmd = shlex.join(str(a) for a in meta["command"]) if meta["command"] is not None else None
    return {"config_toml": config_toml, "seed": meta["seed"],
            "checkpoint_path": str(paths.best), "checkpoint_sha256": sha or DASH,
            "data_fingerprint": meta["data_fingerprint"] or evaluation["data"].get("fingerprint"),
            "versions": meta["versions"], "command": command, "train_command": train_cmd,
            "created": meta["created"]}


def _toml_safe(config: Mapping[str, object]) -> dict[str, object]:
    """The config without None (TOML has no null), for a run folder without config.toml."""
    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {str(k): strip(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value if v is not None]
        return value
    return {str(k): strip(v) for k, v in config.items() if v is not None}


def _skipped(evaluation: artifacts.Evaluation, dataset: Dataset | None) -> list[SkippedFile]:
    seen: dict[tuple[str, str], SkippedFile] = {}
    for item in list(evaluation["skipped"]) + list(dataset.skipped if dataset else []):
        entry: SkippedFile = {"file": str(item["file"]), "reason": str(item["reason"])}
        seen.setdefault((entry["file"], entry["reason"]), entry)
    return list(seen.values())


# ---------------------------------------------------------------- the context

class Normalization(TypedDict):
    mode: str
    mean: str
    std: str


class DataSection(TypedDict):
    dataset: str
    table_rows: list[int]           # class indices the distribution table lists
    kind: object                   # the data set's kind ("medmnist", "folder", ...) or None
    source: object
    class_names: list[str]
    splits: list[SplitRow]
    val_held_out: float | None      # the source had no val split: this share of train became val
    class_matches: list[artifacts.ClassMatch]   # class folders taken for a class of another name
    predicted: Predicted | None
    image_size: int
    channels: int
    original_size: str | None
    original_channels: int | None
    pipeline: list[PipelineRow]
    normalization: Normalization
    augment: list[tuple[str, object]]
    imbalance: Imbalance
    leakage: Leakage | None
    figures: dict[str, FigurePaths | None]


class ReportContext(TypedDict):
    """Everything the report templates show (``ctx`` in them)."""

    schema: int
    run: str
    report_dir: str
    langs: list[str]
    generated: str
    class_names: list[str]
    class_names_i18n: dict[str, list[str]]
    layout: Layout
    summary: Summary
    data: DataSection
    model: ModelInfo
    training: Training
    results: Results
    explain: ExplainContext
    evaluated_split: str
    discussion: list[discussion.Item]
    limitations: list[discussion.Item]
    repro: Repro
    skipped: list[SkippedFile]
    failed_charts: list[str]
    notes: NotRequired[dict[str, Notes | None]]   # the user's notes per language (build --notes)
    notes_langs: NotRequired[list[str]]           # the languages that have notes


def _predicted(evaluation: EvaluationPaths | None, class_names: Sequence[str]) -> Predicted | None:
    """The predicted class counts of an unlabelled split (a Kaggle-style test set)."""
    if evaluation is None:
        return None
    data = artifacts.load_evaluation(evaluation, class_names=class_names)
    counts = data["predicted_counts"]
    if not counts or len(counts) != len(class_names):  # metrics.json from before the counts
        probs = artifacts.load_predictions(evaluation, class_names=class_names).probs
        counts = np.bincount(probs.argmax(axis=1), minlength=len(class_names)).tolist()
    return {"split": artifacts.evaluation_split(data), "n": int(sum(counts)),
            "counts": [int(c) for c in counts], "file": evaluation.predictions.name}


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """What the figures stage draws from and the context is assembled from, read from the
    run folder once (``load_inputs``)."""

    paths: RunPaths
    meta: artifacts.CheckpointMeta
    evaluation_paths: EvaluationPaths          # the labelled evaluation the report shows
    evaluation: artifacts.Evaluation
    config: RunConfig                           # the meta's config
    history: artifacts.History
    distribution: artifacts.ClassDistribution | None
    dataset: Dataset | None
    predicted: Predicted | None                 # an unlabelled split's predicted class counts
    architecture: ArchitectureSummary | None
    model: torch.nn.Module | None


def load_inputs(paths: RunPaths, *, dataset: Dataset | None = None,
                meta: artifacts.CheckpointMeta | None = None, model: torch.nn.Module | None = None,
                evaluation: EvaluationPaths | None = None,
                predictions_only: EvaluationPaths | None = None) -> ReportInputs:
    """Read what the report shows from ``checkpoints/NAME/`` and ``reports/NAME/``.

    ``meta`` and ``model`` are the already-loaded run (``build`` passes them, so the
    checkpoint is not read again); without them the checkpoint's meta is loaded here.
    ``evaluation`` is the labelled evaluation whose metrics and CAMs the report shows (the
    run's test evaluation by default); ``predictions_only`` an unlabelled split's evaluation,
    of which the report shows the predicted class counts.
    """
    if meta is None:
        if not paths.best.is_file():
            raise ReportError(f"{paths.best}: checkpoint not found; train the run first "
                              f"(`xreport train`) or check --checkpoints")
        meta = artifacts.load_checkpoint_meta(paths.best)
    evaluation_paths = evaluation or paths.evaluation("test")
    loaded = artifacts.load_evaluation(evaluation_paths, class_names=meta["class_names"])
    run_config = config_from_dict(meta["config"], source=f"{paths.best} (meta.config)")
    history = artifacts.load_history(paths)
    dist = _distribution(paths, dataset)
    predicted = _predicted(predictions_only, list(meta["class_names"]))
    summary, model = architecture(meta, loaded, model)
    return ReportInputs(paths=paths, meta=meta, evaluation_paths=evaluation_paths, evaluation=loaded,
                        config=run_config, history=history, distribution=dist, dataset=dataset,
                        predicted=predicted, architecture=summary, model=model)


def build_context(inputs: ReportInputs, figs: ReportFigures, *, langs: Sequence[str],
                  command: str | None = None) -> ReportContext:
    """Everything the templates show, as plain data, assembled from the run's ``inputs`` and
    the charts the figures stage drew (``figures.draw_report_figures``); it draws nothing."""
    paths, meta, loaded, dataset = inputs.paths, inputs.meta, inputs.evaluation, inputs.dataset
    metrics = loaded["metrics"]
    explain = loaded["explain"]
    split = artifacts.evaluation_split(loaded)
    run_config = inputs.config
    history = inputs.history
    dist = inputs.distribution
    class_names = list(meta["class_names"])
    i18n = artifacts.class_name_translations(meta)
    mappings = {lang: artifacts.class_name_map(class_names, i18n.get(lang)) for lang in langs}
    predicted = inputs.predicted
    summary, model = inputs.architecture, inputs.model
    evaluation_paths = inputs.evaluation_paths

    name = _dataset_name(meta, dataset)
    data_cfg = meta["data"]
    data_ref = loaded["data"]
    leakage = _leakage(dist, dataset)
    return {
        "schema": 1,
        "run": paths.name,
        "report_dir": str(paths.report_dir.resolve()),
        "langs": list(langs),
        "generated": _minutes(loaded["created"]),
        "class_names": class_names,
        "class_names_i18n": {k: v for k, v in i18n.items() if v},
        "layout": layout(len(class_names)),
        "summary": _summary(meta, metrics, loaded, name,
                            synthetic=_synthetic_source(meta, dataset, loaded)),
        "data": {
            "dataset": name, "kind": dataset.kind if dataset else data_cfg.get("kind"),
            "source": dataset.source if dataset else data_ref.get("source")
            or data_cfg.get("dataset", DASH),
            "class_names": class_names, "splits": _split_rows(dist, predicted),
            # Beyond limits.REPORT_CLASSES the per-class table lists the largest classes.
            "table_rows": _table_rows(dist, len(class_names)),
            "val_held_out": dist["val_held_out"] if dist else None,
            "class_matches": list(dist.get("class_matches", [])) if dist else [],
            "predicted": predicted,
            "image_size": meta["image_size"], "channels": meta["in_channels"],
            # Dataset.original_size is (H, W); written W × H like every size (labels.size_text).
            "original_size": (size_text(dataset.original_size[1], dataset.original_size[0])
                              if dataset is not None and dataset.original_size else None),
            "original_channels": dataset.original_channels if dataset is not None else None,
            "pipeline": _pipeline(meta),
            "normalization": {"mode": run_config.preprocess.normalize,
                              "mean": _join_floats(meta["mean"]), "std": _join_floats(meta["std"])},
            "augment": list(dataclasses.asdict(run_config.augment).items()),
            "imbalance": _imbalance(run_config.train.imbalance, dist),
            "leakage": leakage,
            "figures": {"distribution": figs.distribution, "examples": figs.examples,
                        "before_after": figs.before_after},
        },
        "model": _model(meta, explain, model, summary, {"block_diagram": figs.block_diagram}),
        "training": _training(meta, run_config, history, figs.curves),
        "results": _results(metrics, split, figs.results, evaluation=loaded),
        "explain": _explain(explain, paths, {"faithfulness": figs.faithfulness, "sanity": figs.sanity},
                            class_names, folder=evaluation_paths.folder, mappings=mappings, drawn=figs.gallery,
                            precision=loaded["precision"], total=loaded["data"].get("n")),
        # The split the metrics and CAMs are from: "val" when the test split has no labels.
        "evaluated_split": str(split),
        "discussion": discussion.observations(metrics, history=history, distribution=dist,
                                              explain=explain, split=str(split),
                                              deduplicated=loaded.get("deduplicated")
                                              if str(split) == "test" else None),
        "limitations": discussion.limitations(
            metrics, distribution=dist, leakage=leakage, split=str(split),
            synthetic=_synthetic_source(meta, dataset, loaded), seed=meta["seed"],
            external=bool(data_ref.get("external")), source=str(data_ref.get("source") or name),
            image_sizes=dataset.original_sizes if dataset is not None else None),
        "repro": _repro(meta, run_config, paths, loaded, command),
        "skipped": _skipped(loaded, dataset),
        "failed_charts": figs.failed,
    }
