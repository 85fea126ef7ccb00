"""Observations generated from the numbers by rules, each pointing at a figure or table.

A rule returns an item ``{"key", "params", "ref"}`` only when its condition holds; the
message text lives in the catalogs under ``discussion.*``. Params follow the renderer's
conventions: names starting with ``cls`` are class names (translated per language), names
ending in ``_pct`` are fractions shown as percentages, ``ratio`` gets one decimal, other
floats three.

The explainability rules read the verdicts that ``xreport.verdicts`` wrote into
metrics.json (one verdict per topic: faithfulness, sanity, localisation), never the raw
scores, so two sentences cannot draw different conclusions from the same numbers; the
numbers they quote are the statistic behind the verdict, for the reader.
"""
from __future__ import annotations

from typing import Mapping, TypedDict

from . import artifacts
from .metrics import Collapse, baselines, calibration_direction, collapsed, value_of
from .render.numbers import DASH


class Item(TypedDict):
    """An observation: a catalog key with its parameters, and the anchor of its evidence."""

    key: str
    params: dict[str, object]
    ref: str                     # the figure or table the sentence rests on

# Thresholds: a difference below these is noise at the sizes of typical student test sets.
LEAN_MARGIN = 0.05
IMBALANCE_RATIO = 1.5
OVERFIT_RISE = 0.10          # val loss at the end above its minimum by 10 %
THRESHOLD_AUC = 0.80
THRESHOLD_GAP = 0.08         # AUC minus accuracy at 0.5
ECE_LIMIT = 0.05
CI_WIDTH = 0.10
WEAK_F1_GAP = 0.15
BALANCED_RATIO = 1.0         # every class of the training split the same size
CHANCE_AUC = 0.60            # a ROC-AUC this low (or an interval reaching 0.5) is near chance


def _item(key: str, ref: str, **params: object) -> Item:
    return {"key": key, "params": params, "ref": ref}


# ---------------------------------------------------------------- metric rules

def _split_word(split: str) -> dict[str, object]:
    return {"key": f"split.{split}", "params": {}}


def _collapse(metrics: artifacts.Metrics) -> Collapse | None:
    cm = metrics.get("confusion_matrix")
    raw = cm.get("raw") if cm else None
    names = (cm.get("labels") if cm else None) or metrics.get("class_names") or []
    return collapsed(raw, names) if raw and names else None


def collapse(metrics: artifacts.Metrics, *, split: str = "test") -> list[Item]:
    """One class answered for most images while it is much rarer in the truth
    (metrics.COLLAPSE_SHARE): the model has collapsed onto it."""
    found = _collapse(metrics)
    if not found:
        return []
    return [_item("discussion.collapsed", "results-confusion", cls=found["cls"],
                  predicted_pct=found["predicted_share"], true_pct=found["true_share"], n=found["n"],
                  split=_split_word(split))]


def against_baselines(metrics: artifacts.Metrics, *, split: str = "test") -> list[Item]:
    """The headline accuracy beside chance (1/k) and the majority-class baseline; QWK beside
    0 for an ordinal task. "Above" needs the interval's lower end above the larger baseline."""
    cm = metrics.get("confusion_matrix") or {}
    names = cm.get("labels") or metrics.get("class_names") or []
    acc = metrics.get("accuracy")
    value = value_of(acc)
    if not cm.get("raw") or not names or value is None:
        return []
    base = baselines(cm["raw"], names)
    ci = acc.get("ci95") if isinstance(acc, Mapping) else None
    lo, hi = (value_of(ci[0]), value_of(ci[1])) if ci else (value, value)
    bar = max(base["chance"], base["majority"] or 0.0)
    key = ("discussion.baseline_above" if lo is not None and lo > bar else
           "discussion.baseline_below" if hi is not None and hi < bar else "discussion.baseline_not_above")
    items = [_item(key, "results-overall", accuracy=value, chance=base["chance"], k=base["k"],
                   majority=base["majority"], cls=base["majority_class"],
                   balanced=value_of(metrics.get("balanced_accuracy")), split=_split_word(split))]
    ordinal = metrics.get("ordinal")
    qwk = ordinal.get("qwk") if ordinal else None
    q = value_of(qwk)
    if q is not None:
        qci = qwk.get("ci95") if isinstance(qwk, Mapping) else None
        qlo = value_of(qci[0]) if qci else q
        items.append(_item("discussion.qwk_above" if qlo is not None and qlo > 0 else "discussion.qwk_not_above",
                           "results-ordinal", qwk=q))
    return items


