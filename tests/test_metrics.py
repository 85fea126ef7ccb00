"""metrics.py: hand-worked cases, agreement with scikit-learn, bootstrap, undefined values."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from xreport import metrics as M
from xreport.errors import XReportError

TOP_KEYS = {"task", "class_names", "n", "accuracy", "balanced_accuracy", "mcc", "roc_auc",
            "average_precision", "per_class", "macro_avg", "weighted_avg", "confusion_matrix",
            "curves", "calibration", "operating_points", "ordinal", "bootstrap"}


def two_col(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def one_hotish(pred, k: int, top: float = 0.6) -> np.ndarray:
    """Rows whose argmax is ``pred``; the rest of the mass spread evenly."""
    p = np.full((len(pred), k), (1 - top) / (k - 1))
    p[np.arange(len(pred)), pred] = top
    return p


def random_case(n: int, k: int, seed: int, signal: float = 1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def walk(obj):
    """Every dict inside a nested result."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def english(reason) -> str:
    """A reason message worded by the English catalog (metrics.json holds codes, not prose)."""
    from xreport import render
    return render.message_text(render.translator("en"), str)(reason)


def assert_clean(result) -> None:
    """JSON without NaN, and no undefined value without a reason every catalog can word."""
    from xreport import render

    json.dumps(result, allow_nan=False)
    says = [render.message_text(render.translator(lang), str) for lang in render.LANGS]
    for d in walk(result):
        for key in ("reason", "ci95_reason"):
            if d.get(key) is not None or ("value" in d and d["value"] is None and key == "reason"):
                assert isinstance(d.get(key), dict) and d[key]["key"].startswith("reason."), d
                assert all(say(d[key]) for say in says), d


def val(d):
    return d["value"]


# ---------------------------------------------------------------- hand-worked 2x2

# y:   0    0    0    0  | 1    1    1    1    1     1
# p1:  0.1  0.3  0.6  0.8| 0.2  0.6  0.7  0.9  0.95  0.55
# argmax (p1 > 0.5): negatives 0 0 1 1 -> tn 2, fp 2; positives 0 1 1 1 1 1 -> fn 1, tp 5
# accuracy 7/10; PNEU: precision 5/7, recall 5/6, specificity 2/4, F1 2*5/(2*5+2+1) = 10/13
# NORMAL: precision 2/3, recall 2/4, specificity 5/6, F1 2*2/(4+1+2) = 4/7
# balanced accuracy (1/2 + 5/6)/2 = 2/3; MCC (5*2 - 2*1)/sqrt(7*6*4*3) = 8/sqrt(504)
# AUC: negatives below each positive (tie = 1/2): 0.2:1, 0.6:2.5, 0.7:3, 0.9:4, 0.95:4,
#      0.55:2 -> 16.5 / 24 = 0.6875
# Brier: negatives .01+.09+.36+.64 = 1.10; positives .64+.16+.09+.01+.0025+.2025 = 1.105
#        -> 2.205 / 10 = 0.2205
Y2 = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P2 = two_col([0.1, 0.3, 0.6, 0.8, 0.2, 0.6, 0.7, 0.9, 0.95, 0.55])


def test_hand_worked_binary():
    r = M.compute_all(Y2, P2, class_names=["NORMAL", "PNEU"], task="binary", n_boot=0)
    assert set(r) == TOP_KEYS | {"roc_auc_weighted"} and r["roc_auc_weighted"] is None  # every declared key
    assert r["n"] == 10
    assert val(r["accuracy"]) == pytest.approx(0.7)
    assert val(r["balanced_accuracy"]) == pytest.approx(2 / 3)
    assert val(r["mcc"]) == pytest.approx(8 / math.sqrt(504))
    assert r["roc_auc"] == {"value": pytest.approx(0.6875), "average": "binary"}
    normal, pneu = r["per_class"]
    assert (pneu["class"], pneu["index"], pneu["support"]) == ("PNEU", 1, 6)
    assert [val(pneu[m]) for m in ("precision", "recall", "specificity", "f1")] == \
        pytest.approx([5 / 7, 5 / 6, 2 / 4, 10 / 13])
    assert [val(normal[m]) for m in ("precision", "recall", "specificity", "f1")] == \
        pytest.approx([2 / 3, 2 / 4, 5 / 6, 4 / 7])
    assert val(pneu["auc"]) == pytest.approx(0.6875)
    assert val(r["macro_avg"]["precision"]) == pytest.approx((2 / 3 + 5 / 7) / 2)
    assert val(r["weighted_avg"]["f1"]) == pytest.approx((4 * 4 / 7 + 6 * 10 / 13) / 10)
    assert r["macro_avg"]["support"] == r["weighted_avg"]["support"] == 10
    cm = r["confusion_matrix"]
    assert cm["labels"] == ["NORMAL", "PNEU"]
    assert cm["raw"] == [[2, 2], [1, 5]]
    assert np.allclose(cm["by_true"], [[0.5, 0.5], [1 / 6, 5 / 6]])
    assert np.allclose(cm["by_pred"], [[2 / 3, 2 / 7], [1 / 3, 5 / 7]])
    assert np.allclose(cm["by_all"], [[0.2, 0.2], [0.1, 0.5]])
    assert val(r["calibration"]["brier"]) == pytest.approx(0.2205)
    assert r["ordinal"] is None
    assert r["bootstrap"] == {"resamples": 0, "seed": 0, "stratified": True}
    assert "ci95" not in r["accuracy"]
    assert_clean(r)


