"""Each discussion rule fires on inputs that meet its condition and stays silent otherwise."""
from __future__ import annotations

import pytest

from xreport import artifacts
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


def test_imbalance_reads_the_train_split_and_names_the_ratio() -> None:
    dist = {"class_names": ["NORMAL", "PNEUMONIA"], "splits": {"train": [100, 300], "test": [50, 50]}}
    (item,) = d.imbalance(dist)
    assert item["params"]["cls"] == "PNEUMONIA" and item["params"]["cls_minor"] == "NORMAL"
    assert item["params"]["ratio"] == pytest.approx(3.0) and item["params"]["share_pct"] == pytest.approx(0.75)
    assert keys(d.imbalance({"class_names": ["a", "b"], "splits": {"train": [100, 120]}})) == \
        ["discussion.mild_imbalance"]
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
    assert item["params"]["n"] == 40 and item["params"]["width"] == pytest.approx(0.25)
    assert d.wide_interval(binary_metrics()) == []


def test_weak_class_needs_three_classes_and_a_large_gap() -> None:
    rows = [{"class": c, "f1": V(f)} for c, f in (("a", 0.9), ("b", 0.88), ("c", 0.5))]
    (item,) = d.weak_class({"per_class": rows})
    assert item["params"]["cls"] == "c" and item["params"]["others"] == pytest.approx(0.89)
    even = [{"class": c, "f1": V(0.8)} for c in "abc"]
    assert d.weak_class({"per_class": even}) == [] and d.weak_class(binary_metrics()) == []


def _faith(verdict: str, scores: dict[str, str]) -> dict:
    return {"faithfulness": {"n": 64, "verdict": verdict, "random_maps": {"per_image": 3},
                             "scores": list(scores),
                             # Raw numbers that disagree with the verdicts: the rule must not read them.
                             **{s: {"cam": 0.1, "random": 0.9, "verdict": v} for s, v in scores.items()}},
            "sanity": None, "localisation": None}


def test_faithfulness_reads_the_topic_verdict_not_the_numbers() -> None:
    good = _faith("better", {"deletion_auc": "better", "insertion_auc": "better"})
    (item,) = d.faithfulness(good)
    assert item["key"] == "discussion.cam_faithful" and item["params"]["better"] == 2
    assert item["params"]["n"] == 64 and item["params"]["maps"] == 3
    tie = _faith("not_distinguishable", {"deletion_auc": "better", "insertion_auc": "worse"})
    assert keys(d.faithfulness(tie)) == ["discussion.cam_not_distinguishable"]
    assert d.faithfulness(tie)[0]["params"]["worse"] == 1
    bad = _faith("worse", {"deletion_auc": "worse", "insertion_auc": "not_distinguishable"})
    assert keys(d.faithfulness(bad)) == ["discussion.cam_worse"]
    assert d.faithfulness(None) == [] and d.faithfulness({"faithfulness": None}) == []
    # An old metrics.json without verdicts says nothing rather than guess (as loaded: the
    # absent keys read as None).
    old = {"deletion_auc": {"cam": 0.2, "random": 0.4}}
    artifacts.validate(old, artifacts.Faithfulness, path="metrics.json")
    assert d.faithfulness({"faithfulness": old}) == []


def test_localisation_verdict_against_chance() -> None:
    def loc(verdict: str) -> dict:
        return {"localisation": {"pointing_game": {"cam": 0.7, "random": 0.0, "chance": 0.04, "n": 64,
                                                   "verdict": verdict}}}
    assert keys(d.localisation(loc("better"))) == ["discussion.localisation_good"]
    assert keys(d.localisation(loc("not_distinguishable"))) == ["discussion.localisation_chance"]
    assert keys(d.localisation(loc("worse"))) == ["discussion.localisation_worse"]
    assert d.localisation(loc("better"))[0]["params"]["chance_pct"] == 0.04
    assert d.localisation({"localisation": None}) == []


