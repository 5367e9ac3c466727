"""Bootstrap intervals of the test-snapshot metrics, paired across models.

The nonparametric bootstrap over customers (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 6 and 13): resample the test customers with replacement, score every model on
every resample, and read the 2.5 % and 97.5 % percentiles of a metric across resamples as its
95 % interval (the percentile interval, ch. 13.3). All models of a snapshot are scored on the
*same* resamples, so the interval of a difference between two models is paired: noise common
to both (a resample that happens to hold many easy customers) cancels in the difference.

One implementation serves the promotion gate (README "Promotion"), the report and the run
metrics (README "Reading the model report"): :func:`bootstrap` scores every model of a test
snapshot once, and the gate reads its comparisons from those draws; :func:`paired_bootstrap`
is the same for two models alone.

A resample is a vector of multinomial counts over the customers (how often each was drawn);
every metric here is written for a *matrix* of them, one resample per row, and equals the
plain metric of :mod:`churnguard.model.evaluate` on the resampled rows (tests check that).
Sorting by score does not depend on the weights, so ranking metrics sort once per model and
snapshot, not once per resample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import xlogy

from churnguard.model.evaluate import ACTIVE_DAYS, TOP_FRACTION, active_at_cutoff

FloatArray = npt.NDArray[np.float64]

#: Resamples of the test customers, the seed of their generator and the interval level. 1,000
#: resamples put the 2.5 % percentile between the 25th and 26th smallest value, enough for a
#: stable 95 % interval (Efron & Tibshirani 1993, ch. 19: 1,000-2,000 for percentiles).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95

#: Resamples are scored in blocks of about this many cells (resamples x customers), so memory
#: stays near 16 MB per matrix whatever the snapshot's size.
_BLOCK_CELLS = 2_000_000

#: A metric of weighted rows: (weights, labels, predictions) -> value per resample. ``weights``
#: is ``(resamples, n)`` (or ``(n,)`` for one resample, then the value is 0-dimensional).
WeightedMetric = Callable[[FloatArray, FloatArray, FloatArray], FloatArray]


def resample_weights(n: int, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> Iterator[FloatArray]:
    """The bootstrap resamples of ``n`` customers as count weights, in blocks of rows: each row
    counts how often each customer was drawn in ``n`` draws with replacement. Deterministic
    for a seed."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_CELLS // max(n, 1)))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        draws = rng.integers(0, n, (b, n))
        flat = (np.arange(b)[:, None] * n + draws).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


# ---------------------------------------------------------------------------------------------
# Weighted metrics (each the evaluate.py metric of the same name on the resampled rows)
# ---------------------------------------------------------------------------------------------


def _mean(w: FloatArray, v: FloatArray) -> FloatArray:
    return np.asarray((w @ v) / w.sum(axis=-1))


