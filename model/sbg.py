"""Shifted-beta-geometric (sBG) model of contract duration: the contractual-churn baseline.

Where ``btyd`` models non-contractual purchasing (churn is never observed), the sBG is the
classical baseline for subscriptions, where every cancellation is observed at a renewal date. It
is fitted by maximum likelihood with scipy, on a cohort's counts of surviving customers (as in
the paper) or on right-censored per-customer renewal histories (as training does).

References
----------
- [FH07] Fader & Hardie (2007), "How to Project Customer Retention", Journal of Interactive
  Marketing 21(1), 76-90 (also http://brucehardie.com/papers/021/). Eq. B3 is in its appendix B.
- [FH10] Fader & Hardie (2010), "Customer-Base Valuation in a Contractual Setting: The Perils of
  Ignoring Heterogeneity", Marketing Science 29(1), 85-93.

Timing and notation follow [FH07]. A customer is acquired at time 0 and pays for period 1. At the
end of each period t = 1, 2, ... they renew with probability 1-θ or cancel with probability θ.
θ stays the same for each customer over time, and varies across customers as Beta(α, β). T is the
period in which the customer cancels: T = t means t periods paid and t-1 renewals made.
S(t) = P(T > t) is the probability of having made the first t renewals, which for a cohort is
the share still alive at the end of period t (n_t / n_0 in the paper's table).
"""

# The docstrings write the model in the papers' Greek notation (α, β, θ).

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, digamma, xlogy

# One exception type for "the fit did not reach an interior optimum" across the BTYD and sBG
# baselines; the Gauss 2F1(1, b; c; z) evaluator is the one the Pareto/NBD likelihood relies on,
# accurate where scipy's hyp2f1 is not (see ``SBGModel.derl``).
from churnguard.model.btyd import ConvergenceError, _broadcast, _log_hyp2f1_unit_a

__all__ = [
    "ConvergenceError",
    "SBGModel",
    "fit_sbg",
    "fit_sbg_cohort",
    "sbg_log_likelihood",
    "sbg_log_pmf",
    "sbg_log_survival",
    "sbg_pmf",
    "sbg_retention_rate",
    "sbg_survival",
]

ArrayLike = npt.ArrayLike
#: What the vectorised functions return: a float for scalar input, else a numpy array.
Result = float | np.ndarray

# log α and log β are searched within ±_LOG_BOUND. Where the MLE does not exist in the interior,
# the search runs along a ridge whose likelihood flattens, so it may stop well before that box.
# Two such cases: α, β → ∞ (churn shows no heterogeneity), caught by comparing the optimum with
# the likelihood of that geometric limit; and α → 0 or β → 0 (a mix of customers who never and
# who always cancel), caught by an optimum beyond ±_EDGE_LOG (e^12 ≈ 1.6e5, far beyond any real
# cohort), or beyond ±_DRIFT_LOG for a search that stopped short of a stationary point.
_LOG_BOUND = 18.0
_EDGE_LOG = 12.0
_DRIFT_LOG = 8.0
# Max |gradient| of the mean log-likelihood (per unit weight) in log-parameters at an optimum.
_GRAD_TOL = 1e-7
# Largest (unique histories × horizon) grid ``expected_remaining_periods`` sums in one block.
_SUM_BLOCK = 4_000_000


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r:.80}") from exc
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return arr


def _as_periods(value: ArrayLike, name: str, *, minimum: int) -> np.ndarray:
    arr = _as_float_array(value, name)
    if (arr != np.round(arr)).any():
        raise ValueError(f"{name} must be whole numbers of periods")
    if arr.size and arr.min() < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got minimum {arr.min():g}")
    return arr


def _check_shape_params(alpha: float, beta: float) -> tuple[float, float]:
    out = []
    for name, value in (("alpha", alpha), ("beta", beta)):
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sBG parameter {name} must be a number, got {value!r}") from exc
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"sBG parameter {name} must be a finite number > 0, got {value!r}")
        out.append(number)
    return out[0], out[1]


def _check_discount(discount_rate: float) -> float:
    if not (isinstance(discount_rate, int | float) and math.isfinite(discount_rate)
            and discount_rate >= 0):
        raise ValueError(f"discount_rate must be a finite number >= 0, got {discount_rate!r}")
    return float(discount_rate)


