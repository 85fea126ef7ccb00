"""Words follow the numbers (issue 20): rounding, verdict words, baselines, collapse,
calibration direction, limitations."""
from __future__ import annotations

import numpy as np
import pytest

from xreport import render


def test_equal_quantities_print_equal_and_no_scientific_notation() -> None:
    # 189/240 computed as a plain share and as a mean of recalls differs in the last bit.
    acc = 189 / 240
    bacc = float(np.mean([40 / 60, 40 / 60, 52 / 60, 57 / 60]))
    assert acc != bacc and abs(acc - bacc) < 1e-12
    assert render.num(acc) == render.num(bacc) == "0.788"
    assert render.num(0.7875) == render.num(0.7875000000000001)
    from xreport import charts                      # chart labels follow the same rule
    assert charts._fmt(acc) == charts._fmt(bacc) == render.num(acc)
    assert render.pct(0.14125) == render.pct(0.14125000000000001) == "14.1%"
    # Tiny values among 3-decimal numbers: a bound, never 9.47e-04 or 1.97e-05.
    assert render.num(1.97e-05) == "< 0.001" and render.num(-1.97e-05) == "> -0.001"
    assert render.num(9.47e-04) == "0.001" and render.num(0.0) == "0.000"
    assert "e-" not in render.num(3e-9, 5)


# ---------------------------------------------------------------- verdict words

def test_a_significant_difference_below_the_margin_is_never_not_distinguishable() -> None:
    from xreport import verdicts

    # The demo's energy share: Δ 0.026 [0.018, 0.034], p < 0.001, margin 0.05.
    assert verdicts.paired_verdict(0.026, [0.018, 0.034], 1e-6, higher_is_better=True,
                                   margin=0.05) == "below_margin"
    assert verdicts.paired_verdict(-0.005, [-0.007, -0.004], 1e-6, higher_is_better=True,
                                   margin=0.02) == "below_margin"
    # "not distinguishable" only when the interval reaches 0 (or the test does not reject).
    assert verdicts.paired_verdict(0.026, [-0.001, 0.05], 0.01, higher_is_better=True,
                                   margin=0.05) == "not_distinguishable"
    assert verdicts.paired_verdict(0.2, [0.1, 0.3], 1e-6, higher_is_better=True, margin=0.05) == "better"
    assert verdicts.paired_verdict(0.2, [0.1, 0.3], 1e-6, higher_is_better=False, margin=0.05) == "worse"


def test_the_headline_over_several_scores_says_mixed_when_they_disagree() -> None:
    from xreport import verdicts

    # The demo: 3 of 4 scores better, none worse -> not "not distinguishable".
    assert verdicts.overall(["better", "better", "better", "not_distinguishable"]) == "mixed"
    assert verdicts.overall(["better", "worse"]) == "mixed"
    assert verdicts.overall(["better"] * 4) == "better"
    assert verdicts.overall(["below_margin"] * 2) == "below_margin"


def test_an_older_metrics_file_gets_its_verdicts_rederived(tmp_path) -> None:
    import json

    from report_fixture import make_run

    from xreport import artifacts

    paths = make_run(tmp_path)
    data = json.loads(paths.metrics.read_text())
    data["schema"] = 2
    stat = {"cam": 0.1, "random": 0.074, "chance": 0.074, "difference": 0.026, "ci95": [0.018, 0.034],
            "p_value": 1e-5, "n": 64, "margin": 0.05, "higher_is_better": True,
            "verdict": "not_distinguishable"}
    data["explain"]["localisation"] = {"n": 64, "tolerance": 1, "random_per_image": 2,
                                       "pointing_game": dict(stat), "energy_inside": dict(stat),
                                       "verdict": "not_distinguishable"}
    faith = data["explain"]["faithfulness"]
    for score in faith["scores"][:-1]:
        faith[score].update(difference=0.2, ci95=[0.1, 0.3], p_value=1e-6, margin=0.02, verdict="better")
    last = faith["scores"][-1]
    faith[last].update(difference=0.0, ci95=[-0.1, 0.1], p_value=0.9, margin=0.02,
                       verdict="not_distinguishable")
    faith["verdict"] = "not_distinguishable"
    paths.metrics.write_text(json.dumps(data))
    loaded = artifacts.load_evaluation(paths)
    assert loaded["explain"]["localisation"]["energy_inside"]["verdict"] == "below_margin"
    assert loaded["explain"]["localisation"]["verdict"] == "below_margin"
    assert loaded["explain"]["faithfulness"]["verdict"] == "mixed"
    assert loaded["precision"] is None


# ---------------------------------------------------------------- the pointing game's test

