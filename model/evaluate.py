"""Evaluation metrics for the churn classifier and the customer-lifetime-value (CLV) regressor.

Every function validates its input (same length, non-empty, finite, 0/1 labels, probabilities in
[0, 1]) and raises ``ValueError`` saying what is wrong and for how many rows.

Ranking metrics (lift, capture, gains, top-decile spend share, normalized Gini, decile
calibration) are defined on the population ordered by score. Tied scores have no natural order,
so these functions return the *expected value under a uniformly random order of tied rows*: a
tie group straddling a cut-off contributes its mean outcome per row it puts above the cut-off.
The result is therefore independent of the input row order, and a model that outputs one
constant gets exactly the "random targeting" value (lift 1, Gini 0).
Fractional cut-offs (e.g. the top 10 % of 15 rows = 1.5 rows) are handled the same way: the
cumulative-gains curve is linear between consecutive rows.

References
----------
- [HM82] Hanley & McNeil (1982), "The Meaning and Use of the Area under a Receiver Operating
  Characteristic (ROC) Curve", Radiology 143(1), 29-36.
- [Faw06] Fawcett (2006), "An introduction to ROC analysis", Pattern Recognition Letters 27(8).
- [MRS08] Manning, Raghavan & Schütze (2008), "Introduction to Information Retrieval", ch. 8
  (average precision, the area under the step-wise precision-recall curve).
- [DG06] Davis & Goadrich (2006), "The Relationship Between Precision-Recall and ROC Curves",
  ICML.
- [Goo52] Good (1952), "Rational Decisions", JRSS B 14(1), 107-114 (logarithmic score).
- [Bri50] Brier (1950), "Verification of Forecasts Expressed in Terms of Probability", Monthly
  Weather Review 78(1), 1-3.
- [NCH15] Naeini, Cooper & Hauskrecht (2015), "Obtaining Well Calibrated Probabilities Using
  Bayesian Binning", AAAI (expected calibration error).
- [GPSW17] Guo, Pleiss, Sun & Weinberger (2017), "On Calibration of Modern Neural Networks",
  ICML (ECE with M equal-width bins, weighted by bin size; reliability diagrams).
- [NC05] Niculescu-Mizil & Caruana (2005), "Predicting Good Probabilities With Supervised
  Learning", ICML (reliability diagrams).
- [Nes06] Neslin, Gupta, Kamakura, Lu & Mason (2006), "Defection Detection: Measuring and
  Understanding the Predictive Accuracy of Customer Churn Models", JMR 43(2), 204-211
  (top-decile lift as the churn-model metric).
- [LL98] Ling & Li (1998), "Data Mining for Direct Marketing: Problems and Solutions", KDD
  (lift / cumulative gains tables).
- [WLM19] Wang, Liu & Miao (2019), "A Deep Probabilistic Model for Customer Lifetime Value
  Prediction", arXiv:1912.07753 (ZILN; normalized Gini and decile charts for CLV).
- [PS17] Kaggle "Porto Seguro's Safe Driver Prediction" (2017), evaluation page: Gini of the
  predictions divided by the Gini of the perfect ordering.
- [Spe04] Spearman (1904), "The Proof and Measurement of Association between Two Things",
  American Journal of Psychology 15(1), 72-101.
- [MN89] McCullagh & Nelder (1989), "Generalized Linear Models", 2nd ed., Chapman & Hall,
  §2.3 and table 2.1 (the Poisson deviance 2 Σ [y log(y/μ) − (y − μ)]).
- [GR07] Gneiting & Raftery (2007), "Strictly Proper Scoring Rules, Prediction, and
  Estimation", JASA 102(477), 359-378 (interval coverage of a central prediction interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import xlogy

__all__ = [
    "ACTIVE_DAYS",
    "active_at_cutoff",
    "active_churn_metrics",
    "capture_at",
    "churn_metrics",
    "clv_metrics",
    "decile_calibration",
    "decile_calibration_error",
    "decile_metrics",
    "expected_calibration_error",
    "gains_table",
    "interval_coverage",
    "interval_metrics",
    "lift_at",
    "log_loss",
    "max_capture",
    "max_lift",
    "normalized_gini",
    "poisson_deviance",
    "ranking_areas",
    "reliability_table",
    "run_metrics",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

#: Share of the population ranked highest by score for ``lift_at_10`` / ``capture_at_10`` /
#: ``top10_spend_share``.
TOP_FRACTION = 0.1

#: A customer is *active at the cutoff* with a purchase in the ``ACTIVE_DAYS`` days before it
#: (``days_since_last_purchase <= ACTIVE_DAYS``): see :func:`active_churn_metrics`.
ACTIVE_DAYS = 365


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _as_1d(x: ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN or ±inf) out of {arr.size}"
        )
    return arr


def _pair(a: ArrayLike, b: ArrayLike, name_a: str, name_b: str) -> tuple[FloatArray, FloatArray]:
    x, y = _as_1d(a, name_a), _as_1d(b, name_b)
    if x.size != y.size:
        raise ValueError(f"{name_a} has {x.size} values but {name_b} has {y.size}")
    return x, y


def _check_labels(y: FloatArray, name: str) -> None:
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        examples = ", ".join(repr(float(v)) for v in np.unique(y[bad])[:3])
        raise ValueError(
            f"{name} must contain only 0/1 labels: {int(bad.sum())} of {y.size} values are not "
            f"(e.g. {examples})"
        )


def _check_probabilities(p: FloatArray, name: str) -> None:
    bad = (p < 0.0) | (p > 1.0)
    if bad.any():
        raise ValueError(
            f"{name} must be probabilities in [0, 1]: {int(bad.sum())} of {p.size} values are "
            f"outside (min {float(p.min())!r}, max {float(p.max())!r})"
        )


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, int | float) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")


def _binary_inputs(y_true: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray]:
    y, q = _pair(y_true, p, "y_true", "p")
    _check_labels(y, "y_true")
    _check_probabilities(q, "p")
    return y, q


def ranking_areas(y_true: ArrayLike, score: ArrayLike) -> tuple[float, float]:
    """ROC AUC [HM82, Faw06] (the trapezoid over the thresholds: Mann-Whitney, ties count one
    half) and average precision [MRS08] (scikit-learn's step-wise definition: the precision at
    each distinct threshold weighted by its gain in recall) of ``score`` for the class
    ``y_true == 1``, from one sort; NaN without both classes. The same numbers as
    ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (tests/code/test_evaluate),
    without their input checks and second sort, which dominated the monitor's per-group
    metrics at a million customers."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(score, dtype=float)
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    # The last row of each run of equal scores: one point of both curves per distinct score.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, dtype=int)
    tps = np.cumsum(y)[last]
    fps = (last + 1.0) - tps
    if not tps.size or tps[-1] == 0 or fps[-1] == 0:
        return math.nan, math.nan
    tpr = np.r_[0.0, tps] / tps[-1]
    fpr = np.r_[0.0, fps] / fps[-1]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    precision = tps / (tps + fps)
    ap = float(np.sum(np.diff(tpr) * precision))
    return auc, ap