# Youden on the test data: candidates (descending) with J = TPR - FPR:
# 0.95: 1/6-0; 0.9: 2/6-0 = 1/3; 0.8: 2/6-1/4; 0.7: 3/6-1/4; 0.6: 4/6-2/4; 0.55: 5/6-2/4 = 1/3;
# 0.3: 5/6-3/4; 0.2: 1-3/4; 0.1: 0. Max 1/3 is tied: the higher threshold 0.9 is taken.
# At 0.9: tp 2 (0.9, 0.95), fn 4, fp 0, tn 4 -> sens 1/3, spec 1, PPV 1, NPV 4/8.
# 90% and 95% sensitivity of 6 positives need all 6: threshold 0.2 (the lowest positive);
# at 0.2: tp 6, fn 0, fp 3 (0.3, 0.6, 0.8), tn 1 -> sens 1, spec 1/4, PPV 6/9, NPV 1.
def test_operating_points_chosen_on_test():
    ops = {o["name"]: o for o in M.operating_points(Y2, P2)}
    assert list(ops) == ["default_0.5", "youden", "sens_90", "sens_95"]
    d = ops["default_0.5"]
    assert (d["threshold"], d["chosen_on"]) == (0.5, "fixed")
    assert d["confusion_matrix"] == [[2, 2], [1, 5]]
    y = ops["youden"]
    assert (y["threshold"], y["chosen_on"]) == (0.9, "test")
    assert y["confusion_matrix"] == [[4, 0], [4, 2]]
    assert [val(y[m]) for m in ("sensitivity", "specificity", "ppv", "npv")] == \
        pytest.approx([1 / 3, 1, 1, 0.5])
    for name in ("sens_90", "sens_95"):
        s = ops[name]
        assert s["threshold"] == 0.2 and s["confusion_matrix"] == [[1, 3], [0, 6]]
        assert [val(s[m]) for m in ("sensitivity", "specificity", "ppv", "npv")] == \
            pytest.approx([1, 0.25, 6 / 9, 1])