def leans_towards(metrics: artifacts.Metrics) -> list[Item]:
    """Recall of a class clearly above its precision: the model over-predicts it. A binary
    task says it at its 0.5 threshold (a trade of false alarms for misses); a multi-class
    argmax has no threshold to trade with. A collapsed model gets the collapse sentence instead."""
    if _collapse(metrics):
        return []
    key = "discussion.leans_towards" if metrics.get("task") == "binary" else "discussion.leans_towards_argmax"
    leaning: list[tuple[float, Item]] = []   # (recall - precision, the sentence)
    for row in metrics.get("per_class") or []:
        recall, precision = value_of(row.get("recall")), value_of(row.get("precision"))
        if recall is None or precision is None:
            continue
        if recall - precision > LEAN_MARGIN:
            leaning.append((recall - precision, _item(key, "results-report",
                                                      cls=row["class"], recall=recall, precision=precision)))
    # In a binary task both classes cannot lean; keep the stronger one.
    if metrics.get("task") == "binary" and len(leaning) > 1:
        leaning = [max(leaning, key=lambda gap_item: gap_item[0])]
    return [item for _, item in leaning]


def threshold_matters(metrics: artifacts.Metrics) -> list[Item]:
    """A good ranking (AUC) with a clearly lower accuracy: the decision rule costs accuracy.

    Binary: the 0.5 threshold (operating points show others). Multi-class: accuracy is the
    argmax of the probabilities, there is no threshold to move.
    """
    auc, acc = value_of(metrics.get("roc_auc")), value_of(metrics.get("accuracy"))
    if auc is None or acc is None or auc < THRESHOLD_AUC or auc - acc < THRESHOLD_GAP:
        return []
    if metrics.get("task") == "binary":
        ref = "results-operating-points" if metrics.get("operating_points") else "results-roc"
        return [_item("discussion.threshold_matters", ref, auc=auc, accuracy=acc)]
    return [_item("discussion.argmax_matters", "results-confusion", auc=auc, accuracy=acc)]


def near_chance(metrics: artifacts.Metrics | None,
                history: artifacts.History | None = None, *,
                split: str = "test") -> list[Item]:
    """The evaluated split's AUC (or its interval) sits at chance, or the validation AUC never
    left it. ``split`` is the split the metrics are from ("val" when the test has no labels)."""
    auc = metrics.get("roc_auc") if metrics else None
    value = value_of(auc)
    lo = value_of((auc.get("ci95") or [None])[0]) if isinstance(auc, Mapping) else None
    if value is not None and (value <= CHANCE_AUC or (lo is not None and lo <= 0.5)):
        key = "discussion.near_chance_test" if split == "test" else "discussion.near_chance_val"
        return [_item(key, "results-roc", auc=value)]
    val = [v for v in (value_of(r.get("val_auc")) for r in history or []) if v is not None]
    if value is None and val and max(val) <= CHANCE_AUC:
        return [_item("discussion.near_chance_val", "training-curves", auc=max(val))]
    return []


def poor_calibration(metrics: artifacts.Metrics) -> list[Item]:
    """ECE above the limit, with its direction from the signed gap (confidence minus accuracy)."""
    calibration = metrics.get("calibration")
    ece = value_of(calibration.get("ece")) if calibration else None
    if ece is None or ece <= ECE_LIMIT:
        return []
    found = calibration_direction(calibration)
    if found is None:   # no reliability bins to read the direction from
        return [_item("discussion.poor_calibration", "results-calibration", ece=ece)]
    return [_item(f"discussion.poor_calibration_{found['direction']}", "results-calibration", ece=ece,
                  gap=abs(found["signed_gap"]), bins=found["bins"])]


def wide_interval(metrics: artifacts.Metrics, *, split: str = "test") -> list[Item]:
    """The accuracy interval is wide: the evaluated split is too small for fine comparisons."""
    acc = metrics.get("accuracy")
    if not isinstance(acc, Mapping) or not acc.get("ci95") or value_of(acc) is None:
        return []
    lo, hi = (value_of(b) for b in acc["ci95"] or [])
    if lo is None or hi is None or hi - lo <= CI_WIDTH:
        return []
    key = "discussion.wide_ci" if split == "test" else "discussion.wide_ci_val"
    return [_item(key, "results-overall", n=int(metrics.get("n", 0)), width=hi - lo)]


def weak_class(metrics: artifacts.Metrics) -> list[Item]:
    """A class whose F1 is far below the mean F1 of the others (3+ classes); not said of a
    collapsed model, whose every other class is weak for the same reason."""
    if _collapse(metrics):
        return []
    rows = [(c, f) for c, f in ((r["class"], value_of(r.get("f1"))) for r in metrics.get("per_class") or [])
            if f is not None]
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

