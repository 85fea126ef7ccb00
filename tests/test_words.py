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