# Validation: negatives 0.1 0.2 0.3, positives 0.7 0.8 0.9. Youden's J = 1 only at 0.7 (the
# lowest positive); 90% of 3 positives needs all 3 -> also 0.7. On the test data at 0.7:
# positives 0.7 0.9 0.95 called positive (tp 3, fn 3); negative 0.8 too (fp 1, tn 3).
def test_operating_points_chosen_on_validation():
    val_split = (np.array([0, 0, 0, 1, 1, 1]), two_col([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    ops = {o["name"]: o for o in M.operating_points(Y2, P2, val=val_split)}
    for name in ("youden", "sens_90", "sens_95"):
        o = ops[name]
        assert (o["threshold"], o["chosen_on"]) == (0.7, "val")
        assert o["confusion_matrix"] == [[3, 1], [3, 3]]
        assert val(o["sensitivity"]) == pytest.approx(0.5)
        assert val(o["specificity"]) == pytest.approx(0.75)


def test_operating_points_without_positives_in_validation_say_why():
    val_split = (np.array([0, 0]), two_col([0.2, 0.4]))
    ops = {o["name"]: o for o in M.operating_points(Y2, P2, val=val_split)}
    assert ops["youden"]["threshold"] is None and ops["youden"]["confusion_matrix"] is None
    assert "no positive samples" in english(ops["youden"]["sensitivity"]["reason"])
    assert val(ops["default_0.5"]["sensitivity"]) == pytest.approx(5 / 6)


def test_operating_point_intervals_are_bootstrapped():
    y, p = random_case(300, 2, seed=3)
    ops = M.operating_points(y, p, n_boot=200, seed=1)
    for o in ops:
        for m in ("sensitivity", "specificity", "ppv", "npv"):
            lo, hi = o[m]["ci95"]
            assert lo <= o[m]["value"] <= hi


# ---------------------------------------------------------------- hand-worked 3x3

# y    : 0 0 0 1 1 1 2 2 2 2
# pred : 0 0 1 1 1 2 2 2 0 2
# confusion [[2,1,0],[0,2,1],[1,0,3]]; row sums = column sums = [3,3,4]; accuracy 7/10
# precision = recall = F1 = [2/3, 2/3, 3/4]
# specificity: tn = n - row - col + tp -> [6, 6, 5], fp = [1, 1, 1] -> [6/7, 6/7, 5/6]
# balanced accuracy (2/3 + 2/3 + 3/4)/3 = 25/36
# MCC: (10*7 - (9+9+16)) / sqrt((100-34)(100-34)) = 36/66 = 6/11
# QWK with w = (i-j)^2/4: observed sum w*O = 1/4 + 1/4 + 1 = 1.5;
#   E = rows x cols / 10: E01=E10=.9, E12=E21=E02=E20=1.2 -> (0.9+0.9+1.2+1.2)/4 + 2.4 = 3.45
#   -> 1 - 1.5/3.45 = 13/23
# MAE of the grade: |errors| 1 + 1 + 2 = 4 over 10 -> 0.4
Y3 = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
PRED3 = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0, 2])


def test_hand_worked_three_classes():
    p = one_hotish(PRED3, 3)
    r = M.compute_all(Y3, p, class_names=["g0", "g1", "g2"], task="ordinal", n_boot=0)
    assert set(r) == TOP_KEYS | {"roc_auc_weighted"}
    assert r["confusion_matrix"]["raw"] == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    assert val(r["accuracy"]) == pytest.approx(0.7)
    for m, want in (("precision", [2 / 3, 2 / 3, 3 / 4]), ("recall", [2 / 3, 2 / 3, 3 / 4]),
                    ("f1", [2 / 3, 2 / 3, 3 / 4]), ("specificity", [6 / 7, 6 / 7, 5 / 6])):
        assert [val(c[m]) for c in r["per_class"]] == pytest.approx(want), m
    assert val(r["balanced_accuracy"]) == pytest.approx(25 / 36)
    assert val(r["mcc"]) == pytest.approx(6 / 11)
    assert val(r["ordinal"]["qwk"]) == pytest.approx(13 / 23)
    assert val(r["ordinal"]["mae"]) == pytest.approx(0.4)
    assert r["roc_auc"]["average"] == "macro-ovr"
    assert r["operating_points"] == []
    assert_clean(r)


# Four samples, top-class confidence and correctness: 0.9 right, 0.8 wrong, 0.7 right,
# 0.55 right, each alone in its (lo, hi] bin -> ECE = (0.1 + 0.8 + 0.3 + 0.45)/4 = 0.4125.
# Brier on the positive class: (0.1^2 + 0.8^2 + 0.3^2 + 0.45^2)/4 = 0.9425/4 = 0.235625.
def test_hand_worked_calibration():
    cal = M.calibration(np.array([1, 0, 0, 1]), two_col([0.9, 0.8, 0.3, 0.55]))
    assert val(cal["ece"]) == pytest.approx(0.4125)
    assert val(cal["brier"]) == pytest.approx(0.235625)
    bins = cal["bins"]
    assert len(bins) == 10 and bins[3]["lo"] == 0.3 and bins[-1]["hi"] == 1.0
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    assert bins[7] == {"lo": 0.7, "hi": 0.8, "count": 1, "confidence": 0.8, "accuracy": 0.0}
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None


# ---------------------------------------------------------------- scikit-learn agreement

@pytest.mark.parametrize("k,seed", [(2, 0), (2, 1), (4, 2), (5, 3)])
def test_every_number_matches_sklearn(k, seed):
    y, p = random_case(400, k, seed)
    if k == 2:  # ties in the scores exercise average ranks
        p = two_col(np.round(p[:, 1], 1))
    task = "binary" if k == 2 else "ordinal"
    names = [f"c{i}" for i in range(k)]
    r = M.compute_all(y, p, class_names=names, task=task, n_boot=0)
    pred = p.argmax(axis=1)
    labels = list(range(k))
    assert val(r["accuracy"]) == pytest.approx(skm.accuracy_score(y, pred))
    assert val(r["balanced_accuracy"]) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert val(r["mcc"]) == pytest.approx(skm.matthews_corrcoef(y, pred))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels)
    for c, row in enumerate(r["per_class"]):
        assert val(row["precision"]) == pytest.approx(prec[c])
        assert val(row["recall"]) == pytest.approx(rec[c])
        assert val(row["f1"]) == pytest.approx(f1[c])
        assert row["support"] == sup[c]
        assert val(row["specificity"]) == pytest.approx(skm.recall_score(y != c, pred != c))
        assert val(row["auc"]) == pytest.approx(skm.roc_auc_score(y == c, p[:, c]))
    for avg in ("macro", "weighted"):
        want = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg)
        got = [val(r[f"{avg}_avg"][m]) for m in ("precision", "recall", "f1")]
        assert got == pytest.approx(list(want[:3]))
    assert r["confusion_matrix"]["raw"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    if k == 2:
        assert val(r["roc_auc"]) == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
        assert val(r["average_precision"]) == pytest.approx(
            skm.average_precision_score(y, p[:, 1]))
        assert val(r["calibration"]["brier"]) == pytest.approx(skm.brier_score_loss(y, p[:, 1]))
    else:
        assert val(r["roc_auc"]) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
        assert val(r["roc_auc_weighted"]) == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovr", average="weighted"))
        assert val(r["average_precision"]) == pytest.approx(
            skm.average_precision_score(label_binarize(y, classes=labels), p, average="macro"))
        assert val(r["calibration"]["brier"]) == pytest.approx(
            skm.brier_score_loss(y, p, labels=labels))
        assert val(r["ordinal"]["qwk"]) == pytest.approx(
            skm.cohen_kappa_score(y, pred, weights="quadratic", labels=labels))
        assert val(r["ordinal"]["mae"]) == pytest.approx(skm.mean_absolute_error(y, pred))
    for roc, pr in zip(r["curves"]["roc"], r["curves"]["pr"]):
        c = names.index(roc["class"])
        assert roc["auc"] == pytest.approx(skm.roc_auc_score(y == c, p[:, c]))
        assert pr["ap"] == pytest.approx(skm.average_precision_score(y == c, p[:, c]))
    assert_clean(r)


def test_public_pieces_work_alone_and_agree_with_compute_all():
    y, p = random_case(200, 4, seed=6)
    names = ["a", "b", "c", "d"]
    full = M.compute_all(y, p, class_names=names, task="ordinal", n_boot=100, seed=3)
    # compute_all adds the intervals; the values and the bins are the public pieces'.
    assert M.average_precision(y, p) == {"value": full["average_precision"]["value"]}
    cal = M.calibration(y, p)
    assert cal["bins"] == full["calibration"]["bins"]
    assert all(cal[key] == {"value": full["calibration"][key]["value"]} for key in ("ece", "brier"))
    assert M.confusion_matrices(y, p.argmax(axis=1), class_names=names) == \
        full["confusion_matrix"]
    assert M.roc_pr_curves(y, p, class_names=names) == full["curves"]


def test_curves_are_thinned_and_keep_endpoints():
    y, p = random_case(5000, 3, seed=4, signal=0.8)
    curves = M.roc_pr_curves(y, p, class_names=["a", "b", "c"])
    assert len(curves["roc"]) == len(curves["pr"]) == 3
    for roc, pr in zip(curves["roc"], curves["pr"]):
        assert 2 <= len(roc["fpr"]) == len(roc["tpr"]) <= 200
        assert 2 <= len(pr["recall"]) == len(pr["precision"]) <= 200
        assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0)
        assert (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
        assert pr["recall"][0] == 1.0 and (pr["recall"][-1], pr["precision"][-1]) == (0.0, 1.0)
        assert np.all(np.diff(roc["fpr"]) >= 0)
    binary = M.roc_pr_curves(*random_case(50, 2, seed=5), class_names=["n", "p"])
    assert [c["class"] for c in binary["roc"]] == ["p"]  # the positive class only


# ---------------------------------------------------------------- bootstrap

def test_weighted_auc_and_counts_equal_an_explicit_resample():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 60)
    p = one_hotish(rng.integers(0, 3, 60), 3, top=0.5)
    p[:, 0] = np.round(rng.random(60) * 0.5, 1)  # ties on purpose
    p[:, 1:] = (1 - p[:, :1]) / 2
    w = np.stack([next(M._resample_weights(y, 1, s))[0] for s in range(3)])
    auc = M._auc_batch(p[:, 0], y == 0, w)
    cms = M._confusion_batch(y, p.argmax(axis=1), w, 3)
    for row in range(3):
        idx = np.repeat(np.arange(60), w[row].astype(int))
        assert np.bincount(y[idx], minlength=3).tolist() == np.bincount(y, minlength=3).tolist()
        assert auc[row] == pytest.approx(skm.roc_auc_score(y[idx] == 0, p[idx, 0]))
        assert cms[row].tolist() == skm.confusion_matrix(y[idx], p[idx].argmax(axis=1),
                                                         labels=[0, 1, 2]).tolist()


