"""Tests of the shifted-beta-geometric baseline: distribution, fits, predictions, replication."""

# Comments use the papers' Greek notation.

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.special import hyp2f1

from churnguard.model.sbg import (
    ConvergenceError,
    SBGModel,
    fit_sbg,
    fit_sbg_cohort,
    sbg_log_likelihood,
    sbg_log_pmf,
    sbg_log_survival,
    sbg_pmf,
    sbg_retention_rate,
    sbg_survival,
)

# Fader & Hardie (2007), "How to Project Customer Retention": customers alive at the end of years
# 0..12 of two cohorts of 1,000. The model is fitted on years 0..7, years 8..12 are the holdout.
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241, 223, 207, 194, 183, 173]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491, 468, 445, 427, 409, 394]
CALIBRATION_YEARS = 7
# The published estimates. Note which cohort is which: the regular cohort loses 36.9% in year 1,
# and α/(α+β) = P(T=1) is 0.704/1.886 = 0.373 for the first pair and 0.668/4.474 = 0.149 for the
# second, so (0.704, 1.182) is "regular" and (0.668, 3.806) is "high end".
PAPER = {"regular": (0.704, 1.182), "high_end": (0.668, 3.806)}
COHORTS = {"regular": REGULAR, "high_end": HIGH_END}