def test_pointing_game_exact_test_holds_alpha_under_the_null() -> None:
    from xreport import verdicts

    rng = np.random.default_rng(20)
    sims, n, alpha = 2000, 64, 0.05
    chances = rng.uniform(0.01, 0.08, size=n)            # per-image dilated lesion shares, ~4%
    hits = rng.random((sims, n)) < chances               # null: every peak falls at random
    p = np.array([verdicts.poisson_binomial_p(h.astype(float), chances) for h in hits])
    mc_error = 3 * np.sqrt(alpha * (1 - alpha) / sims)
    assert np.mean(p < alpha) <= alpha + mc_error
    # The old sign-flip test on the same null data rejects far too often (the reviewer: 8.6%).
    flips = np.array([verdicts.sign_flip_p(h - chances, n_flips=400, seed=i) for i, h in enumerate(hits[:300])])
    assert np.mean(flips < alpha) > alpha + 3 * np.sqrt(alpha * (1 - alpha) / 300)
    # Exact against brute force on a tiny case, and power where the hit rate is far above chance.
    small = np.array([0.1, 0.3, 0.5])
    brute = sum(np.prod([q if b else 1 - q for q, b in zip(small, bits)])
                for bits in np.ndindex(2, 2, 2) if sum(bits) >= 2)
    assert verdicts.poisson_binomial_sf(small, 2) == pytest.approx(brute)
    assert verdicts.poisson_binomial_p(np.r_[np.ones(9), np.zeros(55)], np.full(64, 0.04)) < 0.001
    stat = verdicts.paired(np.r_[np.ones(9), np.zeros(55)], np.full(64, 0.04), higher_is_better=True,
                           margin=0.05, test="poisson_binomial")
    assert stat["test"] == "poisson_binomial" and stat["verdict"] == "better"


# ---------------------------------------------------------------- decision rule, collapse, calibration

def _collapsed_metrics() -> dict:
    """The reviewer's many8: one grade predicted for 98% of 400 images, every grade 1/8 of the truth."""
    from xreport import metrics

    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(8), 50)
    logits = rng.normal(0, 0.05, (400, 8))
    logits[:, 6] += 0.3
    logits[:8, :] = np.eye(8)[np.arange(8)] * 2          # a few other answers
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return metrics.compute_all(y, probs, class_names=[f"Grade {i}" for i in range(8)], task="ordinal",
                               n_boot=50, seed=0)


def test_a_collapsed_argmax_model_is_called_collapsed_not_a_trade_off() -> None:
    from xreport import discussion

    m = _collapsed_metrics()
    said = discussion.observations(m)
    keys = [i["key"] for i in said]
    assert "discussion.collapsed" in keys
    collapsed = next(i for i in said if i["key"] == "discussion.collapsed")
    assert collapsed["params"]["cls"] == "Grade 6" and collapsed["params"]["predicted_pct"] >= 0.8
    # No "leans towards ... accepting more false alarms" and no per-class weak-class noise.
    assert not {"discussion.leans_towards", "discussion.leans_towards_argmax", "discussion.weak_class"} & set(keys)
    # Accuracy at chance is said beside chance and the majority class, and QWK beside 0.
    assert "discussion.baseline_not_above" in keys
    assert {"discussion.qwk_above", "discussion.qwk_not_above"} & set(keys)
    base = next(i for i in said if i["key"] == "discussion.baseline_not_above")["params"]
    assert base["chance"] == pytest.approx(1 / 8) and base["majority"] == pytest.approx(1 / 8)


def test_argmax_leaning_is_not_worded_as_a_threshold_trade() -> None:
    from xreport import discussion, render

    multi = {"task": "multiclass", "per_class": [
        {"class": "EOSINOPHIL", "precision": {"value": 0.696}, "recall": {"value": 0.8}},
        {"class": "LYMPHOCYTE", "precision": {"value": 0.9}, "recall": {"value": 0.88}}]}
    (item,) = discussion.leans_towards(multi)
    assert item["key"] == "discussion.leans_towards_argmax"
    for lang in render.LANGS:
        text = render.translator(lang)(item["key"], **item["params"])
        assert "false alarms for fewer misses" not in text and "換取" not in text and "换取" not in text


def test_miscalibration_says_its_direction() -> None:
    from xreport import discussion, metrics

    def cal(conf: float, acc: float) -> dict:
        return {"ece": {"value": abs(conf - acc)}, "brier": {"value": 0.2},
                "bins": [{"lo": 0.3, "hi": 0.4, "count": 60, "confidence": conf, "accuracy": acc},
                         {"lo": 0.4, "hi": 0.5, "count": 0, "confidence": None, "accuracy": None}]}
    under = {"calibration": cal(0.37, 0.765)}
    over = {"calibration": cal(0.9, 0.7)}
    assert [i["key"] for i in discussion.poor_calibration(under)] == ["discussion.poor_calibration_under"]
    assert [i["key"] for i in discussion.poor_calibration(over)] == ["discussion.poor_calibration_over"]
    found = metrics.calibration_direction(under["calibration"])
    assert found["direction"] == "under" and found["bins"] == 2
    assert found["signed_gap"] == pytest.approx(0.37 - 0.765)


