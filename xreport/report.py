"""Assemble the language-neutral report context from a run folder.

``build_context`` reads ``checkpoints/NAME/`` and ``reports/NAME/`` (never anything else,
except the data set the caller already loaded), draws every chart once per language into
``reports/NAME/figures/<chart>.<lang>.png`` and returns a plain dict: numbers, names, figure
paths relative to the report folder, and discussion items as message keys with parameters.
All wording is left to the templates and message catalogs.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tomli_w

from . import artifacts, discussion
from .config import RunConfig, TrainConfig
from .config import from_dict as config_from_dict
from .config import to_dict as config_to_dict
from .data.base import Dataset
from .errors import ReportError, XReportError
from .figures import Figures
from .runs import EvaluationPaths, RunPaths, sha256_file

logger = logging.getLogger(__name__)

KIND_ORDER = ("TP", "TN", "FP", "FN")
SUMMARY_VERSIONS = ("python", "torch", "torchvision", "xreport")


# Beyond this many classes a table with one column per class no longer fits an A4 page
# with the names in full: the distribution table turns (one row per class), the confusion
# matrix heads its columns with numbers (the rows carry number and name), and paired
# figures are stacked instead of side by side.
WIDE_CLASSES = 4

# ---------------------------------------------------------------- sections

def _summary(meta: artifacts.CheckpointMeta, metrics: artifacts.Metrics | None,
             evaluation: artifacts.Evaluation, dataset_name: str) -> dict[str, Any]:
    versions = meta.get("versions", {})
    headline = []
    if metrics:
        ordinal = metrics.get("ordinal")
        binary = metrics["task"] == "binary"
        headline = [{"key": "metric.accuracy", "value": metrics["accuracy"]},
                    {"key": "metric.roc_auc" if binary else "metric.roc_auc_macro", "value": metrics["roc_auc"]},
                    {"key": "metric.macro_f1", "value": metrics["macro_avg"].get("f1")},
                    {"key": "metric.qwk", "value": ordinal["qwk"]} if ordinal else
                    {"key": "metric.balanced_accuracy", "value": metrics["balanced_accuracy"]}]
    data = evaluation.get("data", {})
    return {
        "task": metrics["task"] if metrics else meta.get("task", "binary"),
        "num_classes": meta["num_classes"],
        "dataset": dataset_name,
        "arch": meta["arch"],
        "pretrained": meta.get("pretrained", False),
        "n_test": data["n"] if "n" in data else (metrics["n"] if metrics else None),
        "date": str(meta.get("created", ""))[:16].replace("T", " ") or "—",
        "versions": [(k, versions[k]) for k in SUMMARY_VERSIONS if k in versions],
        "headline": headline,
    }


def _dataset_name(meta: Mapping[str, Any], dataset: Dataset | None) -> str:
    if dataset is not None:
        return dataset.name
    source = str((meta.get("data") or {}).get("dataset", "")) or "?"
    return Path(source).stem if "/" in source or source.endswith(".npz") else source


def _distribution(paths: RunPaths, dataset: Dataset | None) -> artifacts.ClassDistribution | None:
    # The loaded data set has the test split too; the run folder's file only train and val.
    if dataset is not None:
        from .data.summary import class_distribution
        return class_distribution(dataset)
    return artifacts.load_class_distribution(paths)


def layout(num_classes: int) -> dict[str, Any]:
    """How tables and figures are laid out for ``num_classes`` (see WIDE_CLASSES)."""
    wide = num_classes > WIDE_CLASSES
    return {"n_classes": num_classes, "transpose_splits": wide, "numbered_columns": wide,
            "stack_figures": wide}


def _split_rows(dist: Mapping[str, Any] | None,
                predicted: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per split: class counts, or (an unlabelled split) its size alone; then the
    predicted class counts of an unlabelled split, marked as predictions."""
    if not dist:
        return []
    rows = []
    sizes = dist.get("sizes") or {}
    for split, counts in (dist.get("splits") or {}).items():
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