def _require_both_classes(y: FloatArray, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"{what} needs both classes in y_true: got {n_pos} churner(s) (label 1) and "
            f"{y.size - n_pos} active (label 0) among {y.size} rows"
        )


# ---------------------------------------------------------------------------------------------
# Ranking machinery (ties and fractional cut-offs -> expected value under random tie order)
# ---------------------------------------------------------------------------------------------


def _cumulative_by_rank(
    score: FloatArray, values: list[FloatArray], positions: FloatArray, *, descending: bool
) -> list[FloatArray]:
    """Cumulative sums of each ``values`` array over the first ``positions`` rows by score.

    Rows are sorted by score; the cumulative sum is exact at the end of every group of tied
    scores and linear in between, which is the expectation under a random order within ties
    (the first m rows of a tie group of c rows with total s hold m·s/c on average) and the
    straight-line interpolation for fractional row counts.
    """
    key = -score if descending else score
    order = np.argsort(key, kind="stable")
    s = key[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) + 1  # rows up to each tie group's end
    xp = np.r_[0.0, ends.astype(np.float64)]
    out = []
    for v in values:
        cs = np.cumsum(v[order])
        fp = np.r_[0.0, cs[ends - 1]]
        out.append(np.interp(positions, xp, fp))
    return out


def _top_share(weight: FloatArray, score: FloatArray, fraction: float) -> float:
    """Share of ``weight.sum()`` held by the top ``fraction`` of rows by score."""
    (top,) = _cumulative_by_rank(
        score, [weight], np.array([fraction * score.size]), descending=True
    )
    return float(top[0] / weight.sum())