def test_the_pointing_game_is_said_as_misses_when_most_peaks_miss() -> None:
    from xreport import discussion, render

    loc = {"localisation": {"pointing_game": {"cam": 0.141, "chance": 0.038, "n": 64, "verdict": "better"}}}
    (item,) = discussion.localisation(loc)
    assert item["key"] == "discussion.localisation_mostly_misses"
    assert item["params"]["miss_pct"] == pytest.approx(0.859)
    said = render.message_text(render.translator("en"), str)(item)
    assert said.startswith("The CAM peak misses the lesion in 85.9% of 64 images; it hits in 14.1%")


# ---------------------------------------------------------------- context for every number

def test_limitations_are_generated_from_the_facts() -> None:
    from xreport import discussion

    m = _collapsed_metrics()
    dist = {"class_names": ["a", "b"], "splits": {"train": [300, 100]}}
    items = discussion.limitations(m, distribution=dist, leakage={"pairs": [], "total": 0}, split="test",
                                   synthetic="phantom(seed=1234)", seed=0, external=False, source="phantom")
    keys = [i["key"] for i in items]
    assert keys == ["limitations.synthetic", "limitations.one_seed", "limitations.test_size",
                    "limitations.exact_only", "limitations.no_external", "limitations.imbalance",
                    "limitations.collapsed", "limitations.near_baseline"]
    size = items[2]["params"]
    assert size["n"] == 400 and size["width"] == pytest.approx(size["hi"] - size["lo"])
    real = discussion.limitations(m, leakage={"pairs": [], "total": 3}, seed=1, external=True, image_sizes=37)
    assert "limitations.mixed_sizes" in [i["key"] for i in real]
    assert "limitations.synthetic" not in [i["key"] for i in real]
    assert "limitations.duplicates" in [i["key"] for i in real]
    assert "limitations.no_external" not in [i["key"] for i in real]


def test_the_report_names_synthetic_data_baselines_limitations_and_precision(tmp_path) -> None:
    from report_fixture import make_run

    from xreport import render
    from xreport.build import report_context

    paths = make_run(tmp_path)
    ctx = report_context(paths, langs=["en", "zh-TW"])
    assert ctx["summary"]["synthetic"] == "phantom(seed=1234)"
    acc = ctx["summary"]["headline"][0]
    assert acc["key"] == "metric.accuracy" and acc["baseline"]["params"]["majority"] == pytest.approx(50 / 80)
    assert ctx["results"]["baseline_notes"]["metric.balanced_accuracy"]["params"]["chance"] == 0.5
    assert ctx["results"]["precision"] is None          # the fixture's metrics.json is from before it
    html = render.render_html(ctx, langs=["en", "zh-TW"])
    assert "Synthetic data" in html and "合成資料" in html
    assert 'id="en-limitations"' in html and 'id="zh-TW-limitations"' in html
    assert "always PNEUMONIA: 0.625" in html
    assert "was not recorded" in html
    assert "12 equal-width" not in html and "10 equal-width confidence bins" in html
    # The faithfulness headline beside 3 of 4 better scores, none worse: mixed, with its rule.
    assert "Faithfulness verdict over all scores: mixed (3 of 4 better, 0 worse)" in html
    assert "not distinguishable (" not in html.split('id="en-explain-faithfulness"')[1].split("</p>")[0]


def test_the_selection_metric_has_its_value_and_its_curve() -> None:
    from xreport import charts

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.1 * e, "val_acc": 0.1 * e,
                "train_f1": 0.1 * e, "val_f1": 0.1 * e, "val_auc": 0.5 + 0.05 * e, "val_qwk": -0.02 + 0.01 * e}
               for e in range(1, 5)]
    fig = charts.training_curves(history, selected_epoch=2, selected_by="val_qwk", t=lambda k, **_: f"<<{k}>>")
    titles = [ax.get_title() for ax in fig.axes]
    assert "<<chart.training.val_qwk>>" in titles and "<<chart.training.val_auc>>" in titles
    qwk = fig.axes[titles.index("<<chart.training.val_qwk>>")]
    assert qwk.get_ylim()[0] < -0.01               # a negative kappa stays visible


