"""Observations generated from the numbers by rules, each pointing at a figure or table.

A rule returns an item ``{"key", "params", "ref"}`` only when its condition holds; the
message text lives in the catalogs under ``discussion.*``. Params follow the renderer's
conventions: names starting with ``cls`` are class names (translated per language), names
ending in ``_pct`` are fractions shown as percentages, ``ratio`` gets one decimal, other
floats three.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .metrics import value_of

Item = dict[str, Any]

# Thresholds: a difference below these is noise at the sizes of typical student test sets.
LEAN_MARGIN = 0.05
IMBALANCE_RATIO = 1.5
OVERFIT_RISE = 0.10          # val loss at the end above its minimum by 10 %
THRESHOLD_AUC = 0.80
THRESHOLD_GAP = 0.08         # AUC minus accuracy at 0.5
ECE_LIMIT = 0.05
CI_WIDTH = 0.10
WEAK_F1_GAP = 0.15
FAITHFUL_MARGIN = 0.0
LOCALISATION_MARGIN = 0.05
SANITY_SPEARMAN = 0.5


def _item(key: str, ref: str, **params: Any) -> Item:
    return {"key": key, "params": params, "ref": ref}


# ---------------------------------------------------------------- metric rules

def leans_towards(metrics: Mapping[str, Any]) -> list[Item]:
    """Recall of a class clearly above its precision: the model over-predicts it."""
    out = []
    for row in metrics.get("per_class") or []:
        recall, precision = value_of(row.get("recall")), value_of(row.get("precision"))
        if recall is None or precision is None:
            continue
        if recall - precision > LEAN_MARGIN:
            out.append(_item("discussion.leans_towards", "results-report", cls=row["class"],
                             recall=recall, precision=precision))
    # In a binary task both classes cannot lean; keep the stronger one.
    if metrics.get("task") == "binary" and len(out) > 1:
        out = [max(out, key=lambda i: i["params"]["recall"] - i["params"]["precision"])]
    return out


def threshold_matters(metrics: Mapping[str, Any]) -> list[Item]:
    """A good ranking (AUC) with a clearly lower accuracy at the default threshold."""
    auc, acc = value_of(metrics.get("roc_auc")), value_of(metrics.get("accuracy"))
    if auc is None or acc is None or auc < THRESHOLD_AUC or auc - acc < THRESHOLD_GAP:
        return []
    ref = "results-operating-points" if metrics.get("operating_points") else "results-roc"
    return [_item("discussion.threshold_matters", ref, auc=auc, accuracy=acc)]


def poor_calibration(metrics: Mapping[str, Any]) -> list[Item]:
    ece = value_of((metrics.get("calibration") or {}).get("ece"))
    if ece is None or ece <= ECE_LIMIT:
        return []
    return [_item("discussion.poor_calibration", "results-calibration", ece=ece)]


def wide_interval(metrics: Mapping[str, Any]) -> list[Item]:
    """The accuracy interval is wide: the test split is too small for fine comparisons."""
    acc = metrics.get("accuracy")
    if not isinstance(acc, Mapping) or not acc.get("ci95") or value_of(acc) is None:
        return []
    lo, hi = (value_of(b) for b in acc["ci95"])
    if lo is None or hi is None or hi - lo <= CI_WIDTH:
        return []
    return [_item("discussion.wide_ci", "results-overall", n=int(metrics.get("n", 0)),
                  width_pct=hi - lo)]


def weak_class(metrics: Mapping[str, Any]) -> list[Item]:
    """A class whose F1 is far below the mean F1 of the others (3+ classes)."""
    rows = [(r["class"], value_of(r.get("f1"))) for r in metrics.get("per_class") or []]
    rows = [(c, f) for c, f in rows if f is not None]
    if len(rows) < 3:
        return []
    out = []
    for name, f1 in rows:
        others = [f for c, f in rows if c != name]
        mean_others = sum(others) / len(others)
        if mean_others - f1 > WEAK_F1_GAP:
            out.append(_item("discussion.weak_class", "results-report", cls=name, f1=f1,
                             others=mean_others))
    return out


# ---------------------------------------------------------------- data and training rules

def imbalance(distribution: Mapping[str, Any] | None) -> list[Item]:
    """The majority class dominates the training split."""
    from .artifacts import train_imbalance

    found = train_imbalance(distribution)
    if found is None or found["ratio"] < IMBALANCE_RATIO:
        return []
    return [_item("discussion.imbalance", "data-distribution", cls=found["majority"],
                  cls_minor=found["minority"], ratio=found["ratio"],
                  share_pct=found["majority_share"])]


def overfitting(history: Sequence[Mapping[str, Any]] | None) -> list[Item]:
    """Validation loss turns up while training loss keeps falling: the gap grows after k."""
    rows = [r for r in history or []
            if value_of(r.get("train_loss")) is not None and value_of(r.get("val_loss")) is not None]
    if len(rows) < 3:
        return []
    val = [value_of(r["val_loss"]) for r in rows]
    train = [value_of(r["train_loss"]) for r in rows]
    k = min(range(len(val)), key=val.__getitem__)
    if k >= len(rows) - 1:
        return []
    rose = val[-1] > val[k] * (1 + OVERFIT_RISE)
    gap_k, gap_end = val[k] - train[k], val[-1] - train[-1]
    if not rose or gap_end <= gap_k or train[-1] > train[k]:
        return []
    epoch = int(value_of(rows[k].get("epoch")) or k + 1)
    return [_item("discussion.overfitting", "training-curves", epoch=epoch,
                  gap_start=gap_k, gap_end=gap_end)]


# ---------------------------------------------------------------- explainability rules

def faithfulness(explain: Mapping[str, Any] | None) -> list[Item]:
    """Deletion AUC (lower is better) against the random-map baseline."""
    faith = (explain or {}).get("faithfulness") or {}
    deletion = faith.get("deletion_auc") or {}
    cam, rnd = value_of(deletion.get("cam")), value_of(deletion.get("random"))
    if cam is None or rnd is None:
        return []
    key = "discussion.cam_faithful" if cam < rnd - FAITHFUL_MARGIN else "discussion.cam_unfaithful"
    return [_item(key, "explain-faithfulness", cam=cam, random=rnd)]


def localisation(explain: Mapping[str, Any] | None) -> list[Item]:
    """Pointing-game hit rate of the CAM against a random map (phantom or masked data)."""
    loc = (explain or {}).get("localisation") or {}
    hits = loc.get("pointing_game") or {}
    cam, rnd = value_of(hits.get("cam")), value_of(hits.get("random"))
    if cam is None or rnd is None:
        return []
    good = cam > rnd + LOCALISATION_MARGIN
    key = "discussion.localisation_good" if good else "discussion.localisation_poor"
    return [_item(key, "explain-localisation", cam_pct=cam, random_pct=rnd)]


def sanity(explain: Mapping[str, Any] | None) -> list[Item]:
    """Maps that barely change when the weights are randomised do not explain the model."""
    check = (explain or {}).get("sanity") or {}
    # Judge the most randomised stage (cascading randomisation); older output has one value.
    stages = [st for st in check.get("stages") or [] if value_of(st.get("spearman")) is not None]
    rho = value_of(stages[-1]["spearman"]) if stages else value_of(check.get("spearman"))
    if rho is None or rho <= SANITY_SPEARMAN:
        return []
    return [_item("discussion.sanity_failed", "explain-sanity", spearman=rho)]


def observations(metrics: Mapping[str, Any] | None, *,
                 history: Sequence[Mapping[str, Any]] | None = None,
                 distribution: Mapping[str, Any] | None = None,
                 explain: Mapping[str, Any] | None = None) -> list[Item]:
    """Every observation whose condition holds, in report order (data, training, results, CAMs)."""
    items = imbalance(distribution) + overfitting(history)
    if metrics:
        for rule in (leans_towards, weak_class, threshold_matters, poor_calibration, wide_interval):
            items += rule(metrics)
    items += faithfulness(explain) + localisation(explain) + sanity(explain)
    return items
