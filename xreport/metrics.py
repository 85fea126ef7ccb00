"""Every number of the results section, as pure functions on ``(y_true, probs)``.

``y_true`` holds integer class indices ``0..k-1``; ``probs`` is ``(n, k)`` with rows summing
to 1. Predictions are always ``argmax(probs)`` (for two classes that is the 0.5 threshold).

A metric value is ``{"value": x}`` (plus ``"ci95": [lo, hi]`` when it was bootstrapped), or
``{"value": None, "reason": R}`` when it is undefined (0/0, a class absent, no samples):
an undefined metric is never reported as 0. When a value is defined but its interval is not
(undefined in more than half the resamples) the value carries ``"ci95": None`` and
``"ci95_reason": R``. A reason R is a message, ``{"key": "reason.<code>", "params": {...}}``,
worded by the catalogs (``templates/i18n/<lang>/report.json``) in each report language;
a parameter that is itself such a message is worded first, ``cls*`` parameters are class
names (translated with the run's class names).

Point estimates and bootstrap resamples go through the same code: a resample is a row of
per-sample weights (how often each sample was drawn), and every metric is computed from
weighted confusion counts or a weighted Mann-Whitney sum, for all resamples at once.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal, NotRequired, TypedDict, cast

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from sklearn.metrics import precision_recall_curve, roc_curve

from . import artifacts
from .artifacts import JSONValue
from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "ordinal")
PAIRED_AUC_METHODS = ("delong", "bootstrap")
MAX_CURVE_POINTS = 200
CALIBRATION_BINS = 10
SENSITIVITY_TARGETS = (("sens_90", 0.90), ("sens_95", 0.95))
_ROW_SUM_TOL = 1e-3      # float32 softmax rows sum to 1 within ~1e-6; 1e-3 catches logits
_PROB_TOL = 1e-6
_BOOT_ELEMENTS = 4_000_000  # resamples x samples held in memory at once
_Z95 = float(stats.norm.ppf(0.975))

Value = artifacts.Value
Message = artifacts.Message  # {"key": "reason.<code>", "params": {...}}
Arrays = dict[str, np.ndarray]
ValSplit = tuple[ArrayLike, ArrayLike]   # (labels, probabilities) of the validation split


class McNemar(TypedDict):
    statistic: float
    p_value: float
    b: int               # A right, B wrong
    c: int               # A wrong, B right
    method: Literal["exact", "chi2"]


class PairedAuc(TypedDict):
    """Two models' ROC-AUC on the same samples; what cannot be computed is None with a reason."""

    auc_a: float | None
    auc_b: float | None
    difference: float | None     # a - b
    ci95: list[float] | None
    p_value: float | None
    method: NotRequired[str]     # delong | bootstrap
    reason: NotRequired[Message]


# ---------------------------------------------------------------- validation

def validate_inputs(y_true: ArrayLike, probs: ArrayLike, *, num_classes: int | None = None,
                    split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Check and convert labels and probabilities; raise ``DataError`` naming the problem.

    Returns ``(y int64 (n,), probs float64 (n, k))``. Empty input (n = 0) is allowed.
    """
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{split} probs are not a numeric (n, k) array: {exc}") from None
    y = np.asarray(y_true)
    if p.size == 0 and p.ndim < 2 and num_classes is not None:
        p = p.reshape(0, num_classes)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"{split} probs have shape {p.shape}; expected (n_samples, n_classes) "
                        "with at least 2 classes")
    k = p.shape[1]
    if num_classes is not None and k != num_classes:
        raise DataError(f"{split} probs have {k} columns but there are {num_classes} classes")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise DataError(f"{split} y_true has shape {y.shape} but probs have {p.shape[0]} rows; "
                        "expected one label per row")
    y = _as_labels(y, k, split)
    if not np.all(np.isfinite(p)):
        raise DataError(f"{split} probs contain NaN or infinite values")
    if p.size and (p.min() < -_PROB_TOL or p.max() > 1 + _PROB_TOL):
        raise DataError(f"{split} probs must lie in [0, 1]; got values in "
                        f"[{p.min():.4g}, {p.max():.4g}] (logits? apply softmax first)")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if bad.size:
        raise DataError(f"{split} probs row {int(bad[0])} sums to {sums[bad[0]]:.6g}; every row "
                        "must sum to 1 (softmax output)")
    return y, np.clip(p, 0.0, 1.0)


def _as_labels(y: np.ndarray, k: int, split: str) -> np.ndarray:
    """Integer class indices in ``0..k-1`` (bool and integral floats accepted)."""
    if y.size == 0:
        return y.astype(np.int64)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{split} y_true must hold integer class indices 0..{k - 1}")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise DataError(f"{split} y_true has dtype {y.dtype}; expected integer class "
                        f"indices 0..{k - 1}")
    y = y.astype(np.int64)
    out = (y < 0) | (y >= k)
    if out.any():
        raise DataError(f"{split} y_true has label {int(y[out][0])}; valid labels are "
                        f"0..{k - 1} (one per probs column)")
    return y


def _check_options(class_names: Sequence[str], task: str) -> list[str]:
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not known; choose one of {', '.join(TASKS)}")
    names = [str(c) for c in class_names]
    if len(names) < 2:
        raise ConfigError(f"class_names {names!r} must name at least 2 classes")
    if task == "binary" and len(names) != 2:
        raise ConfigError(f"task 'binary' needs exactly 2 class names; got {len(names)}")
    return names


def _default_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    if len(class_names) != k:
        raise DataError(f"{len(class_names)} class names given for probs with {k} columns")
    return [str(c) for c in class_names]


# ---------------------------------------------------------------- small helpers

def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den == 0 (undefined, never a silent 0)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def why(code: str, **params: object) -> Message:
    """A reason as a message key with parameters (the catalogs word it per language)."""
    return {"key": f"reason.{code}", "params": params}


EMPTY = why("empty")


def _value(x: float, reason: Message | Callable[[], Message]) -> Value:
    if x is not None and math.isfinite(x):
        return {"value": float(x)}
    return {"value": None, "reason": reason() if callable(reason) else reason}


def _jsonable(obj: object) -> JSONValue:
    """Plain Python types only; a stray NaN becomes None (and is logged: it is a bug)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if math.isfinite(obj):
            return float(obj)
        logger.warning("non-finite metric value replaced by null")
        return None
    return cast(JSONValue, obj)   # None or str: JSON as it is


def _thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly along the curve's length."""
    m = len(x)
    if m <= max_points:
        return np.arange(m)
    steps = np.hypot(np.diff(x), np.diff(y))
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] == 0:
        return np.unique(np.linspace(0, m - 1, max_points).round().astype(int))
    targets = np.linspace(0.0, arc[-1], max_points)
    idx = np.clip(np.searchsorted(arc, targets), 0, m - 1)
    idx[0], idx[-1] = 0, m - 1   # keep both endpoints
    return np.unique(idx)