def test_predictions_keep_float32_round_trip_precision(tmp_path) -> None:
    from xreport import artifacts, runs

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (50, 3)).astype(np.float32)
    probs32 = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs32[0] = [np.float32(1e-9), np.float32(0.3), np.float32(1) - np.float32(0.3) - np.float32(1e-9)]
    probs = probs32.astype(np.float64)                  # what evaluate.predict returns
    out = runs.EvaluationPaths(tmp_path, "r")
    artifacts.save_predictions(out, [f"i{j}" for j in range(50)], rng.integers(0, 3, 50), probs,
                               class_names=["a", "b", "c"])
    loaded = artifacts.load_predictions(out)
    assert np.array_equal(loaded.probs, probs)          # bit for bit, not to 6 decimals


def test_evaluation_runs_in_fp32_unless_bf16_is_asked_and_says_so(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from xreport import device, evaluate, runs

    assert device.EVAL_PRECISION == "fp32"
    # The same protocol on every device (only the batch size follows it).
    assert "cpu" not in evaluate.EXPLAIN_PROTOCOL and set(evaluate.EXPLAIN_BATCH) == {"cpu", "cuda"}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.randint(0, 255, (5, 1, 4, 4), dtype=torch.uint8)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    evaluate.predict(model, images, mean=[0.5], std=[0.2], device=torch.device("cpu"), progress=False)
    assert seen == [torch.float32]
    evaluate.predict(model, images, mean=[0.5], std=[0.2], device=torch.device("cpu"), progress=False,
                     precision="bf16")
    assert seen[-1] == torch.bfloat16
    with pytest.raises(Exception, match="precision"):
        evaluate.predict(model, images, mean=[0.5], std=[0.2], device=torch.device("cpu"), progress=False,
                         precision="fp8")
    # The CLI refuses an unknown precision before anything is written.
    fixtures = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
    out = subprocess.run([sys.executable, "-m", "xreport", "evaluate", "--run", "fixture_binary",
                          "--checkpoints", str(fixtures), "--reports", str(tmp_path), "--precision", "fp8"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and not any(tmp_path.iterdir())


def test_metrics_json_records_the_precision(tmp_path) -> None:
    import shutil
    from pathlib import Path

    from xreport import artifacts, runs
    from xreport.evaluate import evaluate_run

    fixtures = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
    shutil.copytree(fixtures / "fixture_binary", tmp_path / "checkpoints" / "fixture_binary")
    paths = runs.RunPaths("fixture_binary", checkpoints_root=tmp_path / "checkpoints",
                          reports_root=tmp_path / "reports")
    evaluate_run(paths, device="cpu", explain=False, n_boot=10, progress=False)
    assert artifacts.load_evaluation(paths.evaluation("test"))["precision"] == "fp32"


def test_a_model_that_learned_nothing_gets_no_strength_from_its_sanity_check() -> None:
    from xreport import discussion

    m = _collapsed_metrics()
    explain = {"faithfulness": None, "localisation": None,
               "sanity": {"n": 16, "seeds": 3, "verdict": "pass",
                          "stages": [{"randomised": "layer3.0", "spearman": {"mean": -0.18}}]}}
    keys = [i["key"] for i in discussion.observations(m, explain=explain)]
    assert "discussion.sanity_passed_chance" in keys and "discussion.sanity_passed" not in keys
    # A degenerate accuracy interval is not quoted as the test split's uncertainty.
    m["accuracy"]["ci95"] = [0.125, 0.125]
    lim = [i["key"] for i in discussion.limitations(m, seed=0)]
    assert "limitations.test_size_degenerate" in lim and "limitations.test_size" not in lim


def test_collapse_rule_on_binary_and_imbalanced_splits() -> None:
    from xreport import metrics

    names = ["normal", "lesion"]
    # The quick demo: 118 of 120 balanced images called normal -> collapsed.
    assert metrics.collapsed([[60, 0], [58, 2]], names)["cls"] == "normal"
    # 95% majority answers on an 80/20 split: leaning, not collapse.
    assert metrics.collapsed([[78, 2], [17, 3]], names) is None
    assert metrics.collapsed([[50, 10], [10, 50]], names) is None


def test_the_pointing_game_interval_agrees_with_its_exact_test() -> None:
    from xreport import verdicts

    # The quick demo: no peak in any of 60 lesions with a 4% chance each. The one-sided test
    # (more hits than chance?) cannot reject, and even "fewer" would be weak (P(0 hits) = 0.086),
    # so the interval must include 0 (a bootstrap said [-0.044, -0.036]).
    stat = verdicts.paired(np.zeros(60), np.full(60, 0.04), higher_is_better=True, margin=0.05,
                           test="poisson_binomial")
    assert stat["p_value"] == pytest.approx(1.0) and stat["ci95"][0] < 0 < stat["ci95"][1]
    assert stat["verdict"] == "not_distinguishable"
    strong = verdicts.paired(np.r_[np.ones(9), np.zeros(55)], np.full(64, 0.04), higher_is_better=True,
                             margin=0.05, test="poisson_binomial")
    assert strong["ci95"][0] > 0 and strong["p_value"] < 0.001