def test_bootstrap_is_seeded_and_brackets_the_point_estimate():
    y, p = random_case(500, 3, seed=8)
    names = ["a", "b", "c"]
    one = M.compute_all(y, p, class_names=names, task="ordinal", n_boot=300, seed=5)
    again = M.compute_all(y, p, class_names=names, task="ordinal", n_boot=300, seed=5)
    other = M.compute_all(y, p, class_names=names, task="ordinal", n_boot=300, seed=6)
    assert one == again
    assert one["accuracy"]["ci95"] != other["accuracy"]["ci95"]
    assert one["bootstrap"] == {"resamples": 300, "seed": 5, "stratified": True}
    bracketed = [one["accuracy"], one["balanced_accuracy"], one["mcc"], one["roc_auc"],
                 one["roc_auc_weighted"], one["ordinal"]["qwk"], one["ordinal"]["mae"],
                 one["average_precision"], one["calibration"]["ece"], one["calibration"]["brier"],
                 *(one["macro_avg"][m] for m in ("precision", "recall", "f1")),
                 *(c[m] for c in one["per_class"] for m in ("precision", "recall", "f1", "auc"))]
    for v in bracketed:
        lo, hi = v["ci95"]
        assert lo <= v["value"] <= hi and hi - lo < 0.3


@pytest.mark.parametrize("k,seed", [(2, 11), (4, 12)])
def test_ap_ece_brier_intervals_equal_an_explicit_bootstrap(k, seed):
    """The intervals of AP, ECE and Brier are the percentiles of the metric recomputed on each
    resample drawn out (scikit-learn for AP and Brier, the public ``calibration`` for ECE),
    with the same resamples as every other interval."""
    y, p = random_case(150, k, seed, signal=1.0)
    if k == 2:  # ties in the scores exercise the grouped thresholds of AP
        p = two_col(np.round(p[:, 1], 2))
    n_boot, boot_seed = 200, 4
    names = [f"c{i}" for i in range(k)]
    full = M.compute_all(y, p, class_names=names, task="binary" if k == 2 else "multiclass",
                         n_boot=n_boot, seed=boot_seed)
    labels = list(range(k))
    draws: dict[str, list[float]] = {"ap": [], "ece": [], "brier": []}
    for w in M._resample_weights(y, n_boot, boot_seed):
        for row in w:
            idx = np.repeat(np.arange(len(y)), row.astype(int))
            ys, ps = y[idx], p[idx]
            if k == 2:
                draws["ap"].append(skm.average_precision_score(ys, ps[:, 1]))
                draws["brier"].append(skm.brier_score_loss(ys, ps[:, 1]))
            else:
                draws["ap"].append(skm.average_precision_score(
                    label_binarize(ys, classes=labels), ps, average="macro"))
                draws["brier"].append(skm.brier_score_loss(ys, ps, labels=labels))
            draws["ece"].append(val(M.calibration(ys, ps)["ece"]))
            if k > 2:   # and each class's AP, which the PR chart's legend names
                for c in labels:
                    draws.setdefault(f"ap/{c}", []).append(skm.average_precision_score(ys == c, ps[:, c]))
    assert len(draws["ap"]) == n_boot
    got = {"ap": full["average_precision"], "ece": full["calibration"]["ece"],
           "brier": full["calibration"]["brier"]}
    for row in full["per_class"]:
        if k > 2:
            c = row["index"]
            assert val(row["ap"]) == pytest.approx(skm.average_precision_score(y == c, p[:, c]))
            got[f"ap/{c}"] = row["ap"]
        else:
            assert row["ap"] is None   # binary: the positive class's AP is average_precision
    missed = []
    for key, value in got.items():
        want = pytest.approx(list(np.percentile(draws[key], [2.5, 97.5])), abs=1e-12)
        if value["ci95"] is None:  # the resamples' range left out the estimate: said, not shown
            reason = value["ci95_reason"]
            assert reason["key"] == "reason.interval_excludes_point", key
            lo, hi = reason["params"]["lo"], reason["params"]["hi"]
            assert [lo, hi] == want and not lo <= value["value"] <= hi, key
            missed.append(key)
        else:
            assert value["ci95"] == want, key
            lo, hi = value["ci95"]
            assert lo <= value["value"] <= hi, key
    # Only ECE is biased enough for that (well calibrated here); AP and Brier always bracket.
    assert set(missed) <= {"ece"}
    assert missed == (["ece"] if k == 4 else []), "the fixed seeds exercise both branches"


