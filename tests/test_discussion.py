"""Each discussion rule fires on inputs that meet its condition and stays silent otherwise."""
from __future__ import annotations

import pytest

from xreport import discussion as d


def V(x: float | None, lo: float | None = None, hi: float | None = None) -> dict:
    out: dict = {"value": x}
    if lo is not None:
        out["ci95"] = [lo, hi]
    return out


def binary_metrics(**over: object) -> dict:
    m = {"task": "binary", "n": 500, "class_names": ["NORMAL", "PNEUMONIA"],
         "accuracy": V(0.9, 0.87, 0.93), "roc_auc": V(0.93),
         "per_class": [{"class": "NORMAL", "precision": V(0.9), "recall": V(0.88), "f1": V(0.89)},
                       {"class": "PNEUMONIA", "precision": V(0.9), "recall": V(0.91), "f1": V(0.9)}],
         "calibration": {"ece": V(0.03)}, "operating_points": []}
    m.update(over)
    return m


def keys(items: list[dict]) -> list[str]:
    return [i["key"] for i in items]


def test_a_balanced_good_model_gives_no_metric_observation() -> None:
    assert d.observations(binary_metrics()) == []


def test_leans_towards_the_class_whose_recall_exceeds_precision() -> None:
    m = binary_metrics(per_class=[
        {"class": "NORMAL", "precision": V(0.95), "recall": V(0.6), "f1": V(0.74)},
        {"class": "PNEUMONIA", "precision": V(0.8), "recall": V(0.98), "f1": V(0.88)}])
    (item,) = d.leans_towards(m)
    assert item["key"] == "discussion.leans_towards" and item["params"]["cls"] == "PNEUMONIA"
    assert item["ref"] == "results-report"
    assert d.leans_towards(binary_metrics()) == []


def test_undefined_values_never_fire() -> None:
    m = binary_metrics(per_class=[{"class": "A", "precision": V(None), "recall": V(1.0)}],
                       calibration={"ece": {"value": None, "reason": "no data"}}, roc_auc=V(None))
    assert d.leans_towards(m) == [] and d.poor_calibration(m) == [] and d.threshold_matters(m) == []


def test_imbalance_fires_on_the_train_split_only_above_the_ratio() -> None:
    dist = {"class_names": ["NORMAL", "PNEUMONIA"], "splits": {"train": [100, 300], "test": [50, 50]}}
    (item,) = d.imbalance(dist)
    assert item["params"]["cls"] == "PNEUMONIA" and item["params"]["cls_minor"] == "NORMAL"
    assert item["params"]["ratio"] == pytest.approx(3.0) and item["params"]["share_pct"] == pytest.approx(0.75)
    assert d.imbalance({"class_names": ["a", "b"], "splits": {"train": [100, 120]}}) == []
    assert d.imbalance(None) == []


def test_overfitting_points_at_the_epoch_where_the_gap_grows() -> None:
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": v}
            for e, v in zip(range(1, 7), [0.9, 0.6, 0.5, 0.6, 0.7, 0.8])]
    (item,) = d.overfitting(rows)
    assert item["params"]["epoch"] == 3 and item["ref"] == "training-curves"
    assert item["params"]["gap_end"] > item["params"]["gap_start"]
    steady = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e} for e in range(1, 7)]
    assert d.overfitting(steady) == [] and d.overfitting([]) == []


def test_threshold_matters_when_auc_is_high_but_accuracy_at_half_is_low() -> None:
    m = binary_metrics(accuracy=V(0.7), roc_auc=V(0.95), operating_points=[{"name": "youden"}])
    (item,) = d.threshold_matters(m)
    assert item["ref"] == "results-operating-points"
    assert d.threshold_matters(binary_metrics(accuracy=V(0.7), roc_auc=V(0.72))) == []


def test_poor_calibration_above_five_percent_ece() -> None:
    assert keys(d.poor_calibration(binary_metrics(calibration={"ece": V(0.12)}))) == ["discussion.poor_calibration"]
    assert d.poor_calibration(binary_metrics(calibration={"ece": V(0.05)})) == []


def test_wide_interval_on_a_small_test_split() -> None:
    (item,) = d.wide_interval(binary_metrics(n=40, accuracy=V(0.8, 0.65, 0.9)))
    assert item["params"]["n"] == 40 and item["params"]["width_pct"] == pytest.approx(0.25)
    assert d.wide_interval(binary_metrics()) == []


def test_weak_class_needs_three_classes_and_a_large_gap() -> None:
    rows = [{"class": c, "f1": V(f)} for c, f in (("a", 0.9), ("b", 0.88), ("c", 0.5))]
    (item,) = d.weak_class({"per_class": rows})
    assert item["params"]["cls"] == "c" and item["params"]["others"] == pytest.approx(0.89)
    even = [{"class": c, "f1": V(0.8)} for c in "abc"]
    assert d.weak_class({"per_class": even}) == [] and d.weak_class(binary_metrics()) == []


def test_faithfulness_against_random_maps() -> None:
    good = {"faithfulness": {"deletion_auc": {"cam": 0.2, "random": 0.4}}}
    bad = {"faithfulness": {"deletion_auc": {"cam": 0.45, "random": 0.4}}}
    assert keys(d.faithfulness(good)) == ["discussion.cam_faithful"]
    assert keys(d.faithfulness(bad)) == ["discussion.cam_unfaithful"]
    assert d.faithfulness(None) == [] and d.faithfulness({"faithfulness": None}) == []


def test_localisation_hit_rate_against_random() -> None:
    assert keys(d.localisation({"localisation": {"pointing_game": {"cam": 0.7, "random": 0.2}}})) == \
        ["discussion.localisation_good"]
    assert keys(d.localisation({"localisation": {"pointing_game": {"cam": 0.22, "random": 0.2}}})) == \
        ["discussion.localisation_poor"]
    assert d.localisation({"localisation": None}) == []


def test_sanity_check_judges_the_most_randomised_stage() -> None:
    failing = {"sanity": {"stages": [{"spearman": 0.2}, {"spearman": 0.8}]}}
    passing = {"sanity": {"stages": [{"spearman": 0.9}, {"spearman": 0.1}]}}
    assert keys(d.sanity(failing)) == ["discussion.sanity_failed"]
    assert d.sanity(passing) == [] and d.sanity({"sanity": {"spearman": 0.3}}) == []


def test_observations_collects_in_report_order() -> None:
    dist = {"class_names": ["NORMAL", "PNEUMONIA"], "splits": {"train": [100, 300]}}
    m = binary_metrics(calibration={"ece": V(0.2)})
    got = keys(d.observations(m, distribution=dist, explain={"faithfulness": {"deletion_auc": {"cam": 0.5, "random": 0.4}}}))
    assert got == ["discussion.imbalance", "discussion.poor_calibration", "discussion.cam_unfaithful"]