def capture_at(y_true: ArrayLike, score: ArrayLike, fraction: float = TOP_FRACTION) -> float:
    """Share of all positives (churners) found in the top ``fraction`` of rows by score.

    The cumulative-gains value at ``fraction`` [LL98]; ties are broken in expectation (see the
    module docstring). Random targeting captures ``fraction``; a perfect model
    ``min(1, fraction / base_rate)``.
    """
    _check_fraction(fraction)
    y, s = _pair(y_true, score, "y_true", "score")
    _check_labels(y, "y_true")
    if y.sum() == 0:
        raise ValueError(f"capture needs at least one positive in y_true: 0 of {y.size} rows")
    return _top_share(y, s, fraction)


def max_capture(fraction: float, base_rate: float) -> float:
    """The largest :func:`capture_at` any ranking reaches at base rate ``r``: a perfect one
    puts every churner first, so the top ``k`` holds min(k, r) of the population as churners,
    min(k, r) / r = min(1, k / r) of them [LL98]."""
    return min(fraction, base_rate) / base_rate


def max_lift(fraction: float, base_rate: float) -> float:
    """The largest :func:`lift_at` any ranking reaches at base rate ``r``: :func:`max_capture`
    ÷ k = min(k, r) / (k · r), i.e. min(1 / r, 1 / k). With churn common it is close to 1:
    1.82 at the top 10 % when 55 % churn."""
    return max_capture(fraction, base_rate) / fraction


def lift_at(y_true: ArrayLike, score: ArrayLike, fraction: float = TOP_FRACTION) -> float:
    """Positive rate in the top ``fraction`` by score divided by the overall positive rate.

    Top-decile lift (``fraction=0.1``) is the standard churn-model yardstick of [Nes06]. It equals
    ``capture_at(fraction) / fraction``.
    """
    return capture_at(y_true, score, fraction) / fraction


# ---------------------------------------------------------------------------------------------
# Churn (binary, probabilistic) metrics
# ---------------------------------------------------------------------------------------------


