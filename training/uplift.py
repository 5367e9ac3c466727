"""Action effects estimated from campaign logs with randomised hold-outs.

The README describes how they feed the action policy ("Scoring API", "Action effects from
campaign logs").

The action catalog gives every retention action a prior ``effect``: the *relative* reduction of
the churn probability (``Action.effect``). Where the optional ``campaigns`` table logs past
contacts with a randomised hold-out (``treated`` = false: selected for the action, not
contacted), the effect of each action is measured instead:

* **outcome** of a contact at ``ts``: churned = no purchase (a transaction with a positive
  amount) in ``[ts, ts + horizon)``, the same label the churn model predicts. Only contacts
  whose window ends on or before the training as-of date are used (point in time: nothing
  after as-of is read); later contacts are counted as *pending*.
* **estimate** per action, treated vs. hold-out within the same targeted population, i.e. the
  difference-in-proportions / two-model uplift estimator on randomised data (Gutierrez &
  Gérardy 2017, "Causal inference and uplift modelling: a review of the literature", PMLR 67)
  expressed as a relative risk reduction::

      effect = 1 − RR,  RR = churn_treated / churn_control

  with the log relative-risk confidence interval of Katz, Baptista, Azen & Pike (1978,
  "Obtaining confidence intervals for the risk ratio in cohort studies", Biometrics 34(3))::

      se(log RR) = sqrt(1/a − 1/n_t + 1/c − 1/n_c),  RR · exp(± z · se)

  (``a``, ``c`` churners among ``n_t`` treated and ``n_c`` hold-out contacts; with no churner
  among the treated, 0.5 is added to each count for the interval, Haldane's correction).
  Contacts are the unit; a customer contacted several times counts once per contact.
* **replacement**: an action's prior is replaced only when the estimate is trustworthy — at
  least ``min_customers`` distinct customers in each arm, churners in the hold-out, and a
  confidence interval no wider than ``max_ci_width`` — by the estimate clipped to [0, 1]
  (a harmful or useless action gets 0, so it is never worth its cost). Otherwise the prior is
  kept. Every action records where its effect comes from (``Action.effect_source``).

The estimate is the average effect over the contacts the retention team chose in the past; it
transfers to the policy's customers as far as they resemble them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import pandas as pd

from churnguard.features.sources import Source
from churnguard.model.policy import NO_ACTION, Policy

#: Fewest distinct customers per arm (treated and hold-out) before an estimate is used.
MIN_CUSTOMERS = 200
#: Widest confidence interval of the effect (upper − lower bound) that still replaces a prior.
MAX_CI_WIDTH = 0.5
LEVEL = 0.95
PRIOR_SOURCE = "catalog prior"
OUTCOME_COLUMNS = ("customer_id", "ts", "action_id", "treated", "complete", "churned")

UnknownMode = Literal["error", "ignore"]


class UpliftError(ValueError):
    """Campaign logs or settings that cannot be used, with what is wrong (CLI exit code 2)."""


@dataclass(frozen=True)
class EffectEstimate:
    """Treated vs. hold-out churn of one action's completed contacts."""

    action_id: str
    n_treated: int
    n_control: int
    customers_treated: int
    customers_control: int
    churned_treated: int
    churned_control: int
    #: 1 − churn_treated / churn_control, not clipped; NaN when undefined.
    effect: float
    ci_low: float
    ci_high: float
    level: float = LEVEL

    @property
    def churn_treated(self) -> float:
        return self.churned_treated / self.n_treated if self.n_treated else math.nan

    @property
    def churn_control(self) -> float:
        return self.churned_control / self.n_control if self.n_control else math.nan

    @property
    def ci_width(self) -> float:
        return self.ci_high - self.ci_low

    def source(self) -> str:
        return (f"campaign log: n_treated={self.n_treated}, n_control={self.n_control}, "
                f"{self.level:.0%} CI [{self.ci_low:.3f}, {self.ci_high:.3f}]")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out |= {"churn_treated": self.churn_treated, "churn_control": self.churn_control}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in out.items()}


@dataclass(frozen=True)
class ActionEffect:
    """The effect one catalog action ends up with, and why."""

    action_id: str
    prior: float
    effect: float
    source: str
    used_estimate: bool
    reason: str
    estimate: EffectEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "estimate"}
        out["estimate"] = self.estimate.to_dict() if self.estimate else None
        return out


