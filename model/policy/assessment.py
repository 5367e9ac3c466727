"""What the policy concludes about each scored customer: risk and value tier, signals, lifecycle
stage, which actions they are eligible for, and the expected value of each.

Everything here is a pure function of a *score frame*: any mapping from column name to equally
long arrays (a pandas DataFrame or a dict of numpy arrays) holding the feature columns plus
``churn_probability`` and ``clv``. A column the frame lacks reads as NaN, which turns its
signals off. The API, the batch job and Spark all call :func:`assess` through
:func:`churnguard.model.score.score_matrix`, with the :class:`~churnguard.model.policy.Policy`
stored in the registered bundle, so every path recommends the same actions (README, "Scoring
API").

The expected value of action *a* for customer *i* is::

    EV(i, a) = p_churn(i) × effect(a) × CLV(i) − cost(a)

where ``effect`` is the relative reduction of the churn probability the action brings: the
churn it is expected to prevent, valued at the customer's expected spend, minus what it costs.
Eligible actions with EV > 0 are recommended, best first (:meth:`Assessment.recommendations`);
:func:`~churnguard.model.policy.plan_campaign` chooses among them under a budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from churnguard.model.policy.catalog import NO_ACTION, RISK_TIERS, VALUE_TIERS, Policy
from churnguard.model.policy.reasons import EVIDENCE_COLUMNS, Recommendations, _recommend

#: A score frame: column name → equally long arrays (a DataFrame or a dict of numpy arrays).
Frame = Mapping[str, Any]


def _col(frame: Frame, name: str, n: int) -> np.ndarray:
    """A float column of the frame, or NaN when the frame has no such column."""
    if name in frame:
        return np.asarray(frame[name], dtype=float)
    return np.full(n, np.nan)


def _len(frame: Frame) -> int:
    return len(np.asarray(frame["churn_probability"]))


# ---------------------------------------------------------------------------------------------
# Tiers, signals, stages


def risk_tier(p: np.ndarray, policy: Policy) -> np.ndarray:
    """Risk tier of each churn probability, split at :attr:`Policy.risk_tiers`."""
    idx = np.searchsorted(np.asarray(policy.risk_tiers), np.asarray(p, dtype=float),
                          side="right")
    return np.asarray(RISK_TIERS, dtype=object)[idx]


def value_tier(clv: np.ndarray, policy: Policy) -> np.ndarray:
    """Value tier of each CLV; with no fitted cut points every customer is 'medium'."""
    clv = np.asarray(clv, dtype=float)
    if policy.value_cuts is None:
        return np.full(clv.shape, "medium", dtype=object)
    idx = np.searchsorted(np.asarray(policy.value_cuts), clv, side="right")
    return np.asarray(VALUE_TIERS, dtype=object)[idx]


def usual_interactions(frame: Frame, n: int | None = None) -> dict[str, np.ndarray]:
    """How many interactions the customer would have had in the last 30 and in the last 90
    days at their usual rate: their rate over the year before the window (or over their tenure
    before it, if shorter), ``expected_events_30d`` and ``expected_events_90d``.

    The year's count is the one ``interaction_trend_90_365`` divides by (features/definitions:
    the 90-day rate over the rate in the last ``min(365, max(90, tenure_days))`` days), so it is
    ``events_90d × span / (90 × interaction_trend_90_365)``. NaN where it is unknown: no
    interaction in the last 90 days (the trend is 0 or missing), or too short a tenure to have
    a "before" (the 90-day window needs more than 90 days).
    """
    n = _len(frame) if n is None else n
    e30 = _col(frame, "events_30d", n)
    e90 = _col(frame, "events_90d", n)
    trend = _col(frame, "interaction_trend_90_365", n)
    span = np.clip(_col(frame, "tenure_days", n), 90.0, 365.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        year = np.where((e90 > 0) & (trend > 0), e90 * span / (90.0 * trend), np.nan)
        exp30 = 30.0 * (year - e30) / (span - 30.0)
        exp90 = np.where(span > 90.0, 90.0 * (year - e90) / (span - 90.0), np.nan)
    return {"expected_events_30d": np.where(np.isfinite(exp30), exp30, np.nan),
            "expected_events_90d": np.where(np.isfinite(exp90), exp90, np.nan)}


def interaction_decline(frame: Frame, policy: Policy,
                        usual: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Which window shows an interaction decline (0: none; else 30 or 90 days): interactions
    in the last 30 days at most ``declining_interaction_ratio`` × the usual number
    (:func:`usual_interactions`), for a customer who usually has at least
    ``declining_min_interactions`` in 30 days; else the same over the last 90 days (three
    times as many usually)."""
    n = _len(frame)
    life = policy.lifecycle
    usual = usual if usual is not None else usual_interactions(frame, n)
    out = np.zeros(n, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for w, k in ((90, 3.0), (30, 1.0)):  # the 30-day window wins where both show it
            seen = _col(frame, f"events_{w}d", n)
            exp = np.asarray(usual[f"expected_events_{w}d"], dtype=float)
            hit = (seen <= life.declining_interaction_ratio * exp) & (
                exp >= k * life.declining_min_interactions)
            out[hit] = w
    return out


def signals(frame: Frame, policy: Policy,
            decline: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Boolean customer signals used by eligibility rules, stages and reasons. A signal is off
    where the facts its reason quotes are missing (:func:`~churnguard.model.policy.evidence`).
    ``decline``: :func:`interaction_decline` of the frame, when the caller has it already."""
    n = _len(frame)
    if decline is None:
        decline = interaction_decline(frame, policy)
    life = policy.lifecycle
    with np.errstate(invalid="ignore"):
        orders_365 = _col(frame, "orders_365d", n)
        return {
            "complaints": _col(frame, "complaints_90d", n) >= 1,
            "support_friction": _col(frame, "tickets_90d", n) >= 2,
            "purchase_decline": (_col(frame, "purchase_trend", n)
                                 <= life.declining_purchase_trend) & (orders_365 >= 2),
            "interaction_decline": decline > 0,
            "overdue": (_col(frame, "overdue_ratio", n) >= life.declining_overdue_ratio)
                       & np.isfinite(_col(frame, "days_since_last_purchase", n)),
            "inactive": _col(frame, "days_since_last_interaction", n) >= 30,
            "new_customer": _col(frame, "tenure_days", n) < life.new_days,
            # NaN (no subscription, or no known term end) compares False: off.
            "renewal_due": _col(frame, "sub_days_to_renewal", n) <= life.renewal_window_days,
        }


def lifecycle_stage(frame: Frame, policy: Policy,
                    sig: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Lifecycle stage per customer, first match wins (README, "Scoring API"; thresholds:
    :class:`~churnguard.model.policy.Lifecycle`):

    - **lapsed**: no purchase and no interaction for ``lapsed_quiet_days`` (a customer who
      never bought, or never interacted, counts as quiet since signing up), or a buyer with
      no purchase for ``lapsed_overdue_ratio`` × their usual gap and at least 60 days;
    - **new**: signed up less than ``new_days`` ago;
    - **at_risk**: declining (below) with a high churn risk (the top risk tier);
    - **declining**: interactions fell to at most ``declining_interaction_ratio`` of the
      customer's own usual rate, over the last 30 or 90 days (the ``interaction_decline``
      signal, whose fact every reason quotes);
    - **loyal**: tenure of ``loyal_days`` and ``loyal_min_purchase_days`` purchase days;
    - **active**: everyone else.

    Purchases alone make no stage other than lapsed: buying is too irregular for a dip in it
    to tell a declining customer from a steady one (the purchase_decline and overdue signals are
    still quoted as facts). Stages read only the features, and at_risk the churn probability
    too; ``bench/lifecycle.py`` measures them against the demo data's latent stages."""
    n = _len(frame)
    life = policy.lifecycle
    sig = sig if sig is not None else signals(frame, policy)
    if policy.label == "contractual":
        return contract_stage(frame, policy, sig)
    with np.errstate(invalid="ignore"):
        recency = _col(frame, "days_since_last_purchase", n)
        silence = _col(frame, "days_since_last_interaction", n)
        tenure = _col(frame, "tenure_days", n)
        days = _col(frame, "purchase_days_total", n)
        days = np.where(np.isnan(days), 0.0, days)  # NaN compares as no purchase day
        bought = days > 0
        overdue = _col(frame, "overdue_ratio", n)
        p = np.asarray(frame["churn_probability"], dtype=float)
        no_purchase = np.where(bought, recency, tenure)
        no_interaction = np.where(np.isnan(silence), tenure, silence)
        lapsed = (no_purchase >= life.lapsed_quiet_days) & (
            no_interaction >= life.lapsed_quiet_days)
        lapsed |= bought & (overdue >= life.lapsed_overdue_ratio) & (recency >= 60)
        new = tenure < life.new_days
        declining = np.asarray(sig["interaction_decline"], dtype=bool)
        at_risk = declining & (p >= policy.risk_tiers[1])
        loyal = (tenure >= life.loyal_days) & (days >= life.loyal_min_purchase_days)
    return _first_match(n, [(lapsed, "lapsed"), (new, "new"), (at_risk, "at_risk"),
                            (declining, "declining"), (loyal, "loyal")], "active")


def contract_stage(frame: Frame, policy: Policy, sig: Mapping[str, np.ndarray]) -> np.ndarray:
    """Lifecycle stage of a contractual model's customers, first match wins:

    - **cancelled**: no subscription active at the cutoff;
    - **onboarding**: the first subscription started less than ``onboarding_days`` ago;
    - **at_renewal_risk**: the current term ends within ``renewal_window_days``
      (``renewal_due``) and the churn risk is at least medium or usage is falling
      (``interaction_decline``): most contractual churn happens at renewal;
    - **active**: every other subscriber."""
    n = _len(frame)
    life = policy.lifecycle
    with np.errstate(invalid="ignore"):
        cancelled = ~(_col(frame, "sub_active", n) >= 1)
        onboarding = _col(frame, "sub_tenure_days", n) < life.onboarding_days
        p = np.asarray(frame["churn_probability"], dtype=float)
        at_risk = np.asarray(sig["renewal_due"], dtype=bool) & (
            (p >= policy.risk_tiers[0]) | np.asarray(sig["interaction_decline"], dtype=bool))
    return _first_match(n, [(cancelled, "cancelled"), (onboarding, "onboarding"),
                            (at_risk, "at_renewal_risk")], "active")


def _first_match(n: int, rules: list[tuple[np.ndarray, str]], default: str) -> np.ndarray:
    """An object array of the name of each row's first rule that holds, else ``default``
    (``np.select``'s result; assigned from the last rule to the first, so the first wins,
    which costs a few microseconds where np.select costs tens on the API's single row)."""
    out = np.full(n, default, dtype=object)
    for hit, name in reversed(rules):
        out[np.asarray(hit, dtype=bool)] = name
    return out


# ---------------------------------------------------------------------------------------------
# Eligibility and expected value


def eligibility(frame: Frame, policy: Policy, stage: np.ndarray, tier: np.ndarray,
                sig: Mapping[str, np.ndarray]) -> np.ndarray:
    """n × len(actions) boolean matrix: which actions each customer may get (no_action: never
    as a recommendation; it is what remains when nothing else pays)."""
    n = _len(frame)
    p = np.asarray(frame["churn_probability"], dtype=float)
    clv = np.asarray(frame["clv"], dtype=float)
    out = np.zeros((n, len(policy.actions)), dtype=bool)
    for j, a in enumerate(policy.actions):
        if a.id == NO_ACTION or (a.label is not None and a.label != policy.label):
            continue
        ok = (p >= a.risk[0]) & (p <= a.risk[1]) & (clv >= a.min_clv)
        if a.stages:
            ok &= _member(stage, a.stages)
        if a.value_tiers:
            ok &= _member(tier, a.value_tiers)
        if a.signals:
            ok &= np.logical_or.reduce([np.asarray(sig[s], dtype=bool) for s in a.signals])
        out[:, j] = ok
    return out


def _member(values: np.ndarray, allowed: tuple[str, ...]) -> np.ndarray:
    """``np.isin`` for an object array of short strings: a generator on the API's few rows,
    element-wise comparisons on a batch."""
    if len(values) <= 64:
        return np.fromiter((v in allowed for v in values), dtype=bool, count=len(values))
    return np.logical_or.reduce([values == v for v in allowed]) if allowed else np.zeros(
        len(values), dtype=bool)


def expected_values(frame: Frame, policy: Policy, eligible: np.ndarray) -> np.ndarray:
    """n × len(actions) EV = p × effect × CLV − cost, −inf where not eligible."""
    p = np.asarray(frame["churn_probability"], dtype=float)[:, None]
    clv = np.asarray(frame["clv"], dtype=float)[:, None]
    ev = p * policy.effects[None, :] * clv - policy.costs[None, :]
    return np.where(eligible, ev, -np.inf)


# ---------------------------------------------------------------------------------------------
# The assessment of a batch


def evidence_columns(frame: Frame) -> dict[str, np.ndarray]:
    """The float columns the reasons quote (:data:`~churnguard.model.policy.EVIDENCE_COLUMNS`,
    read by :func:`~churnguard.model.policy.evidence`), each converted once for the whole
    batch, with the usual interaction counts (:func:`usual_interactions`)."""
    n = _len(frame)
    return {**{name: _col(frame, name, n) for name in EVIDENCE_COLUMNS},
            **usual_interactions(frame, n)}


@dataclass
class Assessment:
    """The policy's view of a batch of scored customers (arrays aligned with the rows)."""

    risk_tier: np.ndarray
    value_tier: np.ndarray
    lifecycle_stage: np.ndarray
    signals: dict[str, np.ndarray]
    ev: np.ndarray  # n × actions, −inf where not eligible
    columns: dict[str, np.ndarray]  # evidence_columns of the frame, for the reasons
    _recs: Recommendations | None = field(default=None, init=False, repr=False)

    def recommendations(self, policy: Policy) -> Recommendations:
        """Every row's recommended actions: positive EV, best first, each with a reason a CRM
        user can read; the catalog's no_action (with its reason) when nothing pays. Computed
        once per batch, with the per-row work reduced to formatting text."""
        if self._recs is None:
            self._recs = _recommend(self, policy)
        return self._recs

    def actions(self, frame: Frame, policy: Policy, i: int) -> list[dict[str, Any]]:
        """Recommended actions of row ``i`` as dicts (see :meth:`recommendations`)."""
        out: list[dict[str, Any]] = orjson.loads(self.recommendations(policy).json[i])
        return out

    def actions_json(self, policy: Policy) -> list[str]:
        """Each row's :meth:`actions` as compact JSON text."""
        return self.recommendations(policy).json


def assess(frame: Frame, policy: Policy) -> Assessment:
    """Tiers, stages, signals and the EV matrix of every row of a score frame."""
    columns = evidence_columns(frame)
    # One interaction_decline for the signals and the reasons (it reads the usual counts).
    window = columns["interaction_decline_window"] = interaction_decline(frame, policy, columns)
    sig = signals(frame, policy, window)
    stage = lifecycle_stage(frame, policy, sig)
    tier = value_tier(np.asarray(frame["clv"], dtype=float), policy)
    elig = eligibility(frame, policy, stage, tier, sig)
    return Assessment(risk_tier=risk_tier(np.asarray(frame["churn_probability"]), policy),
                      value_tier=tier, lifecycle_stage=stage, signals=sig,
                      ev=expected_values(frame, policy, elig), columns=columns)

