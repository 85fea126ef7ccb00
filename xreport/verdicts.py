"""The statistics behind every explanation verdict, and the rules that turn them into words.

Each faithfulness or localisation score is a *paired* comparison over images: per image,
the CAM's score minus the score of the reference (the mean of several random maps, or the
analytic chance level). The verdict reads three things about those per-image differences:
a two-sided p-value, the 95% bootstrap (percentile) interval of their mean, and an
effect-size margin below which a difference is too small to matter. The p-value is the
Wilcoxon signed-rank test's for continuous scores (faithfulness), a sign-flip permutation
test of the mean for energy shares, and for 0/1 hits (the pointing game) the exact one-sided
Poisson-binomial test on the per-image chance levels (a median or symmetric test misjudges
yes/no hits against a ~4% chance: a sign-flip test rejected 8.6% of null data at 0.05):

- ``better``: p < ALPHA, the interval lies entirely on the good side of 0 and the mean
  difference exceeds the margin;
- ``worse``: the same on the bad side;
- ``below_margin``: p < ALPHA and the interval excludes 0, but the mean difference is
  within the margin (a real difference too small to matter; never "not distinguishable");
- ``not_distinguishable``: p >= ALPHA or the interval includes 0 (too few images, too noisy).

A topic over several scores (faithfulness) reads ``overall``: the scores' common verdict
when they all agree, ``mixed`` when they disagree (the report states this rule beside it).

The sanity check compares a similarity (Spearman rank correlation of the maps before and
after randomisation) with a fixed limit: ``pass`` when the interval of the mean similarity
lies below the limit (the maps changed), ``fail`` when it lies above (they survived),
``inconclusive`` otherwise. The discussion reads only these verdict strings.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.stats import beta, wilcoxon

if TYPE_CHECKING:
    from .artifacts import JSONValue   # a metrics.json statistic as read (artifacts.migrate)
    # The statistics are written as metrics.json's schema types (explain fills the rest).
    from .artifacts import PairedStatistic, Similarity

BETTER, NOT_DISTINGUISHABLE, WORSE = "better", "not_distinguishable", "worse"
BELOW_MARGIN, MIXED = "below_margin", "mixed"
PASS, INCONCLUSIVE, FAIL = "pass", "inconclusive", "fail"
ALPHA = 0.05
N_BOOT = 2000
N_FLIPS = 10000
TESTS = ("wilcoxon", "sign_flip", "poisson_binomial")
# An AUC-type faithfulness score (probabilities averaged over the curve, 0..1) must differ
# from the random maps' by at least this much: 0.432 against 0.434 is not a finding.
FAITHFULNESS_MARGIN = 0.02
# Hit rates and energy shares (0..1) against chance: five percentage points.
LOCALISATION_MARGIN = 0.05
# Spearman rank correlation of the maps before/after randomisation (Adebayo et al. 2018
# treat a correlation that stays high as a failed check).
SANITY_SPEARMAN_LIMIT = 0.5


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, seed: int = 0,
                      n_boot: int = N_BOOT) -> list[float] | None:
    """95% percentile interval of the mean over ``n_boot`` seeded resamples (None below 2 values)."""
    d = _finite(values)
    if d.size < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    lo, hi = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    return [float(lo), float(hi)]


def wilcoxon_p(diffs: Sequence[float] | np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero."""
    d = _finite(diffs)
    if d.size == 0:
        return None
    if not np.any(d != 0):
        return 1.0
    p = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def sign_flip_p(diffs: Sequence[float] | np.ndarray, *, seed: int = 0, n_flips: int = N_FLIPS) -> float | None:
    """Two-sided p of the mean difference under random sign flips (paired permutation test)."""
    d = _finite(diffs)
    if d.size == 0:
        return None
    if not np.any(d != 0):
        return 1.0
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_flips, d.size))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= abs(d.mean()) - 1e-12)) / (n_flips + 1))


def poisson_binomial_sf(chances: Sequence[float] | np.ndarray, hits: int) -> float:
    """P(at least ``hits`` successes) among independent trials with success probabilities
    ``chances``: the exact null distribution of a hit count when each image has its own
    chance level (the pointing game), by convolving one trial at a time."""
    c = np.clip(np.asarray(chances, dtype=np.float64).reshape(-1), 0.0, 1.0)
    pmf = np.zeros(c.size + 1)
    pmf[0] = 1.0
    for i, q in enumerate(c):
        pmf[1:i + 2] = pmf[1:i + 2] * (1 - q) + pmf[:i + 1] * q
        pmf[0] *= 1 - q
    return float(min(1.0, max(0.0, pmf[max(0, int(hits)):].sum())))


def poisson_binomial_p(hits: Sequence[float] | np.ndarray, chances: Sequence[float] | np.ndarray) -> float | None:
    """One-sided exact p for "hits above chance": P(S >= observed hits) when image i hits
    with probability ``chances[i]`` (0/1 hits; a median or symmetric test does not fit them)."""
    h = np.asarray(hits, dtype=np.float64).reshape(-1)
    c = np.asarray(chances, dtype=np.float64).reshape(-1)
    if h.size == 0:
        return None
    if not np.all((h == 0) | (h == 1)):
        raise ValueError("the Poisson-binomial test needs 0/1 hits")
    return poisson_binomial_sf(c, int(h.sum()))