def test_bootstrap_intervals_standalone_match_compute_all():
    y, p = random_case(200, 2, seed=9)
    flat = M.bootstrap_intervals(y, p, n_boot=100, seed=2)
    full = M.compute_all(y, p, class_names=["n", "p"], task="binary", n_boot=100, seed=2)
    assert flat["accuracy"]["ci95"] == full["accuracy"]["ci95"]
    assert flat["per_class/1/recall"]["ci95"] == full["per_class"][1]["recall"]["ci95"]


def test_interval_is_omitted_when_mostly_undefined():
    samples = np.array([0.5, 0.6, np.nan, np.nan, np.nan])
    out = M.percentile_interval(samples)
    assert out["ci95"] is None and out["ci95_reason"] == {
        "key": "reason.interval_omitted", "params": {"share_pct": pytest.approx(0.6), "resamples": 5}}
    assert "60.0% of 5 bootstrap resamples" in english(out["ci95_reason"])
    assert M.percentile_interval(np.array([0.5, 0.7, np.nan]))["ci95"] == pytest.approx([0.505,
                                                                                        0.695])


# ---------------------------------------------------------------- undefined cases

def test_single_class_y_true_gives_reasons_not_zeros():
    y = np.zeros(6, dtype=int)
    p = two_col([0.1, 0.2, 0.3, 0.6, 0.2, 0.1])
    r = M.compute_all(y, p, class_names=["NORMAL", "PNEU"], task="binary", n_boot=50)
    assert val(r["accuracy"]) == pytest.approx(5 / 6)
    for v in (r["roc_auc"], r["balanced_accuracy"], r["mcc"], r["average_precision"],
              r["per_class"][1]["recall"], r["per_class"][0]["specificity"],
              r["macro_avg"]["recall"]):
        assert v["value"] is None and v["reason"]
    assert "PNEU" in english(r["roc_auc"]["reason"]) and "y_true" in english(r["roc_auc"]["reason"])
    assert r["curves"]["roc"][0] == {"class": "PNEU", "fpr": [], "tpr": [], "auc": None}
    assert r["confusion_matrix"]["by_true"][1] == [None, None]
    assert_clean(r)


