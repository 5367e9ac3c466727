"""Buy-till-you-die (BTYD) baselines: BG/NBD, Pareto/NBD and Gamma-Gamma, fitted with scipy.

These are the classical probabilistic churn / customer-lifetime-value baselines of the
marketing-science literature, re-implemented on numpy/scipy because the ``lifetimes`` package is
unmaintained.

References
----------
- [FHL05] Fader, Hardie & Lee (2005), "'Counting Your Customers' the Easy Way: An Alternative to
  the Pareto/NBD Model", Marketing Science 24(2), 275-284.
- [FHL08] Fader, Hardie & Lee (2008), "Computing P(alive) Using the BG/NBD Model",
  http://brucehardie.com/notes/021/.
- [SMC87] Schmittlein, Morrison & Colombo (1987), "Counting Your Customers: Who Are They and
  What Will They Do Next?", Management Science 33(1), 1-24.
- [FH05] Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD Model and Related
  Expressions", http://brucehardie.com/notes/009/ (revision of 2005-11-05).
- [FHL05b] Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base
  Analysis", Journal of Marketing Research 42(4), 415-430.
- [FH13] Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value",
  http://brucehardie.com/notes/025/.
- [AS64] Abramowitz & Stegun (1964), Handbook of Mathematical Functions, 15.3.3-15.3.5
  (Euler and Pfaff transformations of the Gauss hypergeometric function 2F1).

Notation follows the papers: ``x`` = frequency (number of repeat purchases), ``t_x`` = recency
(time of the last purchase, measured from the first one), ``T`` = age (as-of date minus first
purchase), all in the same time unit (weeks in the papers).
"""

# The docstrings write the models in the papers' Greek notation (α, β, γ, ν, μ, λ, τ).

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

__all__ = [
    "BetaGeoModel",
    "ConvergenceError",
    "GammaGammaModel",
    "NotFittedError",
    "ParetoNBDModel",
    "customer_lifetime_value",
    "rfm_summary",
]

ArrayLike = npt.ArrayLike
#: What prediction methods return: a ``pd.Series`` (index of the first Series argument) when any
#: argument is a Series, a float for all-scalar input, else a numpy array.
Result = float | np.ndarray | pd.Series

# log-parameters are kept within exp(±_LOG_BOUND); an optimum on this box means the MLE does not
# exist in the interior (e.g. b -> infinity when the data shows no sign of dropout).
_LOG_BOUND = 18.0
# A fit that stops short of a stationary point with a parameter beyond exp(±_DRIFT_LOG) has run
# out along a flat ridge toward that box: the same non-identified case, not reached in time.
_DRIFT_LOG = 9.0


class ConvergenceError(RuntimeError):
    """Maximum-likelihood estimation did not reach an interior optimum."""


class NotFittedError(RuntimeError):
    """A prediction was requested from a model that has no parameters yet."""


# ---------------------------------------------------------------------------------------------
# RFM summary
# ---------------------------------------------------------------------------------------------


def _to_timestamp(value: object, name: str) -> pd.Timestamp:
    if isinstance(value, pd.Timestamp):
        ts = value
    elif isinstance(value, date):  # datetime.datetime is a subclass of date
        ts = pd.Timestamp(value)
    else:
        raise TypeError(
            f"{name} must be a datetime.date, datetime.datetime or pandas.Timestamp, "
            f"got {type(value).__name__}"
        )
    if pd.isna(ts):
        raise ValueError(f"{name} must not be NaT")
    return ts