def _wrap(result: np.ndarray) -> Result:
    return float(result) if result.ndim == 0 else result


# ---------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------


def _log_pmf(t: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return betaln(alpha + 1.0, beta + t - 1.0) - betaln(alpha, beta)


def _log_survival(t: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return betaln(alpha, beta + t) - betaln(alpha, beta)


def sbg_log_pmf(t: ArrayLike, alpha: float, beta: float) -> Result:
    """log P(T = t | α, β), t = 1, 2, ...: the log of [FH07] eq. 5 (see :func:`sbg_pmf`)."""
    alpha, beta = _check_shape_params(alpha, beta)
    return _wrap(_log_pmf(_as_periods(t, "t", minimum=1), alpha, beta))


def sbg_pmf(t: ArrayLike, alpha: float, beta: float) -> Result:
    """P(T = t | α, β) = B(α+1, β+t-1) / B(α, β), t = 1, 2, ...: [FH07] eq. 5.

    The probability that a just-acquired customer cancels at the end of period t (after t-1
    renewals). It is the geometric θ(1-θ)^(t-1) averaged over θ ~ Beta(α, β), and is computed
    in log space with ``betaln``. [FH07] eq. 7 is the same quantity as a recursion,
    P(T=1) = α/(α+β) and P(T=t) = (β+t-2)/(α+β+t-1) · P(T=t-1).
    """
    return _wrap(np.exp(np.asarray(sbg_log_pmf(t, alpha, beta))))


def sbg_log_survival(t: ArrayLike, alpha: float, beta: float) -> Result:
    """log S(t | α, β), t = 0, 1, 2, ...: the log of [FH07] eq. 6 (see :func:`sbg_survival`)."""
    alpha, beta = _check_shape_params(alpha, beta)
    return _wrap(_log_survival(_as_periods(t, "t", minimum=0), alpha, beta))


def sbg_survival(t: ArrayLike, alpha: float, beta: float) -> Result:
    """S(t | α, β) = P(T > t) = B(α, β+t) / B(α, β), t = 0, 1, 2, ...: [FH07] eq. 6.

    The probability that a just-acquired customer makes the first t renewals; S(0) = 1.
    """
    return _wrap(np.exp(np.asarray(sbg_log_survival(t, alpha, beta))))


def sbg_retention_rate(t: ArrayLike, alpha: float, beta: float) -> Result:
    """r(t) = S(t) / S(t-1) = (β+t-1) / (α+β+t-1), t = 1, 2, ...: [FH07] eq. 8.

    The share of the customers alive in period t who renew at its end. It increases with t
    although no customer's θ changes: customers with a high θ leave first (the sorting effect of
    heterogeneity, [FH07] section "Model Development").
    """
    alpha, beta = _check_shape_params(alpha, beta)
    periods = _as_periods(t, "t", minimum=1)
    return _wrap((beta + periods - 1.0) / (alpha + beta + periods - 1.0))


# ---------------------------------------------------------------------------------------------
# Likelihood
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Histories:
    """Renewal histories compressed to total weights per distinct outcome."""

    churn_t: np.ndarray  # periods in which customers cancelled (T = t), each >= 1
    churn_w: np.ndarray  # total weight of the customers cancelling in each of those periods
    alive_t: np.ndarray  # periods survived by still-active customers (T > t), each >= 0
    alive_w: np.ndarray  # total weight of the active customers at each of those periods

    @property
    def total(self) -> float:
        return float(self.churn_w.sum() + self.alive_w.sum())

    def log_likelihood(self, alpha: float, beta: float) -> float:
        """[FH07] eq. B3 generalised to histories of any length: Σ w·log P(T=t) + Σ w·log S(t)."""
        return float(self.churn_w @ _log_pmf(self.churn_t, alpha, beta)
                     + self.alive_w @ _log_survival(self.alive_t, alpha, beta))

    def geometric_fit(self) -> tuple[float, float]:
        """θ and log-likelihood of the homogeneous (geometric) limit α, β → ∞ at its MLE.

        Each churner made one cancelling decision out of t, each survivor t renewing ones, so
        θ = churners / decisions observed.
        """
        churners = float(self.churn_w.sum())
        decisions = float(self.churn_w @ self.churn_t + self.alive_w @ self.alive_t)
        theta = churners / decisions
        return theta, float(xlogy(churners, theta) + xlogy(decisions - churners, 1.0 - theta))

    def gradient(self, alpha: float, beta: float) -> np.ndarray:
        """d log-likelihood / d(log α, log β), from dB(x, y)/dx = B(x, y)·(ψ(x) - ψ(x+y))."""
        t, u = self.churn_t, self.alive_t
        common = digamma(alpha + beta)
        # log P(T=t) = log B(α+1, β+t-1) - log B(α, β), with ψ(α+1) - ψ(α) = 1/α.
        pmf_a = 1.0 / alpha - digamma(alpha + beta + t) + common
        pmf_b = digamma(beta + t - 1.0) - digamma(alpha + beta + t) - digamma(beta) + common
        # log S(t) = log B(α, β+t) - log B(α, β).
        surv_a = common - digamma(alpha + beta + u)
        surv_b = digamma(beta + u) - digamma(alpha + beta + u) - digamma(beta) + common
        d_alpha = self.churn_w @ pmf_a + self.alive_w @ surv_a
        d_beta = self.churn_w @ pmf_b + self.alive_w @ surv_b
        return np.array([alpha * d_alpha, beta * d_beta])


def _compress(t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = w > 0
    values, inverse = np.unique(t[keep], return_inverse=True)
    return values, np.bincount(inverse, weights=w[keep], minlength=values.size)


def _individual_histories(
    periods: ArrayLike, churned: ArrayLike, weights: ArrayLike | None
) -> _Histories:
    t = _as_periods(periods, "periods", minimum=0).ravel()
    flags = np.asarray(churned).ravel()
    if flags.dtype != bool:
        if flags.dtype.kind not in "iuf" or not np.isin(flags, (0, 1)).all():
            raise ValueError("churned must be booleans (or 0/1): True for customers who cancelled")
        flags = flags.astype(bool)
    if flags.shape != t.shape:
        raise ValueError(
            f"periods and churned must have the same length, got {t.size} and {flags.size}"
        )
    if weights is None:
        w = np.ones_like(t)
    else:
        w = _as_float_array(weights, "weights").ravel()
        if w.shape != t.shape:
            raise ValueError(
                f"weights must have one entry per customer, got {w.size} for {t.size} customers"
            )
        if (w < 0).any():
            raise ValueError(f"weights must be >= 0, got minimum {w.min():g}")
    if (flags & (t < 1)).any():
        raise ValueError(
            "periods must be >= 1 for churned customers: a customer who cancels in period t "
            "has periods = t (t-1 renewals, then the cancellation); nobody cancels in period 0"
        )
    churn_t, churn_w = _compress(t[flags], w[flags])
    alive_t, alive_w = _compress(t[~flags], w[~flags])
    return _Histories(churn_t, churn_w, alive_t, alive_w)


def _cohort_histories(alive: ArrayLike) -> _Histories:
    counts = _as_float_array(alive, "alive").ravel()
    if counts.size == 0:
        raise ValueError("alive is empty: give the cohort size n_0 and at least one more count")
    if counts.size < 2:
        raise ValueError(
            "alive needs the cohort size n_0 and the counts at the end of at least one period"
        )
    if (counts < 0).any():
        bad = int(np.argmax(counts < 0))
        raise ValueError(f"alive must not contain negative counts, got {counts[bad]:g} at "
                         f"period {bad}")
    if counts[0] <= 0:
        raise ValueError("alive[0] (the cohort size n_0) must be > 0")
    rises = np.flatnonzero(np.diff(counts) > 0)
    if rises.size:
        k = int(rises[0]) + 1
        raise ValueError(
            "alive must be non-increasing (a cohort only loses customers), got "
            f"{counts[k - 1]:g} at period {k - 1} then {counts[k]:g} at period {k}"
        )
    n = counts.size - 1
    lost = counts[:-1] - counts[1:]
    churn_t, churn_w = _compress(np.arange(1.0, n + 1.0), lost)
    alive_t, alive_w = _compress(np.array([float(n)]), counts[-1:])
    return _Histories(churn_t, churn_w, alive_t, alive_w)


def sbg_log_likelihood(
    periods: ArrayLike,
    churned: ArrayLike,
    alpha: float,
    beta: float,
    *,
    weights: ArrayLike | None = None,
) -> float:
    """Total (weighted) log-likelihood of right-censored renewal histories: [FH07] eq. B3.

    A customer who cancelled in period t (``churned`` True, ``periods`` = t >= 1) contributes
    log P(T = t); one still active after t renewals (``churned`` False, ``periods`` = t >= 0)
    contributes log S(t). See :func:`fit_sbg` for the conventions.
    """
    alpha, beta = _check_shape_params(alpha, beta)
    return _individual_histories(periods, churned, weights).log_likelihood(alpha, beta)


# ---------------------------------------------------------------------------------------------
# Maximum likelihood
# ---------------------------------------------------------------------------------------------


def _check_identified(data: _Histories) -> None:
    if data.total <= 0:
        raise ValueError("cannot fit the sBG: the total weight of the customers is zero")
    if data.churn_w.sum() <= 0:
        raise ValueError(
            "cannot fit the sBG: no customer churned, so the data carry no information on the "
            "churn probabilities (the likelihood keeps rising as α → 0)"
        )
    if data.alive_w[data.alive_t > 0].sum() <= 0 and data.churn_t.size == 1:
        raise ValueError(
            "cannot fit the sBG: every customer churned, all in period "
            f"{data.churn_t[0]:g}; that does not identify the spread of churn probabilities"
        )
    longest = max(float(data.churn_t.max()), float(data.alive_t.max(initial=0.0)))
    if longest < 2:
        raise ValueError(
            "cannot fit the sBG: nobody was observed beyond the first renewal, so only "
            "P(T = 1) = α/(α+β) is identified, not α and β separately"
        )


def _starts(data: _Histories, initial: tuple[float, float] | None) -> list[tuple[float, float]]:
    # Geometric (homogeneous) MLE of θ: churners over renewal decisions observed.
    exposure = float(data.churn_w @ data.churn_t + data.alive_w @ data.alive_t)
    theta = min(max(float(data.churn_w.sum()) / max(exposure, 1e-12), 1e-3), 1 - 1e-3)
    starts = [(1.0, 1.0), (2.0 * theta, 2.0 * (1.0 - theta)), (20.0 * theta, 20.0 * (1.0 - theta)),
              (0.5, 0.5 * (1.0 - theta) / theta)]
    if initial is not None:
        starts.insert(0, _check_shape_params(*initial))
    return starts


def _maximise(data: _Histories, initial: tuple[float, float] | None) -> SBGModel:
    """Maximise the log-likelihood over (log α, log β) from several starts.

    L-BFGS-B with the analytic gradient, on the mean log-likelihood per unit weight so that the
    tolerances do not depend on the number of customers. Convergence is judged by the gradient
    at the best optimum, not by optimiser flags, and an optimum on or drifting toward the edge of
    the box (the MLE at α or β = 0 or ∞) raises :class:`ConvergenceError`.
    """
    _check_identified(data)
    scale = data.total

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        alpha, beta = math.exp(x[0]), math.exp(x[1])
        with np.errstate(all="ignore"):
            value = -data.log_likelihood(alpha, beta) / scale
            grad = -data.gradient(alpha, beta) / scale
        if not (math.isfinite(value) and np.isfinite(grad).all()):
            return math.inf, np.zeros(2)
        return value, grad

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * 2
    best: tuple[float, np.ndarray] | None = None
    for start in _starts(data, initial):
        x0 = np.log(np.asarray(start, dtype=float))
        if not math.isfinite(objective(x0)[0]):
            continue
        res = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-11})
        if math.isfinite(res.fun) and (best is None or res.fun < best[0]):
            best = (float(res.fun), np.asarray(res.x))
    if best is None:
        raise ConvergenceError(
            "sBG: the log-likelihood is not finite at any starting point; check the inputs"
        )
    f_opt, x_opt = best
    alpha, beta = math.exp(x_opt[0]), math.exp(x_opt[1])
    max_grad = float(np.max(np.abs(objective(x_opt)[1])))
    stationary = max_grad <= _GRAD_TOL
    theta, geometric_ll = data.geometric_fit()
    # The tolerance (per unit weight) is above the rounding error of the log-likelihood at
    # α, β ~ 1e6-1e7 and far below any heterogeneity a real sample could reveal.
    if -f_opt <= geometric_ll / scale + 1e-8:
        raise ConvergenceError(
            "sBG: the data do not identify the model: churn shows no heterogeneity, so the "
            f"likelihood only approaches its maximum as alpha, beta → ∞ (reached alpha="
            f"{alpha:.3g}, beta={beta:.3g}); a constant churn probability per period "
            f"(geometric, θ = {theta:.4g}) fits as well"
        )
    if (np.abs(x_opt) >= (_EDGE_LOG if stationary else _DRIFT_LOG)).any():
        if x_opt.min() > 0:
            why = ("α, β → ∞: churn shows no heterogeneity; a constant churn probability "
                   f"(geometric, θ ≈ {alpha / (alpha + beta):.4g}) fits about as well")
        elif x_opt.min() <= -_DRIFT_LOG:
            why = ("α or β → 0: the data look like customers who never churn mixed with "
                   "customers who always do")
        else:
            why = "a shape parameter runs off to infinity"
        raise ConvergenceError(
            f"sBG: the likelihood is maximised at the edge of the parameter space (alpha="
            f"{alpha:.3g}, beta={beta:.3g}); the data do not identify the model ({why})"
        )
    if not stationary:
        raise ConvergenceError(
            "sBG: the optimiser stopped without reaching a stationary point "
            f"(max |gradient| = {max_grad:.2e} on log-parameters, per unit weight)"
        )
    return SBGModel(alpha=alpha, beta=beta, log_likelihood=data.log_likelihood(alpha, beta))


def fit_sbg(
    periods: ArrayLike,
    churned: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    initial: tuple[float, float] | None = None,
) -> SBGModel:
    """Maximum-likelihood sBG fit on individual, right-censored renewal histories.

    Each customer's history is the number of renewal decisions observed, ``periods``, and
    whether the last of them was a cancellation, ``churned``:

    - ``churned`` True, ``periods`` = t >= 1: cancelled at the end of period t (made t-1
      renewals, then cancelled; T = t), contributing log P(T = t);
    - ``churned`` False, ``periods`` = t >= 0: made t renewals and is still active (T > t),
      contributing log S(t). t = 0 (acquired, no renewal date reached yet) contributes nothing.

    So for per-account data, ``periods`` is the number of renewals made for an active account
    and the number of renewals made plus one (the period it cancelled in) for a churned one.

    The log-likelihood is the (``weights``-weighted) sum of these terms: [FH07] eq. B3, which is
    the special case of one cohort observed for the same number of periods. Customers may come
    from cohorts of different ages; they must share one period length. Histories are compressed
    to total weights per distinct (t, churned) outcome first, so the optimisation itself costs
    the same for a million accounts as for a thousand.

    Raises ``ValueError`` for empty or invalid input or data that cannot identify α and β (no
    churner; every churner in one period and nobody still active; nobody observed beyond the
    first renewal), and :class:`ConvergenceError` when the optimum is not an interior point.
    """
    data = _individual_histories(periods, churned, weights)
    if np.size(periods) == 0:
        raise ValueError("cannot fit the sBG on zero customers")
    return _maximise(data, initial)


def fit_sbg_cohort(
    alive: ArrayLike, *, initial: tuple[float, float] | None = None
) -> SBGModel:
    """Maximum-likelihood sBG fit on one cohort's survivor counts, as in [FH07].

    ``alive[t]`` is the number of customers still active at the end of period t, t = 0..n, with
    ``alive[0]`` = n_0 the cohort size (1000, 631, 468, ... in [FH07]'s table of the "regular"
    customers). The n_{t-1} - n_t customers lost in period t contribute log P(T = t) each and the
    n_n still active contribute log S(n): [FH07] eq. B3. Counts may be shares (1, 0.631, ...):
    the estimates do not change, only the log-likelihood's scale does.

    Raises ``ValueError`` for fewer than two counts, negative counts, a count that rises, a
    cohort that loses nobody, or a cohort observed for one period only.
    """
    return _maximise(_cohort_histories(alive), initial)


# ---------------------------------------------------------------------------------------------
# Fitted model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SBGModel:
    """Fitted (or given) sBG parameters and the predictions of [FH07] and [FH10].

    ``log_likelihood`` is the maximised total log-likelihood of the data it was fitted on, or
    None for parameters given directly (``SBGModel(alpha=0.704, beta=1.182)``).

    Every prediction method takes ``t_survived``, the number of renewals a customer has made
    (T > t_survived): 0 for a customer still in the first period; at the next renewal date, the
    customer either cancels, ending their period t_survived + 1, or renews. Arguments are
    vectorised (numpy broadcasting) and must be whole numbers.
    """

    alpha: float
    beta: float
    log_likelihood: float | None = None

    def __post_init__(self) -> None:
        alpha, beta = _check_shape_params(self.alpha, self.beta)
        object.__setattr__(self, "alpha", alpha)  # plain floats, whatever number type was given
        object.__setattr__(self, "beta", beta)

    # -- distribution -------------------------------------------------------------------------

    def churn_probability(self, t: ArrayLike) -> Result:
        """P(T = t): probability that a new customer cancels in period t, [FH07] eq. 5."""
        return sbg_pmf(t, self.alpha, self.beta)

    def survival(self, t: ArrayLike) -> Result:
        """S(t) = P(T > t): probability that a new customer makes t renewals, [FH07] eq. 6."""
        return sbg_survival(t, self.alpha, self.beta)

    def retention_rate(self, t: ArrayLike) -> Result:
        """r(t) = (β+t-1)/(α+β+t-1): share of period t's customers who renew, [FH07] eq. 8."""
        return sbg_retention_rate(t, self.alpha, self.beta)

    # -- per-customer predictions -------------------------------------------------------------

    def churn_probability_next(self, t_survived: ArrayLike) -> Result:
        """P(cancel at the next renewal | t_survived renewals made) = α / (α+β+t_survived).

        P(T = t+1) / S(t) = B(α+1, β+t) / B(α, β+t) = 1 - r(t+1) ([FH07] eqs. 5, 6, 8). By
        Bayes' rule a customer who has renewed t times has θ ~ Beta(α, β+t), whose mean this is.
        """
        t = _as_periods(t_survived, "t_survived", minimum=0)
        return _wrap(self.alpha / (self.alpha + self.beta + t))

    def conditional_survival(self, t_survived: ArrayLike, k: ArrayLike) -> Result:
        """P(T > t+k | T > t) = S(t+k) / S(t) = B(α, β+t+k) / B(α, β+t), [FH07] eq. 6.

        The probability that a customer who has made t renewals makes the next k as well.
        """
        t = _as_periods(t_survived, "t_survived", minimum=0)
        ahead = _as_periods(k, "k", minimum=0)
        t, ahead = _broadcast(("t_survived", "k"), (t, ahead))
        log_ratio = (betaln(self.alpha, self.beta + t + ahead)
                     - betaln(self.alpha, self.beta + t))
        return _wrap(np.exp(log_ratio))

    def expected_remaining_periods(
        self,
        t_survived: ArrayLike,
        horizon_periods: ArrayLike,
        *,
        discount_rate: float = 0.0,
    ) -> Result:
        """Expected number of the next ``horizon_periods`` renewals the customer makes.

        Σ_{k=1..H} S(t+k)/S(t) for a customer with t renewals made ([FH07] eq. 6): each term is
        the probability of being a paying customer in period t+1+k, so the contractual CLV over
        the next H periods is the periodic fee times this (the current, already paid period not
        included). With ``discount_rate`` d > 0 the k-th renewal is discounted by (1+d)^-(k-1),
        the timing of [FH10]'s DERL (valuation just before the next renewal decision), so that
        as H → ∞ this tends to :meth:`derl`.

        Summed term by term in log space over the distinct (t, H) pairs of the input.
        """
        d = _check_discount(discount_rate)
        t = _as_periods(t_survived, "t_survived", minimum=0)
        horizon = _as_periods(horizon_periods, "horizon_periods", minimum=0)
        t, horizon = _broadcast(("t_survived", "horizon_periods"), (t, horizon))
        if t.size == 0:
            return np.zeros(t.shape)
        # Distinct (t, H) pairs, via one integer key (exact: both are whole numbers < 2^26).
        h_max = int(horizon.max())
        if t.max() < 2.0**26 and h_max < 2**26:
            keys, inverse = np.unique(t.ravel() * (h_max + 1.0) + horizon.ravel(),
                                      return_inverse=True)
            u_t, u_h = np.floor_divide(keys, h_max + 1.0), np.mod(keys, h_max + 1.0)
        else:
            pairs, inverse = np.unique(np.stack([t.ravel(), horizon.ravel()], axis=1), axis=0,
                                       return_inverse=True)
            u_t, u_h = pairs[:, 0], pairs[:, 1]
        totals = np.zeros(len(u_t))
        block = max(1, _SUM_BLOCK // len(u_t))
        log_base = betaln(self.alpha, self.beta + u_t)
        log_z = -math.log1p(d)
        for start in range(1, h_max + 1, block):
            k = np.arange(start, min(start + block, h_max + 1), dtype=float)
            log_terms = (betaln(self.alpha, self.beta + u_t[:, None] + k[None, :])
                         - log_base[:, None] + (k[None, :] - 1.0) * log_z)
            totals += np.where(k[None, :] <= u_h[:, None], np.exp(log_terms), 0.0).sum(axis=1)
        return _wrap(totals[inverse.ravel()].reshape(t.shape))

    def derl(self, t_survived: ArrayLike, discount_rate: float) -> Result:
        """Discounted expected residual lifetime, [FH10] eq. 6.

        DERL(d | α, β, n-1 renewals) = (β+n-1)/(α+β+n-1) · 2F1(1, β+n; α+β+n; 1/(1+d)), with
        n-1 = ``t_survived``: the expected discounted number of future payments of a customer who
        has made t renewals, valued just before the next renewal decision, so that the next
        payment (if made) is not discounted and the k-th is discounted by (1+d)^-(k-1). It
        equals ``expected_remaining_periods(t, ∞, discount_rate=d)``; multiply by the periodic
        fee for the expected residual value.

        For d = 0 it is (β+t)/(α-1) when α > 1 and infinite otherwise (the expected lifetime of
        a Beta(α, ·)-geometric customer is finite only for α > 1). scipy's ``hyp2f1`` returns NaN
        or loses digits here when β+t is large or α is an integer and d is small, so the 2F1 is
        evaluated by the Euler-integral method of ``btyd._log_hyp2f1_unit_a`` (accurate to
        ~1e-13); distinct values of t are evaluated once.
        """
        d = _check_discount(discount_rate)
        t = _as_periods(t_survived, "t_survived", minimum=0)
        if d == 0:
            value = np.full(t.shape, math.inf) if self.alpha <= 1 else (
                (self.beta + t) / (self.alpha - 1.0))
            return _wrap(np.asarray(value, dtype=float))
        unique_t, inverse = np.unique(t.ravel(), return_inverse=True)
        b = self.beta + unique_t + 1.0
        c = self.alpha + self.beta + unique_t + 1.0
        z = np.full(unique_t.shape, 1.0 / (1.0 + d))
        log_hyp = _log_hyp2f1_unit_a(b, c, z, np.full(unique_t.shape, d / (1.0 + d)))
        retention = (self.beta + unique_t) / (self.alpha + self.beta + unique_t)
        value = (retention * np.exp(log_hyp))[inverse.ravel()].reshape(t.shape)
        return _wrap(value)


def renewals_made(tenure_days: ArrayLike, term_days: ArrayLike) -> np.ndarray:
    """An account's renewals made at a cutoff, for the sBG's ``t_survived``: whole terms of
    its subscription tenure, floor(tenure ÷ term length), 0 where either is unknown. Terms
    shorter than 28 days count as monthly (a first partial term, a data error)."""
    tenure = np.asarray(tenure_days, dtype=float)
    term = np.maximum(np.asarray(term_days, dtype=float), 28.0)
    return np.floor(np.nan_to_num(tenure / term, nan=0.0)).clip(0)