def test_sanity_reads_the_cascade_verdict() -> None:
    def check(verdict: str) -> dict:
        return {"sanity": {"n": 16, "seeds": 3, "verdict": verdict,
                           "stages": [{"randomised": "fc", "spearman": {"mean": 0.9}},
                                      {"randomised": "layer3.0", "spearman": {"mean": 0.2}}]}}
    (item,) = d.sanity(check("pass"))
    assert item["key"] == "discussion.sanity_passed"
    assert item["params"]["layer"] == "layer3.0" and item["params"]["spearman"] == 0.2
    assert keys(d.sanity(check("fail"))) == ["discussion.sanity_failed"]
    assert keys(d.sanity(check("inconclusive"))) == ["discussion.sanity_inconclusive"]
    old = {"spearman": 0.3}
    artifacts.validate(old, artifacts.Sanity, path="metrics.json")
    assert d.sanity({"sanity": old}) == []


def test_one_sentence_per_explanation_topic() -> None:
    explain = {**_faith("better", {"deletion_auc": "better"}),
               "sanity": {"n": 16, "seeds": 3, "verdict": "fail",
                          "stages": [{"randomised": "layer4.0", "spearman": {"mean": 0.8}}]},
               "localisation": {"pointing_game": {"cam": 0.7, "chance": 0.04, "n": 64, "verdict": "better"}}}
    got = keys(d.observations(None, explain=explain))
    assert got == ["discussion.cam_faithful", "discussion.localisation_good", "discussion.sanity_failed"]


def test_threshold_wording_only_for_binary_tasks() -> None:
    m = binary_metrics(roc_auc=V(0.95), accuracy=V(0.8))
    assert keys(d.threshold_matters(m)) == ["discussion.threshold_matters"]
    multi = {**m, "task": "multiclass"}
    assert keys(d.threshold_matters(multi)) == ["discussion.argmax_matters"]
    assert d.threshold_matters(multi)[0]["ref"] == "results-confusion"


def test_imbalance_wording_by_ratio() -> None:
    def dist(counts: list[int]) -> dict:
        return {"class_names": ["a", "b"], "splits": {"train": counts}}
    assert keys(d.imbalance(dist([200, 200]))) == ["discussion.balanced"]
    assert d.imbalance(dist([200, 200]))[0]["params"] == {"count": 200}
    assert keys(d.imbalance(dist([240, 200]))) == ["discussion.mild_imbalance"]
    assert keys(d.imbalance(dist([300, 100]))) == ["discussion.imbalance"]


def test_an_auc_near_chance_is_always_said() -> None:
    chance = binary_metrics(roc_auc=V(0.55, 0.48, 0.62), accuracy=V(0.52, 0.47, 0.57),
                            per_class=[{"class": "NORMAL", "precision": V(0.5), "recall": V(0.5), "f1": V(0.5)},
                                       {"class": "PNEUMONIA", "precision": V(0.5), "recall": V(0.5),
                                        "f1": V(0.5)}])
    assert "discussion.near_chance_test" in keys(d.observations(chance))
    interval = binary_metrics(roc_auc=V(0.7, 0.45, 0.9))
    assert keys(d.near_chance(interval)) == ["discussion.near_chance_test"]
    assert d.near_chance(binary_metrics()) == []
    history = [{"epoch": 1, "val_auc": 0.5}, {"epoch": 2, "val_auc": 0.52}]
    assert keys(d.near_chance(None, history)) == ["discussion.near_chance_val"]
    assert d.observations(binary_metrics(roc_auc=V(0.5))) != []


def test_observations_collects_in_report_order() -> None:
    dist = {"class_names": ["NORMAL", "PNEUMONIA"], "splits": {"train": [100, 300]}}
    m = binary_metrics(calibration={"ece": V(0.2)})
    explain = _faith("not_distinguishable", {"deletion_auc": "not_distinguishable"})
    got = keys(d.observations(m, distribution=dist, explain=explain))
    assert got == ["discussion.imbalance", "discussion.poor_calibration", "discussion.cam_not_distinguishable"]


def test_validation_metrics_are_never_called_test_metrics() -> None:
    # An unlabelled test split reports on validation: the sentences name that split.
    small = binary_metrics(roc_auc=V(0.55, 0.48, 0.62), accuracy=V(0.6, 0.4, 0.8), n=32)
    on_test = keys(d.observations(small))
    on_val = keys(d.observations(small, split="val"))
    assert {"discussion.near_chance_test", "discussion.wide_ci"} <= set(on_test)
    assert {"discussion.near_chance_val", "discussion.wide_ci_val"} <= set(on_val)
    assert not {"discussion.near_chance_test", "discussion.wide_ci"} & set(on_val)
