"""Step 1 of training: plan the out-of-time split of each target (churn and CLV).

Every cutoff of a plan has its label window inside the data that is known at ``as_of``:
``cutoff + label_days <= as_of`` (windows are ``[cutoff, cutoff + label_days)``). The split is
*purged* (López de Prado 2018, "Advances in Financial Machine Learning", ch. 7): the label
windows of the training cutoffs end on or before the validation cutoff, and those of the
validation cutoff on or before the test cutoff, so no label of an earlier split overlaps the
period a later split is judged on.

When the data is too short for that, :func:`plan_targets` falls back (with a warning) to
overlapping label windows, or, for an automatic CLV horizon, to the longest horizon that still
gives a purged split (:func:`longest_feasible_window`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from churnguard.features.build import monthly_cutoffs

log = logging.getLogger(__name__)

#: A customer needs this much data history before the first training cutoff.
DEFAULT_MIN_HISTORY_DAYS = 90


class PlanError(ValueError):
    """The data is too short for a purged out-of-time split with the requested horizons."""


@dataclass(frozen=True)
class SplitPlan:
    """Cutoffs of one target: train (oldest first), one validation and one test cutoff."""

    label_days: int
    train: tuple[date, ...]
    valid: date
    test: date
    #: False for the overlapping-window fallback of :func:`plan_split` (``purge=False``).
    purged: bool = True

    @property
    def all(self) -> tuple[date, ...]:
        return (*self.train, self.valid, self.test)

    def to_dict(self) -> dict[str, object]:
        return {
            "label_days": self.label_days,
            "train": [d.isoformat() for d in self.train],
            "valid": self.valid.isoformat(),
            "test": self.test.isoformat(),
            "purged": self.purged,
        }


def _latest_month_start(on_or_before: date) -> date:
    return date(on_or_before.year, on_or_before.month, 1)


def _months_before(day: date, months: int) -> date:
    """The month start ``months`` months before the month of ``day``."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def plan_split(
    first_day: date,
    as_of: date,
    label_days: int,
    *,
    min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
    max_train_cutoffs: int = 24,
    min_train_cutoffs: int = 1,
    step_months: int = 1,
    purge: bool = True,
) -> SplitPlan:
    """Purged out-of-time cutoffs for a label window of ``label_days``.

    test  = the latest month start whose window ends on or before ``as_of``;
    valid = the latest month start whose window ends on or before ``test``;
    train = month starts (every ``step_months``) whose window ends on or before ``valid``,
    at least ``min_history_days`` after ``first_day``, the latest ``max_train_cutoffs`` of them.
    Raises :class:`PlanError` when fewer than ``min_train_cutoffs`` training cutoffs fit.

    ``purge=False`` is the fallback for data too short for purging (three disjoint label
    windows): the cutoffs are still strictly ordered in time (train < valid < test, one step
    apart, every label window inside the data known at ``as_of``), but consecutive label
    windows overlap, so validation and test scores are somewhat optimistic.
    """
    if label_days < 1:
        raise ValueError(f"label_days must be >= 1, got {label_days}")
    if as_of <= first_day:
        raise PlanError(f"as-of {as_of} is not after the first day of the data ({first_day})")
    window = timedelta(days=label_days)
    test = _latest_month_start(as_of - window)
    if purge:
        valid = _latest_month_start(test - window)
        last_train = valid - window
    else:
        valid = _months_before(test, step_months)
        last_train = _months_before(valid, step_months)
    earliest = first_day + timedelta(days=min_history_days)
    train = [c for c in monthly_cutoffs(earliest, last_train, step_months) if c >= earliest]
    train = train[-max_train_cutoffs:] if max_train_cutoffs > 0 else train
    if len(train) < min_train_cutoffs:
        span = (as_of - first_day).days
        raise PlanError(
            f"not enough history for a{' purged' if purge else 'n'} out-of-time split with a "
            f"{label_days}-day label "
            f"window: the data spans {span} days ({first_day} to {as_of}), which leaves "
            f"{len(train)} training cutoff(s) (need {min_train_cutoffs}); test cutoff {test}, "
            f"validation cutoff {valid}, training cutoffs must be on/before {last_train} and "
            f"on/after {earliest}. Use a shorter horizon or more data."
        )
    return SplitPlan(label_days=label_days, train=tuple(train), valid=valid, test=test,
                     purged=purge)