def rfm_summary(
    transactions: pd.DataFrame,
    *,
    as_of: date | pd.Timestamp,
    calibration_start: date | pd.Timestamp | None = None,
    time_unit_days: float = 7.0,
    customer_col: str = "customer_id",
    ts_col: str = "ts",
    amount_col: str = "amount",
    include_zero_amounts: bool = False,
    T_to_last_day: bool = False,
) -> pd.DataFrame:
    """Summarise a transaction log into the (x, t_x, T, m_x) statistics of the BTYD models.

    Conventions are those of [FHL05] section 4 and [FHL05b]: several purchases on one calendar
    day collapse into a single transaction (amounts summed), time is measured from each
    customer's first purchase, and the first purchase is not a "repeat" purchase.

    Parameters
    ----------
    transactions:
        One row per purchase with a customer id, a datetime-like timestamp and an amount.
    as_of:
        End of the observation window, exclusive: only rows with ``ts < as_of`` count. ``T`` is
        ``as_of`` minus the day of the first purchase.
    calibration_start:
        Optional inclusive start of the window; earlier rows are dropped *before* summarising,
        so a customer's "first purchase" becomes their first purchase inside the window.
    time_unit_days:
        Length of the time unit in days (7 = weeks, as in the papers).
    include_zero_amounts:
        Rows with ``amount == 0`` (free or fully discounted orders) are ignored by default; set
        True to count them as purchases, as the CDNOW literature does. Negative amounts
        (refunds) never count.
    T_to_last_day:
        Measure ``T`` to the start of the last calendar day before ``as_of`` instead of to
        ``as_of`` itself. With a midnight ``as_of`` this is the day-grid convention of the CDNOW
        analyses ([FHL05], [FHL05b]): purchases on the last calibration day count and a customer
        who bought on it has ``recency == T``. With ``as_of`` = 1997-10-01 it reproduces the
        published CDNOW estimates; the default (False) keeps ``T = as_of - first purchase day``.

    Returns
    -------
    DataFrame indexed by customer (index name ``customer_col``, sorted) with columns
    ``frequency`` (repeat purchase days, int), ``recency`` (last minus first purchase day),
    ``T`` (as_of minus first purchase day), both in units of ``time_unit_days``, and
    ``monetary_value`` (mean amount per repeat purchase day; 0 when frequency is 0).
    Customers whose first purchase is on or after ``as_of`` are absent.
    """
    if not isinstance(transactions, pd.DataFrame):
        raise TypeError(
            f"transactions must be a pandas DataFrame, got {type(transactions).__name__}"
        )
    missing = [c for c in (customer_col, ts_col, amount_col) if c not in transactions.columns]
    if missing:
        raise ValueError(
            f"transactions is missing column(s) {missing}; available: {list(transactions.columns)}"
        )
    if not (isinstance(time_unit_days, int | float) and math.isfinite(time_unit_days)) or (
        time_unit_days <= 0
    ):
        raise ValueError(f"time_unit_days must be a finite number > 0, got {time_unit_days!r}")
    as_of_ts = _to_timestamp(as_of, "as_of")
    start_ts = None if calibration_start is None else _to_timestamp(
        calibration_start, "calibration_start"
    )

    raw_ts = transactions[ts_col]
    if not pd.api.types.is_datetime64_any_dtype(raw_ts):
        raise ValueError(
            f"column {ts_col!r} must have a datetime64 dtype, got {raw_ts.dtype}; "
            "convert it with pandas.to_datetime first"
        )
    ts = pd.Series(raw_ts.to_numpy(), index=transactions.index, dtype=raw_ts.dtype)
    if ts.isna().any():
        raise ValueError(f"column {ts_col!r} contains {int(ts.isna().sum())} missing timestamp(s)")
    ts_tz = getattr(ts.dtype, "tz", None)
    for name, bound in (("as_of", as_of_ts), ("calibration_start", start_ts)):
        if bound is not None and (bound.tz is None) != (ts_tz is None):
            raise ValueError(
                f"{name} and column {ts_col!r} must both be timezone-aware or both naive "
                f"({name} tz={bound.tz}, {ts_col} tz={ts_tz})"
            )
    if start_ts is not None and start_ts >= as_of_ts:
        raise ValueError(f"calibration_start ({start_ts}) must be before as_of ({as_of_ts})")

    if not pd.api.types.is_numeric_dtype(transactions[amount_col]) or pd.api.types.is_bool_dtype(
        transactions[amount_col]
    ):
        raise ValueError(
            f"column {amount_col!r} must be numeric, got {transactions[amount_col].dtype}"
        )
    amount = transactions[amount_col].astype(float)
    if not np.isfinite(amount.to_numpy()).all():
        raise ValueError(f"column {amount_col!r} contains missing or infinite amounts")
    customers = transactions[customer_col]
    if customers.isna().any():
        raise ValueError(f"column {customer_col!r} contains missing customer ids")

    keep = (ts < as_of_ts) & ((amount >= 0) if include_zero_amounts else (amount > 0))
    if start_ts is not None:
        keep &= ts >= start_ts
    frame = pd.DataFrame(
        {"customer": customers[keep], "day": ts[keep].dt.normalize(), "amount": amount[keep]}
    )
    columns = ["frequency", "recency", "T", "monetary_value"]
    if frame.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
        empty["frequency"] = empty["frequency"].astype("int64")
        empty.index.name = customer_col
        return empty

    daily = frame.groupby(["customer", "day"], sort=True)["amount"].sum().reset_index()
    per_customer = daily.groupby("customer", sort=True).agg(
        n_days=("day", "size"),
        first_day=("day", "min"),
        last_day=("day", "max"),
        total=("amount", "sum"),
        first_amount=("amount", "first"),  # rows are sorted by day within customer
    )
    unit_seconds = 86_400.0 * float(time_unit_days)
    # The calendar day holding the last instant before as_of (as_of itself is exclusive).
    end = (as_of_ts - pd.Timedelta(1, "ns")).normalize() if T_to_last_day else as_of_ts
    frequency = (per_customer["n_days"] - 1).astype("int64")
    repeat_total = per_customer["total"] - per_customer["first_amount"]
    out = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (per_customer["last_day"] - per_customer["first_day"]).dt.total_seconds()
            / unit_seconds,
            "T": (end - per_customer["first_day"]).dt.total_seconds() / unit_seconds,
            "monetary_value": np.where(
                frequency > 0, repeat_total / frequency.clip(lower=1), 0.0
            ),
        },
        index=per_customer.index,
    )
    out.index.name = customer_col
    return out[columns]


# ---------------------------------------------------------------------------------------------
# Input validation and output wrapping
# ---------------------------------------------------------------------------------------------


def _as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r:.80}") from exc
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return arr