def reliability_table(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram data: ``n_bins`` equal-width probability bins on [0, 1] [NC05].

    Bins follow [GPSW17] and ``sklearn.calibration.calibration_curve``: bin 0 is
    ``[0, 1/n_bins]``, bin i > 0 is ``(i/n_bins, (i+1)/n_bins]``. One row per bin, empty bins
    included with ``count`` 0 and NaN means so the table always has ``n_bins`` rows.

    Columns: ``bin``, ``lower``, ``upper``, ``mean_predicted``, ``observed_rate``, ``count``.
    """
    _check_n_bins(n_bins)
    y, q = _binary_inputs(y_true, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the inner edges with side="left" puts a value equal to an edge into the
    # lower bin, i.e. right-closed bins, the same convention as sklearn's calibration_curve.
    idx = np.searchsorted(edges[1:-1], q, side="left")
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=q, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        rate = np.where(count > 0, sum_y / count, np.nan)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "mean_predicted": mean_p,
            "observed_rate": rate,
            "count": count,
        }
    )


def expected_calibration_error(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error [NCH15, GPSW17].

    ``ECE = Σ_b (n_b / n) · |mean_predicted_b - observed_rate_b|`` over the equal-width bins of
    :func:`reliability_table`; empty bins contribute nothing.
    """
    table = reliability_table(y_true, p, n_bins)
    filled = table[table["count"] > 0]
    n = float(filled["count"].sum())
    gap = (filled["mean_predicted"] - filled["observed_rate"]).abs()
    return float((gap * filled["count"]).sum() / n)


def log_loss(y_true: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood of 0/1 labels ``y_true`` under probabilities ``p`` [Goo52].

    ``p`` is clipped to ``[eps, 1 - eps]`` (float64 machine epsilon) so a confident miss is
    large but finite. The one log loss of training: the metric of :func:`churn_metrics`, the
    calibration choice and the promotion gate.
    """
    y, q = _binary_inputs(y_true, p)
    return _log_loss(y, q)


def _log_loss(y: FloatArray, q: FloatArray) -> float:
    # Hand-computed rather than sklearn.metrics.log_loss: sklearn's sums over both class
    # columns (its rounding differs in the last bits) and has renamed its arguments (1.9).
    eps = float(np.finfo(np.float64).eps)
    qc = np.clip(q, eps, 1.0 - eps)
    return -float(np.mean(y * np.log(qc) + (1.0 - y) * np.log1p(-qc)))


def churn_metrics(y_true: ArrayLike, p: ArrayLike, *, n_bins: int = 10) -> dict[str, float]:
    """Discrimination, calibration and targeting metrics of churn probabilities ``p``.

    ``y_true`` is 1 for a churner, 0 for an active customer; ``p`` is the predicted churn
    probability. Both classes must be present (AUCs and lift are undefined otherwise).

    Keys:

    - ``roc_auc``: area under the ROC curve [HM82, Faw06]; ties count one half (Mann-Whitney).
    - ``pr_auc``: average precision for the churn class [MRS08, DG06] (``sklearn`` definition,
      the step-wise area, no interpolation).
    - ``pr_auc_active``: average precision of ``1 - p`` for the *active* class (``y == 0``,
      the customers who do not churn), the figure reported for the CDNOW benchmark. (Not to be
      confused with the customers active at the cutoff of :func:`active_churn_metrics`.)
    - ``log_loss``: mean negative log-likelihood [Goo52], see :func:`log_loss`.
    - ``brier``: mean squared error of the probabilities [Bri50].
    - ``ece``: expected calibration error with ``n_bins`` equal-width bins [GPSW17].
    - ``lift_at_10``: churn rate in the top 10 % by ``p`` ÷ overall churn rate [Nes06].
    - ``capture_at_10``: share of all churners that are in the top 10 % by ``p`` [LL98].
    - ``base_rate``: share of churners; ``n``: number of rows.
    """
    _check_n_bins(n_bins)
    y, q = _binary_inputs(y_true, p)
    _require_both_classes(y, "churn_metrics")
    capture = _top_share(y, q, TOP_FRACTION)
    auc, ap = ranking_areas(y, q)
    return {
        "roc_auc": auc,
        "pr_auc": ap,
        "pr_auc_active": ranking_areas(1.0 - y, 1.0 - q)[1],
        "log_loss": _log_loss(y, q),
        # Not sklearn's brier_score_loss: the installed scikit-learn (1.9) sums over both class
        # columns and halves, which rounds differently in the last bits (same definition).
        "brier": float(np.mean((q - y) ** 2)),
        "ece": expected_calibration_error(y, q, n_bins),
        "lift_at_10": capture / TOP_FRACTION,
        "capture_at_10": capture,
        "base_rate": float(y.mean()),
        "n": float(y.size),
    }


def active_at_cutoff(days_since_last_purchase: ArrayLike,
                     days: int = ACTIVE_DAYS) -> npt.NDArray[np.bool_]:
    """Which customers are *active at the cutoff*: a purchase in the ``days`` days before it,
    i.e. ``days_since_last_purchase <= days`` (the feature counts calendar days from the last
    purchase day to the cutoff). Customers who never purchased (NaN recency) are not active."""
    r = np.asarray(days_since_last_purchase, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"days_since_last_purchase must be one-dimensional, got shape {r.shape}")
    with np.errstate(invalid="ignore"):
        return np.isfinite(r) & (r <= days)


def active_churn_metrics(y_true: ArrayLike, p: ArrayLike, days_since_last_purchase: ArrayLike,
                         days: int = ACTIVE_DAYS) -> dict[str, float]:
    """Churn ranking among the customers *active at the cutoff* (:func:`active_at_cutoff`).

    A non-contractual churn label is "no purchase in the horizon", so customers who lapsed long
    ago are churners that any recency rule ranks first: they raise ROC AUC over the whole
    population without telling whether the model finds who of the customers still buying will
    stop. Keys (``days`` = 365 gives the suffix ``_365d``):

    - ``roc_auc_active_<days>d``: ROC AUC among the active customers; NaN when they hold only
      one class;
    - ``active_share_<days>d``: the share of the evaluated customers who are active;
    - ``base_rate_active_<days>d``: their churn rate (NaN if none is active).
    """
    y, q = _binary_inputs(y_true, p)
    active = active_at_cutoff(days_since_last_purchase, days)
    if active.size != y.size:
        raise ValueError(f"y_true has {y.size} values but days_since_last_purchase has "
                         f"{active.size}")
    ya, qa = y[active], q[active]
    n_pos = float(ya.sum())
    auc = ranking_areas(ya, qa)[0] if 0 < n_pos < ya.size else math.nan
    return {
        f"roc_auc_active_{days}d": auc,
        f"active_share_{days}d": float(active.mean()),
        f"base_rate_active_{days}d": float(ya.mean()) if ya.size else math.nan,
    }


def gains_table(y_true: ArrayLike, score: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Cumulative gains and lift by score quantile bin (deciles by default) [LL98, Nes06].

    Bin 1 holds the highest scores. Every bin is exactly ``n / n_bins`` rows; rows that a bin
    boundary splits (fractional boundaries, tied scores) are shared in expectation, see the
    module docstring. Row 1's ``lift`` equals :func:`lift_at` at ``1 / n_bins``.

    Columns: ``bin``, ``population_share`` (cumulative share of rows up to this bin), ``rows``,
    ``positives`` (expected number of positives in the bin), ``rate`` (positive rate in the
    bin), ``lift`` (bin rate ÷ overall rate), ``cum_capture`` (share of all positives in bins
    1..k), ``cum_lift`` (``cum_capture / population_share``).
    """
    _check_n_bins(n_bins)
    y, s = _pair(y_true, score, "y_true", "score")
    _check_labels(y, "y_true")
    total = float(y.sum())
    if total == 0:
        raise ValueError(f"gains_table needs at least one positive in y_true: 0 of {y.size} rows")
    n = y.size
    share = np.arange(1, n_bins + 1) / n_bins
    (cum_pos,) = _cumulative_by_rank(s, [y], share * n, descending=True)
    pos = np.diff(np.r_[0.0, cum_pos])
    rows = np.full(n_bins, n / n_bins)
    base = total / n
    return pd.DataFrame(
        {
            "bin": np.arange(1, n_bins + 1),
            "population_share": share,
            "rows": rows,
            "positives": pos,
            "rate": pos / rows,
            "lift": pos / rows / base,
            "cum_capture": cum_pos / total,
            "cum_lift": cum_pos / total / share,
        }
    )


# ---------------------------------------------------------------------------------------------
# CLV (non-negative spend) metrics
# ---------------------------------------------------------------------------------------------


def _spend_inputs(y_true_spend: ArrayLike, y_pred: ArrayLike) -> tuple[FloatArray, FloatArray]:
    y, pred = _pair(y_true_spend, y_pred, "y_true_spend", "y_pred")
    neg = y < 0
    if neg.any():
        raise ValueError(
            f"y_true_spend must be non-negative: {int(neg.sum())} of {y.size} values are < 0"
        )
    if y.sum() <= 0:
        raise ValueError(
            f"y_true_spend sums to 0 over {y.size} rows: shares, total error and Gini are undefined"
        )
    return y, pred


def _gini(actual: FloatArray, score: FloatArray) -> float:
    # Kaggle's Gini: mean over i of (share of actual in the top i by score) - i/n, i.e. the
    # area between the cumulative-gains curve and the diagonal, sampled at every row.
    n = actual.size
    positions = np.arange(1, n + 1, dtype=np.float64)
    (cum,) = _cumulative_by_rank(score, [actual], positions, descending=True)
    return float(np.mean(cum / actual.sum() - positions / n))


def normalized_gini(y_true_spend: ArrayLike, y_pred: ArrayLike) -> float:
    """Normalized Gini coefficient: Gini of the predictions ÷ Gini of the perfect ordering.

    The Porto Seguro definition [PS17], used for CLV by [WLM19]:
    ``gini(a, s) = (1/n) Σ_{i=1..n} (A_i / Σa - i/n)``, where ``A_i`` is the actual spend of
    the top ``i`` customers by score ``s``; the result is ``gini(a, pred) / gini(a, a)``.
    1 = perfect ranking, 0 = no better than random (or a constant prediction), negative =
    worse than random. Only the order of ``y_pred`` matters. Ties in ``y_pred`` are resolved in
    expectation (Kaggle's reference code breaks them by row order instead).
    """
    y, pred = _spend_inputs(y_true_spend, y_pred)
    return _normalized_gini(y, pred)


def _normalized_gini(y: FloatArray, pred: FloatArray) -> float:
    perfect = _gini(y, y)
    if perfect <= 0:
        raise ValueError(
            f"normalized Gini is undefined: all {y.size} actual values are equal, so no "
            "ordering beats any other"
        )
    return _gini(y, pred) / perfect


def _spearman(a: FloatArray, b: FloatArray) -> float:
    # Pearson correlation of average ranks [Spe04]. A constant input (e.g. a "predict the mean
    # for everybody" baseline) has no ranking at all: NaN, not an error. (scipy.stats.spearmanr
    # has the same definition but rounds differently in the last bits, and warns on a
    # constant input.)
    ra = pd.Series(a).rank(method="average").to_numpy(dtype=np.float64, copy=True)
    rb = pd.Series(b).rank(method="average").to_numpy(dtype=np.float64, copy=True)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else math.nan


def poisson_deviance(y_true_spend: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean Poisson deviance of non-negative predictions of a non-negative target [MN89].

    ``D = (2/n) Σ_i [y_i log(y_i / μ_i) − (y_i − μ_i)]``, with ``y log(y/μ) = 0`` for ``y = 0``
    (``scipy.special.xlogy``), so a zero prediction costs nothing for a customer who spent
    nothing. It is a proper loss for the *mean* (minimised in expectation by ``μ = E[y]``),
    unlike MAE, which rewards the median and so predicting 0 for the many who do not buy.
    Equals ``sklearn.metrics.mean_poisson_deviance`` where that is defined (every ``μ > 0``);
    a prediction of exactly 0 for a customer who spent gives ``inf`` (the model called a
    purchase impossible), where sklearn raises. Spend is not a count: the deviance is in spend
    units and compares models on the same customers, not across data sets.
    """
    y, mu = _pair(y_true_spend, y_pred, "y_true_spend", "y_pred")
    for arr, name in ((y, "y_true_spend"), (mu, "y_pred")):
        neg = arr < 0
        if neg.any():
            raise ValueError(
                f"{name} must be non-negative: {int(neg.sum())} of {arr.size} values are < 0")
    return _poisson_deviance(y, mu)


def _poisson_deviance(y: FloatArray, mu: FloatArray) -> float:
    with np.errstate(divide="ignore"):
        # xlogy(y, y) - xlogy(y, mu) = y log(y / mu) without 0 · log 0; -xlogy(y, 0) = inf
        # for y > 0, the honest cost of calling a purchase impossible.
        dev = 2.0 * (xlogy(y, y) - xlogy(y, mu) - (y - mu))
    return float(np.mean(dev))


def clv_metrics(y_true_spend: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Error, ranking and aggregate metrics of predicted customer spend (CLV) ``y_pred``.

    ``y_true_spend`` is the spend actually observed in the holdout window (non-negative, not all
    zero); ``y_pred`` the model's prediction for the same window.

    Keys:

    - ``mae``, ``rmse``: mean absolute / root-mean-squared error, in spend units. MAE rewards
      the median, not the mean (predicting 0 for everyone comes close on a base of mostly
      non-buyers): judge an expected-value CLV by RMSE, ``poisson_deviance``, ranking,
      decile calibration and total error, and read MAE as per-customer accuracy only.
    - ``poisson_deviance``: mean Poisson deviance, see :func:`poisson_deviance` [MN89] (only
      with non-negative predictions; ``inf`` for a zero prediction of a customer who spent).
    - ``spearman``: Spearman rank correlation [Spe04] (NaN if either input is constant).
    - ``normalized_gini``: see :func:`normalized_gini` [PS17, WLM19].
    - ``top10_spend_share``: share of the actual total spend made by the 10 % of customers with
      the highest predictions (random ordering: 0.10).
    - ``decile_calibration_error``: see :func:`decile_calibration_error`.
    - ``total_error``: ``(Σ pred - Σ actual) / Σ actual``, the relative error of the portfolio
      total that finance cares about.
    - ``total_pred``, ``total_actual``, ``n``.
    """
    y, pred = _spend_inputs(y_true_spend, y_pred)
    err = pred - y
    total_actual = float(y.sum())
    total_pred = float(pred.sum())
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        **({"poisson_deviance": _poisson_deviance(y, pred)} if (pred >= 0).all() else {}),
        "spearman": _spearman(y, pred),
        "normalized_gini": _normalized_gini(y, pred),
        "top10_spend_share": _top_share(y, pred, TOP_FRACTION),
        "decile_calibration_error": _decile_calibration_error(decile_calibration(y, pred), y),
        "total_error": (total_pred - total_actual) / total_actual,
        "total_pred": total_pred,
        "total_actual": total_actual,
        "n": float(y.size),
    }


def decile_calibration(y_true: ArrayLike, y_pred: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs mean actual value per prediction quantile bin (the [WLM19] decile chart).

    Bin 1 holds the *lowest* predictions, bin ``n_bins`` the highest, so a well-calibrated model
    shows two rising, overlapping series. Each bin is ``n / n_bins`` rows; rows split by a bin
    boundary (fractional boundaries, tied predictions) are shared in expectation, so ``count``
    may be fractional. Works for any real-valued target (spend, or 0/1 churn labels).

    Columns: ``bin``, ``mean_predicted``, ``mean_actual``, ``count``.
    """
    _check_n_bins(n_bins)
    y, pred = _pair(y_true, y_pred, "y_true", "y_pred")
    n = y.size
    bounds = np.arange(0, n_bins + 1, dtype=np.float64) * (n / n_bins)
    cum_pred, cum_y = _cumulative_by_rank(pred, [pred, y], bounds, descending=False)
    count = np.diff(bounds)
    return pd.DataFrame(
        {
            "bin": np.arange(1, n_bins + 1),
            "mean_predicted": np.diff(cum_pred) / count,
            "mean_actual": np.diff(cum_y) / count,
            "count": count,
        }
    )


def decile_calibration_error(y_true_spend: ArrayLike, y_pred: ArrayLike,
                             n_bins: int = 10) -> float:
    """How far the decile chart's two series are apart, relative to the mean actual spend.

    ``Σ_b (n_b / n) · |mean_predicted_b − mean_actual_b| ÷ mean actual`` over the bins of
    :func:`decile_calibration`: the ECE of [NCH15, GPSW17] carried to spend (bins by predicted
    quantile, not equal width, as in [WLM19]'s decile chart), divided by the mean so that it
    reads as a share of the average customer's spend (0 = every decile's mean is exact; 0.2 =
    the deciles are off by a fifth of the mean spend on average). A constant total shift
    shows here as well as in ``total_error``; a model right on the total but too flat
    (under-predicting the top, over-predicting the bottom) shows only here.
    """
    y, pred = _spend_inputs(y_true_spend, y_pred)
    return _decile_calibration_error(decile_calibration(y, pred, n_bins), y)


def _decile_calibration_error(table: pd.DataFrame, y: FloatArray) -> float:
    gap = (table["mean_predicted"] - table["mean_actual"]).abs()
    return float((gap * table["count"]).sum() / y.size / y.mean())


def decile_metrics(table: pd.DataFrame) -> dict[str, float]:
    """A :func:`decile_calibration` table as flat metrics, ``decile_01_mean_predicted``,
    ``decile_01_mean_actual``, ... (two-digit bins, so they sort in order in MLflow)."""
    out: dict[str, float] = {}
    for b, pred, actual in zip(table["bin"], table["mean_predicted"], table["mean_actual"],
                               strict=True):
        out[f"decile_{int(b):02d}_mean_predicted"] = float(pred)
        out[f"decile_{int(b):02d}_mean_actual"] = float(actual)
    return out


def interval_coverage(y_true: ArrayLike, low: ArrayLike, high: ArrayLike) -> float:
    """Share of rows whose actual value lies in their closed interval [low, high] [GR07]."""
    y, lo, hi = _interval_inputs(y_true, low, high)
    return float(np.mean((y >= lo) & (y <= hi)))


def _interval_inputs(y_true: ArrayLike, low: ArrayLike,
                     high: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    y, lo = _pair(y_true, low, "y_true", "low")
    _, hi = _pair(y_true, high, "y_true", "high")
    bad = lo > hi
    if bad.any():
        raise ValueError(f"low must not exceed high: {int(bad.sum())} of {lo.size} intervals "
                         "have low > high")
    return y, lo, hi


def interval_metrics(y_true_spend: ArrayLike, low: ArrayLike, high: ArrayLike,
                     p_zero: ArrayLike, level: float) -> dict[str, float]:
    """How well ``level`` prediction intervals of spend hold on a held-out snapshot.

    ``p_zero`` is each row's predicted P(spend = 0) and ``level`` the intervals' nominal
    probability (0.8 for the 10 %-90 % interval). Keys:

    - ``interval_coverage``: share of customers whose actual spend is in [low, high]
      (:func:`interval_coverage`); a calibrated model gives about ``interval_nominal``;
    - ``interval_nominal``: the coverage the model itself expects, mean of max(``level``,
      P(spend = 0)): an interval of a customer who most likely buys nothing is [0, 0] and
      holds P(spend = 0) > ``level`` (for a discrete distribution, a lower bound);
    - ``interval_coverage_buyers`` / ``interval_coverage_nonbuyers``: the coverage among the
      customers who spent / did not (NaN where there are none), which says whether a miss is
      in the spend distribution or in P(buy);
    - ``interval_width``: the mean of high − low, in spend units.
    """
    y, lo, hi = _interval_inputs(y_true_spend, low, high)
    _, pz = _pair(y_true_spend, p_zero, "y_true_spend", "p_zero")
    _check_probabilities(pz, "p_zero")
    inside = (y >= lo) & (y <= hi)
    buyers = y > 0
    return {
        "interval_coverage": float(inside.mean()),
        "interval_nominal": float(np.maximum(level, pz).mean()),
        "interval_coverage_buyers": float(inside[buyers].mean()) if buyers.any() else math.nan,
        "interval_coverage_nonbuyers": (float(inside[~buyers].mean()) if (~buyers).any()
                                        else math.nan),
        "interval_width": float(np.mean(hi - lo)),
    }


# ---------------------------------------------------------------------------------------------
# Run metrics
# ---------------------------------------------------------------------------------------------


def run_metrics(prefix: str, metrics: Mapping[str, object]) -> dict[str, float]:
    """The finite numbers of a metrics dict as run metrics named ``prefix + key``; NaN (e.g.
    the Spearman correlation of a constant prediction) and non-numbers are left out."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))}
