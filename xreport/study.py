"""`xreport build --runs A B C --notes ...`: one study report over several runs.

A study is what a student hands in: several runs on one test split, in one bilingual
document with their own words around it. It is built on the comparison's statistics
(``compare.py``: paired McNemar, DeLong or a paired bootstrap, Holm) and adds

- the user's notes (``notes.py``): title page, introduction, conclusion, statements;
- a design table: the config keys that differ between the runs, the shared ones once;
- one results table with the majority-class baseline, the chance level of each metric and,
  for a known public data set, its published reference results (``data/references.json``);
- paired tests of each run against the best one, overlaid curves, ROC and PR, confusion
  matrices on one scale, per-class F1, the same test images' CAMs across runs, every run's
  faithfulness verdicts;
- a discussion that ties each significant difference to the design keys that changed, and
  limitations drawn from the facts;
- a CLAIM 2024 checklist appendix (``data/claim2024.json``) and links to each run's report.

Runs on different test splits are refused (the split is fingerprinted by its image ids and
labels, so the same images with another preprocessing are one split). `compare` is this
document without notes or CAMs.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, TypedDict, cast

import numpy as np

from . import artifacts, languages, runs
from . import compare as cmp
from . import metrics as metrics_mod
from . import notes as notes_mod
from .config import dotted_items
from .errors import ConfigError, ReportError, RunError
from .metrics import value_of
from .languages import DEFAULT_LANGS
from .render.numbers import DASH

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .charts import PrLine
    from .figures import FigureMaker, FigurePaths, Translate
    from .render.html import DocumentKind

logger = logging.getLogger(__name__)

BODY_TEMPLATE = "study.html.j2"
MAX_CAM_IMAGES = 4
# Config keys that say how a run was executed, not what was studied: never design keys.
OPERATIONAL_KEYS = frozenset({"name", "train.device", "train.num_threads", "train.channels_last",
                              "train.precision", "train.time_budget_min", "data.skip_bad_images",
                              "data.class_names", "data.class_names_i18n",
                              *(f"data.class_names_i18n.{lang}" for lang in languages.codes())})
# Resolved values from the checkpoint meta replace the config's "auto" (what was trained).
RESOLVED_KEYS = {"model.arch": "arch", "model.pretrained": "pretrained",
                 "model.small_input_stem": "small_input_stem", "model.head": "head",
                 "train.loss": "loss", "image_size": "image_size"}
_DATA_DIR = Path(__file__).resolve().parent / "data"


# ---------------------------------------------------------------- inputs

def check_run_list(run_paths: Sequence[runs.RunPaths], *, minimum: int = 2) -> None:
    """At least ``minimum`` runs, each named once, each with a run folder."""
    if len(run_paths) < minimum:
        raise ConfigError(f"--runs needs at least {minimum} runs; got {len(run_paths)} "
                          f"({', '.join(p.name for p in run_paths) or 'none'})")
    seen: set[str] = set()
    for p in run_paths:
        if p.name in seen:
            raise ConfigError(f"--runs names {p.name!r} twice; give each run once")
        seen.add(p.name)


def check_runs_exist(run_paths: Sequence[runs.RunPaths]) -> None:
    for p in run_paths:
        if not p.run_dir.is_dir():
            raise RunError(f"{p.run_dir}: run {p.name!r} does not exist (no run folder); "
                           "train it first or check --checkpoints")


def split_fingerprint(run: cmp.EvaluatedRun) -> str:
    """The test split's identity: its image ids with their labels, in id order. The same
    images preprocessed differently (another input size, another stem) share it."""
    rows = sorted(zip(run.ids, (int(v) for v in run.y_true)))
    digest = hashlib.sha256()
    for ident, label in rows:
        digest.update(f"{ident}\t{label}\n".encode("utf-8"))
    return digest.hexdigest()


def check_same_split(evaluated: Sequence[cmp.EvaluatedRun]) -> str:
    """One class list and one test split for every run; else one line naming the runs."""
    first = evaluated[0]
    for run in evaluated[1:]:
        if run.class_names != first.class_names:
            raise ReportError(f"runs {first.name!r} and {run.name!r} have different classes "
                              f"({', '.join(first.class_names)} vs {', '.join(run.class_names)}); "
                              "a study needs one class list")
    groups: dict[str, list[str]] = {}
    for run in evaluated:
        groups.setdefault(split_fingerprint(run), []).append(run.name)
    if len(groups) > 1:
        parts = [f"{', '.join(names)} ({len(next(r for r in evaluated if r.name == names[0]).ids)} images, "
                 f"split {fp[:8]})" for fp, names in groups.items()]
        raise ReportError("runs were evaluated on different test splits: " + "; ".join(parts)
                          + "; a study needs one test split (same image ids and labels)")
    return next(iter(groups))


# ---------------------------------------------------------------- the best run

def best_index(evaluated: Sequence[cmp.EvaluatedRun]) -> int:
    """The run with the highest ROC-AUC (ties and undefined AUCs: accuracy, then order)."""
    def key(i: int) -> tuple[float, float, int]:
        m = evaluated[i].metrics
        auc, acc = value_of(m["roc_auc"]), value_of(m["accuracy"])
        return (auc if auc is not None else -1.0, acc if acc is not None else -1.0, -i)
    return max(range(len(evaluated)), key=key)


# ---------------------------------------------------------------- design table

class DesignRow(TypedDict):
    key: str
    values: list[str]


class Design(TypedDict):
    differ: list[DesignRow]
    shared: list[DesignRow]           # values holds the one shared value


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


# How a run was evaluated, beside how it was trained: a run whose test probabilities average
# several views (--tta on) is a different design from one scored on the image alone.
EVALUATION_VIEWS_KEY = "evaluate.tta_views"


def design_keys(run: cmp.EvaluatedRun) -> dict[str, str]:
    """A run's design as dotted config keys -> shown values (resolved where "auto"), and the
    test-time views its evaluation averaged."""
    meta = run.meta
    flat = dotted_items(meta["config"]) if isinstance(meta.get("config"), Mapping) else {}
    resolved: Mapping[str, object] = meta    # looked up by RESOLVED_KEYS' values, not literals
    for key, meta_key in RESOLVED_KEYS.items():
        if resolved.get(meta_key) is not None:
            flat[key] = resolved[meta_key]
    flat[EVALUATION_VIEWS_KEY] = artifacts.tta_views_of(run.evaluation)
    return {k: _show(v) for k, v in sorted(flat.items()) if k not in OPERATIONAL_KEYS}


def design_table(evaluated: Sequence[cmp.EvaluatedRun]) -> Design:
    per_run = [design_keys(r) for r in evaluated]
    keys = sorted(set().union(*per_run))
    differ: list[DesignRow] = []
    shared: list[DesignRow] = []
    for key in keys:
        values = [d.get(key, DASH) for d in per_run]
        if len(set(values)) > 1:
            differ.append({"key": key, "values": values})
        else:
            shared.append({"key": key, "values": values[:1]})
    return {"differ": differ, "shared": shared}


def changed_keys(a: cmp.EvaluatedRun, b: cmp.EvaluatedRun) -> list[dict[str, str]]:
    """The design keys whose values differ between two runs, as {key, a, b}."""
    da, db = design_keys(a), design_keys(b)
    return [{"key": k, "a": da.get(k, DASH), "b": db.get(k, DASH)}
            for k in sorted(set(da) | set(db)) if da.get(k, DASH) != db.get(k, DASH)]


# ---------------------------------------------------------------- baselines and references

def _training_prior(run: cmp.EvaluatedRun, k: int) -> tuple[np.ndarray, str]:
    """The class shares of the training split (the majority-class baseline's guess), or the
    test split's when the run folder does not record them."""
    try:
        dist = artifacts.load_class_distribution(run.paths)
    except ReportError:
        dist = None
    counts = dist["splits"].get("train") if dist else None
    if counts and len(counts) == k and sum(counts) > 0:
        return np.asarray(counts, dtype=np.float64) / float(sum(counts)), "train"
    counts_test = np.bincount(run.y_true, minlength=k).astype(np.float64)
    return counts_test / max(1.0, counts_test.sum()), "test"


def baseline_metrics(run: cmp.EvaluatedRun) -> tuple[artifacts.Metrics, str, str]:
    """Every metric of the majority-class baseline: it gives every image the training
    split's class shares, so it always predicts the majority class (no bootstrap needed:
    it has no spread of its own beyond the test split's)."""
    k = len(run.class_names)
    prior, source = _training_prior(run, k)
    probs = np.tile(prior, (len(run.y_true), 1))
    metrics = metrics_mod.compute_all(run.y_true, probs, class_names=run.class_names,
                                      task=run.metrics["task"], n_boot=0)
    return metrics, run.class_names[int(np.argmax(prior))], source


def chance_levels(y: np.ndarray, k: int, *, ordinal: bool) -> dict[str, float | None]:
    """Expected values for a classifier that guesses each class with probability 1/k,
    whatever the image: accuracy and balanced accuracy 1/k, macro-F1 from the test shares,
    ROC-AUC 0.5, QWK 0, the mean grade error of uniform guessing; ECE has no chance level."""
    shares = np.bincount(y, minlength=k).astype(np.float64) / max(1, len(y))
    q = 1.0 / k
    f1 = [2 * p * q / (p + q) if p + q > 0 else 0.0 for p in shares]
    grades = np.arange(k)
    mae = float(np.sum(shares[:, None] * np.abs(grades[:, None] - grades[None, :]) * q))
    return {"metric.accuracy": q, "metric.balanced_accuracy": q, "metric.macro_f1": float(np.mean(f1)),
            "metric.roc_auc": 0.5, "metric.ece": None,
            "metric.qwk": 0.0 if ordinal else None, "metric.mae": mae if ordinal else None}


class Reference(TypedDict):
    model: str
    values: dict[str, float]         # metric key -> published value


class References(TypedDict):
    dataset: str
    citation: str
    note: str
    rows: list[Reference]


def _dataset_name(meta: artifacts.CheckpointMeta) -> str:
    data = meta.get("data") or {}
    name = str(data.get("dataset") or "") if isinstance(data, Mapping) else ""
    stem = Path(name).name.lower()
    for suffix in (".npz",):
        stem = stem.removesuffix(suffix)
    return stem


def published_references(run: cmp.EvaluatedRun) -> References | None:
    """The published results of a known public data set, when the run's test split is the
    published one (its name and its test size match ``data/references.json``)."""
    table = cast(dict, artifacts.read_json_file(_DATA_DIR / "references.json"))
    entry = table["datasets"].get(_dataset_name(run.meta))
    if entry is None or int(entry["test_n"]) != len(run.ids):
        return None
    return {"dataset": entry["name"], "citation": table["citations"][entry["citation"]],
            "note": entry["note"], "rows": [{"model": r["model"], "values": r["values"]}
                                            for r in entry["results"]]}


# ---------------------------------------------------------------- results

class ResultRow(TypedDict):
    label: str
    kind: str                      # run | baseline | chance | reference
    values: list[object]           # per column: a Value, a float or None
    best: list[bool]


class PerClassF1(TypedDict):
    run: str
    values: list[artifacts.Value]  # per class, in the class list's order


class Results(TypedDict):
    columns: list[str]             # metric catalog keys
    better: list[str]              # max | min per column
    rows: list[ResultRow]
    baseline_class: str
    baseline_source: str           # train | test: whose class shares the baseline guesses
    references: References | None
    per_class_f1: list[PerClassF1]


def results_table(evaluated: Sequence[cmp.EvaluatedRun], metric_rows: Sequence[cmp.MetricRow]) -> Results:
    columns = [row["key"] for row in metric_rows]
    paths = {key: path for key, path, _ in cmp.METRIC_ROWS + cmp.ORDINAL_ROWS}
    rows: list[ResultRow] = [{"label": run.name, "kind": "run",
                              "values": [row["values"][i] for row in metric_rows],
                              "best": [row["best"][i] for row in metric_rows]}
                             for i, run in enumerate(evaluated)]
    base, base_class, source = baseline_metrics(evaluated[0])
    rows.append({"label": "baseline", "kind": "baseline",
                 "values": [value_of(cmp._dig(base, paths[key])) for key in columns],
                 "best": [False] * len(columns)})
    ordinal = evaluated[0].metrics["task"] == "ordinal"
    chance = chance_levels(evaluated[0].y_true, len(evaluated[0].class_names), ordinal=ordinal)
    rows.append({"label": "chance", "kind": "chance", "values": [chance.get(key) for key in columns],
                 "best": [False] * len(columns)})
    refs = published_references(evaluated[0])
    if refs:
        for ref in refs["rows"]:
            rows.append({"label": ref["model"], "kind": "reference",
                         "values": [ref["values"].get(key) for key in columns],
                         "best": [False] * len(columns)})
    per_class: list[PerClassF1] = [{"run": run.name, "values": [c["f1"] for c in run.metrics["per_class"]]}
                                   for run in evaluated]
    return {"columns": columns, "better": [row["better"] for row in metric_rows], "rows": rows,
            "baseline_class": base_class, "baseline_source": source, "references": refs,
            "per_class_f1": per_class}


# ---------------------------------------------------------------- discussion and limitations

def _msg(key: str, **params: object) -> artifacts.Message:
    return {"key": key, "params": params}


def _changes_text(changes: Sequence[Mapping[str, str]]) -> str:
    if not changes:
        return ""
    return "; ".join(f"{c['key']} {c['b']} → {c['a']}" for c in changes)


def _p_adjusted(test: cmp.AucTest | cmp.McNemarTest) -> float | None:
    """The Holm-adjusted p-value where several runs were tested, else the test's own."""
    p_holm = test.get("p_holm")
    return p_holm if p_holm is not None else test["p_value"]


def discussion(evaluated: Sequence[cmp.EvaluatedRun], tests: Sequence[cmp.PairedTest]) -> list[artifacts.Message]:
    """One sentence per run against the best: each significant difference (Holm-adjusted
    where several) with the design keys that changed, or "no significant difference"."""
    by_name = {r.name: r for r in evaluated}
    out: list[artifacts.Message] = []
    for test in tests:
        run, ref = by_name[test["run"]], by_name[test["ref"]]
        changes = changed_keys(run, ref)
        what = _msg("study.discussion.changes", changes=_changes_text(changes)) if changes \
            else _msg("study.discussion.no_change")
        if not test["paired"]:
            out.append(_msg("study.discussion.unpaired", run=run.name, ref=ref.name, what=what))
            continue
        auc, mcnemar = test["auc"], test["mcnemar"]
        # (metric, run − reference, p): the AUC test carries its difference; McNemar's has
        # none (it counts discordant pairs), so the accuracy difference is the runs' own.
        significant: list[tuple[str, float | None, float | None]] = []
        if auc is not None and auc.get("significant"):
            significant.append(("auc", auc["difference"], _p_adjusted(auc)))
        if mcnemar is not None and mcnemar.get("significant"):
            a, b = test["acc_run"], test["acc_ref"]
            significant.append(("acc", (a - b) if a is not None and b is not None else None,
                                _p_adjusted(mcnemar)))
        for name, diff, p in significant:
            out.append(_msg("study.discussion.significant", run=run.name, ref=ref.name, what=what,
                            metric=_msg("study.discussion.metric_" + name),
                            diff=cmp._signed(diff), p=cmp.format_p(p)))
        if not significant:
            p_auc = _p_adjusted(auc) if auc else None
            p_acc = _p_adjusted(mcnemar) if mcnemar else None
            out.append(_msg("study.discussion.none", run=run.name, ref=ref.name, what=what,
                            p_auc=cmp.format_p(p_auc), p_acc=cmp.format_p(p_acc)))
    return out


def limitations(evaluated: Sequence[cmp.EvaluatedRun], results: Results,
                design: Design) -> list[artifacts.Message]:
    """Limitations that follow from the facts shown in the report."""
    out: list[artifacts.Message] = []
    n = len(evaluated[0].ids)
    counts = np.bincount(evaluated[0].y_true, minlength=len(evaluated[0].class_names))
    out.append(_msg("study.limit.test_size", n=n, smallest=int(counts.min()),
                    cls=evaluated[0].class_names[int(counts.argmin())]))
    seeds = {d["key"]: d for d in design["differ"]}
    if "train.seed" not in seeds:
        out.append(_msg("study.limit.one_seed"))
    multi = [r for r in design["differ"] if r["key"] not in ("train.seed",)]
    if len(multi) > 1 and len(evaluated) > 1:
        out.append(_msg("study.limit.confounded", n=len(multi)))
    if any(_dataset_name(r.meta) == "phantom" for r in evaluated):
        out.append(_msg("study.limit.synthetic"))
    out.append(_msg("study.limit.external"))
    base = next(r for r in results["rows"] if r["kind"] == "baseline")
    acc_col = results["columns"].index("metric.accuracy")
    base_acc = base["values"][acc_col]    # value_of(): a float or None
    near = [r.name for r in evaluated
            if isinstance(base_acc, float) and (value_of(r.metrics["accuracy"]) or 0.0) <= base_acc + 0.02]
    if near:
        out.append(_msg("study.limit.near_baseline", runs=", ".join(near), acc_pct=base_acc))
    return out


# ---------------------------------------------------------------- CAMs and faithfulness

class CamStudy(TypedDict):
    figure: FigurePaths | None
    images: list[dict[str, object]]      # id, true class
    missing: list[str]                   # runs without CAMs (evaluated without them)
    method: list[str]


ViewerMaps = tuple[dict[str, artifacts.ViewerItem], list[int]]   # items by id, the maps' [h, w]


def _viewer_items(run: cmp.EvaluatedRun) -> ViewerMaps | None:
    explain = run.evaluation.get("explain")
    viewer = explain.get("viewer") if explain else None
    if not viewer:
        return None
    try:
        data = artifacts.load_viewer(run.paths.evaluation("test"), viewer["file"])
    except ReportError as exc:
        logger.warning("%s: viewer data unreadable: %s", run.name, exc)
        return None
    return {str(it["id"]): it for it in data["items"]}, [int(v) for v in data["grid"]]


def _decode(item: Mapping[str, object], grid: Sequence[int], k: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    uri = str(item["img"])
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    maps = np.frombuffer(base64.b64decode(str(item["maps"])), dtype=np.uint8).reshape(k, grid[0], grid[1])
    return image, maps[target].astype(np.float32) / 255.0


def cam_study(evaluated: Sequence[cmp.EvaluatedRun], best: int, *, maker: FigureMaker) -> CamStudy:
    """Up to four test images every run has maps for (the best run's gallery first, one per
    class where possible), each run's map of the image's true class, side by side."""
    from . import charts

    read = {r.name: _viewer_items(r) for r in evaluated}
    missing = [name for name, v in read.items() if v is None]
    found: dict[str, ViewerMaps] = {name: v for name, v in read.items() if v is not None}
    methods = sorted({str(ex["method"]) for r in evaluated if (ex := r.evaluation.get("explain"))})
    with_maps = [r for r in evaluated if r.name in found]
    empty: CamStudy = {"figure": None, "images": [], "missing": missing, "method": methods}
    if not with_maps:
        return empty
    common = set.intersection(*(set(found[r.name][0]) for r in with_maps))
    if not common:
        return empty
    lead = evaluated[best] if evaluated[best].name in found else with_maps[0]
    lead_items, lead_grid = found[lead.name]
    lead_explain = lead.evaluation["explain"]   # set: the lead run has viewer maps
    gallery = [str(g["id"]) for g in (lead_explain.get("gallery", []) if lead_explain else []) if g.get("id")]
    order = [i for i in dict.fromkeys(gallery) if i in common] + sorted(common - set(gallery))
    chosen: list[str] = []
    for cls in range(len(lead.class_names)):   # one image per true class first
        pick = next((i for i in order if int(lead_items[i]["y"]) == cls and i not in chosen), None)
        if pick is not None and len(chosen) < MAX_CAM_IMAGES:
            chosen.append(pick)
    for i in order:
        if len(chosen) >= MAX_CAM_IMAGES:
            break
        if i not in chosen:
            chosen.append(i)
    k = len(lead.class_names)
    images, cams, labels = [], [], []
    for ident in chosen:
        y = int(lead_items[ident]["y"])
        image, _ = _decode(lead_items[ident], lead_grid, k, y)
        row: list[np.ndarray | None] = []
        for run in evaluated:
            entry = found.get(run.name)
            row.append(_decode(entry[0][ident], entry[1], k, y)[1] if entry else None)
        images.append(image)
        cams.append(row)
        labels.append((ident, y))

    def draw(t: Translate, lang: str) -> Figure:
        names = artifacts.class_names_in(lead.meta, lang, lead.class_names)
        return charts.study_cams(images, cams, row_labels=[f"{names[y]} · {i}" for i, y in labels],
                                 run_labels=[r.name for r in evaluated], t=t)
    figure = maker.draw("study_cams", draw)
    return {"figure": figure, "images": [{"id": i, "cls": y} for i, y in labels],
            "missing": missing, "method": methods}


def _verdict_of(part: artifacts.Faithfulness | artifacts.Sanity | artifacts.Localisation | None) -> str | None:
    return part["verdict"] if part else None


def faithfulness_rows(evaluated: Sequence[cmp.EvaluatedRun]) -> list[dict[str, object]]:
    rows = []
    for run in evaluated:
        ex = run.evaluation.get("explain")
        rows.append({"run": run.name, "has": ex is not None,
                     "method": ex["method"] if ex else None,
                     "layer": ex["target_layer"] if ex else None,
                     "faithfulness": _verdict_of(ex["faithfulness"]) if ex else None,
                     "sanity": _verdict_of(ex["sanity"]) if ex else None,
                     "localisation": _verdict_of(ex["localisation"]) if ex else None})
    return rows


# ---------------------------------------------------------------- figures

def _pr_line(metrics: artifacts.Metrics) -> PrLine | None:
    entries = [e for e in metrics["curves"]["pr"] if e["recall"]]
    if not entries:
        return None
    names = metrics["class_names"]
    if metrics["task"] == "binary" or len(entries) == 1:
        entry = next((e for e in entries if len(names) > 1 and e["class"] == names[1]), entries[-1])
        counts = [c["support"] for c in metrics["per_class"]]
        total = sum(counts)
        prevalence = counts[names.index(entry["class"])] / total if entry["class"] in names and total else None
        return {"recall": entry["recall"], "precision": entry["precision"],
                "ap": metrics["average_precision"], "prevalence": prevalence}
    grid = np.linspace(0.0, 1.0, 201)
    prec = np.mean([np.interp(grid, e["recall"][::-1], e["precision"][::-1])
                    if len(e["recall"]) > 1 and e["recall"][0] > e["recall"][-1]
                    else np.interp(grid, e["recall"], e["precision"]) for e in entries], axis=0)
    return {"recall": grid.tolist(), "precision": prec.tolist(), "ap": metrics["average_precision"],
            "prevalence": None}


def pr_figure(evaluated: Sequence[cmp.EvaluatedRun], *, maker: FigureMaker) -> FigurePaths | None:
    from . import charts

    lines = {r.name: line for r in evaluated if (line := _pr_line(r.metrics)) is not None}
    return maker.draw("study_pr", lambda t, lang: charts.compare_pr(lines, t=t)) if lines else None


# ---------------------------------------------------------------- checklist

class ChecklistItem(TypedDict):
    number: int
    group: str
    key: str                 # the item's catalog key
    covered: bool
    anchor: str | None       # a section of this report (without the language prefix)
    via: str | None          # report | notes | statement


def checklist(present: set[str], notes: notes_mod.Notes | None) -> list[ChecklistItem]:
    """CLAIM 2024, item by item: the first section of this report that covers it, else a
    notes section or a front-matter statement whose heading or key names it, else None."""
    items = cast(dict, artifacts.read_json_file(_DATA_DIR / "claim2024.json"))["items"]
    out: list[ChecklistItem] = []
    statements = notes["statements"] if notes else []
    sections = notes["sections"] if notes else []
    for item in items:
        anchor, via = None, None
        for section in item.get("sections", []):
            if section in present:
                anchor, via = section, "report"
                break
        words = [w.casefold() for w in item.get("words", [])]
        if anchor is None and notes is not None:
            if item.get("title") and notes["title"]:
                anchor, via = "notes-front", "statement"
            for s in statements:
                if anchor is None and any(w in s["key"].replace("_", " ") for w in words):
                    anchor, via = "notes-front", "statement"
            for section in sections:
                folded = section["title"].casefold()
                place_ok = section["place"] in item.get("places", [])
                if anchor is None and (place_ok or (folded and any(w in folded for w in words))):
                    anchor, via = section["anchor"], "notes"
        out.append({"number": int(item["number"]), "group": item["group"], "key": item["key"],
                    "covered": anchor is not None, "anchor": anchor, "via": via})
    return out


# ---------------------------------------------------------------- the context

@dataclass
class StudyResult:
    report_dir: Path
    files: list[Path] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _model_entry(run: cmp.EvaluatedRun, index: int, *, maker: FigureMaker) -> dict[str, object]:
    """One run's model facts, stage table and block diagram, from its evaluation's recorded
    summary (``report.architecture``; the single-run report's Model section shows the same)."""
    from . import charts
    from .report import _model, architecture

    summary, model = architecture(run.meta, run.evaluation)
    diagram = None
    if summary is not None and summary["blocks"]:
        blocks = summary["blocks"]
        diagram = maker.draw(f"study_block_{index}", lambda t, lang: charts.block_diagram(blocks, t=t))
    return {"run": run.name, "architecture": summary, "block_diagram": diagram,
            "facts": _model(run.meta, run.evaluation.get("explain"), model, summary,
                            {"block_diagram": diagram})}


def present_sections(ctx: Mapping[str, object]) -> set[str]:
    """The study sections this context shows (anchors without the language prefix)."""
    present = {"study-summary", "study-design", "study-models", "study-results", "study-tests",
               "study-curves", "study-confusion", "study-perclass", "study-discussion",
               "study-limitations", "study-repro", "study-appendix", "study-data"}
    cams = ctx.get("cams")
    if isinstance(cams, Mapping) and cams.get("figure"):
        present.add("study-cams")
    faithfulness = ctx.get("faithfulness", [])
    if isinstance(faithfulness, list) and any(isinstance(r, Mapping) and r.get("has") for r in faithfulness):
        present.add("study-faithfulness")
    results = ctx.get("results")
    if isinstance(results, Mapping) and results.get("references"):
        present.add("study-references")
    return present


def study_context(evaluated: Sequence[cmp.EvaluatedRun], *, name: str, reports_root: Path,
                  langs: Sequence[str], notes: Mapping[str, notes_mod.Notes | None] | None = None,
                  command: str | None = None, n_boot: int = cmp.N_BOOT, seed: int = 0,
                  templates_dir: Path | None = None, cams: bool = True) -> dict[str, object]:
    """The comparison's context plus everything the study adds; one language-neutral dict
    (the notes are per language: ``notes[lang]``)."""
    from .figures import FigureMaker

    if not evaluated:
        raise ReportError("a study needs at least one evaluated run")
    fingerprint = check_same_split(evaluated)
    best = best_index(evaluated)
    if len(evaluated) > 1:
        compared = cmp.compare_context(
            evaluated, name=name, reports_root=reports_root, langs=langs, command=command,
            n_boot=n_boot, seed=seed, templates_dir=templates_dir, reference=best)
    else:
        raise ReportError("a study needs at least 2 runs; build one run with --run")
    ctx: dict[str, object] = dict(compared)
    out_dir = Path(compared["report_dir"])
    maker = FigureMaker(out_dir, langs, templates_dir=templates_dir)
    design = design_table(evaluated)
    results = results_table(evaluated, compared["metric_rows"])
    tests = compared["tests"]
    ctx.update({
        "kind": "study",
        "split_fingerprint": fingerprint,
        "best": evaluated[best].name,
        "design": design,
        "models": [_model_entry(r, i, maker=maker) for i, r in enumerate(evaluated)],
        "results": results,
        "pr_figure": pr_figure(evaluated, maker=maker),
        "cams": cam_study(evaluated, best, maker=maker) if cams else
        {"figure": None, "images": [], "missing": [r.name for r in evaluated], "method": []},
        "faithfulness": faithfulness_rows(evaluated),
        "discussion": discussion(evaluated, tests),
        "limitations": limitations(evaluated, results, design),
        "appendix": [{"run": r.name,
                      "href": os.path.relpath(r.paths.report_html, out_dir) if r.paths.report_html.is_file() else None}
                     for r in evaluated],
        "dataset": _dataset_name(evaluated[0].meta) or DASH,
        "data_source": evaluated[0].evaluation["data"].get("source") or DASH,
        "class_counts": np.bincount(evaluated[0].y_true, minlength=len(evaluated[0].class_names)).tolist(),
    })
    ctx["failed_charts"] = sorted(set(compared["failed_charts"]) | set(maker.failed))
    notes = dict(notes or {})
    ctx["notes"] = {lang: notes.get(lang) for lang in langs}
    ctx["notes_langs"] = [lang for lang in langs if notes.get(lang)]
    present = present_sections(ctx)
    ctx["checklist"] = {lang: checklist(present, notes.get(lang)) for lang in langs}
    return ctx


# ---------------------------------------------------------------- rendering and orchestration

def _document_kind() -> DocumentKind:
    from . import render

    return render.DocumentKind(body_template=BODY_TEMPLATE, title_key="study.title",
                               filters={"pval": cmp.p_text, "signed": cmp._signed})


def _json_summary(ctx: Mapping[str, object]) -> dict[str, object]:
    """The machine-readable study: runs, design, results, paired tests, discussion."""
    # study_context's dict: the comparison's context with the study's keys added
    summary = cmp._json_summary(cast(cmp.CompareContext, ctx))
    summary.update({"kind": "study", "best": ctx["best"], "split_fingerprint": ctx["split_fingerprint"],
                    "design": ctx["design"],
                    "results": dict(cast(Results, ctx["results"])),
                    "discussion": ctx["discussion"], "limitations": ctx["limitations"],
                    "faithfulness": ctx["faithfulness"],
                    "checklist": ctx["checklist"]})
    return summary


def build_study(run_paths: Sequence[runs.RunPaths], *, name: str | None, reports_root: Path,
                langs: Sequence[str] = DEFAULT_LANGS, formats: Sequence[str] = ("html", "pdf"),
                notes: Sequence[Path] = (), device: str = "auto", command: str | None = None,
                templates: Path | None = None, n_boot: int = cmp.N_BOOT, seed: int = 0,
                cams: bool = True, progress: bool = True) -> StudyResult:
    """Evaluate stale runs, then write ``reports/NAME/report.html``, PDFs and study.json.

    Every input (options, runs, notes) is checked before anything is written; the report
    folder is written into a staging copy and swapped in whole."""
    from .build import FORMATS, check_choices, render_pdfs
    from .evaluate import check_report_options
    from .render import render_html

    started = time.perf_counter()
    langs = check_choices(langs, languages.codes(), what="lang")
    formats = check_choices(formats, FORMATS, what="format")
    check_report_options(device=device, templates=templates)
    check_run_list(run_paths)
    notes_by_lang = notes_mod.load_notes([Path(n) for n in notes], langs)
    name = runs.check_run_name(name or cmp.default_name([p.name for p in run_paths]))
    out_dir = Path(reports_root) / name
    for p in run_paths:
        if p.report_dir.resolve() == out_dir.resolve():
            raise RunError(f"--name {name!r} is the report folder of run {p.name!r}; choose another name")
    check_runs_exist(run_paths)
    result = StudyResult(report_dir=out_dir)
    for p in run_paths:
        if ensure_evaluated(p, device=device, cams=cams, progress=progress):
            result.evaluated.append(p.name)
    result.seconds["evaluate"] = round(time.perf_counter() - started, 2)
    evaluated = [cmp.load_evaluated(p) for p in run_paths]
    check_same_split(evaluated)
    with runs.run_lock(out_dir, what="study report"), runs.staged_folder(out_dir) as staged:
        cmp._clear_figures(staged / "figures")
        ctx = study_context(evaluated, name=name, reports_root=staged.parent, langs=langs,
                            notes=notes_by_lang, command=command, n_boot=n_boot, seed=seed,
                            templates_dir=templates, cams=cams)
        # links to the runs' own reports are relative to the final folder, not the staging one
        ctx["appendix"] = [{"run": r.name, "href": os.path.relpath(r.paths.report_html, out_dir)
                            if r.paths.report_html.is_file() else None} for r in evaluated]
        result.seconds["context"] = round(time.perf_counter() - started - result.seconds["evaluate"], 2)
        runs.write_json(staged / "study.json", _json_summary(ctx))
        result.files.append(out_dir / "study.json")
        kind = _document_kind()
        if "html" in formats:
            runs.write_text(staged / "report.html", render_html(ctx, langs=langs, templates_dir=templates,
                                                                kind=kind))
            result.files.append(out_dir / "report.html")
        if "pdf" in formats:
            paths = runs.RunPaths(name, reports_root=staged.parent)
            render_pdfs(ctx, langs=langs, out=paths, templates_dir=templates, kind=kind)
            result.files.extend(out_dir / f"report.{lang}.pdf" for lang in langs)
    result.seconds["total"] = round(time.perf_counter() - started, 2)
    return result


def compare_runs(run_paths: Sequence[runs.RunPaths], name: str | None, reports_root: Path,
                 langs: Sequence[str], formats: Sequence[str], device: str = "auto",
                 command: str | None = None, *, templates: Path | None = None,
                 n_boot: int = cmp.N_BOOT, seed: int = 0, progress: bool = True) -> cmp.CompareResult:
    """`xreport compare`: the study report (``study.build_study``) without notes or CAMs.

    One code path: the comparison's tables and tests are the study's; `compare` only keeps
    its default folder name (``compare-A-B``) and evaluates stale runs without CAMs."""
    result = build_study(run_paths, name=name, reports_root=reports_root, langs=langs,
                         formats=formats, device=device, command=command, templates=templates,
                         n_boot=n_boot, seed=seed, cams=False, progress=progress)
    return cmp.CompareResult(report_dir=result.report_dir, files=result.files,
                             evaluated=result.evaluated, seconds=result.seconds)


def ensure_evaluated(paths: runs.RunPaths, *, device: str = "auto", cams: bool = True,
                     progress: bool = True) -> bool:
    """Evaluate the run on the test split unless its metrics.json is fresh; True if it ran.
    With ``cams`` a fresh evaluation without CAMs is redone with them (the study shows them)."""
    from .device import resolve_device
    from .evaluate import cached_metrics, dataset_for_run, evaluate_run, load_run

    with runs.run_lock(paths.report_dir, what="report"):
        run = load_run(paths, device=resolve_device(device))
        dataset = dataset_for_run(run, splits=(cmp.SPLIT, "val"))
        # Any recorded precision and test-time views will do: the study reads the predictions
        # the runs were reported on.
        if cached_metrics(paths.evaluation(cmp.SPLIT), run, dataset, cam_method=None, split=cmp.SPLIT,
                          need_explain=cams, precision=None, tta=None):
            logger.info("%s: metrics.json is fresh; reusing its predictions", paths.name)
            return False
        logger.info("%s: evaluating on the %s split%s", paths.name, cmp.SPLIT, "" if cams else " (no CAMs)")
        with runs.staged_report(paths) as staged:
            evaluate_run(staged, split=cmp.SPLIT, device=device, explain=cams, dataset=dataset,
                         run=run, progress=progress)
        return True