def hit_rate_ci(hits: Sequence[float] | np.ndarray, chances: Sequence[float] | np.ndarray) -> list[float] | None:
    """95% interval of (hit rate - mean chance): the exact Clopper-Pearson interval of the hit
    rate, shifted by the known mean chance. Independent hits with unequal probabilities are
    less dispersed than a binomial with their mean, so the interval stays conservative; a
    bootstrap of rare 0/1 hits (0 of 60) would claim a width it does not have."""
    h = np.asarray(hits, dtype=np.float64).reshape(-1)
    n = h.size
    if n < 2:
        return None
    k = int(h.sum())
    lo = float(beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    shift = float(np.mean(np.asarray(chances, dtype=np.float64)))
    return [lo - shift, hi - shift]


def paired(cam: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray, *,
           higher_is_better: bool, margin: float, seed: int = 0, test: str = "wilcoxon",
           against: Literal["random", "chance"] = "random") -> PairedStatistic:
    """Per-image CAM score against its reference: means, the difference's CI and p, the verdict.

    ``difference`` is CAM minus reference (its sign is that of the raw score); the verdict
    accounts for the direction. The reference's mean is ``random`` (random maps) or
    ``chance`` (an analytic chance level), as ``against`` says; the other is None (the
    caller may fill it: localisation shows the random maps beside chance).
    """
    a = np.asarray(cam, dtype=np.float64).reshape(-1)
    b = np.asarray(reference, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = int(d.size)
    mean = float(d.mean()) if n else None
    if test not in TESTS:
        raise ValueError(f"paired test {test!r} is not one of {', '.join(TESTS)}")
    ci = bootstrap_mean_ci(d, seed=seed)
    if test == "poisson_binomial":
        # One-sided (H1: the CAM hits more often than chance); ``reference`` holds each
        # image's chance level; the interval is exact too, so it agrees with the test.
        p = poisson_binomial_p(a, b)
        ci = hit_rate_ci(a, b)
    else:
        p = wilcoxon_p(d) if test == "wilcoxon" else sign_flip_p(d, seed=seed)
    ref = float(b.mean()) if n else None
    return {"cam": float(a.mean()) if n else None,
            "difference": mean, "ci95": ci, "p_value": p, "test": test, "n": n, "margin": margin,
            "higher_is_better": higher_is_better,
            "verdict": paired_verdict(mean, ci, p, higher_is_better=higher_is_better, margin=margin),
            "chance": ref if against == "chance" else None, "random": ref if against == "random" else None}


def paired_verdict(mean: float | None, ci: Sequence[float] | None, p: float | None, *,
                   higher_is_better: bool, margin: float) -> str:
    """The three-way rule of the module docstring, on a difference oriented by ``higher_is_better``."""
    if mean is None or ci is None or p is None or p >= ALPHA:
        return NOT_DISTINGUISHABLE
    sign = 1.0 if higher_is_better else -1.0
    gain, lo, hi = sign * mean, *sorted((sign * ci[0], sign * ci[1]))
    if lo <= 0 <= hi:
        return NOT_DISTINGUISHABLE
    if lo > 0 and gain > margin:
        return BETTER
    if hi < 0 and gain < -margin:
        return WORSE
    return BELOW_MARGIN


def overall(verdicts: Sequence[str]) -> str:
    """One verdict for a topic: the scores' common verdict when they all agree, else mixed."""
    if not verdicts:
        return NOT_DISTINGUISHABLE
    first = verdicts[0]
    return first if all(v == first for v in verdicts) else MIXED


def rederive(stat: dict[str, JSONValue]) -> None:
    """Set a stored paired statistic's verdict from its own numbers by today's rule (an
    older metrics.json called a significant difference below the margin "not
    distinguishable"); a statistic without its numbers keeps what it has."""
    mean, ci, p = stat.get("difference"), stat.get("ci95"), stat.get("p_value")
    margin, higher = stat.get("margin"), stat.get("higher_is_better")
    if (not isinstance(mean, (int, float)) or not isinstance(ci, list) or len(ci) != 2
            or not isinstance(p, (int, float)) or not isinstance(margin, (int, float))
            or not isinstance(higher, bool)
            or not all(isinstance(b, (int, float)) for b in ci)):
        return
    lo, hi = (float(b) for b in ci if isinstance(b, (int, float)))
    stat["verdict"] = paired_verdict(float(mean), [lo, hi], float(p),
                                     higher_is_better=higher, margin=float(margin))


def below_limit(values: Sequence[float] | np.ndarray, *, limit: float,
                seed: int = 0) -> Similarity:
    """Mean similarity, its 95% CI over images, and pass (CI below ``limit``) / fail / inconclusive
    (``sd_seeds``: None, for the caller that averaged over seeds)."""
    d = _finite(values)
    mean = float(d.mean()) if d.size else None
    ci = bootstrap_mean_ci(d, seed=seed)
    if ci is None:
        verdict = INCONCLUSIVE
    elif ci[1] < limit:
        verdict = PASS
    elif ci[0] > limit:
        verdict = FAIL
    else:
        verdict = INCONCLUSIVE
    return {"mean": mean, "ci95": ci, "n": int(d.size), "limit": limit, "verdict": verdict, "sd_seeds": None}