def imbalance(distribution: artifacts.ClassDistribution | None) -> list[Item]:
    """How unequal the training split's classes are: balanced, mildly or clearly imbalanced."""
    from .artifacts import train_imbalance

    found = train_imbalance(distribution)
    if found is None:
        return []
    if found["ratio"] <= BALANCED_RATIO:
        return [_item("discussion.balanced", "data-distribution", count=found["n_majority"])]
    key = "discussion.imbalance" if found["ratio"] >= IMBALANCE_RATIO else "discussion.mild_imbalance"
    return [_item(key, "data-distribution", cls=found["majority"], cls_minor=found["minority"],
                  ratio=found["ratio"], share_pct=found["majority_share"])]


def overfitting(history: artifacts.History | None) -> list[Item]:
    """Validation loss turns up while training loss keeps falling: the gap grows after k."""
    rows, val, train = [], [], []   # the epochs with both losses
    for r in history or []:
        v, t = value_of(r.get("val_loss")), value_of(r.get("train_loss"))
        if v is not None and t is not None:
            rows.append(r)
            val.append(v)
            train.append(t)
    if len(rows) < 3:
        return []
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

_FAITH_KEYS = {"better": "discussion.cam_faithful", "not_distinguishable": "discussion.cam_not_distinguishable",
               "below_margin": "discussion.cam_below_margin", "mixed": "discussion.cam_mixed",
               "worse": "discussion.cam_worse"}
_SANITY_KEYS = {"pass": "discussion.sanity_passed", "inconclusive": "discussion.sanity_inconclusive",
                "fail": "discussion.sanity_failed"}
_LOCAL_KEYS = {"better": "discussion.localisation_good", "not_distinguishable": "discussion.localisation_chance",
               "below_margin": "discussion.localisation_below_margin", "worse": "discussion.localisation_worse"}


def faithfulness(explain: artifacts.Explanation | None) -> list[Item]:
    """The faithfulness verdict over deletion, insertion and ROAD against random maps."""
    # A loaded metrics.json holds every declared key (an older file's absent ones read as None).
    faith = explain["faithfulness"] if explain else None
    if not faith:
        return []
    key = _FAITH_KEYS.get(str(faith["verdict"]))
    listed = set(faith["scores"])
    scores = [stat for s in artifacts.FAITH_SCORES if s in listed and (stat := faith[s]) is not None]
    if key is None or not scores:
        return []
    better = sum(1 for s in scores if s["verdict"] == "better")
    worse = sum(1 for s in scores if s["verdict"] == "worse")
    return [_item(key, "explain-faithfulness", n=int(faith["n"] or 0), better=better, worse=worse,
                  scores=len(scores), maps=faith["random_maps"]["per_image"])]


def localisation(explain: artifacts.Explanation | None) -> list[Item]:
    """The pointing-game verdict against chance (the dilated lesion's share of the image)."""
    loc = explain["localisation"] if explain else None
    hits = loc["pointing_game"] if loc else None
    if not hits:
        return []
    key = _LOCAL_KEYS.get(str(hits["verdict"]))
    cam, chance = value_of(hits["cam"]), value_of(hits["chance"])
    if key is None or cam is None or chance is None:
        return []
    # The effect as what it is: most peaks can miss while the hit rate is above chance.
    if key == "discussion.localisation_good" and cam < 0.5:
        key = "discussion.localisation_mostly_misses"
    return [_item(key, "explain-localisation", cam_pct=cam, miss_pct=1 - cam, chance_pct=chance,
                  n=int(hits["n"] or 0))]


def sanity(explain: artifacts.Explanation | None) -> list[Item]:
    """The cascade's verdict: do the maps change once the weights down to the target are random?"""
    check = explain["sanity"] if explain else None
    if not check:
        return []
    stages = check["stages"]
    key = _SANITY_KEYS.get(str(check["verdict"]))
    last = stages[-1] if stages else None
    spearman = last["spearman"] if last is not None else None
    rho = value_of(spearman["mean"]) if spearman is not None else None
    if key is None or rho is None or last is None:
        return []
    return [_item(key, "explain-sanity", spearman=rho, layer=str(last["randomised"] or ""),
                  seeds=int(check["seeds"] or 1), n=int(check["n"] or 0))]


def duplicates(metrics: artifacts.Metrics | None, found: artifacts.Deduplicated | None) -> list[Item]:
    """Test images that duplicate training images: the figures without them are the ones to
    believe (a model is rewarded for remembering the duplicates)."""
    if not metrics or not found:
        return []
    kept = found["metrics"]
    if kept is None:
        return [_item("discussion.duplicates_unscored", "results-dedup", n=found["removed"],
                      total=metrics["n"])]
    return [_item("discussion.duplicates", "results-dedup", n=found["removed"], total=metrics["n"],
                  acc=value_of(metrics["accuracy"]), acc_kept=value_of(kept["accuracy"]),
                  auc=value_of(metrics["roc_auc"]), auc_kept=value_of(kept["roc_auc"]))]