def _expand(alive: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One row per customer: churners with the period they cancelled in, survivors with n."""
    n = len(alive) - 1
    lost = -np.diff(np.asarray(alive))
    periods = np.concatenate([np.repeat(np.arange(1, n + 1), lost), np.full(alive[-1], n)])
    churned = np.concatenate([np.ones(int(lost.sum()), bool), np.zeros(alive[-1], bool)])
    return periods, churned


# ---------------------------------------------------------------------------------------------
# Replication of [FH07]
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cohort", ["regular", "high_end"])
def test_cohort_fit_reproduces_published_estimates(cohort: str) -> None:
    model = fit_sbg_cohort(COHORTS[cohort][: CALIBRATION_YEARS + 1])
    alpha, beta = PAPER[cohort]
    assert round(model.alpha, 2) == round(alpha, 2)
    assert round(model.beta, 2) == round(beta, 2)
    # The paper prints three decimals; the MLE matches those too.
    assert round(model.alpha, 3) == alpha
    assert round(model.beta, 3) == beta


def test_published_estimates_need_all_seven_years() -> None:
    # Fewer calibration years give other estimates (the paper fits years 1-7).
    six = fit_sbg_cohort(REGULAR[:7])
    assert round(six.alpha, 2) != 0.70 or round(six.beta, 2) != 1.18


def test_high_end_log_likelihood_at_one_one_by_hand() -> None:
    # α = β = 1: P(T=t) = B(2, t)/B(1, 1) = 1/(t(t+1)) and S(t) = 1/(t+1); the paper's Excel
    # walk-through starts its Solver search at this point, with LL = -2115.5.
    alive = HIGH_END[: CALIBRATION_YEARS + 1]
    lost = -np.diff(alive)
    t = np.arange(1, CALIBRATION_YEARS + 1)
    by_hand = -float(lost @ np.log(t * (t + 1.0))) - alive[-1] * math.log(CALIBRATION_YEARS + 1)
    periods, churned = _expand(alive)
    assert sbg_log_likelihood(periods, churned, 1.0, 1.0) == pytest.approx(by_hand, rel=1e-12)
    assert round(by_hand, 1) == -2115.5


@pytest.mark.parametrize("cohort", ["regular", "high_end"])
def test_individual_fit_equals_cohort_fit(cohort: str) -> None:
    alive = COHORTS[cohort][: CALIBRATION_YEARS + 1]
    by_cohort = fit_sbg_cohort(alive)
    periods, churned = _expand(alive)
    assert periods.size == 1000
    by_customer = fit_sbg(periods, churned)
    assert by_customer.alpha == pytest.approx(by_cohort.alpha, rel=1e-7)
    assert by_customer.beta == pytest.approx(by_cohort.beta, rel=1e-7)
    assert by_customer.log_likelihood == pytest.approx(by_cohort.log_likelihood, rel=1e-10)
    assert by_cohort.log_likelihood == pytest.approx(
        sbg_log_likelihood(periods, churned, by_cohort.alpha, by_cohort.beta), rel=1e-12
    )


def test_weighted_fit_equals_expanded_fit() -> None:
    periods, churned = _expand(REGULAR[: CALIBRATION_YEARS + 1])
    rows = np.unique(np.stack([periods, churned]), axis=1)
    weights = [np.sum((periods == p) & (churned == c)) for p, c in rows.T]
    weighted = fit_sbg(rows[0], rows[1].astype(bool), weights=weights)
    expanded = fit_sbg(periods, churned)
    assert weighted.alpha == pytest.approx(expanded.alpha, rel=1e-7)
    assert weighted.beta == pytest.approx(expanded.beta, rel=1e-7)
    assert weighted.log_likelihood == pytest.approx(expanded.log_likelihood, rel=1e-10)


def test_cohort_fit_on_shares_gives_the_same_estimates() -> None:
    alive = np.asarray(HIGH_END[: CALIBRATION_YEARS + 1])
    counts, shares = fit_sbg_cohort(alive), fit_sbg_cohort(alive / 1000.0)
    assert shares.alpha == pytest.approx(counts.alpha, rel=1e-7)
    assert shares.beta == pytest.approx(counts.beta, rel=1e-7)
    assert shares.log_likelihood is not None and counts.log_likelihood is not None
    assert shares.log_likelihood == pytest.approx(counts.log_likelihood / 1000.0, rel=1e-10)


@pytest.mark.parametrize("cohort", ["regular", "high_end"])
def test_holdout_years_are_projected_closely(cohort: str) -> None:
    # [FH07]'s point: fitted on years 1-7, the sBG projects years 8-12 well.
    alive = COHORTS[cohort]
    model = fit_sbg_cohort(alive[: CALIBRATION_YEARS + 1])
    projected = 1000.0 * np.asarray(model.survival(np.arange(CALIBRATION_YEARS + 1, 13)))
    assert np.max(np.abs(projected - alive[CALIBRATION_YEARS + 1:])) < 20.0  # < 2% of n_0


def test_initial_parameters_reach_the_same_optimum() -> None:
    alive = REGULAR[: CALIBRATION_YEARS + 1]
    default = fit_sbg_cohort(alive)
    started = fit_sbg_cohort(alive, initial=(5.0, 0.2))
    assert started.alpha == pytest.approx(default.alpha, rel=1e-6)
    assert started.beta == pytest.approx(default.beta, rel=1e-6)


def test_recovers_parameters_from_simulated_censored_accounts() -> None:
    # Accounts from cohorts of different ages, each observed up to its own age (right-censored).
    rng = np.random.default_rng(20070101)
    alpha, beta = 0.8, 2.5
    theta = rng.beta(alpha, beta, 200_000)
    lifetime = rng.geometric(theta)  # T: the period of cancellation
    age = rng.integers(0, 36, theta.size)  # renewal dates each account has reached
    churned = lifetime <= age
    periods = np.where(churned, lifetime, age)
    model = fit_sbg(periods, churned)
    assert model.alpha == pytest.approx(alpha, rel=0.05)
    assert model.beta == pytest.approx(beta, rel=0.05)


def test_all_churned_with_spread_out_lifetimes_is_identified() -> None:
    # Complete (uncensored) lifetimes still identify α and β: only degenerate cases are refused.
    rng = np.random.default_rng(7)
    lifetime = rng.geometric(rng.beta(1.5, 3.0, 50_000))
    model = fit_sbg(lifetime, np.ones(lifetime.size, bool))
    assert model.alpha == pytest.approx(1.5, rel=0.1)
    assert model.beta == pytest.approx(3.0, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Distribution, by hand
# ---------------------------------------------------------------------------------------------

PARAMS = [(0.704, 1.182), (0.668, 3.806), (1.0, 1.0), (3.0, 40.0), (0.05, 0.2)]


@pytest.mark.parametrize(("alpha", "beta"), PARAMS)
def test_first_period_by_hand(alpha: float, beta: float) -> None:
    assert sbg_pmf(1, alpha, beta) == pytest.approx(alpha / (alpha + beta), rel=1e-12)
    assert sbg_survival(1, alpha, beta) == pytest.approx(beta / (alpha + beta), rel=1e-12)
    assert sbg_survival(0, alpha, beta) == 1.0
    assert sbg_retention_rate(1, alpha, beta) == pytest.approx(beta / (alpha + beta), rel=1e-12)


@pytest.mark.parametrize(("alpha", "beta"), PARAMS)
def test_closed_form_matches_the_recursion(alpha: float, beta: float) -> None:
    # [FH07] eq. 7: P(T=1) = α/(α+β), P(T=t) = (β+t-2)/(α+β+t-1) · P(T=t-1).
    t = np.arange(1, 61)
    recursion = [alpha / (alpha + beta)]
    for k in t[1:]:
        recursion.append(recursion[-1] * (beta + k - 2) / (alpha + beta + k - 1))
    np.testing.assert_allclose(sbg_pmf(t, alpha, beta), recursion, rtol=1e-11)
    np.testing.assert_allclose(sbg_log_pmf(t, alpha, beta), np.log(recursion), rtol=1e-11)


@pytest.mark.parametrize(("alpha", "beta"), PARAMS)
def test_probabilities_and_survival_sum_to_one(alpha: float, beta: float) -> None:
    for n in (1, 2, 7, 50, 400):
        total = float(np.sum(sbg_pmf(np.arange(1, n + 1), alpha, beta)))
        assert total + sbg_survival(n, alpha, beta) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("alpha", "beta"), PARAMS)
def test_retention_rate_is_survival_ratio_and_increases(alpha: float, beta: float) -> None:
    t = np.arange(1, 100)
    r = np.asarray(sbg_retention_rate(t, alpha, beta))
    ratio = np.exp(np.asarray(sbg_log_survival(t, alpha, beta))
                   - np.asarray(sbg_log_survival(t - 1, alpha, beta)))
    np.testing.assert_allclose(r, ratio, rtol=1e-11)
    assert np.all(np.diff(r) > 0)  # the sorting effect of heterogeneity
    assert np.all(r < 1)


def test_uniform_prior_by_hand() -> None:
    # α = β = 1: P(T=t) = 1/(t(t+1)), S(t) = 1/(t+1), r(t) = t/(t+1).
    t = np.arange(1, 11)
    np.testing.assert_allclose(sbg_pmf(t, 1.0, 1.0), 1.0 / (t * (t + 1.0)), rtol=1e-12)
    np.testing.assert_allclose(sbg_survival(t, 1.0, 1.0), 1.0 / (t + 1.0), rtol=1e-12)
    np.testing.assert_allclose(sbg_retention_rate(t, 1.0, 1.0), t / (t + 1.0), rtol=1e-12)


def test_scalars_give_floats_and_arrays_keep_their_shape() -> None:
    model = SBGModel(alpha=0.704, beta=1.182)
    assert isinstance(model.survival(3), float)
    assert isinstance(model.churn_probability_next(0), float)
    assert isinstance(model.derl(2, 0.1), float)
    grid = np.arange(6).reshape(2, 3)
    assert np.shape(model.survival(grid)) == (2, 3)
    assert np.shape(model.churn_probability_next(grid)) == (2, 3)
    assert np.shape(model.expected_remaining_periods(grid, 12)) == (2, 3)
    assert np.shape(model.derl(grid, 0.1)) == (2, 3)


# ---------------------------------------------------------------------------------------------
# Per-customer predictions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), PARAMS)
def test_churn_probability_next_is_one_minus_next_retention(alpha: float, beta: float) -> None:
    model = SBGModel(alpha=alpha, beta=beta)
    t = np.arange(0, 40)
    nxt = np.asarray(model.churn_probability_next(t))
    np.testing.assert_allclose(nxt, alpha / (alpha + beta + t), rtol=1e-12)
    np.testing.assert_allclose(nxt, 1.0 - np.asarray(model.retention_rate(t + 1)), rtol=1e-10)
    # = P(T = t+1) / S(t), and for a new customer it is P(T = 1).
    np.testing.assert_allclose(
        nxt, np.asarray(model.churn_probability(t + 1)) / np.asarray(model.survival(t)),
        rtol=1e-10,
    )
    assert model.churn_probability_next(0) == pytest.approx(model.churn_probability(1))


def test_conditional_survival_by_hand() -> None:
    model = SBGModel(alpha=0.668, beta=3.806)
    for t in (0, 1, 5):
        for k in (0, 1, 3):
            expected = model.survival(t + k) / model.survival(t)
            assert model.conditional_survival(t, k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("alpha", "beta"), PARAMS)
def test_expected_remaining_periods_sums_conditional_survival(alpha: float, beta: float) -> None:
    model = SBGModel(alpha=alpha, beta=beta)
    t = np.array([0, 0, 3, 3, 10, 10, 10])
    horizon = np.array([0, 12, 1, 12, 5, 12, 24])
    got = np.asarray(model.expected_remaining_periods(t, horizon))
    expected = [float(sum(np.asarray(model.conditional_survival(ti, k))
                          for k in range(1, hi + 1))) for ti, hi in zip(t, horizon, strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=0)
    assert got[0] == 0.0
    # One period ahead: the probability of renewing at the next renewal date.
    assert got[2] == pytest.approx(1.0 - model.churn_probability_next(3), rel=1e-12)
    # A customer who has stayed longer is expected to stay longer (heterogeneity sorting).
    assert got[1] < got[3] < got[5]


@pytest.mark.parametrize(("alpha", "beta"), [(0.668, 3.806), (0.704, 1.182), (2.0, 5.0)])
def test_derl_matches_hypergeometric_series_and_long_horizon_sum(
    alpha: float, beta: float
) -> None:
    model = SBGModel(alpha=alpha, beta=beta)
    d = 0.1
    for t in (0, 1, 4, 7, 30):
        # [FH10] eq. 6 with n - 1 = t renewals; scipy's hyp2f1 is accurate at z = 1/1.1.
        formula = (beta + t) / (alpha + beta + t) * hyp2f1(1, beta + t + 1, alpha + beta + t + 1,
                                                           1 / (1 + d))
        assert model.derl(t, d) == pytest.approx(formula, rel=1e-10)
        long_sum = model.expected_remaining_periods(t, 2000, discount_rate=d)
        assert model.derl(t, d) == pytest.approx(long_sum, rel=1e-10)


def test_derl_high_end_cross_check() -> None:
    # The value an independent implementation (shifted_beta_geometric_py) reports for the
    # high-end cohort, d = 10% and 7 renewals made.
    model = fit_sbg_cohort(HIGH_END[: CALIBRATION_YEARS + 1])
    assert model.derl(7, 0.1) == pytest.approx(7.530, abs=5e-4)


@pytest.mark.parametrize(("alpha", "beta", "t", "d"), [
    (2.0, 200.0, 500, 0.001),  # scipy's hyp2f1 returns NaN here
    (3.0, 3.806, 1, 0.001),  # and is off in the 5th digit here
    (0.5, 0.1, 500, 0.001),
])
def test_derl_where_scipy_hyp2f1_fails(alpha: float, beta: float, t: int, d: float) -> None:
    model = SBGModel(alpha=alpha, beta=beta)
    # Direct summation of Σ_k S(t+k)/S(t)·(1+d)^-(k-1) with enough terms for the tail to vanish.
    k = np.arange(1, 200_000, dtype=float)
    log_terms = np.cumsum(np.log((beta + t + k - 1) / (alpha + beta + t + k - 1))) - (
        k - 1) * math.log1p(d)
    assert model.derl(t, d) == pytest.approx(float(np.exp(log_terms).sum()), rel=1e-10)


def test_derl_without_discounting() -> None:
    # d = 0: Σ_k S(t+k)/S(t) = E[(1-θ)/θ | θ ~ Beta(α, β+t)] = (β+t)/(α-1), finite for α > 1.
    assert SBGModel(alpha=3.0, beta=4.0).derl(2, 0.0) == pytest.approx(3.0)
    assert SBGModel(alpha=0.7, beta=1.2).derl(2, 0.0) == math.inf


# ---------------------------------------------------------------------------------------------
# Bad input and non-identified data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alive", "message"), [
    ([], "empty"),
    ([1000], "at least one period"),
    ([1000, -5, -10], "negative"),
    ([1000, 600, 650, 500], "non-increasing"),
    ([0, 0, 0], "cohort size"),
    ([1000, 1000, 1000], "no customer churned"),
    ([1000, 600], "beyond the first renewal"),
    ([1000, 0, 0], "every customer churned"),
    ([1000, float("nan"), 500], "finite"),
])
def test_cohort_fit_rejects_bad_input(alive: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_sbg_cohort(alive)


@pytest.mark.parametrize(("periods", "churned", "weights", "message"), [
    ([], [], None, "zero customers"),
    ([1, 2, 3], [True, False], None, "same length"),
    ([0, 2, 3], [True, False, False], None, "churned customers"),
    ([-1, 2, 3], [False, True, False], None, ">= 0"),
    ([1.5, 2, 3], [True, False, False], None, "whole numbers"),
    ([1, 2, 3], [2, 0, 1], None, "booleans"),
    ([1, 2, 3], ["yes", "no", "no"], None, "booleans"),
    ([1, 2, 3], [True, False, False], [1.0, -1.0, 1.0], "weights must be >= 0"),
    ([1, 2, 3], [True, False, False], [1.0, 1.0], "one entry per customer"),
    ([1, 2, 3], [True, False, False], [0.0, 0.0, 0.0], "total weight"),
    ([1, 2, 3], [False, False, False], None, "no customer churned"),
    ([4, 4, 4], [True, True, True], None, "every customer churned, all in period 4"),
    ([1, 1, 0], [True, False, False], None, "beyond the first renewal"),
])
def test_individual_fit_rejects_bad_input(
    periods: list[float], churned: list[Any], weights: list[float] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_sbg(periods, churned, weights=weights)


def test_homogeneous_churn_is_reported_as_not_identified() -> None:
    # A cohort losing exactly 20% a year, every year: a plain geometric fits it perfectly, so
    # the sBG likelihood only approaches its supremum as α, β → ∞.
    alive = 1000.0 * 0.8 ** np.arange(8)
    with pytest.raises(ConvergenceError, match="no heterogeneity"):
        fit_sbg_cohort(alive)
    periods, churned = _expand([round(a) for a in alive])
    with pytest.raises(ConvergenceError, match="no heterogeneity"):
        fit_sbg(periods, churned)


def test_stayers_and_leavers_mix_is_reported_as_not_identified() -> None:
    # Half cancel at once, the other half never: the MLE is at α, β → 0.
    periods = [1] * 500 + [5] * 500
    with pytest.raises(ConvergenceError, match="edge of the parameter space"):
        fit_sbg(periods, [True] * 500 + [False] * 500)


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 1.0), (1.0, -2.0), (math.nan, 1.0),
                                             (math.inf, 1.0)])
def test_model_rejects_invalid_parameters(alpha: float, beta: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        SBGModel(alpha=alpha, beta=beta)
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        sbg_pmf(1, alpha, beta)


def test_predictions_reject_bad_arguments() -> None:
    model = SBGModel(alpha=0.7, beta=1.2)
    with pytest.raises(ValueError, match="t must be >= 1"):
        model.churn_probability(0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        model.survival(-1)
    with pytest.raises(ValueError, match="t_survived must be whole numbers"):
        model.churn_probability_next(2.5)
    with pytest.raises(ValueError, match="horizon_periods must be >= 0"):
        model.expected_remaining_periods(3, -1)
    with pytest.raises(ValueError, match="discount_rate"):
        model.derl(3, -0.1)
    with pytest.raises(ValueError, match="discount_rate"):
        model.expected_remaining_periods(3, 12, discount_rate=math.nan)
    with pytest.raises(ValueError, match="do not broadcast"):
        model.expected_remaining_periods([1, 2], [1, 2, 3])
