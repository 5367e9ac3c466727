"""The registered model's versions, its aliases and the promotion rule (README, "Promotion").

Aliases: ``challenger`` points at the newest version, ``champion`` at the version that scores.
A version becomes champion only when, on its out-of-time test snapshots,

1. each snapshot holds enough of both outcomes (:func:`class_count_problem`: churners and
   non-churners, buyers and non-buyers; ``CHURNGUARD_GATE_MIN_POSITIVES`` /
   ``CHURNGUARD_GATE_MIN_NEGATIVES``),
2. it beats the baselines beyond the noise of a paired bootstrap over customers
   (:func:`baseline_decision`, :mod:`churnguard.training.bootstrap`), and
3. it beats the current champion (:func:`promotion_decision`, the champion re-scored on the
   new test cutoffs) when there is one, and that champion answers the same question (label
   kind, churn horizon, grace period, CLV horizon),

or when a user forces it with ``churnguard promote VERSION --force``. The decision and its
reason are tags on the version (``gate_decision``, ``gate_reason``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from churnguard.training.bootstrap import (
    BOOTSTRAP_RESAMPLES,
    Bootstrap,
    WeightedMetric,
    paired_bootstrap,
)

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


def compare(metric: str, baseline: str, y: npt.ArrayLike, pred: npt.ArrayLike,
            other: npt.ArrayLike, fn: WeightedMetric, *, higher_is_better: bool) -> Comparison:
    """:func:`~churnguard.training.bootstrap.paired_bootstrap` of ``pred`` against the
    baseline's ``other``, as a :class:`Comparison`."""
    value, base, low, high = paired_bootstrap(y, pred, other, fn,
                                              higher_is_better=higher_is_better)
    return Comparison(metric, baseline, value, base, low, high)


def compare_in(boot: Bootstrap, values: Mapping[str, Mapping[str, float]], metric: str,
               model: str, baseline: str, key: str, *, higher_is_better: bool) -> Comparison:
    """:func:`compare` read from a bootstrap already run on the test snapshot (``values``:
    each model's metrics there), so the gate and the report judge on the same resamples."""
    low, high = boot.difference(model, baseline, key)
    if not higher_is_better:
        low, high = -high, -low
    return Comparison(metric, baseline, float(values[model][key]),
                      float(values[baseline][key]), low, high)


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
    """Every version of ``name``, newest first: version, aliases, run, gate tags, key metrics
    and, for versions trained with them, the key metrics' 95 % bootstrap intervals
    (``intervals``: metric -> [low, high], from the run's ``<metric>_lo`` / ``_hi``)."""
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
            "intervals": {k: [metrics[f"{k}_lo"], metrics[f"{k}_hi"]] for k in KEY_METRICS
                          if f"{k}_lo" in metrics and f"{k}_hi" in metrics},
        })
    rows.sort(key=lambda r: int(r["version"]), reverse=True)
    return rows