def test_never_predicted_class_has_undefined_precision():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = one_hotish(np.array([0, 1, 1, 0, 1, 0]), 3)  # class 2 is never the argmax
    r = M.compute_all(y, p, class_names=["a", "b", "c"], task="multiclass", n_boot=30)
    c = r["per_class"][2]
    assert c["precision"]["value"] is None
    assert "'c' is never predicted" in english(c["precision"]["reason"])
    assert val(c["recall"]) == 0.0 and val(c["f1"]) == 0.0  # defined: it occurs, never found
    assert r["macro_avg"]["precision"]["value"] is None
    assert r["weighted_avg"]["precision"]["value"] is None
    assert r["confusion_matrix"]["by_pred"][0][2] is None
    assert_clean(r)


def test_empty_input():
    r = M.compute_all(np.array([], dtype=int), np.empty((0, 2)), class_names=["n", "p"],
                      task="binary")
    assert r["n"] == 0
    assert r["accuracy"] == {"value": None, "reason": {"key": "reason.empty", "params": {}}}
    assert english(r["accuracy"]["reason"]) == "no samples: the input is empty"
    assert r["calibration"]["ece"]["value"] is None
    assert all(b["count"] == 0 for b in r["calibration"]["bins"])
    assert_clean(r)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("y,p,names,task,fragment", [
    ([0, 1], [[0.5, 0.5]], ["a", "b"], "binary", "one label per row"),
    ([0, 1], [[0.5, 0.9], [0.5, 0.5]], ["a", "b"], "binary", "sums to"),
    ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "binary", "valid labels are 0..1"),
    ([0, 1], [[0.2, 0.3, 0.5], [0.5, 0.5, 0.0]], ["a", "b"], "binary", "3 columns"),
    ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"], "binary", "exactly 2"),
    ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "regression", "binary, multiclass"),
    ([0, 1], [[np.nan, 1.0], [0.5, 0.5]], ["a", "b"], "binary", "NaN"),
    ([0, 1], [[2.0, -1.0], [0.5, 0.5]], ["a", "b"], "binary", "softmax"),
    ([0.5, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "binary", "integer"),
    (["x", "y"], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "binary", "integer"),
    ([0, 1], [0.5, 0.5], ["a", "b"], "binary", "shape"),
])
def test_bad_input_raises_a_named_error(y, p, names, task, fragment):
    with pytest.raises(XReportError, match=fragment):
        M.compute_all(y, p, class_names=names, task=task)