# ---------------------------------------------------------------- batched core

def _confusion_batch(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Weighted confusion counts ``(B, k, k)`` [true, pred] for each row of ``weights``."""
    onehot = np.zeros((len(y), k * k))
    onehot[np.arange(len(y)), y * k + pred] = 1.0
    return (weights @ onehot).reshape(-1, k, k)


def _auc_batch(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for each row of ``weights`` (B, n): P(s+ > s-) + P(s+ == s-) / 2.

    Negatives are sorted once; each positive reads the cumulative negative weight strictly
    below and up to its score, whose mean counts ties as one half (= average ranks). NaN
    when a row has no positive or no negative weight.
    """
    b = weights.shape[0]
    pos_idx, neg_idx = np.flatnonzero(positive), np.flatnonzero(~positive)
    if not pos_idx.size or not neg_idx.size:
        return np.full(b, np.nan)
    neg_order = neg_idx[np.argsort(score[neg_idx], kind="stable")]
    cum = np.zeros((b, neg_order.size + 1))
    np.cumsum(weights[:, neg_order], axis=1, out=cum[:, 1:])
    s_pos = score[pos_idx]
    below = np.searchsorted(score[neg_order], s_pos, side="left")
    up_to = np.searchsorted(score[neg_order], s_pos, side="right")
    w_pos = weights[:, pos_idx]
    wins = 0.5 * (w_pos * (cum[:, below] + cum[:, up_to])).sum(axis=1)
    return _div(wins, w_pos.sum(axis=1) * cum[:, -1])


def _ap_batch(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Step-wise average precision (as scikit-learn's) for each row of ``weights`` (B, n):
    the sum over distinct thresholds, highest first, of the recall gained times the
    precision there. Tied scores form one threshold. NaN when a row has no positive weight.
    """
    order = np.argsort(-score, kind="stable")
    ends = np.flatnonzero(np.diff(score[order], append=-np.inf))  # last sample of each tie
    w = weights[:, order]
    pos = positive[order]
    tp = np.cumsum(w * pos, axis=1)[:, ends]
    called = np.cumsum(w, axis=1)[:, ends]
    recall = _div(tp, tp[:, -1:])
    gained = np.diff(recall, axis=1, prepend=0.0)
    # A threshold with nothing called yet gains no recall: its precision does not count.
    return (gained * np.nan_to_num(_div(tp, called))).sum(axis=1)


def _confidence_bin(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of each confidence's equal-width (lo, hi] bin; 0 falls in the first."""
    inner = np.arange(1, n_bins) / n_bins  # 0.3, not 0.30000000000000004
    return np.clip(np.digitize(conf, inner, right=True), 0, n_bins - 1)


def _calibration_batch(y: np.ndarray, probs: np.ndarray, weights: np.ndarray, *,
                       n_bins: int = CALIBRATION_BINS) -> Arrays:
    """ECE (top-class confidence, ``n_bins`` equal-width (lo, hi] bins) and Brier score
    (binary: the positive class; multi-class: squared error summed over the one-hot
    classes) for each row of ``weights``; NaN for a row without weight."""
    n, k = probs.shape
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    which = _confidence_bin(conf, n_bins)
    in_bin = np.zeros((n, n_bins))
    in_bin[np.arange(n), which] = 1.0
    gap = weights @ (in_bin * (correct - conf)[:, None])   # per bin: sum(correct - conf)
    total = weights.sum(axis=1)
    if k == 2:
        error = (probs[:, 1] - y) ** 2
    else:
        error = ((probs - np.eye(k)[y]) ** 2).sum(axis=1)
    return {"calibration/ece": _div(np.abs(gap).sum(axis=1), total),
            "calibration/brier": _div(weights @ error, total)}


def _cm_metrics(cm: np.ndarray) -> Arrays:
    """Every confusion-count metric for a batch ``(B, k, k)``; NaN where undefined."""
    return _count_metrics(np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1))


def _count_metrics(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> Arrays:
    """The metrics of ``_cm_metrics`` from hits, true totals and predicted totals (B, k)."""
    k = tp.shape[1]
    n = support.sum(axis=1)
    per = {
        "precision": _div(tp, predicted),
        "recall": _div(tp, support),
        "specificity": _div(n[:, None] - support - predicted + tp, n[:, None] - support),
        "f1": _div(2 * tp, support + predicted),
    }
    out: Arrays = {"accuracy": _div(tp.sum(axis=1), n),
                   "balanced_accuracy": per["recall"].mean(axis=1)}
    cov = n * tp.sum(axis=1) - (predicted * support).sum(axis=1)
    den = np.sqrt((n**2 - (predicted**2).sum(axis=1)) * (n**2 - (support**2).sum(axis=1)))
    out["mcc"] = _div(cov, den)
    for name, arr in per.items():
        for c in range(k):
            out[f"per_class/{c}/{name}"] = arr[:, c]
        if name == "specificity":
            continue
        out[f"macro_avg/{name}"] = arr.mean(axis=1)
        out[f"weighted_avg/{name}"] = _weighted_mean(arr, support)
    return out


def _weighted_mean(arr: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Support-weighted mean; absent classes weigh 0, a NaN of a present class propagates."""
    vals = np.where(support > 0, arr, 0.0)
    return _div((vals * support).sum(axis=1), support.sum(axis=1))


def _qwk_batch(cm: np.ndarray) -> np.ndarray:
    """QWK of a ``(B, k, k)`` confusion batch (rows true): ``_qwk`` on its squared grade
    distances and its true and predicted grade totals."""
    grades = np.arange(cm.shape[1])
    observed = ((grades[:, None] - grades[None, :]) ** 2 * cm).sum(axis=(1, 2))
    return _qwk(observed.astype(float), cm.sum(axis=2), cm.sum(axis=1))


def _qwk(observed: np.ndarray, true_totals: np.ndarray, pred_totals: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa, the one formula: 1 - observed / chance disagreement, where
    ``observed`` (B,) is the weighted sum of squared grade differences (y - pred)^2 and the
    chance one needs only the (B, k) true and predicted grade totals r and c, since
    sum_ij (i - j)^2 r_i c_j = C sum r_i i^2 + R sum c_j j^2 - 2 (sum r_i i)(sum c_j j).
    The (k - 1)^2 that normalises the weights cancels in the ratio."""
    grades = np.arange(true_totals.shape[1], dtype=float)
    r, c = true_totals, pred_totals
    n = r.sum(axis=1)
    expected = _div(c.sum(axis=1) * (r @ grades ** 2) + n * (c @ grades ** 2)
                    - 2.0 * (r @ grades) * (c @ grades), n)
    return 1.0 - _div(observed, np.nan_to_num(expected))


# Above this many classes the (B, k, k) confusion batch (k^2 columns per image) is not built:
# the metrics need only its diagonal and its row and column sums.
_FULL_CM_CLASSES = 64


def _count_batch(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int) -> "_Counts":
    """A ``(B, k, k)``-shaped stand-in holding only what ``_cm_metrics`` reads: the true and
    predicted class totals and the hits, without the k^2 one-hot matrix (1000 classes would
    be 10^6 columns per image)."""
    true_1h = np.zeros((len(y), k))
    true_1h[np.arange(len(y)), y] = 1.0
    pred_1h = np.zeros((len(y), k))
    pred_1h[np.arange(len(y)), pred] = 1.0
    return _Counts(weights @ true_1h, weights @ pred_1h, weights @ (true_1h * (y == pred)[:, None]))


class _Counts:
    """Support, predicted totals and hits per class for a batch of resamples (B, k)."""

    def __init__(self, support: np.ndarray, predicted: np.ndarray, tp: np.ndarray) -> None:
        self.support, self.predicted, self.tp = support, predicted, tp


def _qwk_from_counts(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, counts: "_Counts") -> np.ndarray:
    """``_qwk`` without the (B, k, k) matrix: the observed disagreement is a weighted sum over
    images of (y - pred)^2, the grade totals are the counts'."""
    return _qwk(weights @ ((y - pred).astype(float) ** 2), counts.support, counts.predicted)


def _batch_metrics(y: np.ndarray, probs: np.ndarray, weights: np.ndarray, *,
                   ordinal: bool) -> Arrays:
    """Every bootstrappable metric for each row of sample weights ``(B, n)``."""
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    cm: np.ndarray | None = None
    counts: _Counts | None = None
    if k > _FULL_CM_CLASSES:
        counts = _count_batch(y, pred, weights, k)
        out = _count_metrics(counts.tp, counts.support, counts.predicted)
        support = counts.support
    else:
        cm = _confusion_batch(y, pred, weights, k)
        out = _cm_metrics(cm)
        support = cm.sum(axis=2)
    aucs = np.stack([_auc_batch(probs[:, c], y == c, weights) for c in range(k)], axis=1)
    for c in range(k):
        out[f"per_class/{c}/auc"] = aucs[:, c]
    if k == 2:
        out["roc_auc"] = aucs[:, 1]
    else:
        out["roc_auc"] = aucs.mean(axis=1)
        out["roc_auc_weighted"] = _weighted_mean(aucs, support)
    aps = {c: _ap_batch(probs[:, c], y == c, weights) for c in _curve_classes(k)}
    out["average_precision"] = np.mean(list(aps.values()), axis=0)
    if k > 2:  # the per-class APs the PR chart names (binary: the positive class's is the above)
        out.update({f"per_class/{c}/ap": ap for c, ap in aps.items()})
    out.update(_calibration_batch(y, probs, weights))
    if ordinal:
        # From the confusion batch up to _FULL_CM_CLASSES, from the counts above: one formula.
        if counts is not None:
            out["qwk"] = _qwk_from_counts(y, pred, weights, counts)
        elif cm is not None:
            out["qwk"] = _qwk_batch(cm)
        out["mae"] = _div(weights @ np.abs(pred - y).astype(float), weights.sum(axis=1))
    return out


def _point_metrics(y: np.ndarray, probs: np.ndarray, *, ordinal: bool) -> dict[str, float]:
    arrays = _batch_metrics(y, probs, np.ones((1, len(y))), ordinal=ordinal)
    return {key: float(arr[0]) for key, arr in arrays.items()}


# ---------------------------------------------------------------- reasons

def _class_reason(metric: str, c: int, cm: np.ndarray, names: list[str]) -> Message:
    name, n = names[c], int(cm.sum())
    support, predicted = int(cm[c].sum()), int(cm[:, c].sum())
    if metric in ("precision", "recall", "specificity", "f1"):
        return why(f"{metric}_undefined", cls=name)
    if metric == "ap":
        return why("ap_class_absent", cls=name)
    if support == 0:
        return why("auc_class_absent", cls=name)
    if support == n:
        return why("auc_class_only", cls=name)
    return why("class_metric_undefined", metric=why(f"metric.{metric}"), cls=name,
               predicted=predicted, support=support)


def _first_undefined(point: dict[str, float], metric: str, k: int,
                     cm: np.ndarray | None = None) -> int:
    for c in range(k):
        if cm is not None and cm[c].sum() == 0:
            continue  # absent classes weigh 0 in weighted averages
        if not math.isfinite(point[f"per_class/{c}/{metric}"]):
            return c
    return 0


def _reason(key: str, point: dict[str, float], cm: np.ndarray, names: list[str]) -> Message:
    """Why the metric ``key`` is undefined on these data."""
    k, n = len(names), int(cm.sum())
    if n == 0:
        return EMPTY
    parts = key.split("/")
    if parts[0] == "per_class":
        return _class_reason(parts[2], int(parts[1]), cm, names)
    if parts[0] in ("macro_avg", "weighted_avg"):
        c = _first_undefined(point, parts[1], k, cm if parts[0] == "weighted_avg" else None)
        return why(f"{parts[0]}_undefined", metric=why(f"metric.{parts[1]}"),
                   cause=_class_reason(parts[1], c, cm, names))
    if key == "balanced_accuracy":
        return why("balanced_accuracy_undefined", cls=names[_first_undefined(point, "recall", k)])
    if key == "mcc":
        return why("mcc_same_label" if (cm.sum(axis=1) == n).any() else "mcc_same_prediction")
    if key in ("roc_auc", "roc_auc_weighted", "average_precision"):
        weighted = cm if key == "roc_auc_weighted" else None
        c = 1 if k == 2 else _first_undefined(point, "auc", k, weighted)
        return _class_reason("auc", c, cm, names)
    if key == "qwk":
        return why("qwk_one_grade")
    return why("undefined", metric=key)


# ---------------------------------------------------------------- bootstrap

def _resample_weights(y: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``(b, n)`` draw counts, stratified by true class, ``n_boot`` rows in total.

    Chunks depend only on ``n``, so the same seed and data give the same resamples.
    """
    n = len(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    chunk = max(1, _BOOT_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        # Resample within each true class, all resamples of the chunk in one draw per class.
        idx = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups],
                             axis=1)
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _bootstrap_arrays(y: np.ndarray, fn: Callable[[np.ndarray], Arrays], *, n_boot: int,
                      seed: int) -> Arrays:
    parts: list[Arrays] = [fn(w) for w in _resample_weights(y, n_boot, seed)]
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def percentile_interval(samples: np.ndarray, *, max_undefined: float = 0.5) -> Value:
    """95% percentile interval of bootstrap ``samples`` (NaN = undefined in that resample).

    Omitted, with a reason, when more than ``max_undefined`` of the resamples are undefined.
    """
    samples = np.asarray(samples, dtype=float)
    if samples.size == 0:
        return {"ci95": None, "ci95_reason": why("no_resamples")}
    finite = samples[np.isfinite(samples)]
    undefined = 1.0 - finite.size / samples.size
    if undefined > max_undefined:
        return {"ci95": None, "ci95_reason": why("interval_omitted", share_pct=undefined,
                                                 resamples=int(samples.size))}
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return {"ci95": [float(lo), float(hi)]}


def bootstrap_intervals(y_true: ArrayLike, probs: ArrayLike, *, class_names: Sequence[str] | None = None,
                        task: str = "multiclass", n_boot: int = 1000,
                        seed: int = 0) -> dict[str, Value]:
    """Stratified percentile 95% intervals, keyed like ``"accuracy"``, ``"per_class/1/f1"``,
    ``"macro_avg/recall"``, ``"roc_auc"``, ``"qwk"``.

    Each value is ``{"ci95": [lo, hi]}`` or ``{"ci95": None, "ci95_reason": ...}``.
    """
    y, p = validate_inputs(y_true, probs)
    _default_names(class_names, p.shape[1])
    _check_n_boot(n_boot)
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not known; choose one of {', '.join(TASKS)}")
    if len(y) == 0:
        return {}
    arrays = _bootstrap_arrays(
        y, lambda w: _batch_metrics(y, p, w, ordinal=task == "ordinal"), n_boot=n_boot,
        seed=seed)
    return {key: percentile_interval(arr) for key, arr in arrays.items()}


def _check_n_boot(n_boot: int) -> None:
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 0:
        raise ConfigError(f"n_boot={n_boot!r} must be a whole number >= 0 (0 skips intervals)")


# ---------------------------------------------------------------- public pieces

def confusion_matrices(y_true: ArrayLike, y_pred: ArrayLike, *,
                       class_names: Sequence[str]) -> artifacts.ConfusionMatrix:
    """Raw counts and the three normalisations; a cell over an empty row/column is None."""
    names = [str(c) for c in class_names]
    k = len(names)
    y = _as_labels(np.asarray(y_true).ravel(), k, "y_true")
    pred = _as_labels(np.asarray(y_pred).ravel(), k, "y_pred")
    if y.shape != pred.shape:
        raise DataError(f"y_true has {len(y)} labels but y_pred has {len(pred)}")
    raw = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    n = raw.sum()

    def norm(den: np.ndarray) -> list[list[float | None]]:
        frac = _div(raw, den)
        return [[None if not math.isfinite(v) else float(v) for v in row] for row in frac]

    from .limits import REPORT_CLASSES

    out: artifacts.ConfusionMatrix = {"labels": names, "raw": raw.tolist()}
    if k <= REPORT_CLASSES:     # beyond, 3 k x k matrices nobody reads (1000 classes: 3 x 10^6 cells);
        # the report's shown classes take their row shares from raw (artifacts.shown_confusion)
        out["by_true"] = norm(raw.sum(axis=1, keepdims=True))
        out["by_pred"] = norm(raw.sum(axis=0, keepdims=True))
        out["by_all"] = norm(np.full_like(raw, n))
    return out


def _confusion(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    k = p.shape[1]
    return np.bincount(y * k + p.argmax(axis=1), minlength=k * k).reshape(k, k)


def _valuer(y: np.ndarray, p: np.ndarray, names: list[str], point: dict[str, float],
            intervals: dict[str, Value]) -> Callable[[str], Value]:
    """key -> the metric value dict: value and interval, or None and the reason."""
    cm = _confusion(y, p)

    def v(key: str) -> Value:
        return _with_interval(_value(point[key], lambda: _reason(key, point, cm, names)),
                              intervals.get(key))

    return v


def _with_interval(value: Value, interval: Value | None) -> Value:
    """A defined value with its bootstrap interval (an undefined one keeps its reason only).

    A percentile interval that misses the estimate itself is not shown: it happens for a
    statistic biased upwards such as ECE on a well-calibrated sample (every resample's ECE
    above the data's); the reason keeps the resamples' range.
    """
    x = value.get("value")
    if x is None or interval is None:
        return value
    lo, hi = interval.get("ci95") or (None, None)
    if lo is not None and hi is not None and not lo - 1e-12 <= x <= hi + 1e-12:
        return {**value, "ci95": None, "ci95_reason": why("interval_excludes_point", lo=lo, hi=hi)}
    return {**value, **interval}


class _Table(TypedDict):
    """The confusion-count part of ``artifacts.Metrics``."""

    accuracy: Value
    balanced_accuracy: Value
    mcc: Value
    per_class: list[artifacts.ClassRow]
    macro_avg: artifacts.AverageRow
    weighted_avg: artifacts.AverageRow


def _table(v: Callable[[str], Value], y: np.ndarray, names: list[str]) -> _Table:
    k = len(names)
    support = np.bincount(y, minlength=k)
    per_class: list[artifacts.ClassRow] = [
        {"class": names[c], "index": c, "precision": v(f"per_class/{c}/precision"),
         "recall": v(f"per_class/{c}/recall"), "specificity": v(f"per_class/{c}/specificity"),
         "f1": v(f"per_class/{c}/f1"), "support": int(support[c]), "auc": v(f"per_class/{c}/auc"),
         "ap": v(f"per_class/{c}/ap") if k > 2 else None} for c in range(k)]

    def average(avg: str) -> artifacts.AverageRow:
        # specificity and AUC are per class only: an average row has none
        return {"precision": v(f"{avg}/precision"), "recall": v(f"{avg}/recall"),
                "f1": v(f"{avg}/f1"), "specificity": None, "auc": None, "support": int(len(y))}

    return {"accuracy": v("accuracy"), "balanced_accuracy": v("balanced_accuracy"),
            "mcc": v("mcc"), "per_class": per_class, "macro_avg": average("macro_avg"),
            "weighted_avg": average("weighted_avg")}


def _curve_classes(k: int) -> list[int]:
    return [1] if k == 2 else list(range(k))


def _average_precision(positive: np.ndarray, score: np.ndarray
                       ) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """AP (``_ap_batch``, the bootstrap's code) and the full PR curve; NaN without positives."""
    if not positive.any():
        return math.nan, None
    precision, recall, _ = precision_recall_curve(positive, score)
    return float(_ap_batch(score, positive, np.ones((1, len(score))))[0]), (precision, recall)


def bootstrap_resamples(n_boot: int, k: int) -> int:
    """``n_boot``, reduced when classes x resamples exceed limits.BOOTSTRAP_CLASS_RESAMPLES
    (per-class AUC and AP are recomputed in every resample); unchanged up to 100 classes."""
    from .limits import BOOTSTRAP_CLASS_RESAMPLES, MIN_RESAMPLES

    if n_boot * k <= BOOTSTRAP_CLASS_RESAMPLES:
        return n_boot
    return max(min(n_boot, MIN_RESAMPLES), BOOTSTRAP_CLASS_RESAMPLES // k)


def _shown(y: np.ndarray, p: np.ndarray, k: int) -> list[int] | None:
    """The classes whose curves are kept (limits.shown_classes); None: all of them."""
    from .limits import REPORT_CLASSES, shown_classes

    if k <= REPORT_CLASSES:
        return None
    support = np.bincount(y, minlength=k)
    hits = np.bincount(y[p.argmax(axis=1) == y], minlength=k)
    return shown_classes(support.tolist(), (support - hits).tolist())


def roc_pr_curves(y_true: ArrayLike, probs: ArrayLike, *, class_names: Sequence[str] | None = None,
                  max_points: int = MAX_CURVE_POINTS, only: Sequence[int] | None = None) -> artifacts.Curves:
    """ROC and PR curves (positive class for binary, one-vs-rest per class otherwise), each
    thinned to at most ``max_points`` points with both endpoints kept. Undefined curves are
    empty with ``auc``/``ap`` None. ``only``: the classes to draw (the report's shown classes)."""
    y, p = validate_inputs(y_true, probs)
    names = _default_names(class_names, p.shape[1])
    roc, pr = [], []
    for c in _curve_classes(p.shape[1]) if only is None else only:
        positive = y == c
        entry: dict[str, object] = {"class": names[c], "fpr": [], "tpr": [], "auc": None}
        if positive.any() and not positive.all():
            fpr, tpr, _ = roc_curve(positive, p[:, c])
            keep = _thin(fpr, tpr, max_points)
            auc = _auc_batch(p[:, c], positive, np.ones((1, len(y))))[0]
            entry.update(fpr=fpr[keep], tpr=tpr[keep], auc=float(auc))
        roc.append(entry)
        ap, curve = _average_precision(positive, p[:, c])
        pr_entry: dict[str, object] = {"class": names[c], "precision": [], "recall": [], "ap": None}
        if curve is not None:
            keep = _thin(curve[1], curve[0], max_points)
            pr_entry.update(precision=curve[0][keep], recall=curve[1][keep], ap=ap)
        pr.append(pr_entry)
    return cast(artifacts.Curves, _jsonable({"roc": roc, "pr": pr}))


def average_precision(y_true: ArrayLike, probs: ArrayLike, *, class_names: Sequence[str] | None = None
                      ) -> Value:
    """AP of the positive class (binary) or the macro mean of one-vs-rest APs."""
    y, p = validate_inputs(y_true, probs)
    names = _default_names(class_names, p.shape[1])
    if not len(y):
        return {"value": None, "reason": EMPTY}
    classes = _curve_classes(p.shape[1])
    ones = np.ones((1, len(y)))
    aps = [float(_ap_batch(p[:, c], y == c, ones)[0]) for c in classes]  # NaN: no positives
    bad = [c for c, ap in zip(classes, aps) if not math.isfinite(ap)]
    if bad:
        code = "ap_class_absent" if len(classes) == 1 else "macro_ap_class_absent"
        return {"value": None, "reason": why(code, cls=names[bad[0]])}
    return {"value": float(np.mean(aps))}


def calibration(y_true: ArrayLike, probs: ArrayLike, *,
                n_bins: int = CALIBRATION_BINS) -> artifacts.Calibration:
    """ECE on the top-class confidence (``n_bins`` equal-width bins, (lo, hi]), Brier score
    (binary: on the positive class; multi-class: squared error summed over the one-hot
    classes, averaged over samples) and the reliability bins."""
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins={n_bins!r} must be a whole number >= 1")
    y, p = validate_inputs(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.arange(n_bins + 1) / n_bins
    which = _confidence_bin(conf, n_bins)
    counts = np.bincount(which, minlength=n_bins)
    conf_mean = _div(np.bincount(which, conf, minlength=n_bins), counts)
    acc_mean = _div(np.bincount(which, correct, minlength=n_bins), counts)
    # The scores go through the bootstrap's code, so the point and its interval agree.
    scores = _calibration_batch(y, p, np.ones((1, len(y))), n_bins=n_bins)
    ece = _value(float(scores["calibration/ece"][0]), EMPTY)
    brier = float(scores["calibration/brier"][0])
    bins = [{"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": int(counts[i]),
             "confidence": float(conf_mean[i]) if counts[i] else None,
             "accuracy": float(acc_mean[i]) if counts[i] else None} for i in range(n_bins)]
    return cast(artifacts.Calibration, _jsonable({"ece": ece, "brier": _value(brier, EMPTY), "bins": bins}))


def _ordinal_part(y: np.ndarray, p: np.ndarray, names: list[str], point: dict[str, float],
                  intervals: dict[str, Value]) -> artifacts.Ordinal:
    v = _valuer(y, p, names, point, intervals)
    return cast(artifacts.Ordinal, _jsonable({"qwk": v("qwk"), "mae": v("mae")}))


# ---------------------------------------------------------------- operating points

def _youden_threshold(y: np.ndarray, score: np.ndarray, split: str
                      ) -> tuple[float | None, Message | None]:
    pos, neg = np.sort(score[y == 1]), np.sort(score[y == 0])
    if not pos.size or not neg.size:
        missing = "positives" if not pos.size else "negatives"
        return None, why(f"youden_no_{missing}", split=why(f"split.{split}"))
    cand = np.unique(score)[::-1]
    tpr = (pos.size - np.searchsorted(pos, cand, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(neg, cand, side="left")) / neg.size
    j = tpr - fpr
    # Ties within rounding: take the highest threshold (the most specific one).
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0])
    return float(cand[best]), None


def _sensitivity_threshold(y: np.ndarray, score: np.ndarray, target: float,
                           split: str) -> tuple[float | None, Message | None]:
    """Highest threshold t with sensitivity(score >= t) >= target."""
    pos = np.sort(score[y == 1])[::-1]
    if not pos.size:
        return None, why("sensitivity_target_no_positives", split=why(f"split.{split}"),
                         target_pct=target)
    needed = math.ceil(target * pos.size - 1e-9)
    return float(pos[needed - 1]), None


def _binary_counts(y: np.ndarray, pos_pred: np.ndarray, weights: np.ndarray) -> Arrays:
    cm = _confusion_batch(y, pos_pred.astype(np.int64), weights, 2)
    tn, fp, fn, tp = cm[:, 0, 0], cm[:, 0, 1], cm[:, 1, 0], cm[:, 1, 1]
    return {"sensitivity": _div(tp, tp + fn), "specificity": _div(tn, tn + fp),
            "ppv": _div(tp, tp + fp), "npv": _div(tn, tn + fn)}


_OP_REASONS = {metric: why(f"op_{metric}_undefined") for metric in ("sensitivity", "specificity", "ppv", "npv")}


class _Choice:
    """One operating point: its threshold (None with ``why`` when none exists) and the
    test-set positive calls it gives."""

    def __init__(self, name: str, threshold: float | None, chosen_on: str, reason: Message | None,
                 pos_pred: np.ndarray | None) -> None:
        self.name, self.threshold, self.chosen_on = name, threshold, chosen_on
        self.reason, self.pos_pred = reason, pos_pred


def _choose_points(y: np.ndarray, p: np.ndarray, val: ValSplit | None) -> list[_Choice]:
    if val is not None:
        sel_y, sel_p = validate_inputs(val[0], val[1], num_classes=2, split="validation")
        chosen, split = "val", "validation"
    else:
        sel_y, sel_p, chosen, split = y, p, "test", "test"
        logger.info("operating thresholds chosen on the test split (no validation predictions)")
    # The default point is the argmax rule itself (p1 > p0), so it matches the main matrix.
    out = [_Choice("default_0.5", 0.5, "fixed", None, p.argmax(axis=1) == 1)]
    found = [("youden", *_youden_threshold(sel_y, sel_p[:, 1], split))]
    found += [(name, *_sensitivity_threshold(sel_y, sel_p[:, 1], target, split))
              for name, target in SENSITIVITY_TARGETS]
    for name, t, reason in found:
        out.append(_Choice(name, t, chosen, reason, None if t is None else p[:, 1] >= t))
    return out


def _points_batch(y: np.ndarray, choices: list[_Choice], weights: np.ndarray) -> Arrays:
    out: Arrays = {}
    for ch in choices:
        if ch.pos_pred is not None:
            for metric, arr in _binary_counts(y, ch.pos_pred, weights).items():
                out[f"op/{ch.name}/{metric}"] = arr
    return out


def _point_dicts(y: np.ndarray, choices: list[_Choice], intervals: dict[str, Value]
                 ) -> list[artifacts.OperatingPoint]:
    point = _points_batch(y, choices, np.ones((1, len(y))))
    result = []
    for ch in choices:
        out: dict[str, object] = {"name": ch.name, "threshold": ch.threshold,
                                  "chosen_on": ch.chosen_on}
        if ch.pos_pred is None:
            out.update({m: {"value": None, "reason": why("no_threshold", cause=ch.reason)}
                        for m in _OP_REASONS})
            out["confusion_matrix"] = None
            result.append(out)
            continue
        for metric, reason in _OP_REASONS.items():
            key = f"op/{ch.name}/{metric}"
            out[metric] = _with_interval(_value(float(point[key][0]), reason if len(y) else EMPTY),
                                         intervals.get(key))
        cm = np.bincount(y * 2 + ch.pos_pred.astype(np.int64), minlength=4).reshape(2, 2)
        out["confusion_matrix"] = cm.tolist()
        result.append(out)
    return cast(list[artifacts.OperatingPoint], _jsonable(result))


def operating_points(y_true: ArrayLike, probs: ArrayLike, *, val: ValSplit | None = None,
                     n_boot: int = 0, seed: int = 0) -> list[artifacts.OperatingPoint]:
    """Binary operating points on the test data: the default 0.5 (argmax), Youden's J and the
    highest thresholds reaching 90% / 95% sensitivity. Thresholds are chosen on ``val`` =
    ``(y_val, probs_val)`` when given, else on the test data (``chosen_on: "test"``, an
    optimistic choice). A sample is called positive when ``p1 >= threshold``. With
    ``n_boot`` > 0 sensitivity, specificity, PPV and NPV get stratified bootstrap intervals.
    """
    y, p = validate_inputs(y_true, probs, num_classes=2)
    _check_n_boot(n_boot)
    choices = _choose_points(y, p, val)
    arrays = (_bootstrap_arrays(y, lambda w: _points_batch(y, choices, w), n_boot=n_boot,
                                seed=seed) if n_boot and len(y) else {})
    return _point_dicts(y, choices, {k: percentile_interval(a) for k, a in arrays.items()})


# ---------------------------------------------------------------- model selection (train)

class SelectionScores(TypedDict):
    """What train records of a split each epoch from its (true, predicted) counts."""

    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    qwk: float


def selection_scores(counts: ArrayLike) -> SelectionScores:
    """Accuracy, macro-F1, balanced accuracy and quadratic weighted kappa of a ``(k, k)``
    (true, predicted) count matrix, by the report's formulas (``_cm_metrics``,
    ``_qwk_batch``); NaN where undefined, except two rules that keep a checkpoint selectable
    on a split where the report says "undefined": a class neither true nor predicted scores
    F1 0 (scikit-learn's ``zero_division=0``), and balanced accuracy averages the classes
    present (a class absent from the split has no recall)."""
    cm = np.asarray(counts, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise DataError(f"counts have shape {cm.shape}; expected a (k, k) confusion matrix, k >= 2")
    k = cm.shape[0]
    arrays = _cm_metrics(cm[None])
    f1 = np.array([arrays[f"per_class/{c}/f1"][0] for c in range(k)])
    recall = np.array([arrays[f"per_class/{c}/recall"][0] for c in range(k)])
    present = cm.sum(axis=1) > 0
    return {"accuracy": float(arrays["accuracy"][0]),
            "macro_f1": float(np.nan_to_num(f1, nan=0.0).mean()),
            "balanced_accuracy": float(recall[present].mean()) if present.any() else math.nan,
            "qwk": float(_qwk_batch(cm[None])[0])}


def selection_auc(y_true: ArrayLike, probs: ArrayLike) -> float:
    """The report's ``roc_auc`` without interval or reason (binary: the positive class;
    else the macro one-vs-rest mean); NaN when the split lacks a class."""
    y, p = validate_inputs(y_true, probs, split="val")
    return float(_auc_summary(y, p, np.ones((1, len(y))))[0])


# ---------------------------------------------------------------- everything

def compute_all(y_true: ArrayLike, probs: ArrayLike, *, class_names: Sequence[str], task: str,
                val: ValSplit | None = None, n_boot: int = 1000, seed: int = 0) -> artifacts.Metrics:
    """The ``metrics`` part of metrics.json (see docs/ARCHITECTURE.md), JSON-serialisable.

    One set of stratified resamples serves every interval (metrics and operating points).
    """
    names = _check_options(class_names, task)
    _check_n_boot(n_boot)
    y, p = validate_inputs(y_true, probs, num_classes=len(names))
    k, n = len(names), len(y)
    ordinal = task == "ordinal"
    point = _point_metrics(y, p, ordinal=ordinal)
    choices = _choose_points(y, p, val) if k == 2 else []

    def batch(w: np.ndarray) -> Arrays:
        return {**_batch_metrics(y, p, w, ordinal=ordinal), **_points_batch(y, choices, w)}

    n_boot = bootstrap_resamples(n_boot, k)
    arrays = _bootstrap_arrays(y, batch, n_boot=n_boot, seed=seed) if n_boot and n else {}
    intervals = {key: percentile_interval(arr) for key, arr in arrays.items()}
    v = _valuer(y, p, names, point, intervals)
    table = _table(v, y, names)
    cal = calibration(y, p)
    roc_auc: artifacts.RocAuc = {**v("roc_auc"), "average": "binary" if k == 2 else "macro-ovr"}
    result: artifacts.Metrics = {
        "task": cast(artifacts.Task, task), "class_names": names, "n": n,
        "accuracy": table["accuracy"], "balanced_accuracy": table["balanced_accuracy"],
        "mcc": table["mcc"], "roc_auc": roc_auc,
        "roc_auc_weighted": v("roc_auc_weighted") if k > 2 else None,
        "average_precision": _with_interval(average_precision(y, p, class_names=names),
                                            intervals.get("average_precision")),
        "per_class": table["per_class"], "macro_avg": table["macro_avg"],
        "weighted_avg": table["weighted_avg"],
        "confusion_matrix": confusion_matrices(y, p.argmax(axis=1), class_names=names),
        "curves": roc_pr_curves(y, p, class_names=names, only=_shown(y, p, k)),
        "calibration": {**cal, "ece": _with_interval(cal["ece"], intervals.get("calibration/ece")),
                        "brier": _with_interval(cal["brier"], intervals.get("calibration/brier"))},
        "operating_points": _point_dicts(y, choices, intervals) if k == 2 else [],
        "ordinal": _ordinal_part(y, p, names, point, intervals) if ordinal else None,
        "bootstrap": {"resamples": int(n_boot), "seed": int(seed), "stratified": True},
    }
    return result


# ---------------------------------------------------------------- comparing two models

def mcnemar(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike) -> McNemar:
    """McNemar's test on paired predictions. ``b``: A right and B wrong; ``c``: A wrong and B
    right. Exact two-sided binomial when b + c < 25, else chi-square with continuity
    correction."""
    y, a, b_pred = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not (len(y) == len(a) == len(b_pred)):
        raise DataError(f"mcnemar needs equal lengths; got y_true {len(y)}, pred_a {len(a)}, "
                        f"pred_b {len(b_pred)}")
    right_a, right_b = a == y, b_pred == y
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    if b + c == 0:
        return {"statistic": 0.0, "p_value": 1.0, "b": b, "c": c, "method": "exact"}
    if b + c < 25:
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))
        return {"statistic": float(min(b, c)), "p_value": p, "b": b, "c": c, "method": "exact"}
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return {"statistic": float(stat), "p_value": float(stats.chi2.sf(stat, 1)), "b": b, "c": c,
            "method": "chi2"}


def _delong_components(y: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components (Sun & Xu 2014, average ranks for ties)."""
    pos, neg = score[y == 1], score[y == 0]
    m, n = len(pos), len(neg)
    ranks_all = stats.rankdata(np.concatenate([pos, neg]))
    ranks_pos, ranks_neg = stats.rankdata(pos), stats.rankdata(neg)
    auc = (ranks_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (ranks_all[:m] - ranks_pos) / n           # per positive: share of negatives below
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m     # per negative: share of positives above
    return float(auc), v10, v01


_NO_AUCS: PairedAuc = {"auc_a": None, "auc_b": None, "difference": None, "ci95": None, "p_value": None}


def _delong(y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray) -> PairedAuc:
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        return {**_NO_AUCS, "reason": why("delong_too_few", positives=m, negatives=n)}
    auc_a, v10_a, v01_a = _delong_components(y, s_a)
    auc_b, v10_b, v01_b = _delong_components(y, s_b)
    cov = np.cov(np.stack([v10_a, v10_b])) / m + np.cov(np.stack([v01_a, v01_b])) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    out: PairedAuc = {"auc_a": auc_a, "auc_b": auc_b, "difference": diff, "ci95": None, "p_value": None}
    if var <= 1e-15:
        # Identical rankings: no difference and no variance of it.
        if abs(diff) < 1e-12:
            return {**out, "ci95": [0.0, 0.0], "p_value": 1.0}
        return {**out, "ci95": None, "p_value": None,
                "reason": why("delong_zero_variance")}
    half = _Z95 * math.sqrt(var)
    p_value = float(2 * stats.norm.sf(abs(diff) / math.sqrt(var)))
    return {**out, "ci95": [diff - half, diff + half], "p_value": min(1.0, p_value)}


def _auc_summary(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    k = p.shape[1]
    if k == 2:
        return _auc_batch(p[:, 1], y == 1, weights)
    return np.mean([_auc_batch(p[:, c], y == c, weights) for c in range(k)], axis=0)


def _paired_bootstrap(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_boot: int,
                      seed: int) -> PairedAuc:
    ones = np.ones((1, len(y)))
    auc_a, auc_b = float(_auc_summary(y, p_a, ones)[0]), float(_auc_summary(y, p_b, ones)[0])
    if not (math.isfinite(auc_a) and math.isfinite(auc_b)):
        return {**_NO_AUCS, "reason": why("paired_auc_undefined")}
    diffs = _bootstrap_arrays(
        y, lambda w: {"d": _auc_summary(y, p_a, w) - _auc_summary(y, p_b, w)},
        n_boot=n_boot, seed=seed).get("d", np.empty(0))
    diffs = diffs[np.isfinite(diffs)]
    out: PairedAuc = {"auc_a": auc_a, "auc_b": auc_b, "difference": auc_a - auc_b,
                      "ci95": None, "p_value": None}
    if not diffs.size:
        return {**out, "ci95": None, "p_value": None,
                "reason": why("no_resamples")}
    # Two-sided: how often the resampled difference lands on either side of 0.
    below = (np.sum(diffs <= 0) + 1) / (diffs.size + 1)
    above = (np.sum(diffs >= 0) + 1) / (diffs.size + 1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {**out, "ci95": [float(lo), float(hi)], "p_value": float(min(1.0, 2 * min(below,
                                                                                     above)))}


def paired_auc_test(y_true: ArrayLike, probs_a: ArrayLike, probs_b: ArrayLike, *,
                    method: str = "delong", n_boot: int = 1000, seed: int = 0) -> PairedAuc:
    """Compare the ROC-AUC of two models on the same samples.

    ``delong`` (binary only; multi-class data fall back to the paired bootstrap) or a paired
    stratified ``bootstrap`` on the AUC difference (macro one-vs-rest for multi-class).
    Returns ``auc_a, auc_b, difference (a - b), ci95, p_value, method``; values that cannot be
    computed are None with a ``reason``.
    """
    if method not in PAIRED_AUC_METHODS:
        raise ConfigError(f"method {method!r} is not known; choose "
                           f"{' or '.join(PAIRED_AUC_METHODS)}")
    _check_n_boot(n_boot)
    y, p_a = validate_inputs(y_true, probs_a, split="model A")
    _, p_b = validate_inputs(y, probs_b, num_classes=p_a.shape[1], split="model B")
    if method == "delong" and p_a.shape[1] != 2:
        logger.info("DeLong's test is for binary data; using the paired bootstrap")
        method = "bootstrap"
    if method == "delong":
        res = _delong(y, p_a[:, 1], p_b[:, 1])
    else:
        res = _paired_bootstrap(y, p_a, p_b, n_boot, seed)
    return cast(PairedAuc, _jsonable({**res, "method": method}))


def curve_area(curves: ArrayLike) -> np.ndarray:
    """Trapezoid area under curves sampled evenly on [0, 1], along the last axis
    (deletion/insertion curves: explain scores them, the faithfulness chart labels them)."""
    c = np.asarray(curves, dtype=np.float64)
    steps = c.shape[-1] - 1
    if steps < 1:  # a single point has no area
        return np.full(c.shape[:-1], np.nan)
    return (c.sum(axis=-1) - (c[..., 0] + c[..., -1]) / 2) / steps


class SeedSummary(TypedDict):
    """One metric over the runs of several seeds (``seed_summary``)."""

    n: int                     # seeds with a defined value
    mean: float | None
    sd: float | None           # sample standard deviation (n - 1); None below 2 values
    min: float | None
    max: float | None


def seed_summary(values: Sequence[object]) -> SeedSummary:
    """Mean, sample sd, min and max of one metric across seeds.

    ``values`` are numbers or metrics values (``{"value": x, ...}``); undefined ones (None,
    NaN, ``{"value": null}``) are left out and not counted in ``n``. The sd is the spread
    between seeds (training randomness), not a confidence interval of the mean.
    """
    found = [x for v in values if (x := value_of(v)) is not None]
    if not found:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    arr = np.asarray(found, dtype=np.float64)
    return {"n": len(found), "mean": float(arr.mean()),
            "sd": float(arr.std(ddof=1)) if len(found) > 1 else None,
            "min": float(arr.min()), "max": float(arr.max())}


def value_of(v: object) -> float | None:
    """The number of a metrics value: ``{"value": x, ...}``, a plain number, or None.

    Readers of metrics.json (charts, discussion, compare) use this so that an undefined
    value (``{"value": null, "reason": ...}``), a bool or a non-finite number is None.
    """
    if isinstance(v, Mapping):
        v = v.get("value")
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)  # type: ignore[arg-type]  # a number or numeric text; anything else is None
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------- context for the numbers

# A model is "collapsed" when one class takes at least this share of its predictions while
# that class is at least COLLAPSE_EXCESS less common in the truth (98% "normal" on a balanced
# binary test, 100% one grade of eight): it then answers one class for most images, and its
# per-class figures describe the collapse, not a trade-off. A majority class predicted a
# little more often than it occurs (95% against 80%) is not a collapse.
COLLAPSE_SHARE = 0.80
COLLAPSE_EXCESS = 0.30
# A calibration gap is one-directional when the signed gap is at least this share of the ECE.
CALIBRATION_DIRECTION_SHARE = 0.5


class Baselines(TypedDict):
    """What accuracy, balanced accuracy and QWK are worth without a model."""

    n: int
    k: int
    chance: float                 # accuracy / balanced accuracy of uniform random guessing (1/k)
    majority: float | None        # accuracy of always predicting the largest class of the split
    majority_class: str | None
    majority_balanced: float      # balanced accuracy of any constant prediction (1/k)
    kappa: float                  # QWK of random or constant predictions (0)


def baselines(confusion_raw: Sequence[Sequence[int]], class_names: Sequence[str]) -> Baselines:
    """Chance level and the majority-class baseline of an evaluated split, from its confusion
    matrix (rows: true class), so an older metrics.json gets them too."""
    counts = np.asarray(confusion_raw, dtype=np.int64).reshape(len(class_names), -1).sum(axis=1)
    n, k = int(counts.sum()), len(class_names)
    top = int(np.argmax(counts)) if n else None
    return {"n": n, "k": k, "chance": 1.0 / k if k else float("nan"),
            "majority": float(counts[top] / n) if top is not None else None,
            "majority_class": str(class_names[top]) if top is not None else None,
            "majority_balanced": 1.0 / k if k else float("nan"), "kappa": 0.0}


class Collapse(TypedDict):
    cls: str
    predicted_share: float        # of all predictions
    true_share: float             # of the split's true labels
    n: int


def collapsed(confusion_raw: Sequence[Sequence[int]], class_names: Sequence[str]) -> Collapse | None:
    """The class a collapsed model answers for most images (see COLLAPSE_SHARE), else None."""
    cm = np.asarray(confusion_raw, dtype=np.int64).reshape(len(class_names), -1)
    n = int(cm.sum())
    if n == 0 or len(class_names) < 2:
        return None
    predicted, truth = cm.sum(axis=0) / n, cm.sum(axis=1) / n
    top = int(np.argmax(predicted))
    if predicted[top] >= COLLAPSE_SHARE and predicted[top] - truth[top] >= COLLAPSE_EXCESS:
        return {"cls": str(class_names[top]), "predicted_share": float(predicted[top]),
                "true_share": float(truth[top]), "n": n}
    return None


class CalibrationDirection(TypedDict):
    direction: Literal["over", "under", "mixed"]
    signed_gap: float             # mean confidence minus accuracy, over all images
    bins: int                     # the number of confidence bins of the ECE


def calibration_direction(calibration: artifacts.Calibration | None) -> CalibrationDirection | None:
    """Which way a model is miscalibrated, from its reliability bins: over-confident when its
    confidence exceeds its accuracy (the signed gap carries most of the ECE), under-confident
    the other way, mixed when the bins disagree."""
    bins = calibration.get("bins") if calibration else None
    if calibration is None or not bins:
        return None
    total = sum(int(b.get("count") or 0) for b in bins)
    if total == 0:
        return None
    signed = sum(int(b.get("count") or 0) * ((b.get("confidence") or 0.0) - (b.get("accuracy") or 0.0))
                 for b in bins) / total
    ece = value_of(calibration.get("ece"))
    if ece is None:
        ece = sum(int(b.get("count") or 0) * abs((b.get("confidence") or 0.0) - (b.get("accuracy") or 0.0))
                  for b in bins) / total
    if abs(signed) >= CALIBRATION_DIRECTION_SHARE * ece and signed != 0:
        direction: Literal["over", "under", "mixed"] = "over" if signed > 0 else "under"
    else:
        direction = "mixed"
    return {"direction": direction, "signed_gap": float(signed), "bins": len(bins)}