def longest_feasible_window(
    first_day: date, as_of: date, *, min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
    min_train_cutoffs: int = 1, step_days: int = 30,
) -> int | None:
    """The longest multiple of ``step_days`` for which :func:`plan_split` succeeds, if any."""
    best = None
    days = step_days
    while days * 3 < (as_of - first_day).days:
        try:
            plan_split(first_day, as_of, days, min_history_days=min_history_days,
                       min_train_cutoffs=min_train_cutoffs)
        except PlanError:
            break
        best = days
        days += step_days
    return best


def needed_days(first_day: date, label_days: int, *,
                min_history_days: int = DEFAULT_MIN_HISTORY_DAYS, min_train_cutoffs: int = 1,
                purge: bool = False) -> int:
    """The fewest days of history from ``first_day`` to the as-of date for which
    :func:`plan_split` succeeds with a ``label_days`` window (what a too-short history lacks)."""
    days = label_days
    while True:
        try:
            plan_split(first_day, first_day + timedelta(days=days), label_days,
                       min_history_days=min_history_days, min_train_cutoffs=min_train_cutoffs,
                       purge=purge)
            return days
        except PlanError:
            days += 1


def _too_short(first_day: date, as_of: date, days: int, what: str, option: str,
               min_history_days: int, min_train_cutoffs: int = 1) -> PlanError:
    need = needed_days(first_day, days, min_history_days=min_history_days,
                       min_train_cutoffs=min_train_cutoffs)
    return PlanError(
        f"not enough history for a {what} horizon of {days} days: the data spans "
        f"{(as_of - first_day).days} days ({first_day} to {as_of}), and an out-of-time split "
        f"(training, validation and test label windows, after {min_history_days} days of "
        f"history) needs at least {need} days. Use more data or a shorter horizon "
        f"({option} N).")


@dataclass(frozen=True)
class TargetPlans:
    """The split of both targets. ``clv.label_days`` is the CLV horizon actually used (shorter
    than the one asked for after the automatic fallback)."""

    churn: SplitPlan
    clv: SplitPlan


def plan_targets(
    first_day: date,
    as_of: date,
    *,
    horizon_days: int,
    clv_horizon_days: int,
    clv_horizon_auto: bool = False,
    min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
    max_train_cutoffs: int = 24,
) -> TargetPlans:
    """Plan the churn split (``horizon_days``) and the CLV split (``clv_horizon_days``).

    A target whose data is too short for a purged split gets overlapping label windows (and a
    warning). For CLV with ``clv_horizon_auto`` the horizon is shortened instead to the
    longest feasible multiple of 30 days that still leaves a few training cutoffs. Raises
    :class:`PlanError` when neither works.
    """

    def plan(days: int, *, purge: bool = True) -> SplitPlan:
        return plan_split(first_day, as_of, days, purge=purge,
                          min_history_days=min_history_days,
                          max_train_cutoffs=max_train_cutoffs)

    def overlapping(days: int, what: str, error: PlanError) -> SplitPlan:
        # Too short for three disjoint label windows: keep the cutoffs ordered in time but let
        # consecutive windows overlap (plan_split, purge=False), and say so.
        try:
            fallback = plan(days, purge=False)
        except PlanError:
            option = "--horizon-days" if what == "churn" else "--clv-horizon-days"
            raise _too_short(first_day, as_of, days, what, option,
                             min_history_days) from error
        log.warning("the data is too short for a purged split with a %d-day %s horizon; "
                    "using overlapping label windows (test %s, validation %s): validation "
                    "and test scores are somewhat optimistic",
                    days, what, fallback.test, fallback.valid)
        return fallback

    try:
        churn = plan(horizon_days)
    except PlanError as exc:
        churn = overlapping(horizon_days, "churn", exc)
    try:
        clv = plan(clv_horizon_days)
    except PlanError as exc:
        if not clv_horizon_auto:
            return TargetPlans(churn, overlapping(clv_horizon_days, "CLV", exc))
        # An automatic fallback should leave the CLV model a useful number of cutoffs.
        best = longest_feasible_window(first_day, as_of, min_history_days=min_history_days,
                                       min_train_cutoffs=min(6, max_train_cutoffs))
        if best is None:
            raise _too_short(first_day, as_of, 30, "CLV", "--clv-horizon-days",
                             min_history_days, min(6, max_train_cutoffs)) from exc
        # The default horizon adapting to the data is not a problem to warn about: say it once.
        log.info("CLV horizon: %d days, the longest a purged split of this history allows "
                 "(the default %d days does not fit; pass --clv-horizon-days to choose)",
                 best, clv_horizon_days)
        clv = plan(best)
    return TargetPlans(churn, clv)