def test_bad_options_raise():
    with pytest.raises(XReportError, match="n_boot"):
        M.compute_all(Y2, P2, class_names=["a", "b"], task="binary", n_boot=-1)
    with pytest.raises(XReportError, match="delong or bootstrap"):
        M.paired_auc_test(Y2, P2, P2, method="wilcoxon")
    with pytest.raises(XReportError, match="validation"):
        M.operating_points(Y2, P2, val=(np.array([0, 1]), two_col([0.5])))


# ---------------------------------------------------------------- comparing models

def test_mcnemar_exact_and_chi_square():
    y = np.zeros(100, dtype=int)
    # b = 10 (A right, B wrong), c = 2: exact two-sided 2 * (1 + 12 + 66) / 2**12
    a = np.r_[np.zeros(10), np.ones(2), np.zeros(88)].astype(int)
    b = np.r_[np.ones(10), np.zeros(2), np.zeros(88)].astype(int)
    res = M.mcnemar(y, a, b)
    assert (res["b"], res["c"]) == (10, 2)
    assert res["p_value"] == pytest.approx(2 * 79 / 4096)
    # b = 30, c = 10: chi2 = (|30 - 10| - 1)^2 / 40 = 9.025; 1-dof survival = erfc(sqrt(x/2))
    a = np.r_[np.zeros(30), np.ones(10), np.zeros(60)].astype(int)
    b = np.r_[np.ones(30), np.zeros(10), np.zeros(60)].astype(int)
    res = M.mcnemar(y, a, b)
    assert res["statistic"] == pytest.approx(9.025)
    assert res["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert M.mcnemar(y, a, a)["p_value"] == 1.0
    with pytest.raises(XReportError):
        M.mcnemar(y, a[:5], b)


def delong_by_pairs(y, s_a, s_b):
    """DeLong's variance written out over all positive-negative pairs (the 1988 definition)."""
    def comps(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)
    (a, v10a, v01a), (b, v10b, v01b) = comps(s_a), comps(s_b)
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (a - b) / math.sqrt(var)
    return a, b, math.erfc(abs(z) / math.sqrt(2))


def test_delong_matches_the_pairwise_definition():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 120)
    s_a = np.round(np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, 120), 0, 1), 2)
    s_b = np.round(np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, 120), 0, 1), 2)
    res = M.paired_auc_test(y, two_col(s_a), two_col(s_b))
    a, b, p_value = delong_by_pairs(y, s_a, s_b)
    assert res["method"] == "delong"
    assert (res["auc_a"], res["auc_b"]) == pytest.approx((a, b))
    assert res["difference"] == pytest.approx(a - b)
    assert res["p_value"] == pytest.approx(p_value)
    lo, hi = res["ci95"]
    assert lo < res["difference"] < hi


def test_delong_identical_and_clearly_better_models():
    y, p = random_case(300, 2, seed=12, signal=2.0)
    same = M.paired_auc_test(y, p, p)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    rng = np.random.default_rng(13)
    noise = rng.random(300)
    better = M.paired_auc_test(y, p, two_col(noise))
    assert better["difference"] > 0.2 and better["p_value"] < 1e-6


def test_paired_bootstrap_for_multiclass():
    y, p = random_case(300, 3, seed=14, signal=2.0)
    rng = np.random.default_rng(15)
    noise = rng.dirichlet(np.ones(3), size=300)
    same = M.paired_auc_test(y, p, p, n_boot=200)
    assert same["method"] == "bootstrap"  # DeLong is binary-only: falls back
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    better = M.paired_auc_test(y, p, noise, method="bootstrap", n_boot=200, seed=1)
    assert better["p_value"] < 0.05 and better["ci95"][0] > 0
    assert better == M.paired_auc_test(y, p, noise, method="bootstrap", n_boot=200, seed=1)


# ---------------------------------------------------------------- property test