def weighted_log_loss(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Mean log loss [Good 1952] of probabilities ``p`` (clipped to float64 epsilon as
    :func:`churnguard.model.evaluate.log_loss`)."""
    eps = float(np.finfo(np.float64).eps)
    q = np.clip(p, eps, 1.0 - eps)
    return -_mean(w, y * np.log(q) + (1.0 - y) * np.log1p(-q))


def weighted_brier(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Mean squared error of the probabilities [Brier 1950]."""
    return _mean(w, (p - y) ** 2)


def weighted_rate(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Share of positives among the rows (``p`` unused): the base rate."""
    return _mean(w, y)


def weighted_rmse(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Root-mean-squared error of predictions ``p``."""
    return np.sqrt(_mean(w, (p - y) ** 2))


def weighted_mae(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Mean absolute error of predictions ``p``."""
    return _mean(w, np.abs(p - y))


def weighted_total_error(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """(Σ prediction − Σ actual) ÷ Σ actual (:func:`churnguard.model.evaluate.clv_metrics`'
    ``total_error``)."""
    actual = np.asarray(w @ y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(actual > 0, (w @ p - actual) / actual, np.nan)


def weighted_abs_total_error(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """|Σ prediction − Σ actual| ÷ Σ actual: the size of ``total_error``."""
    return np.abs(weighted_total_error(w, y, p))


def weighted_total_pred(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Σ prediction over the rows."""
    return np.asarray(w @ p)


def weighted_total_actual(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Σ actual over the rows."""
    return np.asarray(w @ y)


def weighted_poisson_deviance(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Mean Poisson deviance [McCullagh & Nelder 1989], ∞ on a resample that draws a customer
    who spent with a prediction of 0 (as :func:`churnguard.model.evaluate.poisson_deviance`)."""
    with np.errstate(divide="ignore"):
        dev = 2.0 * (xlogy(y, y) - xlogy(y, p) - (y - p))
    infinite = ~np.isfinite(dev)
    # inf * 0 is NaN: a customer not drawn must not count, so the infinite rows are summed
    # apart as "was any drawn".
    finite = _mean(w, np.where(infinite, 0.0, dev))
    return np.where(np.asarray(w @ infinite.astype(np.float64)) > 0, np.inf, finite)


def weighted_ece(w: FloatArray, y: FloatArray, p: FloatArray, n_bins: int = 10) -> FloatArray:
    """Expected calibration error over ``n_bins`` equal-width bins [GPSW17], the bins of
    :func:`churnguard.model.evaluate.reliability_table`: Σ_b |Σ p − Σ y|_b ÷ n."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], p, side="left")
    onehot = np.zeros((p.size, n_bins))
    onehot[np.arange(p.size), idx] = 1.0
    gap = np.abs((w * (p - y)) @ onehot)
    return np.asarray(gap.sum(axis=-1) / w.sum(axis=-1))


class _Sorted:
    """One block of resamples in the order of one score, highest first, with the groups of
    tied scores: per-resample sums of any per-row values over the tie groups."""

    def __init__(self, w2: FloatArray, score: FloatArray) -> None:
        order = np.argsort(-score, kind="stable")
        s = score[order]
        first = np.r_[True, s[1:] != s[:-1]]
        self.order, self.starts = order, np.flatnonzero(first)
        self.group = np.empty(score.size, dtype=np.intp)
        self.group[order] = np.cumsum(first) - 1
        self.ws = w2[:, order]
        self._sums: dict[int, tuple[FloatArray, FloatArray]] = {}
        self.count = self._groups(self.ws)

    def _groups(self, values: FloatArray) -> FloatArray:
        if self.starts.size == values.shape[1]:  # no ties: every row is its own group
            return values
        return np.add.reduceat(values, self.starts, axis=1)

    def sum(self, v: FloatArray) -> FloatArray:
        """Σ weight x ``v`` per tie group and resample."""
        hit = self._sums.get(id(v))
        if hit is None or hit[0] is not v:
            hit = (v, self._groups(self.ws * v[self.order]))
            self._sums[id(v)] = hit
        return hit[1]


#: The sorted blocks of the latest resamples by the latest scores. Every metric of a model on
#: a block needs the same sort of the same weights; keeping it here spares a sort and a gather
#: of the whole block per metric without changing the metrics' signature. Two scores, as the
#: Gini and Spearman's correlation rank by the prediction and by the outcome; keyed by
#: identity, with the arrays held so that an id cannot be reused while its entry lives.
_SORTED: dict[int, tuple[FloatArray, FloatArray, _Sorted]] = {}
_SORTED_KEEP = 2


def _sorted(w: FloatArray, score: FloatArray) -> _Sorted:
    if w.ndim == 1:  # a single resample (the point value): nothing to share
        return _Sorted(np.atleast_2d(w), score)
    hit = _SORTED.get(id(score))
    if hit is None or hit[0] is not w or hit[1] is not score:
        if len(_SORTED) >= _SORTED_KEEP:
            del _SORTED[next(iter(_SORTED))]
        hit = (w, score, _Sorted(w, score))
        _SORTED.pop(id(score), None)
        _SORTED[id(score)] = hit
    return hit[2]


def _cum_at(gw: FloatArray, gvs: list[FloatArray], target: FloatArray) -> list[FloatArray]:
    """Σ v over the first ``target`` rows (``(resamples, k)`` targets) of rows in score order
    with group weights ``gw`` and group sums ``gvs``, linear within a tie group: the
    expectation under a random order of tied rows and the fractional cut-offs of
    :func:`churnguard.model.evaluate._cumulative_by_rank`."""
    cw = np.cumsum(gw, axis=1)
    # The first group whose end reaches the target; a row at a time, as searchsorted is 1-D.
    k = np.stack([np.searchsorted(cw[b], target[b], side="left") for b in range(gw.shape[0])])
    k = np.minimum(k, gw.shape[1] - 1)
    rows = np.arange(gw.shape[0])[:, None]
    w_k = gw[rows, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.clip(np.where(w_k > 0, (target - (cw[rows, k] - w_k)) / w_k, 0.0), 0.0, 1.0)
    out = []
    for gv in gvs:
        v_k = gv[rows, k]
        out.append(np.asarray(np.cumsum(gv, axis=1)[rows, k] - v_k + inside * v_k))
    return out


def _squeeze(w: FloatArray, out: FloatArray) -> FloatArray:
    return np.asarray(out[0] if w.ndim == 1 else out)


def weighted_roc_auc(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """ROC AUC (Mann-Whitney, ties count one half; Hanley & McNeil 1982): the weighted share
    of (churner, non-churner) pairs ranked the right way round; NaN without both classes."""
    s = _sorted(w, p)
    gpos = s.sum(y)
    gneg = s.count - gpos
    above = np.cumsum(gpos, axis=1) - gpos
    total = gpos.sum(axis=1) * gneg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(total > 0, (gneg * (above + 0.5 * gpos)).sum(axis=1) / total, np.nan)
    return _squeeze(w, auc)


def _average_precision(gpos: FloatArray, count: FloatArray) -> FloatArray:
    # Groups highest score first: Σ (recall gained) x (precision at that threshold).
    tp, flagged = np.cumsum(gpos, axis=1), np.cumsum(count, axis=1)
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, tp / flagged, 0.0)
        return np.where(total > 0, (gpos * precision).sum(axis=1) / total, np.nan)


def weighted_average_precision(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Average precision of the churners [MRS08] as ``sklearn.metrics.average_precision_score``
    (``pr_auc``)."""
    s = _sorted(w, p)
    return _squeeze(w, _average_precision(s.sum(y), s.count))


def weighted_average_precision_active(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Average precision of ``1 - p`` for the customers who do not churn (``pr_auc_active``):
    the churn order read backwards."""
    s = _sorted(w, p)
    return _squeeze(w, _average_precision((s.count - s.sum(y))[:, ::-1], s.count[:, ::-1]))


def weighted_capture(w: FloatArray, y: FloatArray, p: FloatArray,
                     fraction: float = TOP_FRACTION) -> FloatArray:
    """Share of all of ``y`` (churners; spend) in the top ``fraction`` of rows by ``p``
    (``capture_at_10``, ``top10_spend_share``)."""
    s = _sorted(w, p)
    gv = s.sum(y)
    (top,) = _cum_at(s.count, [gv], fraction * s.count.sum(axis=1)[:, None])
    total = gv.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _squeeze(w, np.where(total > 0, top[:, 0] / total, np.nan))


def weighted_lift(w: FloatArray, y: FloatArray, p: FloatArray,
                  fraction: float = TOP_FRACTION) -> FloatArray:
    """Churn rate in the top ``fraction`` by ``p`` ÷ overall churn rate (``lift_at_10``)."""
    return weighted_capture(w, y, p, fraction) / fraction


def _gini(w: FloatArray, y: FloatArray, score: FloatArray) -> FloatArray:
    # evaluate._gini on the resampled rows: mean over positions i of (share of y in the top i
    # by score) - i/N. Within a tie group of c rows holding g, starting after C, the positions
    # sum to c·C + g·(c + 1)/2 (linear within the group, as evaluate does).
    s = _sorted(w, score)
    gw, gv = s.count, s.sum(y)
    before = np.cumsum(gv, axis=1) - gv
    n, total = gw.sum(axis=1), gv.sum(axis=1)
    area = (gw * before + gv * (gw + 1.0) / 2.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(area / (n * total) - (n + 1.0) / (2.0 * n))


def weighted_normalized_gini(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Normalized Gini [Porto Seguro 2017]: Gini of ``p`` ÷ Gini of the perfect order."""
    perfect = _gini(w, y, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _squeeze(w, np.where(perfect > 0, _gini(w, y, p) / perfect, np.nan))


def _ranks(w: FloatArray, v: FloatArray) -> FloatArray:
    # The average rank of each row among the resampled rows, highest first: rows before its
    # tie group plus (c + 1)/2 for a group of c drawn rows. (Ranking both sides highest first
    # instead of lowest first leaves a correlation unchanged.)
    s = _sorted(w, v)
    rank = np.cumsum(s.count, axis=1) - s.count + (s.count + 1.0) / 2.0
    return np.asarray(rank[:, s.group])


def weighted_spearman(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
    """Spearman rank correlation [Spearman 1904]: the Pearson correlation of average ranks;
    NaN when either side is constant."""
    w2 = np.atleast_2d(w)
    ra, rb = _ranks(w, y), _ranks(w, p)
    n = w2.sum(axis=1, keepdims=True)
    ra = ra - (w2 * ra).sum(axis=1, keepdims=True) / n
    rb = rb - (w2 * rb).sum(axis=1, keepdims=True) / n
    denom = np.sqrt((w2 * ra * ra).sum(axis=1) * (w2 * rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return _squeeze(w, np.where(denom > 1e-12, (w2 * ra * rb).sum(axis=1) / denom, np.nan))


def weighted_decile_calibration_error(w: FloatArray, y: FloatArray, p: FloatArray,
                                      n_bins: int = 10) -> FloatArray:
    """Σ over the prediction deciles of |Σ predicted − Σ actual| ÷ Σ actual
    (:func:`churnguard.model.evaluate.decile_calibration_error`)."""
    s = _sorted(w, p)
    # Deciles count from the lowest predictions: the order read backwards.
    gw, gp, gy = s.count[:, ::-1], s.sum(p)[:, ::-1], s.sum(y)[:, ::-1]
    n = gw.sum(axis=1)
    cp, cy = _cum_at(gw, [gp, gy], n[:, None] * np.arange(n_bins + 1) / n_bins)
    gap = np.abs(np.diff(cp - cy, axis=1)).sum(axis=1)
    total = gy.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _squeeze(w, np.where(total > 0, gap / total, np.nan))


def on_rows(metric: WeightedMetric, rows: npt.NDArray[np.bool_]) -> WeightedMetric:
    """``metric`` among the rows where ``rows`` is true (e.g. the customers active at the
    cutoff), the others weighted 0."""
    def sub(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
        return metric(w[..., rows], y[rows], p[rows])
    return sub


def share_of(rows: npt.NDArray[np.bool_]) -> WeightedMetric:
    """The share of the resampled rows where ``rows`` is true (``active_share_365d``)."""
    flag = rows.astype(np.float64)

    def share(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
        return _mean(w, flag)
    return share


def mean_of(values: FloatArray) -> WeightedMetric:
    """The mean of a per-row quantity over the resampled rows (``interval_width``)."""
    def mean(w: FloatArray, y: FloatArray, p: FloatArray) -> FloatArray:
        return _mean(w, values)
    return mean


#: Metrics that describe the customers, not a model (the same for every model on a snapshot):
#: they have intervals but no differences between models.
DESCRIPTORS = frozenset({"base_rate", f"active_share_{ACTIVE_DAYS}d",
                         f"base_rate_active_{ACTIVE_DAYS}d", "total_actual", "n"})

#: The weighted metric of each key of :func:`churnguard.model.evaluate.churn_metrics` (``n``
#: has no interval: it is the size of every resample).
CHURN_METRICS: dict[str, WeightedMetric] = {
    "roc_auc": weighted_roc_auc,
    "pr_auc": weighted_average_precision,
    "pr_auc_active": weighted_average_precision_active,
    "log_loss": weighted_log_loss,
    "brier": weighted_brier,
    "ece": weighted_ece,
    "lift_at_10": weighted_lift,
    "capture_at_10": weighted_capture,
    "base_rate": weighted_rate,
}

#: The weighted metric of each key of :func:`churnguard.model.evaluate.clv_metrics`, and the
#: gate's |total error|.
CLV_METRICS: dict[str, WeightedMetric] = {
    "mae": weighted_mae,
    "rmse": weighted_rmse,
    "poisson_deviance": weighted_poisson_deviance,
    "spearman": weighted_spearman,
    "normalized_gini": weighted_normalized_gini,
    "top10_spend_share": weighted_capture,
    "decile_calibration_error": weighted_decile_calibration_error,
    "total_error": weighted_total_error,
    "abs_total_error": weighted_abs_total_error,
    "total_pred": weighted_total_pred,
    "total_actual": weighted_total_actual,
}


def active_churn_metrics(days_since_last_purchase: npt.ArrayLike,
                         days: int = ACTIVE_DAYS) -> dict[str, WeightedMetric]:
    """The weighted metrics of :func:`churnguard.model.evaluate.active_churn_metrics`: churn
    ranking among the customers active at the cutoff."""
    active = active_at_cutoff(days_since_last_purchase, days)
    return {f"roc_auc_active_{days}d": on_rows(weighted_roc_auc, active),
            f"active_share_{days}d": share_of(active),
            f"base_rate_active_{days}d": on_rows(weighted_rate, active)}


def interval_metrics(y: npt.ArrayLike, low: npt.ArrayLike, high: npt.ArrayLike,
                     nominal: npt.ArrayLike) -> dict[str, WeightedMetric]:
    """The weighted metrics of :func:`churnguard.model.evaluate.interval_metrics` of one
    model's CLV intervals; ``nominal`` is each row's max(level, P(spend = 0))."""
    yy = np.asarray(y, dtype=np.float64)
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    inside = ((yy >= lo) & (yy <= hi)).astype(np.float64)
    buyers = yy > 0

    def among(rows: npt.NDArray[np.bool_]) -> WeightedMetric:
        return on_rows(lambda w, y, p: _mean(w, inside[rows]), rows)

    return {"interval_coverage": mean_of(inside),
            "interval_nominal": mean_of(np.asarray(nominal, dtype=np.float64)),
            "interval_coverage_buyers": among(buyers),
            "interval_coverage_nonbuyers": among(~buyers),
            "interval_width": mean_of(hi - lo)}


# ---------------------------------------------------------------------------------------------
# The bootstrap
# ---------------------------------------------------------------------------------------------


Interval = tuple[float, float]


def percentile_interval(draws: npt.ArrayLike, level: float = BOOTSTRAP_LEVEL) -> Interval:
    """The percentile interval (Efron & Tibshirani 1993, ch. 13.3) of bootstrap replications
    at ``level``, interpolated linearly as ``numpy.percentile``. Resamples where the metric is
    undefined (NaN: no churner drawn) are left out; infinite ones (a Poisson deviance of ∞)
    take part, so a bound can be infinite."""
    d = np.sort(np.asarray(draws, dtype=np.float64))
    d = d[~np.isnan(d)]
    if not d.size:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    return _quantile(d, tail), _quantile(d, 1.0 - tail)


def _quantile(d: FloatArray, q: float) -> float:
    h = (d.size - 1) * q
    lo, frac = math.floor(h), h - math.floor(h)
    a, b = float(d[lo]), float(d[min(lo + 1, d.size - 1)])
    # numpy's a + frac·(b − a) is NaN when a bound is infinite; the limit is the infinite one.
    if frac == 0.0 or a == b:
        return a
    if math.isinf(a) or math.isinf(b):
        return a if math.isinf(a) else b
    return a + frac * (b - a)


@dataclass(frozen=True)
class Bootstrap:
    """Every model's metrics on the same bootstrap resamples of one test snapshot."""

    #: model -> metric key -> value on each resample.
    draws: dict[str, dict[str, FloatArray]]
    resamples: int
    seed: int
    level: float

    def interval(self, model: str, key: str) -> Interval:
        """The percentile interval of ``model``'s ``key``."""
        return percentile_interval(self.draws[model][key], self.level)

    def difference(self, model: str, other: str, key: str) -> Interval:
        """The paired interval of ``model``'s ``key`` minus ``other``'s (both on the same
        resamples); a resample where it is undefined (either NaN, or both infinite) is left
        out."""
        with np.errstate(invalid="ignore"):
            d = self.draws[model][key] - self.draws[other][key]
        return percentile_interval(d, self.level)

    def intervals(self, model: str) -> dict[str, Interval]:
        """Every metric of ``model`` with its interval."""
        return {key: self.interval(model, key) for key in self.draws[model]}


def bootstrap(
    y: npt.ArrayLike, preds: Mapping[str, npt.ArrayLike], metrics: Mapping[str, WeightedMetric],
    *, extra: Mapping[str, Mapping[str, WeightedMetric]] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> Bootstrap:
    """Score every model of ``preds`` (predictions for the rows of ``y``) under every metric,
    and under its own ``extra`` ones (e.g. the coverage of its intervals), on the same
    ``resamples`` bootstrap resamples of the rows (Efron & Tibshirani 1993)."""
    yy = np.asarray(y, dtype=np.float64)
    pp = {name: np.asarray(p, dtype=np.float64) for name, p in preds.items()}
    fns = {name: {**metrics, **(extra or {}).get(name, {})} for name in pp}
    parts: dict[str, dict[str, list[FloatArray]]] = {
        name: {key: [] for key in fns[name]} for name in pp}
    for w in resample_weights(yy.size, resamples, seed):
        for name, p in pp.items():
            for key, fn in fns[name].items():
                parts[name][key].append(np.asarray(fn(w, yy, p), dtype=np.float64))
    _SORTED.clear()  # the last block's sorted copies are large and no longer needed
    draws = {name: {key: np.concatenate(v) for key, v in by_key.items()}
             for name, by_key in parts.items()}
    return Bootstrap(draws, resamples, seed, level)


def paired_bootstrap(
    y: npt.ArrayLike, pred: npt.ArrayLike, baseline: npt.ArrayLike, metric: WeightedMetric, *,
    higher_is_better: bool, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[float, float, float, float]:
    """(churnguard's value, the baseline's, low, high): the percentile interval at ``level``
    of the gain of ``pred`` over ``baseline`` under ``metric`` (how much better ``pred`` is),
    both scored on the *same* resamples of customers (paired)."""
    yy = np.asarray(y, dtype=np.float64)
    a, b = np.asarray(pred, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    boot = bootstrap(yy, {"a": a, "b": b}, {"m": metric}, resamples=resamples, seed=seed,
                     level=level)
    low, high = boot.difference("a", "b", "m")
    if not higher_is_better:
        low, high = -high, -low
    ones = np.ones(yy.size)
    return float(metric(ones, yy, a)), float(metric(ones, yy, b)), low, high
