"""The registered model's versions, its aliases and the promotion rule (README, "Promotion").

Aliases: ``challenger`` points at the newest version, ``champion`` at the version that scores.
A version becomes champion only when, on its out-of-time test snapshots,

1. each snapshot holds enough of both outcomes (:func:`class_count_problem`: churners and
   non-churners, buyers and non-buyers; ``CHURNGUARD_GATE_MIN_POSITIVES`` /
   ``CHURNGUARD_GATE_MIN_NEGATIVES``),
2. it beats the baselines beyond the noise of a paired bootstrap over customers
   (:func:`baseline_decision`), and
3. it beats the current champion (:func:`promotion_decision`, the champion re-scored on the
   new test cutoffs) when there is one, and that champion answers the same question (label
   kind, churn horizon, grace period, CLV horizon),

or when a user forces it with ``churnguard promote VERSION --force``. The decision and its
reason are tags on the version (``gate_decision``, ``gate_reason``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

CHAMPION = "champion"
CHALLENGER = "challenger"

#: Tolerances of the promotion rule (see :func:`promotion_decision`).
LOG_LOSS_TOL = 0.005  # relative
CLV_MAE_TOL = 0.02  # relative
CLV_GINI_TOL = 0.01  # absolute

#: Run metrics shown by ``churnguard models``.
KEY_METRICS = ("test_churn_roc_auc", "test_churn_log_loss", "test_churn_ece",
               "test_clv_mae", "test_clv_normalized_gini", "test_clv_total_error")


#: Defaults of the class minimums (``Settings.gate_min_positives`` / ``gate_min_negatives``).
DEFAULT_MIN_POSITIVES = 50
DEFAULT_MIN_NEGATIVES = 50
#: The paired bootstrap of :func:`paired_bootstrap`: resamples, seed, interval level.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def class_count_problem(y: npt.ArrayLike, *, positive: str, negative: str, snapshot: str,
                        min_positives: int = DEFAULT_MIN_POSITIVES,
                        min_negatives: int = DEFAULT_MIN_NEGATIVES) -> str | None:
    """Why a test snapshot with outcomes ``y`` (1 = positive) is too small to judge a model
    on, or None: it needs ``min_positives`` positives and ``min_negatives`` negatives.

    ``positive``/``negative`` name them in the plural ("churners", "non-churners").
    """
    arr = np.asarray(y, dtype=float)
    n_pos, n = int((arr > 0).sum()), int(arr.size)
    n_neg = n - n_pos
    if n_pos >= min_positives and n_neg >= min_negatives:
        return None
    return (f"{n_pos} {positive} and {n_neg} {negative} among {n} customers in the {snapshot} "
            f"test snapshot; the gate needs at least {min_positives} {positive} and "
            f"{min_negatives} {negative} (CHURNGUARD_GATE_MIN_POSITIVES / "
            "CHURNGUARD_GATE_MIN_NEGATIVES) to tell a model from noise")


# ---------------------------------------------------------------------------------------------
# Paired bootstrap over customers
# ---------------------------------------------------------------------------------------------

#: A metric of weighted rows: (weights, labels, predictions) -> value. A bootstrap resample is
#: the multinomial weights of the customers drawn (each row counted as often as it was drawn).
WeightedMetric = Callable[[FloatArray, FloatArray, FloatArray], float]


def weighted_log_loss(w: FloatArray, y: FloatArray, p: FloatArray) -> float:
    """Mean log loss [Good 1952] of probabilities ``p``, rows weighted by ``w`` (``p`` clipped
    to float64 epsilon as :func:`churnguard.model.evaluate.log_loss`)."""
    eps = float(np.finfo(np.float64).eps)
    q = np.clip(p, eps, 1.0 - eps)
    return -float(w @ (y * np.log(q) + (1.0 - y) * np.log1p(-q))) / float(w.sum())


def weighted_roc_auc(w: FloatArray, y: FloatArray, p: FloatArray) -> float:
    """ROC AUC (Mann-Whitney, ties count one half; Hanley & McNeil 1982) of rows weighted by
    ``w``: the weighted share of (churner, non-churner) pairs ranked the right way round."""
    order = np.argsort(p, kind="stable")
    ps, pos, neg = p[order], (w * y)[order], (w * (1.0 - y))[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    gpos, gneg = np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)
    below = np.cumsum(gneg) - gneg
    total = float(gpos.sum()) * float(gneg.sum())
    return float(gpos @ (below + 0.5 * gneg)) / total if total > 0 else math.nan


def weighted_rmse(w: FloatArray, y: FloatArray, p: FloatArray) -> float:
    """Root-mean-squared error of predictions ``p``, rows weighted by ``w``."""
    return math.sqrt(float(w @ (p - y) ** 2) / float(w.sum()))


def weighted_abs_total_error(w: FloatArray, y: FloatArray, p: FloatArray) -> float:
    """|Σ prediction − Σ actual| ÷ Σ actual over rows weighted by ``w`` (the size of
    :func:`churnguard.model.evaluate.clv_metrics`' ``total_error``)."""
    actual = float(w @ y)
    return abs(float(w @ p) - actual) / actual if actual > 0 else math.nan


@dataclass(frozen=True)
class Comparison:
    """churnguard against one baseline on one metric: both values on the test snapshot and the
    paired bootstrap interval of the *gain* (how much better churnguard is: the baseline's
    value minus churnguard's for a loss, churnguard's minus the baseline's for ROC AUC)."""

    metric: str
    baseline: str
    value: float
    baseline_value: float
    low: float
    high: float

    @property
    def better(self) -> bool:
        """Better beyond noise: the whole interval of the gain is above 0."""
        return self.low > 0

    @property
    def worse(self) -> bool:
        """Worse beyond noise: the whole interval of the gain is below 0."""
        return self.high < 0

    def describe(self) -> str:
        return (f"{self.metric} {self.value:.4g} vs {self.baseline_value:.4g} "
                f"(gain 95 % interval {self.low:+.4g} to {self.high:+.4g})")


def paired_bootstrap(
    y: npt.ArrayLike, pred: npt.ArrayLike, baseline: npt.ArrayLike, metric: WeightedMetric, *,
    higher_is_better: bool, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[float, float, float, float]:
    """(churnguard's value, the baseline's, low, high): the percentile interval (Efron &
    Tibshirani 1993, ch. 13) at ``level`` of the gain of ``pred`` over ``baseline`` under
    ``metric``, both scored on the *same* resamples of customers (paired), so noise common to
    the two cancels. Resamples whose metric is undefined (e.g. no churner drawn) are left out.
    """
    yy = np.asarray(y, dtype=float)
    a, b = np.asarray(pred, dtype=float), np.asarray(baseline, dtype=float)
    n = yy.size
    ones = np.ones(n)
    sign = 1.0 if higher_is_better else -1.0
    rng = np.random.default_rng(seed)
    gains = np.empty(resamples)
    for i in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        gains[i] = sign * (metric(w, yy, a) - metric(w, yy, b))
    gains = gains[np.isfinite(gains)]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = (np.percentile(gains, [tail, 100.0 - tail]) if gains.size
                 else (math.nan, math.nan))
    return metric(ones, yy, a), metric(ones, yy, b), float(low), float(high)


def compare(metric: str, baseline: str, y: npt.ArrayLike, pred: npt.ArrayLike,
            other: npt.ArrayLike, fn: WeightedMetric, *, higher_is_better: bool) -> Comparison:
    """:func:`paired_bootstrap` of ``pred`` against the baseline's ``other``, as a
    :class:`Comparison`."""
    value, base, low, high = paired_bootstrap(y, pred, other, fn,
                                              higher_is_better=higher_is_better)
    return Comparison(metric, baseline, value, base, low, high)


def baseline_decision(comparisons: list[Comparison]) -> Decision:
    """Does churnguard beat the baselines? Rule: worse beyond noise on no comparison, and
    better beyond noise on at least one (README, "Promotion")."""
    if not comparisons:
        return Decision(False, "no baseline could be compared with")
    worse = [c for c in comparisons if c.worse]
    if worse:
        return Decision(False, "worse than the baselines beyond noise on " + "; ".join(
            f"{c.baseline} {c.describe()}" for c in worse))
    better = [c for c in comparisons if c.better]
    if not better:
        return Decision(False, "not better than the baselines beyond noise on any of " + ", "
                        .join(sorted({c.metric for c in comparisons})) + " (paired bootstrap, "
                        f"{BOOTSTRAP_RESAMPLES} resamples of customers)")
    return Decision(True, "beats the baselines beyond noise on " + "; ".join(
        f"{c.baseline} {c.metric}" for c in better))


def promotion_decision(new: dict[str, float], champion: dict[str, float] | None) -> Decision:
    """Does the new version beat the champion on the same test snapshot?

    Rule: with no champion, promote. Otherwise the new version must be no worse beyond a small
    tolerance on all three of churn log loss (≤ champion * (1 + 0.5 %)), CLV MAE
    (≤ champion * (1 + 2 %)) and CLV normalized Gini (≥ champion - 0.01), *and* strictly
    better on churn log loss or CLV MAE. Ties stay challenger. Keys: ``churn_log_loss``,
    ``clv_mae``, ``clv_normalized_gini``.
    """
    if champion is None:
        return Decision(True, "no champion yet")
    keys = ("churn_log_loss", "clv_mae", "clv_normalized_gini")
    for key in keys:
        if key not in new or not math.isfinite(new[key]):
            return Decision(False, f"new version has no finite {key}")
        if key not in champion or not math.isfinite(champion[key]):
            return Decision(True, f"champion has no finite {key} on the new test snapshot")
    ll, c_ll = new["churn_log_loss"], champion["churn_log_loss"]
    mae, c_mae = new["clv_mae"], champion["clv_mae"]
    gini, c_gini = new["clv_normalized_gini"], champion["clv_normalized_gini"]
    summary = (f"log loss {ll:.4f} vs {c_ll:.4f}, CLV MAE {mae:.2f} vs {c_mae:.2f}, "
               f"CLV Gini {gini:.3f} vs {c_gini:.3f}")
    worse = []
    if ll > c_ll * (1 + LOG_LOSS_TOL):
        worse.append("churn log loss")
    if mae > c_mae * (1 + CLV_MAE_TOL):
        worse.append("CLV MAE")
    if gini < c_gini - CLV_GINI_TOL:
        worse.append("CLV Gini")
    if worse:
        return Decision(False, f"worse than the champion on {', '.join(worse)} ({summary})")
    if ll < c_ll or mae < c_mae:
        return Decision(True, f"beats the champion ({summary})")
    return Decision(False, f"no better than the champion ({summary})")


def alias_map(client: Any, name: str) -> dict[str, list[str]]:
    """version → aliases of the registered model ``name``."""
    model = client.get_registered_model(name)
    out: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return out


def champion_version(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(client: Any, name: str, version: str, *, force: bool = False,
            reason: str | None = None) -> Decision:
    """Point ``champion`` at ``version``.

    Without ``force`` a version whose training-time gate said ``challenger`` is refused (the
    gate compared it with the then champion on its own test snapshot); ``force`` overrides.
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise ValueError(f"model {name!r} has no version {version}") from None
    tags = mv.tags or {}
    if not force and tags.get("gate_decision") == CHALLENGER:
        return Decision(False, "the promotion gate kept this version as challenger: "
                        f"{tags.get('gate_reason', 'no reason recorded')} "
                        "(use --force to promote anyway)")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    why = reason or ("forced by the user" if force else "promoted by the user")
    client.set_model_version_tag(name, str(version), "promoted_reason", why)
    return Decision(True, why)


def list_versions(client: Any, name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: version, aliases, run, gate tags, key metrics."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = alias_map(client, name)
    except MlflowException:
        return []
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        tags = mv.tags or {}
        rows.append({
            "version": str(mv.version),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "created": int(mv.creation_timestamp or 0),
            "run_id": mv.run_id,
            "as_of": tags.get("as_of", ""),
            "test_cutoff": tags.get("test_cutoff", ""),
            "gate_decision": tags.get("gate_decision", ""),
            "gate_reason": tags.get("gate_reason", ""),
            # Versions registered before labels were tagged are non-contractual.
            "churn_label": tags.get("churn_label", "noncontractual"),
            "metrics": {k: metrics[k] for k in KEY_METRICS if k in metrics},
        })
    rows.sort(key=lambda r: int(r["version"]), reverse=True)
    return rows