def _leakage(paths: RunPaths, dist: Mapping[str, Any] | None,
             dataset: Dataset | None) -> dict[str, Any] | None:
    found = dist.get("leakage") if dist else None
    if found is None and dataset is not None:
        from .data.summary import leakage_check
        found = leakage_check(dataset)
    if not found:
        return None
    pairs = [{"pair": k, "n": int(v)} for k, v in (found.get("exact_duplicates") or {}).items()
             if v is not None]
    return {"pairs": pairs, "total": sum(p["n"] for p in pairs)}


def _imbalance(method: str, dist: artifacts.ClassDistribution | None) -> dict[str, Any]:
    """The handling method and the training split's largest-to-smallest class ratio;
    ``balanced`` when every class has the same count (the sentence then says so)."""
    out: dict[str, Any] = {"method": method, "ratio": None, "balanced": False, "majority": None,
                           "minority": None, "n_majority": None, "n_minority": None}
    found = artifacts.train_imbalance(dist)
    if found is not None:
        out.update({k: found[k] for k in ("ratio", "balanced", "majority", "minority",
                                          "n_majority", "n_minority")})
    return out


def _param_slug(value: Any) -> str:
    """A parameter value as a catalog key part: "black, centred" -> "black_centred"."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")


def _pipeline(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each step's name and parameters; the templates translate parameter names and the
    word-like values (``pipeline.param.*``, ``pipeline.value.*``), numbers stay as they are."""
    steps = []
    for step in meta.get("pipeline") or []:
        params = [{"key": str(k), "value": v, "slug": _param_slug(v) if isinstance(v, (str, bool)) else None}
                  for k, v in (step.get("params") or {}).items() if v is not None]
        steps.append({"name": str(step.get("step", "?")), "params": params})
    return steps


def _join_floats(values: Any) -> str:
    if values is None:
        return "—"
    values = values if isinstance(values, (list, tuple)) else [values]
    return ", ".join(f"{float(v):.3f}" for v in values)


def _model(meta: artifacts.CheckpointMeta, explain: artifacts.Explanation | None,
           model: Any = None) -> dict[str, Any]:
    from . import models

    info: dict[str, Any] = {
        "arch": meta["arch"],
        "stem": "small" if meta["small_input_stem"] else "standard",
        "params": meta.get("params"), "trainable": None, "flops": None,
        "pretrained": meta.get("pretrained", False),
        "cam_layer": explain.get("target_layer") if explain else None,
        "in_channels": meta["in_channels"], "image_size": meta["image_size"],
        "num_classes": meta["num_classes"], "dropout": float(meta.get("dropout", 0.0)),
    }
    try:
        if model is None:
            model = models.model_from_meta(meta)
        counts = models.count_parameters(model)
        info["params"], info["trainable"] = counts["total"], counts["trainable"]
        info["flops"] = models.count_flops(model, meta["image_size"], meta["in_channels"])
        if not info["cam_layer"]:
            info["cam_layer"] = models.cam_target_layer(model, input_size=meta["image_size"],
                                                        in_channels=meta["in_channels"])[1]
    except (XReportError, KeyError, ValueError, RuntimeError) as exc:
        logger.warning("model details from the checkpoint meta are incomplete: %s", exc)
    return info


def _training(meta: artifacts.CheckpointMeta, train: TrainConfig, history: artifacts.History,
              curves: dict[str, str] | None) -> dict[str, Any]:
    val = meta.get("val_metrics", {})
    return {
        "optimizer": train.optimizer, "lr": train.lr,
        "weight_decay": train.weight_decay, "schedule": train.schedule,
        "warmup_epochs": train.warmup_epochs, "epochs_planned": train.epochs,
        "epochs_run": len(history) if history else None, "early_stopping": train.early_stopping,
        "batch_size": train.batch_size, "imbalance": train.imbalance,
        "label_smoothing": train.label_smoothing, "seed": meta.get("seed", train.seed),
        "selected_epoch": meta.get("epoch"), "selected_by": meta.get("selected_by", train.select_metric),
        "val_metrics": [(k, v) for k in ("loss", "acc", "f1", "auc") if (v := val.get(k)) is not None],
        "head": meta.get("head", "linear"),
        # What the auto recipe chose from the data (the "why" figures in English, as a tooltip).
        "recipe": [c for c in ((meta.get("recipe") or {}).get("choices") or [])
                   if isinstance(c, Mapping) and c.get("rule") != "base"],
        "figures": {"curves": curves},
    }