def observations(metrics: artifacts.Metrics | None, *,
                 history: artifacts.History | None = None,
                 distribution: artifacts.ClassDistribution | None = None,
                 explain: artifacts.Explanation | None = None,
                 split: str = "test",
                 deduplicated: artifacts.Deduplicated | None = None) -> list[Item]:
    """Every observation whose condition holds, in report order (data, training, results, CAMs).
    ``split`` names the split the metrics come from, so a sentence never calls validation
    figures "test" figures (an unlabelled test split reports on validation)."""
    items = imbalance(distribution) + overfitting(history) + near_chance(metrics, history, split=split)
    items += duplicates(metrics, deduplicated)
    if metrics:
        items += against_baselines(metrics, split=split) + collapse(metrics, split=split)
        for rule in (leans_towards, weak_class, threshold_matters, poor_calibration):
            items += rule(metrics)
        items += wide_interval(metrics, split=split)
    said = faithfulness(explain) + localisation(explain) + sanity(explain)
    if metrics and (_collapse(metrics) or near_chance(metrics, history, split=split)):
        # Maps that change once the weights are random say little of a model that learned
        # next to nothing (the sentences above say so).
        said = [{**i, "key": "discussion.sanity_passed_chance"} if i["key"] == "discussion.sanity_passed" else i
                for i in said]
    return items + said


# ---------------------------------------------------------------- limitations

def limitations(metrics: artifacts.Metrics | None, *,
                distribution: artifacts.ClassDistribution | None = None,
                leakage: Mapping[str, object] | None = None, split: str = "test",
                synthetic: str | None = None, seed: int | None = None, external: bool = False,
                source: str = "", image_sizes: int | None = None) -> list[Item]:
    """What the report cannot claim, generated from the facts, each with the number it rests
    on: synthetic data, one seed, the evaluated split's size and interval width, duplicates
    across splits, no external validation, imbalance, a collapsed or baseline-level model."""
    from .artifacts import train_imbalance

    items: list[Item] = []
    if synthetic:
        items.append(_item("limitations.synthetic", "data", source=synthetic))
    acc = metrics.get("accuracy") if metrics else None
    ci = acc.get("ci95") if isinstance(acc, Mapping) else None
    lo, hi = (value_of(ci[0]), value_of(ci[1])) if ci else (None, None)
    width = hi - lo if lo is not None and hi is not None else None
    items.append(_item("limitations.one_seed", "training", seed=seed if seed is not None else DASH))
    if metrics and lo is not None and hi is not None and width is not None and width > 0:
        items.append(_item("limitations.test_size", "results-overall", n=int(metrics.get("n", 0)),
                           split=_split_word(split), lo=lo, hi=hi, width=width))
    elif metrics and lo is not None:
        # Every resample gives the same accuracy (a constant answer on a stratified bootstrap):
        # the interval's width says nothing about the uncertainty, so it is not quoted as such.
        items.append(_item("limitations.test_size_degenerate", "results-overall",
                           n=int(metrics.get("n", 0)), split=_split_word(split)))
    if leakage is not None:
        total = int(leakage.get("total") or 0)   # type: ignore[call-overload]
        items.append(_item("limitations.duplicates" if total else "limitations.exact_only",
                           "data-leakage", n=total))
    if not external:
        items.append(_item("limitations.no_external", "data", source=source))
    if image_sizes is not None and image_sizes > 1:
        # Sizes that differ by class (or by source) let a model tell classes apart by size or
        # resampling artefacts rather than by the findings.
        items.append(_item("limitations.mixed_sizes", "data", n=image_sizes))
    found = train_imbalance(distribution)
    if found is not None and found["ratio"] >= IMBALANCE_RATIO:
        items.append(_item("limitations.imbalance", "data-distribution", cls=found["majority"],
                           cls_minor=found["minority"], ratio=found["ratio"]))
    if metrics:
        fallen = _collapse(metrics)
        if fallen:
            items.append(_item("limitations.collapsed", "results-confusion", cls=fallen["cls"],
                               predicted_pct=fallen["predicted_share"], true_pct=fallen["true_share"]))
        said = against_baselines(metrics, split=split)
        if said and said[0]["key"] != "discussion.baseline_above":
            params = said[0]["params"]
            items.append(_item("limitations.near_baseline", "results-overall", accuracy=params["accuracy"],
                               chance=params["chance"], majority=params["majority"], cls=params["cls"]))
    return items