@dataclass(frozen=True)
class UpliftReport:
    """Every catalog action's effect with its source, and what the campaign log held."""

    as_of: date
    horizon_days: int
    min_customers: int
    max_ci_width: float
    level: float
    n_contacts: int  # completed contacts of catalog actions (the estimation sample)
    n_pending: int  # contacts before as-of whose window ends after it (not used)
    unknown_actions: dict[str, int] = field(default_factory=dict)  # id -> rows (ignored)
    actions: tuple[ActionEffect, ...] = ()

    @property
    def effects(self) -> dict[str, float]:
        return {a.action_id: a.effect for a in self.actions}

    def estimated(self) -> list[ActionEffect]:
        return [a for a in self.actions if a.used_estimate]

    def to_dict(self) -> dict[str, Any]:
        return {"method": "relative risk reduction 1 - churn_treated/churn_control on "
                          "randomised hold-outs; Katz log-RR confidence interval",
                "as_of": self.as_of.isoformat(), "horizon_days": self.horizon_days,
                "min_customers": self.min_customers, "max_ci_width": self.max_ci_width,
                "level": self.level, "n_contacts": self.n_contacts,
                "n_pending": self.n_pending, "unknown_actions": dict(self.unknown_actions),
                "actions": [a.to_dict() for a in self.actions]}

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: every action's effect, and each estimate with its interval and arm
        sizes (finite values only)."""
        out: dict[str, float] = {}
        for a in self.actions:
            out[f"effect_{a.action_id}"] = a.effect
            est = a.estimate
            if est is None:
                continue
            for key, value in (("estimate", est.effect), ("ci_low", est.ci_low),
                               ("ci_high", est.ci_high), ("n_treated", est.n_treated),
                               ("n_control", est.n_control),
                               ("churn_treated", est.churn_treated),
                               ("churn_control", est.churn_control)):
                if math.isfinite(value):
                    out[f"uplift_{a.action_id}_{key}"] = float(value)
        return out

    def summary(self) -> str:
        """One line per action, for the training log."""
        lines = [f"action effects ({self.horizon_days}-day churn, {self.n_contacts:,} completed "
                 f"campaign contacts, {self.n_pending:,} pending):"]
        for a in self.actions:
            if a.action_id == NO_ACTION:
                continue
            how = a.source if a.used_estimate else f"{a.source} ({a.reason})"
            lines.append(f"  {a.action_id}: {a.effect:.3f} from {how}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Estimation


def relative_effect(churned_treated: int, n_treated: int, churned_control: int, n_control: int,
                    *, level: float = LEVEL) -> tuple[float, float, float]:
    """``(1 − RR, lower, upper)``: relative churn reduction and its Katz log-RR interval.

    NaNs when an arm is empty or the hold-out has no churner (RR undefined). With no churner
    among the treated the point estimate is 1 and the interval uses Haldane's +0.5 correction.
    """
    for name, v in (("churned_treated", churned_treated), ("n_treated", n_treated),
                    ("churned_control", churned_control), ("n_control", n_control)):
        if not isinstance(v, int | np.integer) or v < 0:
            raise UpliftError(f"{name} must be a non-negative integer, got {v!r}")
    if churned_treated > n_treated or churned_control > n_control:
        raise UpliftError("more churners than contacts in an arm: "
                          f"{churned_treated}/{n_treated} treated, "
                          f"{churned_control}/{n_control} hold-out")
    _check_level(level)
    if n_treated == 0 or n_control == 0 or churned_control == 0:
        return math.nan, math.nan, math.nan
    a, nt, c, nc = float(churned_treated), float(n_treated), float(churned_control), \
        float(n_control)
    rr = (a / nt) / (c / nc)
    if a == 0:
        a, nt, c, nc = a + 0.5, nt + 0.5, c + 0.5, nc + 0.5
    log_rr = math.log((a / nt) / (c / nc))
    se = math.sqrt(max(1 / a - 1 / nt + 1 / c - 1 / nc, 0.0))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    rr_lo, rr_hi = math.exp(log_rr - z * se), math.exp(log_rr + z * se)
    return 1.0 - rr, 1.0 - rr_hi, 1.0 - rr_lo


def estimate_effects(outcomes: pd.DataFrame, *, level: float = LEVEL) -> dict[str, EffectEstimate]:
    """Per action id, treated vs. hold-out churn of the *completed* contacts in ``outcomes``
    (columns as :func:`contact_outcomes` returns them; rows with ``complete`` false are left
    out)."""
    _check_level(level)
    frame = _check_outcomes(outcomes)
    done = frame[frame["complete"]]
    out: dict[str, EffectEstimate] = {}
    for action_id, rows in done.groupby("action_id", sort=True):
        treated = rows["treated"].to_numpy(bool)
        churned = rows["churned"].to_numpy(bool)
        t, c = rows[treated], rows[~treated]
        a, n_t = int(churned[treated].sum()), int(treated.sum())
        cc, n_c = int(churned[~treated].sum()), int((~treated).sum())
        eff, lo, hi = relative_effect(a, n_t, cc, n_c, level=level)
        out[str(action_id)] = EffectEstimate(
            action_id=str(action_id), n_treated=n_t, n_control=n_c,
            customers_treated=int(t["customer_id"].nunique()),
            customers_control=int(c["customer_id"].nunique()),
            churned_treated=a, churned_control=cc, effect=eff, ci_low=lo, ci_high=hi,
            level=level)
    return out


def apply_estimates(
    policy: Policy,
    outcomes: pd.DataFrame,
    *,
    as_of: date,
    horizon_days: int,
    min_customers: int = MIN_CUSTOMERS,
    max_ci_width: float = MAX_CI_WIDTH,
    level: float = LEVEL,
    unknown_actions: UnknownMode = "error",
) -> tuple[Policy, UpliftReport]:
    """``policy`` with every trustworthy campaign-log estimate in place of the prior, and the
    report of every action's effect and source.

    Contacts of action ids the catalog does not know raise :class:`UpliftError` naming them and
    their row counts (``unknown_actions="ignore"``: left out and listed in the report).
    """
    _check_settings(min_customers, max_ci_width, level, horizon_days)
    if unknown_actions not in ("error", "ignore"):
        raise UpliftError(f"unknown_actions must be 'error' or 'ignore', "
                          f"got {unknown_actions!r}")
    frame = _check_outcomes(outcomes)
    known = {a.id for a in policy.actions}
    counts = frame["action_id"].value_counts()
    unknown = {str(k): int(v) for k, v in counts.items() if k not in known}
    if unknown:
        listed = ", ".join(f"{k!r} ({v:,} row{'s' if v != 1 else ''})"
                           for k, v in sorted(unknown.items()))
        if unknown_actions == "error":
            raise UpliftError(
                f"campaigns.action_id: {sum(unknown.values()):,} rows name actions that are not "
                f"in the action catalog {policy.source}: {listed}; add them to the catalog or "
                "leave those rows out")
        frame = frame[frame["action_id"].isin(known)]
    estimates = estimate_effects(frame, level=level)
    decided: list[ActionEffect] = []
    for action in policy.actions:
        est = estimates.get(action.id)
        use, reason = _trust(action.id, est, min_customers, max_ci_width)
        if use:
            assert est is not None
            decided.append(ActionEffect(action.id, action.effect,
                                        float(np.clip(est.effect, 0.0, 1.0)), est.source(),
                                        True, reason, est))
        else:
            decided.append(ActionEffect(action.id, action.effect, action.effect,
                                        action.effect_source, False, reason, est))
    for d in decided:
        if d.used_estimate:
            policy = policy.with_effects({d.action_id: d.effect}, d.source)
    report = UpliftReport(
        as_of=as_of, horizon_days=horizon_days, min_customers=min_customers,
        max_ci_width=max_ci_width, level=level,
        n_contacts=int(frame["complete"].sum()), n_pending=int((~frame["complete"]).sum()),
        unknown_actions=unknown, actions=tuple(decided))
    return policy, report


def _trust(action_id: str, est: EffectEstimate | None, min_customers: int,
           max_ci_width: float) -> tuple[bool, str]:
    if action_id == NO_ACTION:
        return False, "no_action has no effect by definition"
    if est is None:
        return False, "no completed contacts in the campaign log"
    if min(est.customers_treated, est.customers_control) < min_customers:
        return False, (f"too few customers: {est.customers_treated} treated, "
                       f"{est.customers_control} hold-out (need {min_customers} each)")
    if est.churned_control == 0:
        return False, "no churner in the hold-out: the relative effect is undefined"
    if not (math.isfinite(est.ci_low) and math.isfinite(est.ci_high)):
        return False, "the confidence interval is undefined"
    if est.ci_width > max_ci_width:
        return False, (f"too uncertain: {est.level:.0%} CI [{est.ci_low:.3f}, "
                       f"{est.ci_high:.3f}] is wider than {max_ci_width}")
    return True, "trustworthy estimate"


# ---------------------------------------------------------------------------------------------
# Reading the campaign log


def contact_outcomes(source: Source, *, as_of: date, horizon_days: int) -> pd.DataFrame:
    """Every campaign contact before ``as_of`` with its churn outcome (point in time).

    Columns ``customer_id, ts, action_id, treated, complete, churned``: ``complete`` = the
    window ``[ts, ts + horizon_days)`` ends on or before ``as_of``; ``churned`` = no purchase
    (positive amount) in that window, null when not complete. Reads no row at or after as-of.
    """
    if not source.has("campaigns"):
        raise UpliftError(f"{source.location} has no campaigns table")
    _check_settings(MIN_CUSTOMERS, MAX_CI_WIDTH, LEVEL, horizon_days)
    cutoff = f"TIMESTAMP '{as_of.isoformat()}'"
    end = f"c.ts + INTERVAL '{int(horizon_days)} days'"
    sql = f"""
        SELECT c.customer_id, c.ts, c.action_id, c.treated,
               {end} <= {cutoff} AS complete,
               CASE WHEN {end} <= {cutoff} THEN NOT EXISTS (
                   SELECT 1 FROM transactions t
                   WHERE t.customer_id = c.customer_id AND t.amount > 0
                     AND t.ts >= c.ts AND t.ts < {end} AND t.ts < {cutoff})
               END AS churned
        FROM campaigns c
        WHERE c.ts < {cutoff}
        ORDER BY c.customer_id, c.ts, c.action_id"""
    frame = source.con.execute(sql).df()
    return frame[list(OUTCOME_COLUMNS)]


def estimate_from_source(
    source: Source,
    policy: Policy,
    *,
    as_of: date,
    horizon_days: int,
    min_customers: int = MIN_CUSTOMERS,
    max_ci_width: float = MAX_CI_WIDTH,
    level: float = LEVEL,
    unknown_actions: UnknownMode = "error",
) -> tuple[Policy, UpliftReport]:
    """:func:`apply_estimates` on the source's campaign log (the policy unchanged, with an
    all-prior report, when the source has no campaigns table)."""
    _check_settings(min_customers, max_ci_width, level, horizon_days)
    if not source.has("campaigns"):
        report = UpliftReport(
            as_of=as_of, horizon_days=horizon_days, min_customers=min_customers,
            max_ci_width=max_ci_width, level=level, n_contacts=0, n_pending=0,
            actions=tuple(ActionEffect(a.id, a.effect, a.effect, a.effect_source, False,
                                       "the source has no campaigns table")
                          for a in policy.actions))
        return policy, report
    outcomes = contact_outcomes(source, as_of=as_of, horizon_days=horizon_days)
    return apply_estimates(policy, outcomes, as_of=as_of, horizon_days=horizon_days,
                           min_customers=min_customers, max_ci_width=max_ci_width, level=level,
                           unknown_actions=unknown_actions)


# ---------------------------------------------------------------------------------------------
# Validation


def _check_level(level: float) -> None:
    if not isinstance(level, float | int) or not 0.0 < float(level) < 1.0:
        raise UpliftError(f"confidence level must be in (0, 1), got {level!r}")


def _check_settings(min_customers: int, max_ci_width: float, level: float,
                    horizon_days: int) -> None:
    if not isinstance(min_customers, int) or isinstance(min_customers, bool) \
            or min_customers < 1:
        raise UpliftError(f"min_customers must be an integer >= 1, got {min_customers!r}")
    if not isinstance(max_ci_width, float | int) or not math.isfinite(max_ci_width) \
            or max_ci_width <= 0:
        raise UpliftError(f"max_ci_width must be a positive number, got {max_ci_width!r}")
    if not isinstance(horizon_days, int) or isinstance(horizon_days, bool) or horizon_days < 1:
        raise UpliftError(f"horizon_days must be an integer >= 1, got {horizon_days!r}")
    _check_level(level)


def _check_outcomes(outcomes: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(outcomes, pd.DataFrame):
        raise UpliftError(f"contact outcomes must be a DataFrame, got {type(outcomes).__name__}")
    missing = [c for c in OUTCOME_COLUMNS if c not in outcomes.columns]
    if missing:
        raise UpliftError(f"contact outcomes lack column(s) {', '.join(missing)}; "
                          f"expected {', '.join(OUTCOME_COLUMNS)}")
    frame = outcomes[list(OUTCOME_COLUMNS)]
    for col in ("customer_id", "action_id", "treated", "complete"):
        bad = int(frame[col].isna().sum())
        if bad:
            raise UpliftError(f"campaigns.{col}: {bad:,} rows are null")
    for col in ("treated", "complete"):
        if not _is_boolean(frame[col]):
            raise UpliftError(f"campaigns.{col}: expected true/false values, got "
                              f"{_examples(frame[col].unique())}")
    done = frame["complete"].astype(bool)
    churned = frame.loc[done, "churned"]
    if churned.isna().any():
        raise UpliftError(f"{int(churned.isna().sum()):,} completed contacts have no churn "
                          "outcome")
    if len(churned) and not _is_boolean(churned):
        raise UpliftError(f"churned: expected true/false values, got "
                          f"{_examples(churned.unique())}")
    return frame.assign(treated=frame["treated"].astype(bool), complete=done,
                        churned=frame["churned"].where(done, False).astype(bool))


def _is_boolean(col: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(col):
        return True
    try:
        return set(col.dropna().unique().tolist()) <= {True, False}
    except TypeError:  # unhashable values
        return False


def _examples(values: Iterable[Any], n: int = 5) -> str:
    return ", ".join(repr(v) for v in list(values)[:n])