@st.composite
def cases(draw):
    k = draw(st.integers(2, 5))
    n = draw(st.integers(0, 25))
    y = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    raw = np.array(draw(st.lists(st.lists(st.floats(0, 1), min_size=k, max_size=k),
                                 min_size=n, max_size=n)), dtype=float).reshape(n, k)
    if draw(st.booleans()):  # normalised rows (valid); otherwise probably invalid
        sums = raw.sum(axis=1, keepdims=True)
        raw = np.where(sums > 0, raw / np.where(sums > 0, sums, 1), 1.0 / k)
    task = draw(st.sampled_from(("binary", "multiclass", "ordinal") if k == 2
                                else ("multiclass", "ordinal")))
    return np.array(y, dtype=int), raw, task, draw(st.integers(0, 20)), draw(st.integers(0, 9))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_any_input_gives_clean_json_or_a_named_error(case):
    y, p, task, n_boot, seed = case
    k = p.shape[1]
    try:
        r = M.compute_all(y, p, class_names=[f"c{i}" for i in range(k)], task=task,
                          n_boot=n_boot, seed=seed, val=(y, p) if k == 2 else None)
    except XReportError:
        return
    assert set(r) - {"roc_auc_weighted"} == TOP_KEYS
    assert r["n"] == len(y)
    assert_clean(r)


def test_qwk_from_grade_totals_equals_the_confusion_matrix_form() -> None:
    """Many grades skip the (B, k, k) matrix: QWK from the true and predicted grade totals
    and the per-image squared distance is the matrix form, resample by resample."""
    rng = np.random.default_rng(3)
    k, n = 9, 300
    y = rng.integers(0, k, n)
    pred = np.clip(y + rng.integers(-2, 3, n), 0, k - 1)
    weights = np.vstack([np.ones(n), *next(M._resample_weights(y, 20, 0))])
    counts = M._count_batch(y, pred, weights, k)
    from_totals = M._qwk_from_counts(y, pred, weights, counts)
    from_matrix = M._qwk_batch(M._confusion_batch(y, pred, weights, k))
    np.testing.assert_allclose(from_totals, from_matrix, rtol=1e-12, atol=1e-12)
    from sklearn.metrics import cohen_kappa_score
    assert from_totals[0] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))


def test_many_ordinal_grades_are_scored_in_bounded_memory() -> None:
    """Integer class names make an ordinal task; at hundreds of grades the metrics must not
    build a k^2 one-hot per image (at 1000 grades and 2000 images that was 16 GB)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    k, n = 300, 600
    y = np.repeat(np.arange(k), n // k)
    p = rng.random((n, k))
    p /= p.sum(axis=1, keepdims=True)
    tracemalloc.start()
    try:
        out = M.compute_all(y, p, class_names=[str(i) for i in range(k)], task="ordinal", n_boot=50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"       # the one-hot alone: 412 MiB
    from sklearn.metrics import cohen_kappa_score
    assert out["ordinal"]["qwk"]["value"] == pytest.approx(cohen_kappa_score(y, p.argmax(axis=1), weights="quadratic"))


def test_many_classes_keep_counts_and_the_shown_shares_come_from_them() -> None:
    """Beyond limits.REPORT_CLASSES metrics.json keeps the confusion counts only (the k x k
    share matrices were 5 MB of JSON at 1000 classes); the report's shown classes take each
    cell's share of its whole true-class row from the counts."""
    from xreport import artifacts
    from xreport.limits import REPORT_CLASSES

    rng = np.random.default_rng(1)
    k = REPORT_CLASSES + 5
    y = np.repeat(np.arange(k), 4)
    p = rng.random((len(y), k))
    p[np.arange(len(y)), y] += 0.6 * rng.random(len(y))
    p /= p.sum(axis=1, keepdims=True)
    m = M.compute_all(y, p, class_names=[f"c{i}" for i in range(k)], task="multiclass", n_boot=20)
    cm = m["confusion_matrix"]
    assert "by_true" not in cm and "by_pred" not in cm
    shown = artifacts.shown_confusion(m)
    raw = np.array(cm["raw"])
    expected = raw / raw.sum(axis=1, keepdims=True)
    assert len(shown.indices) == REPORT_CLASSES
    np.testing.assert_allclose(shown.by_true, expected[np.ix_(shown.indices, shown.indices)])
    small = M.compute_all(y[:40], p[:40, :10] / p[:40, :10].sum(axis=1, keepdims=True),
                          class_names=[f"c{i}" for i in range(10)], task="multiclass", n_boot=20)
    assert artifacts.shown_confusion(small).by_true == small["confusion_matrix"]["by_true"]