def _broadcast(names: Sequence[str], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    shape = arrays[0].shape
    if all(a.shape == shape for a in arrays):
        # Already one shape (the usual case, a customer per element): np.broadcast_arrays
        # would only wrap each array in a view, at a cost the API's one-row scores notice.
        return list(arrays)
    try:
        return list(np.broadcast_arrays(*arrays))
    except ValueError as exc:
        shapes = ", ".join(f"{n}{a.shape}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"input shapes do not broadcast: {shapes}") from exc


def _check_frequency(x: np.ndarray) -> None:
    if (x < 0).any():
        raise ValueError(
            f"frequency must be >= 0 (number of repeat purchases), got minimum {x.min():g}"
        )
    if (x != np.round(x)).any():
        raise ValueError("frequency must be whole numbers (counts of repeat purchases)")


def _validate_history(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = _as_float_array(frequency, "frequency")
    t_x = _as_float_array(recency, "recency")
    age = _as_float_array(T, "T")
    x, t_x, age = _broadcast(("frequency", "recency", "T"), (x, t_x, age))
    # One test for the valid case (each check below reads the arrays again, and each
    # ``.any()`` is a Python-level call); the checks run only to name what is wrong.
    if not ((x < 0) | (x != np.round(x)) | (t_x < 0) | (age < 0) | (t_x > age)
            | ((x == 0) & (t_x != 0))).any():
        return x, t_x, age
    _check_frequency(x)
    if (t_x < 0).any():
        raise ValueError(f"recency must be >= 0, got minimum {t_x.min():g}")
    if (age < 0).any():
        raise ValueError(f"T must be >= 0, got minimum {age.min():g}")
    if (t_x > age).any():
        bad = int(np.argmax(t_x > age))
        raise ValueError(
            "recency must not exceed T (the last purchase cannot be after the as-of date); "
            f"first offending entry: recency={t_x.flat[bad]:g} > T={age.flat[bad]:g}"
        )
    if ((x == 0) & (t_x != 0)).any():
        raise ValueError("recency must be 0 for customers with frequency 0 (no repeat purchase)")
    return x, t_x, age


def _validate_horizon(t: ArrayLike) -> np.ndarray:
    horizon = _as_float_array(t, "t")
    if (horizon < 0).any():
        raise ValueError(f"t (prediction horizon) must be >= 0, got minimum {horizon.min():g}")
    return horizon


def _wrap(result: np.ndarray, *inputs: object) -> Result:
    for value in inputs:
        if isinstance(value, pd.Series):
            if result.shape != (len(value),):
                # A Series broadcast against a longer array: no single index fits the result.
                return np.asarray(result)
            return pd.Series(result, index=value.index)
    if result.ndim == 0:
        return float(result)
    return result


# ---------------------------------------------------------------------------------------------
# Maximum likelihood
# ---------------------------------------------------------------------------------------------


def _numeric_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    grad = np.empty_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = h
        grad[i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def _maximise_likelihood(
    mean_neg_ll: Callable[[np.ndarray], float],
    starts: Sequence[Sequence[float]],
    names: Sequence[str],
    model: str,
    n_obs: int,
) -> tuple[dict[str, float], float]:
    """Minimise the mean negative log-likelihood over log-parameters from several starts.

    L-BFGS-B finds the basin quickly; a Nelder-Mead polish from the best point then removes the
    finite-difference gradient noise so estimates are accurate to well beyond two decimals.
    Convergence is judged by the gradient at the optimum, not by optimiser flags (L-BFGS-B often
    reports a line-search "failure" at an optimum it has in fact reached).
    """

    def objective(log_params: np.ndarray) -> float:
        if np.any(np.abs(log_params) > _LOG_BOUND + 1.0):
            return math.inf
        with np.errstate(all="ignore"):
            value = mean_neg_ll(np.exp(log_params))
        return value if math.isfinite(value) else math.inf

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(names)
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        x0 = np.log(np.asarray(start, dtype=float))
        if not math.isfinite(objective(x0)):
            continue
        res = minimize(objective, x0, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-9})
        if math.isfinite(res.fun) and (best is None or res.fun < best[0]):
            best = (float(res.fun), np.asarray(res.x))
    if best is None:
        raise ConvergenceError(
            f"{model}: the log-likelihood is not finite at any starting point; "
            "check the inputs (e.g. all-zero or degenerate data)"
        )
    polish = minimize(objective, best[1], method="Nelder-Mead",
                      options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 20000, "maxfev": 20000})
    x_opt, f_opt = (np.asarray(polish.x), float(polish.fun)) if polish.fun <= best[0] else (
        best[1], best[0])

    grad = _numeric_gradient(objective, x_opt)
    stationary = bool(np.all(np.isfinite(grad)) and np.max(np.abs(grad)) <= 1e-4)
    at_bound = np.abs(x_opt) >= (_LOG_BOUND - 1.0 if stationary else _DRIFT_LOG)
    if at_bound.any():
        which = ", ".join(f"{n}={math.exp(v):.3g}" for n, v, b in zip(names, x_opt, at_bound,
                                                                       strict=True) if b)
        raise ConvergenceError(
            f"{model}: the likelihood is maximised at the edge of the parameter space ({which}); "
            "the data do not identify the model (too few repeat purchases or no dropout signal)"
        )
    # Tolerance is on the per-customer mean log-likelihood; a 1e-4 gradient in log-parameters
    # moves the total log-likelihood by far less than its sampling noise.
    if not stationary:
        raise ConvergenceError(
            f"{model}: optimiser stopped without reaching a stationary point "
            f"(max |gradient| = {np.max(np.abs(grad)):.2e} on log-parameters)"
        )
    params = {n: float(math.exp(v)) for n, v in zip(names, x_opt, strict=True)}
    return params, -f_opt * n_obs


def _check_params(params: dict[str, float], names: Sequence[str], model: str) -> dict[str, float]:
    if set(params) != set(names):
        raise ValueError(
            f"{model} needs exactly the parameters {list(names)}, got {sorted(params)}"
        )
    out = {}
    for name in names:
        value = float(params[name])
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{model} parameter {name} must be a finite number > 0, got {value!r}")
        out[name] = value
    return out


class _BaseModel:
    param_names: ClassVar[tuple[str, ...]] = ()
    model_name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.params_: dict[str, float] | None = None
        self.log_likelihood_: float | None = None

    @classmethod
    def from_params(cls, **params: float) -> Self:
        """A model with known parameters (e.g. published or stored ones), without fitting."""
        model = cls()
        model.params_ = _check_params(params, cls.param_names, cls.model_name)
        return model

    @property
    def params(self) -> dict[str, float]:
        """The fitted (or given) parameters; raises :class:`NotFittedError` before."""
        if self.params_ is None:
            raise NotFittedError(
                f"{self.model_name} has no parameters: call fit() or from_params() first"
            )
        return self.params_

    def __repr__(self) -> str:
        if self.params_ is None:
            return f"{type(self).__name__}(unfitted)"
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({inner})"


def _history_starts(x: np.ndarray, age: np.ndarray) -> float:
    """A time-scale-aware guess of the Gamma scale α: mean age per purchase."""
    return float(np.mean(age) / max(float(np.mean(x)), 0.1)) or 1.0


# ---------------------------------------------------------------------------------------------
# BG/NBD
# ---------------------------------------------------------------------------------------------


class BetaGeoModel(_BaseModel):
    """BG/NBD model of [FHL05]: Poisson purchasing with Gamma(r, α) rates; after each purchase the
    customer drops out with probability p ~ Beta(a, b).
    """

    param_names = ("r", "alpha", "a", "b")
    model_name = "BG/NBD"

    @staticmethod
    def _ll(
        params: dict[str, float], x: np.ndarray, t_x: np.ndarray, age: np.ndarray
    ) -> np.ndarray:
        r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
        # [FHL05] eq. 3, rearranged as log of the "still alive" term plus log1p of the ratio of
        # the "dropped after the last purchase" term to it; that ratio is a/(b+x-1) *
        # ((α+T)/(α+t_x))^(r+x) (the inverse odds of [FHL08]), so nothing overflows.
        base = (gammaln(r + x) - gammaln(r) + r * math.log(alpha)
                + betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + age))
        return base + np.logaddexp(0.0, BetaGeoModel._log_dead_odds(params, x, t_x, age))

    @staticmethod
    def _log_dead_odds(
        params: dict[str, float], x: np.ndarray, t_x: np.ndarray, age: np.ndarray
    ) -> np.ndarray:
        """log[P(dead)/P(alive)]; -inf for x = 0 (in the BG/NBD nobody drops before a repeat)."""
        r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
        with np.errstate(divide="ignore", invalid="ignore"):
            value = (math.log(a) - np.log(b + x - 1)
                     + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x)))
        return np.where(x > 0, value, -np.inf)

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Result:
        """Per-customer log-likelihood, [FHL05] eq. 3."""
        x, t_x, age = _validate_history(frequency, recency, T)
        return _wrap(self._ll(self.params, x, t_x, age), frequency, recency, T)

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        initial_params: dict[str, float] | None = None,
    ) -> Self:
        """Maximum-likelihood fit of [FHL05] eq. 3 (summed over customers; eq. 4)."""
        x, t_x, age = _validate_history(frequency, recency, T)
        x, t_x, age = x.ravel(), t_x.ravel(), age.ravel()
        if x.size == 0:
            raise ValueError("cannot fit BG/NBD on zero customers")
        if not (x > 0).any():
            raise ValueError("cannot fit BG/NBD: no customer has a repeat purchase")
        alpha0 = _history_starts(x, age)
        starts: list[Sequence[float]] = [
            (1.0, 1.0, 1.0, 1.0), (0.5, alpha0 * 0.5, 1.0, 3.0), (1.0, alpha0, 0.5, 1.0)
        ]
        if initial_params is not None:
            starts.insert(0, [_check_params(initial_params, self.param_names, self.model_name)[n]
                              for n in self.param_names])

        def mean_neg_ll(p: np.ndarray) -> float:
            params = dict(zip(self.param_names, p, strict=True))
            return -float(np.mean(self._ll(params, x, t_x, age)))

        self.params_, self.log_likelihood_ = _maximise_likelihood(
            mean_neg_ll, starts, self.param_names, self.model_name, x.size)
        return self

    def probability_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Result:
        """P(alive at T | x, t_x, T) = 1 / (1 + δ(x>0)·a/(b+x-1)·((α+T)/(α+t_x))^(r+x)).

        [FHL08] eq. 2 (also the denominator of [FHL05] eq. 10).
        """
        x, t_x, age = _validate_history(frequency, recency, T)
        p_alive = np.exp(-np.logaddexp(0.0, self._log_dead_odds(self.params, x, t_x, age)))
        return _wrap(p_alive, frequency, recency, T)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T+t], [FHL05] eq. 10.

        Eq. 10 is ``(a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1;
        t/(α+T+t))] · P(alive)``, whose 2F1 overflows against an underflowing power for heavy
        buyers. Two Pfaff transformations ([AS64] 15.3.4, then 15.3.5) turn the bracket into
        ``1 - ((α+T+t)/(α+T))^(1-a) · 2F1(a+b-1-r, a-1; a+b+x-1; t/(α+T+t))``: x is left only
        in the third parameter and the argument stays in [0, 1). (After the first
        transformation alone the argument is -t/(α+T), below -1 for young customers, where
        scipy's 2F1 returns inf, NaN or wrong digits for frequent buyers.) The expression is
        analytic through a = 1 (both factors vanish); within 1e-6 of it we average the two
        sides.
        """
        params = self.params
        x, t_x, age = _validate_history(frequency, recency, T)
        horizon = _validate_horizon(t)
        horizon, x, t_x, age = _broadcast(("t", "frequency", "recency", "T"),
                                          (horizon, x, t_x, age))
        r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
        p_alive = np.exp(-np.logaddexp(0.0, self._log_dead_odds(params, x, t_x, age)))

        def scaled_bracket(a_: float) -> np.ndarray:
            c = a_ + b + x - 1.0
            growth = (alpha + age + horizon) / (alpha + age)
            hyp = growth ** (1.0 - a_) * hyp2f1(a_ + b - 1.0 - r, a_ - 1.0, c,
                                                horizon / (alpha + age + horizon))
            return c / (a_ - 1.0) * (1.0 - hyp)

        h = 1e-6
        if abs(a - 1.0) < h:
            bracket = 0.5 * (scaled_bracket(1.0 + h) + scaled_bracket(1.0 - h))
        else:
            bracket = scaled_bracket(a)
        return _wrap(p_alive * bracket, t, frequency, recency, T)

    def probability_no_purchase(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(no purchase in (T, T+t] | x, t_x, T) = P(dead) + P(alive)·((α+T)/(α+T+t))^(r+x).

        Derivation: in the BG/NBD a customer can only drop out right after a purchase, so a
        customer alive at T stays alive until the next purchase, and "no purchase in t" is just
        "no Poisson event in t". By Bayes' rule on [FHL05] eq. 3 (as in its appendix), the rate of
        a customer alive at T is Gamma(r+x, α+T) a posteriori, whose Laplace transform at t gives
        the power term. Equivalently it is the likelihood ratio L(x, t_x, T+t) / L(x, t_x, T).
        Tends to P(dead) as t → ∞.
        """
        params = self.params
        x, t_x, age = _validate_history(frequency, recency, T)
        horizon = _validate_horizon(t)
        horizon, x, t_x, age = _broadcast(("t", "frequency", "recency", "T"),
                                          (horizon, x, t_x, age))
        r, alpha = params["r"], params["alpha"]
        p_alive = np.exp(-np.logaddexp(0.0, self._log_dead_odds(params, x, t_x, age)))
        survive = np.exp(-(r + x) * np.log1p(horizon / (alpha + age)))
        return _wrap((1.0 - p_alive) + p_alive * survive, t, frequency, recency, T)


# ---------------------------------------------------------------------------------------------
# Pareto/NBD
# ---------------------------------------------------------------------------------------------

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_GL_NODES = 0.5 * (_GL_NODES + 1.0)  # mapped to [0, 1]
_GL_WEIGHTS = 0.5 * _GL_WEIGHTS


def _log_hyp2f1_series(b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log 2F1(1, b; c; z) by its power series: positive terms with ratio < z."""
    term = np.ones_like(z)
    total = np.ones_like(z)
    for k in range(4000):
        term = term * (b + k) / (c + k) * z
        total = total + term
        if np.all(term <= 1e-17 * total):
            break
    return np.log(total)


def _log_knee_integral(g: np.ndarray, b: np.ndarray, knee: np.ndarray) -> np.ndarray:
    """log ∫_0^L e^{-g y} (1 + e^{y-L})^{-b} dy by composite Gauss-Legendre.

    Panels grow geometrically away from y = 0 (where e^{-gy} concentrates the mass for large g)
    and away from the knee y = L (where the second factor turns), so every panel sees a smooth,
    slowly varying integrand; summed in log space.
    """
    h0 = 1.0 / (np.abs(g) + b + 1.0)
    forward = h0[:, None] * (2.0 ** np.arange(14) - 1.0)[None, :]
    backward = knee[:, None] - 0.5 * (2.0 ** np.arange(6) - 1.0)[None, :]
    edges = np.sort(np.clip(np.concatenate([forward, backward, knee[:, None]], axis=1),
                            0.0, knee[:, None]), axis=1)
    lo, width = edges[:, :-1], np.diff(edges, axis=1)
    y = lo[:, :, None] + width[:, :, None] * _GL_NODES[None, None, :]
    with np.errstate(divide="ignore"):
        log_terms = (np.log(width)[:, :, None] + np.log(_GL_WEIGHTS)[None, None, :]
                     - g[:, None, None] * y
                     - b[:, None, None] * np.logaddexp(0.0, y - knee[:, None, None]))
    log_terms = log_terms.reshape(len(g), -1)
    peak = log_terms.max(axis=1)
    return peak + np.log(np.sum(np.exp(log_terms - peak[:, None]), axis=1))


def _log_hyp2f1_unit_a(
    b: np.ndarray, c: np.ndarray, z: np.ndarray, one_minus_z: np.ndarray
) -> np.ndarray:
    """log 2F1(1, b; c; z) for 0 < b < c, c > 1, 0 <= z < 1, accurate to ~1e-13 relative.

    scipy's ``hyp2f1`` returns inf/nan or loses up to 2 digits here when c-1-b is (close to) an
    integer and z is near 1, which happens in the Pareto/NBD for integer s or r+x. For z <= 0.9
    the positive power series is used. Above, with ε = 1-z and L = log(z/ε), Euler's integral
    2F1(1, b; c; z) = (c-1)∫_0^∞ e^{-(c-1)y}(ε + z e^{-y})^{-b} dy splits at the knee y = L
    into (c-1)[z^{-b}·K1 + ε^{c-1-b} z^{-(c-1)}·K2], with K1 the integral in
    ``_log_knee_integral`` and K2 = ∫_0^∞ e^{-(c-1)u}(1+e^{-u})^{-b} du
    = 2^{-b}·2F1(1, b; c; 1/2)/(c-1) by the Pfaff transformation [AS64] 15.3.5.
    ``one_minus_z`` is passed separately so that ε keeps full relative precision.
    """
    out = np.empty(z.shape)
    near = z > 0.9
    far = ~near
    if far.any():
        out[far] = _log_hyp2f1_series(b[far], c[far], z[far])
    if near.any():
        bb, cc, zz, eps = b[near], c[near], z[near], one_minus_z[near]
        knee = np.log(zz) - np.log(eps)
        gap = cc - 1.0 - bb
        log_k1 = _log_knee_integral(gap, bb, knee)
        log_k2 = (-bb * math.log(2.0) + _log_hyp2f1_series(bb, cc, np.full_like(zz, 0.5))
                  - np.log(cc - 1.0))
        out[near] = np.log(cc - 1.0) + np.logaddexp(
            -bb * np.log(zz) + log_k1, gap * np.log(eps) - (cc - 1.0) * np.log(zz) + log_k2)
    return out


def _pnbd_log_power(
    params: dict[str, float], x: np.ndarray, tau: np.ndarray
) -> np.ndarray:
    """log[(α+τ)^-(r+x) (β+τ)^-s]."""
    return -(params["r"] + x) * np.log(params["alpha"] + tau) - params["s"] * np.log(
        params["beta"] + tau
    )


def _pnbd_log_antiderivative(
    params: dict[str, float], x: np.ndarray, tau: np.ndarray
) -> np.ndarray:
    """log G(τ), where ∫_u^v (α+τ)^-(r+x) (β+τ)^-(s+1) dτ = [G(u) - G(v)] / (r+s+x).

    G is the pair of terms that make up A_0 in [FH05] eqs. 19 (α ≥ β) and 20 (α ≤ β):
    ``(max(α,β)+τ)^-(r+s+x) · 2F1(r+s+x, b; r+s+x+1; |α-β|/(max(α,β)+τ))`` with b = s+1 or
    b = r+x. Evaluated as written, that 2F1 has c-a-b < 0 and blows up as its argument
    approaches 1 (when min(α,β) ≪ max(α,β)), and A_0 is a difference of two such numbers.
    The Euler transformation [AS64] 15.3.3 rewrites it as a power term times
    ``2F1(1, b'; r+s+x+1; z)`` with 0 < b' < c, bounded by 1/(1-z), which
    ``_log_hyp2f1_unit_a`` evaluates accurately on the whole range; the difference is then taken
    in log space (see ``_pnbd_log_bracket``).
    """
    r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
    x, tau = np.broadcast_arrays(x, tau)
    c = r + s + x + 1.0
    log_power = _pnbd_log_power(params, x, tau)
    if alpha >= beta:
        z = (alpha - beta) / (alpha + tau)
        return log_power + _log_hyp2f1_unit_a(r + x, c, z, (beta + tau) / (alpha + tau))
    z = (beta - alpha) / (beta + tau)
    return (log_power + np.log(alpha + tau) - np.log(beta + tau)
            + _log_hyp2f1_unit_a(np.full(z.shape, s + 1.0), c, z, (alpha + tau) / (beta + tau)))


def _pnbd_log_bracket(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, age: np.ndarray
) -> np.ndarray:
    """log{ (α+T)^-(r+x)(β+T)^-s + s/(r+s+x) · A_0 }, the data-dependent factor of [FH05] eq. 18.

    A_0 = G(t_x) - G(T) ≥ 0; it is computed as G(t_x)·(1 - exp(log G(T) - log G(t_x))) with
    expm1, so it keeps full relative precision when t_x is close to T, and is exactly 0 (not a
    tiny negative number) when t_x = T.
    """
    r, s = params["r"], params["s"]
    log_first = _pnbd_log_power(params, x, age)
    log_g_tx = _pnbd_log_antiderivative(params, x, t_x)
    log_g_t = _pnbd_log_antiderivative(params, x, age)
    gap = log_g_t - log_g_tx
    with np.errstate(divide="ignore", invalid="ignore"):
        log_a0 = np.where(gap < 0, log_g_tx + np.log(-np.expm1(np.minimum(gap, -1e-300))),
                          -np.inf)
    return np.logaddexp(log_first, math.log(s) - np.log(r + s + x) + log_a0)


class ParetoNBDModel(_BaseModel):
    """Pareto/NBD model of [SMC87]: Poisson purchasing with Gamma(r, α) rates and exponential
    lifetimes with Gamma(s, β) dropout rates; expressions from [FH05].

    Numerics: everything is in log space, and the Gauss hypergeometric function of the
    likelihood is Euler-transformed into a positive, bounded series for both α ≥ β and α < β
    (see ``_pnbd_log_antiderivative``), so the likelihood is accurate for heavy buyers, for
    t_x = T and for very unequal α and β.
    """

    param_names = ("r", "alpha", "s", "beta")
    model_name = "Pareto/NBD"

    @staticmethod
    def _ll(
        params: dict[str, float], x: np.ndarray, t_x: np.ndarray, age: np.ndarray
    ) -> np.ndarray:
        r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
        # [FH05] eq. 18.
        return (gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)
                + _pnbd_log_bracket(params, x, t_x, age))

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Result:
        """Per-customer log-likelihood, [FH05] eqs. 18-20."""
        x, t_x, age = _validate_history(frequency, recency, T)
        return _wrap(self._ll(self.params, x, t_x, age), frequency, recency, T)

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        initial_params: dict[str, float] | None = None,
    ) -> Self:
        """Maximum-likelihood fit of [FH05] eq. 18 summed over customers."""
        x, t_x, age = _validate_history(frequency, recency, T)
        x, t_x, age = x.ravel(), t_x.ravel(), age.ravel()
        if x.size == 0:
            raise ValueError("cannot fit Pareto/NBD on zero customers")
        if not (x > 0).any():
            raise ValueError("cannot fit Pareto/NBD: no customer has a repeat purchase")
        alpha0 = _history_starts(x, age)
        starts: list[Sequence[float]] = [
            (0.5, alpha0 * 0.5, 0.5, alpha0 * 0.5), (1.0, alpha0, 1.0, alpha0 * 2.0),
            (1.0, 1.0, 1.0, 1.0),
        ]
        if initial_params is not None:
            starts.insert(0, [_check_params(initial_params, self.param_names, self.model_name)[n]
                              for n in self.param_names])

        def mean_neg_ll(p: np.ndarray) -> float:
            params = dict(zip(self.param_names, p, strict=True))
            return -float(np.mean(self._ll(params, x, t_x, age)))

        self.params_, self.log_likelihood_ = _maximise_likelihood(
            mean_neg_ll, starts, self.param_names, self.model_name, x.size)
        return self

    def probability_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Result:
        """P(alive at T | x, t_x, T): the "still alive" term of [FH05] eq. 18 over the whole
        likelihood ([FH05] section on P(alive); [SMC87] eq. 11).
        """
        params = self.params
        x, t_x, age = _validate_history(frequency, recency, T)
        log_p = _pnbd_log_power(params, x, age) - _pnbd_log_bracket(params, x, t_x, age)
        return _wrap(np.exp(np.minimum(log_p, 0.0)), frequency, recency, T)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """E[Y(t) | x, t_x, T] = P(alive) · (r+x)(β+T)/((α+T)(s-1)) · [1 - ((β+T)/(β+T+t))^(s-1)].

        [FH05] section "Conditional expectations" ([SMC87] eq. 22). The last two factors are
        written as (β+T)·(1 - exp(-(s-1)·log1p(t/(β+T))))/(s-1), whose s → 1 limit is
        (β+T)·log1p(t/(β+T)); near s = 1 that limit is used.
        """
        params = self.params
        x, t_x, age = _validate_history(frequency, recency, T)
        horizon = _validate_horizon(t)
        horizon, x, t_x, age = _broadcast(("t", "frequency", "recency", "T"),
                                          (horizon, x, t_x, age))
        r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
        p_alive = np.exp(np.minimum(
            _pnbd_log_power(params, x, age) - _pnbd_log_bracket(params, x, t_x, age), 0.0))
        log_growth = np.log1p(horizon / (beta + age))
        if abs(s - 1.0) < 1e-9:
            lifetime = log_growth
        else:
            lifetime = -np.expm1(-(s - 1.0) * log_growth) / (s - 1.0)
        value = p_alive * (r + x) * (beta + age) / (alpha + age) * lifetime
        return _wrap(value, t, frequency, recency, T)

    def probability_no_purchase(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(no purchase in (T, T+t] | x, t_x, T) = L(x, t_x, T+t) / L(x, t_x, T).

        Derivation: the likelihood [FH05] eq. 18 of a history (x, t_x) observed up to T+t is the
        density of that history up to T times the probability that nothing happens in
        (T, T+t]; the parameter factor cancels. Written out, this is
        P(dead) + P(alive)·E[μ/(λ+μ)·(1 - e^{-(λ+μ)t}) + e^{-(λ+μ)t}] with λ ~ Gamma(r+x, α+T),
        μ ~ Gamma(s, β+T) a posteriori. As t → ∞ it tends to P(no further purchase ever),
        which exceeds P(dead) because an alive customer may die before buying again.
        """
        params = self.params
        x, t_x, age = _validate_history(frequency, recency, T)
        horizon = _validate_horizon(t)
        horizon, x, t_x, age = _broadcast(("t", "frequency", "recency", "T"),
                                          (horizon, x, t_x, age))
        log_ratio = (_pnbd_log_bracket(params, x, t_x, age + horizon)
                     - _pnbd_log_bracket(params, x, t_x, age))
        return _wrap(np.exp(np.minimum(log_ratio, 0.0)), t, frequency, recency, T)


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma spend model
# ---------------------------------------------------------------------------------------------


def _validate_spend(
    frequency: ArrayLike, monetary_value: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    x = _as_float_array(frequency, "frequency")
    m = _as_float_array(monetary_value, "monetary_value")
    x, m = _broadcast(("frequency", "monetary_value"), (x, m))
    _check_frequency(x)
    if (m < 0).any():
        raise ValueError(f"monetary_value must be >= 0, got minimum {m.min():g}")
    return x, m


class GammaGammaModel(_BaseModel):
    """Gamma-Gamma model of average transaction value, [FHL05b] (see also [FH13]).

    Transaction values are Gamma(p, ν) with ν ~ Gamma(q, γ) across customers; ``v`` is γ.
    Like the papers, it assumes spend is independent of the purchase process.
    """

    param_names = ("p", "q", "v")
    model_name = "Gamma-Gamma"

    @staticmethod
    def _ll(params: dict[str, float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
        p, q, v = params["p"], params["q"], params["v"]
        # Density of the mean m_x of x Gamma(p, ν) values with ν integrated out: [FHL05b]
        # appendix (eq. 1a of [FH13]).
        return (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * math.log(v)
                + (p * x - 1.0) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(v + m * x))

    def log_likelihood(self, frequency: ArrayLike, monetary_value: ArrayLike) -> Result:
        """Per-customer log-likelihood of m_x given x (x > 0, m_x > 0)."""
        x, m = self._fit_inputs(frequency, monetary_value)
        return _wrap(self._ll(self.params, x, m), frequency, monetary_value)

    @staticmethod
    def _fit_inputs(
        frequency: ArrayLike, monetary_value: ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]:
        x, m = _validate_spend(frequency, monetary_value)
        if (x == 0).any():
            raise ValueError(
                "Gamma-Gamma is fitted on customers with at least one repeat purchase: "
                "filter to frequency > 0 first"
            )
        if (m == 0).any():
            raise ValueError("Gamma-Gamma needs monetary_value > 0 for every fitted customer")
        return x, m

    def fit(
        self,
        frequency: ArrayLike,
        monetary_value: ArrayLike,
        *,
        initial_params: dict[str, float] | None = None,
    ) -> Self:
        """Maximum-likelihood fit on customers with frequency > 0 ([FHL05b], [FH13])."""
        x, m = self._fit_inputs(frequency, monetary_value)
        x, m = x.ravel(), m.ravel()
        if x.size < 2:
            raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases")
        mean_m = float(np.mean(m))
        # p·v/(q-1) is the population mean spend, so these starts all match the data's mean.
        starts: list[Sequence[float]] = [
            (1.0, 2.0, mean_m), (5.0, 3.0, 2.0 * mean_m / 5.0), (1.0, 5.0, 4.0 * mean_m)
        ]
        if initial_params is not None:
            starts.insert(0, [_check_params(initial_params, self.param_names, self.model_name)[n]
                              for n in self.param_names])

        def mean_neg_ll(p: np.ndarray) -> float:
            params = dict(zip(self.param_names, p, strict=True))
            return -float(np.mean(self._ll(params, x, m)))

        self.params_, self.log_likelihood_ = _maximise_likelihood(
            mean_neg_ll, starts, self.param_names, self.model_name, x.size)
        return self

    def conditional_expected_average_value(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> Result:
        """E[M | p, q, γ, m_x, x] = (q-1)/(px+q-1) · γp/(q-1) + px/(px+q-1) · m_x.

        [FHL05b] (eq. 5 of [FH13]): a credibility-weighted average of the population mean γp/(q-1)
        and the customer's own mean; for x = 0 it is the population mean. Needs q > 1, otherwise
        the population mean spend is infinite.
        """
        params = self.params
        x, m = _validate_spend(frequency, monetary_value)
        p, q, v = params["p"], params["q"], params["v"]
        if q <= 1.0:
            raise ValueError(
                f"Gamma-Gamma q = {q:.4g} <= 1: the expected spend per transaction is infinite"
            )
        value = (v + m * x) * p / (p * x + q - 1.0)
        return _wrap(value, frequency, monetary_value)


def customer_lifetime_value(
    transaction_model: BetaGeoModel | ParetoNBDModel,
    spend_model: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    *,
    t: float,
    discount_rate: float = 0.0,
) -> Result:
    """Expected spend in (T, T+t]: expected purchases × expected value per purchase.

    [FHL05b] section "Computing CLV" combines the purchase model with the Gamma-Gamma mean under
    the independence of spend and purchasing. Undiscounted (``discount_rate = 0``) it is
    E[Y(t)] · E[M]. With a discount rate d per time unit, the expected purchases of each unit
    interval (k-1, k] (and the final partial one) are discounted by (1+d)^-k at the interval's
    end, the discrete approximation used by ``lifetimes``.
    """
    if not isinstance(transaction_model, BetaGeoModel | ParetoNBDModel):
        raise TypeError(
            "transaction_model must be a BetaGeoModel or ParetoNBDModel, "
            f"got {type(transaction_model).__name__}"
        )
    if not isinstance(spend_model, GammaGammaModel):
        raise TypeError(f"spend_model must be a GammaGammaModel, got {type(spend_model).__name__}")
    if not (isinstance(t, int | float) and math.isfinite(t) and t >= 0):
        raise ValueError(f"t must be a finite number >= 0, got {t!r}")
    if not (isinstance(discount_rate, int | float) and math.isfinite(discount_rate)
            and discount_rate > -1):
        raise ValueError(f"discount_rate must be a finite number > -1, got {discount_rate!r}")
    x, t_x, age = _validate_history(frequency, recency, T)
    value = np.asarray(spend_model.conditional_expected_average_value(x, monetary_value))
    if discount_rate == 0:
        purchases = np.asarray(transaction_model.expected_purchases(t, x, t_x, age))
    else:
        edges = np.append(np.arange(1.0, math.floor(t) + 1.0), t)
        edges = np.unique(edges[edges > 0])
        purchases = np.zeros(np.broadcast_shapes(x.shape, np.shape(value)))
        previous = np.zeros_like(purchases)
        for end in edges:
            cumulative = np.asarray(transaction_model.expected_purchases(end, x, t_x, age))
            purchases = purchases + (cumulative - previous) / (1.0 + discount_rate) ** end
            previous = cumulative
    return _wrap(np.asarray(purchases * value), frequency, recency, T, monetary_value)