_REPORT_COLUMNS = ("precision", "recall", "specificity", "f1", "auc")


def _report_row(label: str, kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    # "auc" (and an average's other columns) may be absent: the cell shows a dash.
    return {"label": label, "kind": kind, "support": row.get("support"),
            **{k: row.get(k) for k in _REPORT_COLUMNS}}


def _report_rows(metrics: artifacts.Metrics) -> list[dict[str, Any]]:
    return ([_report_row(r["class"], "class", r) for r in metrics["per_class"]]
            + [_report_row("macro", "macro", metrics["macro_avg"]),
               _report_row("weighted", "weighted", metrics["weighted_avg"])])


def _every_value_has_interval(metrics: Any) -> bool:
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


def _results(metrics: artifacts.Metrics | None, evaluation: artifacts.Evaluation,
             figures: Figures) -> dict[str, Any]:
    if not metrics:
        return {"available": False}
    binary = metrics.get("task") == "binary"
    overall = [("metric.accuracy", metrics.get("accuracy")),
               ("metric.balanced_accuracy", metrics.get("balanced_accuracy")),
               ("metric.mcc", metrics.get("mcc")),
               ("metric.roc_auc" if binary else "metric.roc_auc_macro", metrics.get("roc_auc"))]
    if metrics.get("roc_auc_weighted") is not None:
        overall.append(("metric.roc_auc_weighted", metrics["roc_auc_weighted"]))
    overall.append(("metric.average_precision", metrics.get("average_precision")))
    cm = metrics.get("confusion_matrix") or {}
    split = evaluation.get("split", "test")
    # metrics.py says "test" for thresholds chosen on the evaluated data itself: on a
    # validation report that is the validation split, still optimistic.
    ops = [{"name": op.get("name"), "threshold": op.get("threshold"),
            "chosen_on": "evaluated" if op.get("chosen_on") == "test" and split != "test" else op.get("chosen_on", "fixed"),
            "sensitivity": op.get("sensitivity"), "specificity": op.get("specificity"),
            "ppv": op.get("ppv"), "npv": op.get("npv"), "cm": op.get("confusion_matrix")}
           for op in metrics.get("operating_points") or []]
    return {
        "available": True, "task": metrics["task"], "n": metrics["n"],
        # Binary: the positive class, named in the 0.5-threshold sentence.
        "positive": (metrics.get("class_names") or [None, None])[1] if binary else None,
        "split": split, "bootstrap": metrics.get("bootstrap"),
        "every_value_has_interval": _every_value_has_interval(metrics),
        "overall": overall, "report_rows": _report_rows(metrics),
        "confusion": {"labels": cm["labels"] or metrics["class_names"],
                      "raw": cm["raw"], "by_true": cm["by_true"]},
        "operating_points": ops, "calibration": metrics.get("calibration"),
        "ordinal": metrics.get("ordinal"), "figures": figures,
    }


def _gallery_maps(entry: Mapping[str, Any], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The entry's maps, each naming its class and role (true / predicted class).

    metrics.json from before per-class maps has one ``file`` whose map is for ``target``
    (a class index)."""
    maps = entry.get("maps")
    if not maps:
        target = entry.get("target")
        named = class_names[target] if isinstance(target, int) and 0 <= target < len(class_names) else None
        maps = [{"file": entry.get("file"), "class": named, "prob": None}]
    out = []
    for item in maps:
        cls = item.get("class")
        roles = [role for role, key in (("true", "true"), ("pred", "pred"))
                 if cls is not None and entry.get(key) == cls]
        out.append({"file": item.get("file"), "cls": cls, "prob": item.get("prob"), "roles": roles})
    return out


def _gallery(explain: Mapping[str, Any], paths: RunPaths, class_names: Sequence[str], *,
             folder: Path) -> list[dict[str, Any]]:
    """Gallery panels grouped by the class they explain, in class order then TP/TN/FP/FN."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in explain["gallery"]:
        maps = _gallery_maps(entry, class_names)
        missing = [m["file"] for m in maps if not m["file"] or not (folder / m["file"]).is_file()]
        if missing:
            logger.warning("gallery image(s) %s missing; panel left out", ", ".join(map(str, missing)))
            continue
        for m in maps:  # the files sit in their evaluation's folder; the report resolves them from its own
            m["file"] = os.path.relpath(folder / m["file"], paths.report_dir)
        groups.setdefault(str(entry.get("class")), []).append({
            "kind": str(entry.get("kind")), "id": str(entry.get("id", entry.get("index", "?"))),
            "prob": entry.get("prob"), "true": entry.get("true"), "prob_true": entry.get("prob_true"),
            "pred": entry.get("pred"), "prob_pred": entry.get("prob_pred"),
            "repeated": bool(entry.get("repeated")), "maps": maps})
    order = {name: i for i, name in enumerate(class_names)}
    kind_rank = {k: i for i, k in enumerate(KIND_ORDER)}
    return [{"cls": cls, "panels": sorted(panels, key=lambda e: kind_rank.get(e["kind"], len(KIND_ORDER)))}
            for cls, panels in sorted(groups.items(), key=lambda g: order.get(g[0], len(order)))]


def _viewer(explain: Mapping[str, Any], folder: Path, mappings: Mapping[str, Mapping[str, str]]) -> dict[str, Any] | None:
    """The interactive viewer's data (embedded once in the HTML) and what its markup needs."""
    from . import charts, viewer

    ref = explain.get("viewer")
    if not ref:
        return None
    try:
        data = dict(artifacts.load_viewer(EvaluationPaths(folder), ref["file"]))
    except ReportError as exc:
        # The static gallery stays: a damaged viewer file costs only the viewer.
        logger.warning("interactive viewer left out: %s", exc)
        return None
    data["colormap"] = charts.colormap_lut()
    names = data["class_names"]
    return {"data": data, "n": len(data["items"]), "task": data["task"], "split": data["split"],
            "classes": list(range(len(names))),
            "sets": [s for s in viewer.SETS if any(s in it["sets"] for it in data["items"])],
            "names": {lang: [m.get(n, n) for n in names] for lang, m in mappings.items()}}


FAITH_ROWS = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf")


def _stat_row(metric: str, stat: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One table row of a paired statistic from metrics.json (older files lack the statistics)."""
    return {"metric": metric, "cam": stat.get("cam"), "random": stat.get("random"),
            "difference": stat.get("difference"), "ci95": stat.get("ci95"), "p_value": stat.get("p_value"),
            "n": stat.get("n"), "verdict": stat.get("verdict"), **extra}


def _explain(explain: Mapping[str, Any] | None, paths: RunPaths,
             figures: Mapping[str, dict[str, str] | None], class_names: Sequence[str], *,
             folder: Path | None = None,
             mappings: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    from . import charts
    from .verdicts import FAITHFULNESS_MARGIN, LOCALISATION_MARGIN, SANITY_SPEARMAN_LIMIT

    if not explain:
        return {"available": False}
    folder = folder or paths.report_dir
    faith = explain.get("faithfulness")
    faith_ctx = None
    if faith:
        rows = [_stat_row(m, faith[m]) for m in FAITH_ROWS
                if isinstance(faith.get(m), Mapping) and faith[m].get("cam") is not None]
        faith_ctx = {"n": faith.get("n"), "rows": rows, "verdict": faith.get("verdict"),
                     "maps": (faith.get("random_maps") or {}).get("per_image", 1),
                     "margin": FAITHFULNESS_MARGIN, "road": any(r["metric"].startswith("road") for r in rows)
                     } if rows else None
    sanity = explain.get("sanity")
    sanity_ctx = None
    if sanity and sanity.get("stages"):
        stages = [{"randomised": st.get("randomised"), "verdict": st.get("verdict"),
                   **{key: {"mean": None, "sd_seeds": None, "ci95": None, "n": None,
                            **(st[key] if isinstance(st.get(key), Mapping) else {"mean": st.get(key)})}
                      for key in ("spearman", "ssim")}}
                  for st in sanity["stages"]]
        sanity_ctx = {"n": sanity.get("n"), "seeds": sanity.get("seeds", 1), "stages": stages,
                      "verdict": sanity.get("verdict"), "limit": SANITY_SPEARMAN_LIMIT}
    loc = explain.get("localisation")
    loc_ctx = None
    if loc and loc.get("n"):
        rows = [_stat_row(m, loc[m], chance=loc[m].get("chance")) for m in ("pointing_game", "energy_inside")
                if isinstance(loc.get(m), Mapping)]
        loc_ctx = {"n": loc.get("n"), "rows": rows, "verdict": loc.get("verdict"),
                   "tolerance": loc.get("tolerance", 0), "maps": loc.get("random_per_image", 1),
                   "margin": LOCALISATION_MARGIN}
    return {"available": True, "method": explain.get("method", "?"),
            "target_layer": explain.get("target_layer"),
            "gallery": _gallery(explain, paths, class_names, folder=folder),
            "viewer": _viewer(explain, folder, mappings or {}),
            "cam_scale": charts.cam_scale_colors(),
            "faithfulness": faith_ctx, "sanity": sanity_ctx, "localisation": loc_ctx,
            "figures": dict(figures)}


def _repro(meta: artifacts.CheckpointMeta, run_config: RunConfig, paths: RunPaths,
           evaluation: artifacts.Evaluation, command: str | None) -> dict[str, Any]:
    if paths.config.is_file():
        config_toml = paths.config.read_text(encoding="utf-8")
    else:
        config_toml = tomli_w.dumps(_toml_safe(meta["config"]))
    sha = evaluation.get("checkpoint", {}).get("sha256") or (
        sha256_file(paths.best) if paths.best.is_file() else None)
    train_cmd = meta.get("command")
    if isinstance(train_cmd, (list, tuple)):
        train_cmd = shlex.join(str(a) for a in train_cmd)
    return {"config_toml": config_toml, "seed": meta.get("seed", run_config.train.seed),
            "checkpoint_path": str(paths.best), "checkpoint_sha256": sha or "—",
            "data_fingerprint": meta.get("data_fingerprint") or evaluation.get("data", {}).get("fingerprint"),
            "versions": meta.get("versions", {}), "command": command, "train_command": train_cmd,
            "created": meta.get("created")}


def _toml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value if v is not None]
    return value


def _skipped(evaluation: artifacts.Evaluation, dataset: Dataset | None) -> list[dict[str, str]]:
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for item in list(evaluation.get("skipped", [])) + list(dataset.skipped if dataset else []):
        entry = {"file": str(item["file"]), "reason": str(item["reason"])}
        seen.setdefault((entry["file"], entry["reason"]), entry)
    return list(seen.values())


# ---------------------------------------------------------------- the context

def _predicted(evaluation: EvaluationPaths | None, class_names: Sequence[str]) -> dict[str, Any] | None:
    """The predicted class counts of an unlabelled split (a Kaggle-style test set)."""
    if evaluation is None:
        return None
    data = artifacts.load_evaluation(evaluation)
    counts = data.get("predicted_counts")
    if not counts or len(counts) != len(class_names):  # metrics.json from before the counts
        probs = artifacts.load_predictions(evaluation).probs
        counts = np.bincount(probs.argmax(axis=1), minlength=len(class_names)).tolist()
    return {"split": str(data.get("split", "test")), "n": int(sum(counts)),
            "counts": [int(c) for c in counts], "file": evaluation.predictions.name}


def build_context(paths: RunPaths, *, langs: Sequence[str], dataset: Dataset | None = None,
                  command: str | None = None, templates_dir: Path | None = None,
                  meta: artifacts.CheckpointMeta | None = None, model: Any = None,
                  evaluation: EvaluationPaths | None = None,
                  predictions_only: EvaluationPaths | None = None) -> dict[str, Any]:
    """Everything the templates show, as plain data; the figures stage draws the charts.

    ``meta`` and ``model`` are the already-loaded run (``build`` passes them, so the
    checkpoint is not read again); without them the checkpoint's meta is loaded here.
    ``evaluation`` is the labelled evaluation whose metrics and CAMs the report shows (the
    run's test evaluation by default); ``predictions_only`` an unlabelled split's evaluation,
    of which the report shows the predicted class counts.
    """
    from .figures import draw_report_figures

    if meta is None:
        if not paths.best.is_file():
            raise ReportError(f"{paths.best}: checkpoint not found; train the run first "
                              f"(`xreport train`) or check --checkpoints")
        meta = artifacts.load_checkpoint_meta(paths.best)
    evaluation_paths = evaluation or paths.evaluation("test")
    evaluation = artifacts.load_evaluation(evaluation_paths)
    metrics = evaluation["metrics"]
    explain = evaluation.get("explain")
    run_config = config_from_dict(meta["config"], source=f"{paths.best} (meta.config)")
    history = artifacts.load_history(paths)
    dist = _distribution(paths, dataset)
    class_names = list(meta["class_names"])
    i18n = artifacts.class_name_translations(meta)
    mappings = {lang: artifacts.class_name_map(class_names, i18n.get(lang)) for lang in langs}
    predicted = _predicted(predictions_only, class_names)
    figs = draw_report_figures(paths.report_dir, meta=meta, evaluation=evaluation, history=history,
                               distribution=dist, dataset=dataset, langs=langs,
                               templates_dir=templates_dir)
    dist_fig, curves_fig = figs.distribution, figs.curves
    explain_figs = {"faithfulness": figs.faithfulness, "sanity": figs.sanity}
    examples_fig, before_after_fig, result_figs = figs.examples, figs.before_after, figs.results

    name = _dataset_name(meta, dataset)
    data_cfg = meta.get("data", {})
    data_ref = evaluation.get("data", {})
    context = {
        "schema": 1,
        "run": paths.name,
        "report_dir": str(paths.report_dir.resolve()),
        "langs": list(langs),
        "generated": str(evaluation.get("created", ""))[:16].replace("T", " ") or "—",
        "class_names": class_names,
        "class_names_i18n": {k: v for k, v in i18n.items() if v},
        "layout": layout(len(class_names)),
        "summary": _summary(meta, metrics, evaluation, name),
        "data": {
            "dataset": name, "kind": dataset.kind if dataset else data_cfg.get("kind"),
            "source": dataset.source if dataset else data_ref.get("source")
            or data_cfg.get("dataset", "—"),
            "class_names": class_names, "splits": _split_rows(dist, predicted),
            "predicted": predicted,
            "image_size": meta.get("image_size"), "channels": meta.get("in_channels"),
            "original_size": (f"{dataset.original_size[0]} × {dataset.original_size[1]}"
                              if dataset is not None and dataset.original_size else None),
            "original_channels": dataset.original_channels if dataset is not None else None,
            "pipeline": _pipeline(meta),
            "normalization": {"mode": run_config.preprocess.normalize,
                              "mean": _join_floats(meta["mean"]), "std": _join_floats(meta["std"])},
            "augment": list(config_to_dict(run_config)["augment"].items()),
            "imbalance": _imbalance(run_config.train.imbalance, dist),
            "leakage": _leakage(paths, dist, dataset),
            "figures": {"distribution": dist_fig, "examples": examples_fig, "before_after": before_after_fig},
        },
        "model": _model(meta, explain, model),
        "training": _training(meta, run_config.train, history, curves_fig),
        "results": _results(metrics, evaluation, result_figs),
        "explain": _explain(explain, paths, explain_figs, class_names, folder=evaluation_paths.folder,
                            mappings=mappings),
        # The split the metrics and CAMs are from: "val" when the test split has no labels.
        "evaluated_split": str(evaluation.get("split", "test")),
        "discussion": discussion.observations(metrics, history=history, distribution=dist,
                                              explain=explain,
                                              split=str(evaluation.get("split", "test"))),
        "repro": _repro(meta, run_config, paths, evaluation, command),
        "skipped": _skipped(evaluation, dataset),
        "failed_charts": figs.failed,
    }
    return context
