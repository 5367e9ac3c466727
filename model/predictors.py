"""The fitted churn and CLV models as the bundle stores them, and how they predict.

Training (:mod:`churnguard.training.models`) fits these objects; the scoring runtime
(:mod:`churnguard.model.score`) and the trainer's own evaluation call their predict methods.

References
----------
- [CG16] Chen & Guestrin (2016), "XGBoost: A Scalable Tree Boosting System", KDD.
- [Pla99] Platt (1999), "Probabilistic Outputs for Support Vector Machines and Comparisons to
  Regularized Likelihood Methods" (sigmoid calibration; here on the log-odds of the score).
- [ZE02] Zadrozny & Elkan (2002), "Transforming Classifier Scores into Accurate Multiclass
  Probability Estimates", KDD (isotonic calibration).
- [OF17] Oron & Flournoy (2017), "Centered Isotonic Regression: Point and Interval Estimation
  for Dose-Response Studies", Statistics in Biopharmaceutical Research 9(3), 258-267.
- [Dua83] Duan (1983), "Smearing Estimate: A Nonparametric Retransformation Method", JASA
  78(383), 605-610.
- [Cra71] Cragg (1971), "Some Statistical Models for Limited Dependent Variables", Econometrica
  39(5) (the hurdle model: P(y > 0) * E[y | y > 0]).
- [FHL05] Fader, Hardie & Lee (2005), BG/NBD; [FHL05b] Gamma-Gamma (see ``btyd.py``).
- [SMC87] Schmittlein, Morrison & Colombo (1987), "Counting Your Customers", Management
  Science 33(1) (Pareto/NBD; see ``btyd.py``).
- [FHS05] Friedman, Hastie & Tibshirani (2000), "Additive Logistic Regression: a Statistical
  View of Boosting", Annals of Statistics 28(2) (boosting from an initial fit F0: the trees
  fit corrections to a given log-odds offset, XGBoost's ``base_margin``).
- [LGR18] Lei, G'Sell, Rinaldo, Tibshirani & Wasserman (2018), "Distribution-Free Predictive
  Inference for Regression", JASA 113(523), 1094-1111 (split conformal: residual quantiles
  of a held-out calibration set give prediction intervals with marginal coverage).
- [HF96] Hyndman & Fan (1996), "Sample Quantiles in Statistical Packages", American
  Statistician 50(4) (the quantile of a distribution with an atom: the smallest y with
  F(y) ≥ τ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xgboost as xgb

EPS = 1e-6
CalibrationMethod = Literal["isotonic", "platt"]

#: The feature columns a :class:`BtydPrior` reads.
PRIOR_COLUMNS = ("purchase_days_total", "days_since_first_purchase",
                 "days_since_last_purchase", "avg_order_value")


def clip_probability(p: np.ndarray) -> np.ndarray:
    """Probabilities clipped to [EPS, 1 - EPS], as float64."""
    return np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)


def logit(p: np.ndarray) -> np.ndarray:
    q = clip_probability(p)
    return np.log(q / (1.0 - q))


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from a raw score to a calibrated probability.

    ``platt``: p = sigmoid(a · logit(s) + b) [Pla99]; ``isotonic``: the isotonic fit [ZE02],
    centered [OF17]: one knot per block of equal fitted value, at the block's mean score, and
    linear in between. Plain isotonic regression maps every score of a block to one value, so
    customers the model ranks apart come out tied; the centered map rises strictly between its
    first and last knot and keeps the model's ranking there. Outside those knots it is flat.
    """

    method: CalibrationMethod
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def predict(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.method == "platt":
            z = self.a * logit(scores) + self.b
            return clip_probability(1.0 / (1.0 + np.exp(-z)))
        return clip_probability(np.interp(scores, np.asarray(self.x), np.asarray(self.y)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x),
                "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(method=data["method"], a=float(data["a"]), b=float(data["b"]),
                   x=tuple(float(v) for v in data["x"]), y=tuple(float(v) for v in data["y"]))


# ---------------------------------------------------------------------------------------------
# BTYD prior: the base margin the boosters correct


def prior_columns(X: pd.DataFrame | np.ndarray,
                   names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The prior's input columns from a feature frame or an encoded matrix + column names, as
    arrays (the API scores one row at a time: no pandas on that path)."""
    if isinstance(X, pd.DataFrame):
        cols = {c: pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=float)
                for c in PRIOR_COLUMNS}
    else:
        if names is None:
            raise ValueError("an encoded matrix needs its column names")
        cols = {c: np.asarray(X[:, names.index(c)], dtype=float) for c in PRIOR_COLUMNS}
    # Any row must score: counts become whole and non-negative, ages non-negative, the last
    # purchase no earlier than the first (the BTYD models reject anything else).
    first = np.clip(cols["days_since_first_purchase"], 0.0, None)
    return {
        "purchase_days_total": np.round(np.clip(cols["purchase_days_total"], 0.0, None)),
        "days_since_first_purchase": first,
        "days_since_last_purchase": np.clip(cols["days_since_last_purchase"], 0.0, first),
        "avg_order_value": np.clip(cols["avg_order_value"], 0.0, None),
    }


_FLOAT_MAX = float(np.finfo(np.float64).max)


def nan_to_zero(a: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(a, nan=0.0)`` of a float array (NaN → 0, ±inf → ±the largest float) in
    three ufunc calls: np.nan_to_num's own checks cost several times more on the API's
    one-row arrays."""
    a = np.asarray(a, dtype=float)
    return np.minimum(np.maximum(np.where(np.isnan(a), 0.0, a), -_FLOAT_MAX), _FLOAT_MAX)


def rfm_arrays(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BTYD inputs in weeks: buyer, x (repeat purchase days), t_x (recency), T (age), m
    (average order value) from the RFM feature columns."""
    n_days = nan_to_zero(cols["purchase_days_total"])
    first = np.asarray(cols["days_since_first_purchase"], dtype=float)
    last = np.asarray(cols["days_since_last_purchase"], dtype=float)
    buyer = (n_days > 0) & np.isfinite(first) & np.isfinite(last)
    x = np.where(buyer, n_days - 1, 0.0)
    T = np.where(buyer, first / 7.0, 0.0)
    t_x = np.where(buyer & (x > 0), np.clip((first - last) / 7.0, 0.0, None), 0.0)
    t_x = np.minimum(t_x, T)
    m = nan_to_zero(cols["avg_order_value"]).clip(0.0)
    return {"buyer": buyer, "x": x, "t_x": t_x, "T": T, "m": m}


@dataclass(frozen=True)
class BtydPrior:
    """A BTYD purchase model (BG/NBD [FHL05] or Pareto/NBD [SMC87]) + Gamma-Gamma [FHL05b]
    fitted on one snapshot's feature rows, used as the base margin of the boosters (boosting
    from an initial fit [FHS05]).

    The BTYD models extrapolate with customer age by construction (the posterior of a
    customer's purchase rate and dropout given x, t_x and T), where trees fitted on younger
    snapshots can only extend their outermost leaf. Margins, with P0(h) = P(no purchase in the
    next h days | x, t_x, T) and E[Y(h)] the expected purchases ([FHL05] eq. 10; [SMC87]) times
    the Gamma-Gamma expected order value E[M] ([FHL05b]):

    - churn: logit P0(h);
    - buy (CLV hurdle): logit(1 - P0(h));
    - spend if buying: log(E[Y(h)] · E[M] / (1 - P0(h))).

    Customers without a purchase are outside the BTYD models: their margins are 0 (log-odds)
    and log of the population mean order value, and the trees learn their level.
    The RFM statistics come from the feature row (:func:`rfm_arrays`). ``family=None`` fits
    both purchase models and keeps the one with the higher likelihood (both have four
    parameters, so this is also the AIC choice).
    """

    family: str
    purchase: dict[str, float]
    gg: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "purchase": dict(self.purchase), "gg": dict(self.gg)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BtydPrior:
        return cls(family=str(data["family"]),
                   purchase={k: float(v) for k, v in data["purchase"].items()},
                   gg={k: float(v) for k, v in data["gg"].items()})

    def quantities(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                   names: list[str] | None = None, *, spend: bool = True
                   ) -> dict[str, np.ndarray]:
        """buyer (bool), p0 = P(no purchase in the horizon), spend = expected spend in it
        (left out with ``spend=False``: the churn margin needs only p0)."""
        from churnguard.model.btyd import BetaGeoModel, GammaGammaModel, ParetoNBDModel

        r = rfm_arrays(prior_columns(X, names))
        buyer = r["buyer"]
        n = len(buyer)
        p0 = np.full(n, 0.5)
        out = {"buyer": buyer}
        spent = np.zeros(n)
        p, q, v = self.gg["p"], self.gg["q"], self.gg["v"]
        mean_value = v * p / (q - 1.0) if q > 1.0 else float("nan")
        if buyer.any():
            model = (ParetoNBDModel if self.family == "pnbd" else BetaGeoModel).from_params(
                **self.purchase)
            x, t_x, T, m = (r[c][buyer] for c in ("x", "t_x", "T", "m"))
            weeks = horizon_days / 7.0
            p0[buyer] = np.asarray(model.probability_no_purchase(weeks, x, t_x, T),
                                   dtype=float)
            if spend:
                gg = GammaGammaModel.from_params(**self.gg)
                value = np.where((x > 0) & (m > 0), np.asarray(
                    gg.conditional_expected_average_value(np.where(m > 0, x, 0.0),
                                                          np.where(m > 0, m, 1.0)),
                    dtype=float), mean_value)
                spent[buyer] = np.asarray(model.expected_purchases(weeks, x, t_x, T),
                                          dtype=float) * value
        out["p0"] = np.clip(p0, 1e-4, 1 - 1e-4)
        if spend:
            out["spend"] = nan_to_zero(spent)
            out["mean_value"] = np.full(n, mean_value)
        return out

    def margins(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                names: list[str] | None = None) -> dict[str, np.ndarray]:
        """``churn``, ``buy`` and ``spend`` base margins (see the class docstring)."""
        qs = self.quantities(X, horizon_days, names)
        buyer, p0 = qs["buyer"], qs["p0"]
        churn = self._churn(buyer, p0)
        cond = qs["spend"] / (1.0 - p0)
        fallback = qs["mean_value"]
        spend = np.log(np.clip(np.where(buyer, cond, fallback), 1e-3, None))
        spend = np.where(np.isfinite(spend), spend, 0.0)
        return {"churn": churn, "buy": -churn, "spend": spend}

    def churn_margin(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                     names: list[str] | None = None) -> np.ndarray:
        """``margins(...)["churn"]`` without the spend quantities it does not use."""
        qs = self.quantities(X, horizon_days, names, spend=False)
        return self._churn(qs["buyer"], qs["p0"])

    @staticmethod
    def _churn(buyer: np.ndarray, p0: np.ndarray) -> np.ndarray:
        churn = np.where(buyer, np.log(p0 / (1.0 - p0)), 0.0)
        return np.where(np.isfinite(churn), churn, 0.0)


#: The feature columns an :class:`SbgPrior` reads.
SBG_COLUMNS = ("sub_tenure_days", "sub_term_days", "sub_days_to_renewal")


def feature_columns(X: pd.DataFrame | np.ndarray, columns: tuple[str, ...],
                    names: list[str] | None = None) -> dict[str, np.ndarray]:
    """``columns`` of a feature frame, or of an encoded matrix with column ``names``, as float
    arrays."""
    if isinstance(X, pd.DataFrame):
        return {c: pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=float)
                for c in columns}
    if names is None:
        raise ValueError("an encoded matrix needs its column names")
    return {c: np.asarray(X[:, names.index(c)], dtype=float) for c in columns}


@dataclass(frozen=True)
class SbgPrior:
    """The shifted-beta-geometric model (Fader & Hardie 2007, "How to project customer
    retention", J. Interactive Marketing 21(1)) as a churn probability for a label window of
    ``window_days``, and as the contractual churn booster's base margin (boosting from an
    initial fit [FHS05]: the trees learn what usage, seats and support add to the renewal
    calendar).

    An account's renewals made at the cutoff are t = floor(tenure ÷ term length)
    (:func:`churnguard.model.sbg.renewals_made`). If its next renewal
    (``sub_days_to_renewal``) falls inside the window, it cancels there with probability
    α / (α + β + t) ([FH07] eq. 8: 1 − r(t + 1), the mean of its Beta(α, β + t) posterior);
    otherwise with ``between_renewals``, the rate of cancellations between renewals.
    """

    alpha: float
    beta: float
    between_renewals: float
    window_days: int
    family: str = "sbg"

    def to_dict(self) -> dict[str, Any]:
        return {"family": "sbg", "alpha": self.alpha, "beta": self.beta,
                "between_renewals": self.between_renewals, "window_days": self.window_days}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SbgPrior:
        return cls(alpha=float(data["alpha"]), beta=float(data["beta"]),
                   between_renewals=float(data["between_renewals"]),
                   window_days=int(data["window_days"]))

    def renewal_periods(self, cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(renewals made t, whether the next renewal falls in the window)."""
        from churnguard.model.sbg import renewals_made

        t = renewals_made(cols["sub_tenure_days"], cols["sub_term_days"])
        due = np.nan_to_num(cols["sub_days_to_renewal"], nan=np.inf) <= self.window_days
        return t, due

    def probability(self, X: pd.DataFrame | np.ndarray,
                    names: list[str] | None = None) -> np.ndarray:
        """P(churn in the window) per row (see the class docstring)."""
        t, due = self.renewal_periods(feature_columns(X, SBG_COLUMNS, names))
        at_renewal = self.alpha / (self.alpha + self.beta + t)
        return np.where(due, at_renewal, self.between_renewals)

    def margins(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The ``churn`` base margin, logit of :meth:`probability` (``horizon_days`` is the
        window the prior was fitted for; it has no CLV margins: a contract's CLV is
        :class:`ContractClvModel`)."""
        churn = self.churn_margin(X, horizon_days, names)
        return {"churn": churn, "buy": -churn, "spend": np.zeros(len(churn))}

    def churn_margin(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                     names: list[str] | None = None) -> np.ndarray:
        """``margins(...)["churn"]``: the logit of :meth:`probability`."""
        p = clip_probability(self.probability(X, names))
        return np.asarray(np.log(p / (1.0 - p)))


#: A prior the boosters can start from.
Prior = BtydPrior | SbgPrior


def prior_from_dict(data: Mapping[str, Any]) -> Prior:
    return SbgPrior.from_dict(data) if data.get("family") == "sbg" else BtydPrior.from_dict(
        dict(data))


def masked_frame(X: pd.DataFrame, masked: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """``X`` with the ``masked`` columns set to missing: the trees never split on them."""
    cols = [c for c in masked if c in X.columns]
    if not cols:
        return X
    out = X.copy()
    for c in cols:
        out[c] = np.nan
    return out


def masked_matrix(X: np.ndarray, names: list[str], masked: list[str]) -> np.ndarray:
    cols = [names.index(c) for c in masked if c in names]
    if not cols:
        return X
    out = np.array(X, copy=True)
    out[:, cols] = np.nan
    return out


def dmatrix(X: pd.DataFrame, masked: tuple[str, ...] | list[str] = (),
             margin: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(masked_frame(X, masked), base_margin=margin, enable_categorical=True)


# ---------------------------------------------------------------------------------------------
# Churn model


@dataclass
class ChurnModel:
    """XGBoost churn classifier [CG16] plus its calibrator.

    ``info`` (saved with the bundle) may hold ``prior`` (a :class:`BtydPrior` or, for a
    contractual label, an :class:`SbgPrior`, as a dict) and
    ``prior_horizon_days``: the booster then adds its trees to the prior's churn log-odds
    (``base_margin``); and ``masked``: feature columns the booster never sees (set to missing).
    """

    booster: xgb.Booster
    calibrator: Calibrator | None = None
    best_iteration: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def prior(self) -> Prior | None:
        data = self.info.get("prior")
        return prior_from_dict(data) if data else None

    @property
    def masked(self) -> list[str]:
        return list(self.info.get("masked", []))

    def margin(self, X: pd.DataFrame | np.ndarray,
               names: list[str] | None = None) -> np.ndarray | None:
        """The base margin from the stored prior (None without one)."""
        prior = self.prior
        if prior is None:
            return None
        return prior.churn_margin(X, float(self.info["prior_horizon_days"]), names)

    def raw(self, X: pd.DataFrame, margin: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated probability; ``margin`` overrides the stored prior's base margin."""
        m = self.margin(X) if margin is None else margin
        return np.asarray(self.booster.predict(dmatrix(X, self.masked, m)))

    def predict(self, X: pd.DataFrame, margin: np.ndarray | None = None) -> np.ndarray:
        raw = self.raw(X, margin)
        return self.calibrator.predict(raw) if self.calibrator else clip_probability(raw)

    def raw_encoded(self, X: np.ndarray, names: list[str]) -> np.ndarray:
        """:meth:`raw` for an encoded float matrix with columns ``names`` (XGBoost
        ``inplace_predict``): boosters with a prior need its base margin, so callers that
        bypass :meth:`raw` must use this instead of ``booster.inplace_predict``."""
        m = self.margin(X, names)  # from the unmasked columns: the prior reads age
        X = masked_matrix(X, names, self.masked)
        return np.asarray(self.booster.inplace_predict(X, base_margin=m), dtype=float)

    def predict_encoded(self, X: np.ndarray, names: list[str]) -> np.ndarray:
        """:meth:`predict` for an encoded float matrix (see :meth:`raw_encoded`)."""
        raw = self.raw_encoded(X, names)
        return self.calibrator.predict(raw) if self.calibrator else clip_probability(raw)


# ---------------------------------------------------------------------------------------------
# CLV intervals: quantiles of the predictive distribution of spend in the horizon

#: Probability of the CLV interval (``clv_low`` .. ``clv_high``): an 80 % prediction interval.
CLV_INTERVAL_LEVEL = 0.8
#: Levels at which a :class:`SpendQuantiles` stores its log-ratio quantiles (0, 1 %, ..., 100 %).
SPEND_QUANTILE_LEVELS = 101


def interval_levels(p_zero: np.ndarray, level: float = CLV_INTERVAL_LEVEL
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The quantile levels (τ_low, τ_high) of each customer's ``level`` prediction interval,
    given P(spend = 0) = ``p_zero``.

    Equal-tailed, τ = ((1 − level) / 2, (1 + level) / 2) = (0.1, 0.9), where the atom at zero is
    smaller than the lower tail. Where it is not (P(no purchase) ≥ 10 %), the lower tail would
    have to split the atom, which no interval can: the interval then starts at 0 (τ_low = 0,
    the atom inside) and ends at the ``level`` quantile (τ_high = 0.8), so it still holds
    ``level`` of the probability rather than 0.9 of it. (A contiguous interval with exactly
    ``level`` of the mass cannot vary continuously across P(no purchase) = 10 %: the upper end
    steps down from the 90 % to the 80 % quantile there.) Where P(no purchase) ≥ ``level`` the
    interval is [0, 0]: no purchase is the likely outcome.
    """
    tail = (1.0 - level) / 2.0
    equal = np.asarray(p_zero, dtype=float) < tail
    return np.where(equal, tail, 0.0), np.where(equal, 1.0 - tail, level)


@dataclass(frozen=True)
class SpendQuantiles:
    """The distribution of a buyer's spend around the hurdle model's log-spend regression,
    measured out of sample: quantiles of the residual log(actual spend) − f(x) over the buyers
    of a held-out snapshot, at :data:`SPEND_QUANTILE_LEVELS` evenly spaced levels (split
    conformal on the log scale [LGR18]). These are the residuals whose mean exp() is Duan's
    smearing factor [Dua83], here held out and kept whole rather than averaged. Nonparametric,
    so the skew of real spend (a few large orders) is kept, where a lognormal with one
    dispersion would make it symmetric on the log scale.

    ``n`` is the number of buyers measured and ``snapshot`` the cutoff they were measured at.
    """

    log_ratio: tuple[float, ...]
    n: int = 0
    snapshot: str = ""
    level: float = CLV_INTERVAL_LEVEL

    @classmethod
    def measure(cls, actual: np.ndarray, expected: np.ndarray, *, snapshot: str = "",
                level: float = CLV_INTERVAL_LEVEL) -> SpendQuantiles:
        """From the buyers' actual spend (> 0) and the regression's prediction exp(f(x)) (> 0)
        for them."""
        actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
        ok = (actual > 0) & (expected > 0) & np.isfinite(expected)
        if ok.sum() < 2:
            raise ValueError(f"need at least 2 buyers with a positive prediction to measure "
                             f"the spend distribution, got {int(ok.sum())}")
        r = np.log(actual[ok]) - np.log(expected[ok])
        q = np.quantile(r, np.linspace(0.0, 1.0, SPEND_QUANTILE_LEVELS))
        return cls(log_ratio=tuple(float(v) for v in q), n=int(ok.sum()), snapshot=snapshot,
                   level=level)

    def ratio(self, u: np.ndarray) -> np.ndarray:
        """Quantile ``u`` of a buyer's actual spend ÷ exp(f(x)) (linear between the stored
        levels)."""
        levels = np.linspace(0.0, 1.0, len(self.log_ratio))
        return np.exp(np.interp(u, levels, np.asarray(self.log_ratio)))

    def quantile(self, tau: np.ndarray, p_buy: np.ndarray, spend: np.ndarray) -> np.ndarray:
        """Quantile ``tau`` of the hurdle's predictive distribution of spend: 0 with
        probability 1 − P(buy), else ``spend`` = exp(f(x)) × the ratio. With a = 1 − P(buy),
        the quantile is 0 for τ ≤ a [HF96] and spend × ratio((τ − a) / P(buy)) above it."""
        tau = np.asarray(tau, dtype=float)
        p = np.clip(np.asarray(p_buy, dtype=float), 0.0, 1.0)
        a = 1.0 - p
        buying = tau > a
        u = np.where(buying, (tau - a) / np.where(p > 0, p, 1.0), 0.0)
        return np.where(buying, np.asarray(spend, dtype=float) * self.ratio(u), 0.0)

    def interval(self, p_buy: np.ndarray, spend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of each customer's :attr:`level` interval (:func:`interval_levels`)."""
        lo, hi = interval_levels(1.0 - np.clip(np.asarray(p_buy, dtype=float), 0.0, 1.0),
                                 self.level)
        return self.quantile(lo, p_buy, spend), self.quantile(hi, p_buy, spend)

    def to_dict(self) -> dict[str, Any]:
        return {"log_ratio": list(self.log_ratio), "n": self.n, "snapshot": self.snapshot,
                "level": self.level}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpendQuantiles:
        return cls(log_ratio=tuple(float(v) for v in data["log_ratio"]), n=int(data["n"]),
                   snapshot=str(data.get("snapshot", "")), level=float(data["level"]))


# ---------------------------------------------------------------------------------------------
# CLV hurdle model


class _ClvProduct:
    """CLV = scale × P(buy) × E[spend | buy], never negative: what both CLV models predict
    from their :meth:`components`."""

    scale: float

    def components(self, X: pd.DataFrame,
                   margins: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def predict(self, X: pd.DataFrame,
                margins: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        p_buy, spend = self.components(X, margins)
        return np.maximum(self.scale * p_buy * spend, 0.0)

    def interval(self, X: pd.DataFrame | np.ndarray, p_buy: np.ndarray, spend: np.ndarray,
                 names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) of each row's CLV prediction interval from the rows ``X`` (a frame, or
        an encoded matrix with column ``names``) and their :meth:`components` ``p_buy`` and
        ``spend``; None for a model that stores no spend distribution."""
        raise NotImplementedError


@dataclass
class ClvModel(_ClvProduct):
    """Hurdle model of spend in the CLV horizon [Cra71]: P(buy) * E[spend | buy].

    E[spend | buy] = exp(f(x)) · smear, with f an XGBoost regression of log spend on buyers and
    ``smear`` Duan's smearing factor mean(exp(residual)) [Dua83]. Both boosters are monotone
    non-increasing in recency (:data:`CLV_MONOTONE`). ``scale`` multiplies the
    product so the total over the validation snapshot matches its actual total.

    ``quantiles`` (:class:`SpendQuantiles`, measured out of sample by training) make the model
    a predictive distribution, a point mass at 0 of weight 1 − P(buy) and a buyer's spend
    exp(f(x)) × ratio: its :meth:`interval` is the 80 % prediction interval of a customer's
    spend. The ratio is of actual spend to exp(f(x)), before ``smear`` and ``scale``: the
    held-out residuals already carry the level of the snapshot they were measured on (scaling
    as well would count a level shift twice), and the smear, a mean of exp(training residual),
    is set by a few outliers and changes with every refit where f does not (on the demo data
    168,317 before the refit and 102,555 after). Bundles trained before intervals existed have
    none (None).
    """

    buy: xgb.Booster
    spend: xgb.Booster
    smear: float = 1.0
    scale: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)
    quantiles: SpendQuantiles | None = None

    def interval(self, X: pd.DataFrame | np.ndarray, p_buy: np.ndarray, spend: np.ndarray,
                 names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) from P(buy) and E[spend | buy] before ``scale`` (``X`` is not needed:
        the hurdle's two parts are the whole distribution); None without :attr:`quantiles`."""
        if self.quantiles is None:
            return None
        return self.quantiles.interval(p_buy, spend / self.smear)

    @property
    def boosters(self) -> tuple[xgb.Booster, ...]:
        return (self.buy, self.spend)

    @property
    def prior(self) -> Prior | None:
        data = self.info.get("prior")
        return prior_from_dict(data) if data else None

    def margins(self, X: pd.DataFrame | np.ndarray, names: list[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """(buy, spend) base margins from the stored prior (None without one)."""
        prior = self.prior
        if prior is None:
            return None
        m = prior.margins(X, float(self.info["prior_horizon_days"]), names)
        return m["buy"], m["spend"]

    def components(self, X: pd.DataFrame,
                   margins: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(P(buy), E[spend | buy] before ``scale``); ``margins`` override the stored prior's."""
        m = self.margins(X) if margins is None else margins
        masked = list(self.info.get("masked", []))
        d_buy = dmatrix(X, masked, None if m is None else m[0])
        d_spend = dmatrix(X, masked, None if m is None else m[1])
        p_buy = np.clip(np.asarray(self.buy.predict(d_buy)), 0.0, 1.0)
        spend = np.exp(np.asarray(self.spend.predict(d_spend), dtype=float)) * self.smear
        return p_buy, spend

    def components_encoded(self, X: np.ndarray, names: list[str]
                           ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`components` for an encoded float matrix with columns ``names`` (see
        :meth:`ChurnModel.raw_encoded`): the same numbers, P(buy) in the boosters' float32
        as :meth:`components` returns it (the CLV product is formed in that precision)."""
        m = self.margins(X, names)  # from the unmasked columns: the prior reads age
        X = masked_matrix(X, names, list(self.info.get("masked", [])))
        p_buy = np.clip(np.asarray(self.buy.inplace_predict(
            X, base_margin=None if m is None else m[0])), 0.0, 1.0)
        spend = np.exp(np.asarray(self.spend.inplace_predict(
            X, base_margin=None if m is None else m[1]), dtype=float)) * self.smear
        return p_buy, spend



# ---------------------------------------------------------------------------------------------
# CLV of a subscription: the retention curve times the fee


#: The feature columns a :class:`ContractClvModel` reads; ``sub_term_months`` and
#: ``sub_discount`` are used where the spec has them (contract features).
CONTRACT_CLV_COLUMNS = ("sub_active", "sub_mrr", "sub_tenure_days", "sub_term_days",
                        "sub_days_to_renewal")
CONTRACT_CLV_OPTIONAL = ("sub_term_months", "sub_discount")
#: Days per month, to turn a term length in days into months where term_months is unknown.
DAYS_PER_MONTH = 365.25 / 12.0


@dataclass
class ContractClvModel(_ClvProduct):
    """Expected invoiced revenue of a subscription in the CLV horizon, from the sBG retention
    curve and the fee (a contractual setting: revenue follows the contract, not a purchase
    process).

    An account subscribed at the cutoff, with t renewals made (:func:`sbg.renewals_made`),
    its next renewal in d days and terms of L days, faces K = ⌊(H − d) / L⌋ + 1 renewals in a
    horizon of H days (0 if d > H). It pays the fee at the k-th of them if it renews there,
    with probability S(t+k)/S(t) under the shifted-beta-geometric model ([FH07] eq. 6;
    :meth:`SBGModel.conditional_survival`), and has not cancelled between renewals, with
    probability exp(−h·(d + (k−1)L)) for a constant daily hazard h. So

        CLV = scale · fee · Σ_{k=1..K} S(t+k)/S(t) · exp(−h·(d + (k−1)L)),

    fee = MRR × term months × (1 − discount) (what the account is invoiced per term; term
    months from the term length where not recorded). This is [FH10]'s expected residual value
    truncated at the horizon and undiscounted, like the hurdle model's target. The components
    keep the hurdle model's meaning: P(buy) = P(at least one invoice) = P(renewing at the
    first renewal), E[spend | buy] = CLV / P(buy) before ``scale``. ``scale`` (actual total
    ÷ predicted total, measured out of sample in training) calibrates the total. No CLV for
    an account without an active subscription: it is 0.

    [FH07] Fader & Hardie (2007), "How to project customer retention", J. Interactive
    Marketing 21(1). [FH10] Fader & Hardie (2010), "Customer-Base Valuation in a Contractual
    Setting: The Perils of Ignoring Heterogeneity", Marketing Science 29(1).
    """

    alpha: float
    beta: float
    #: Cancellations between renewals, per day.
    daily_hazard: float
    horizon_days: int
    scale: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "contract", "alpha": self.alpha, "beta": self.beta,
                "daily_hazard": self.daily_hazard, "horizon_days": self.horizon_days,
                "scale": self.scale, "info": self.info}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContractClvModel:
        return cls(alpha=float(d["alpha"]), beta=float(d["beta"]),
                   daily_hazard=float(d["daily_hazard"]), horizon_days=int(d["horizon_days"]),
                   scale=float(d["scale"]), info=dict(d.get("info", {})))

    @property
    def boosters(self) -> tuple[xgb.Booster, ...]:
        return ()

    def payments(self, cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(fee, P(paying at the k-th renewal in the horizon) as an n × K matrix, k = 1..K)
        from the columns of :data:`CONTRACT_CLV_COLUMNS` (+ the optional ones) as float
        arrays: the terms of the class docstring's sum. Paying at renewal k needs paying at
        every renewal before it, so each row is non-increasing in k."""
        from churnguard.model.sbg import SBGModel, renewals_made

        active = np.nan_to_num(cols["sub_active"], nan=0.0) > 0
        term_days = cols["sub_term_days"]
        months = cols.get("sub_term_months")
        if months is None:
            months = np.full(term_days.shape, np.nan)
        months = np.where(np.isfinite(months) & (months > 0), months,
                          np.maximum(np.round(term_days / DAYS_PER_MONTH), 1.0))
        discount = cols.get("sub_discount")
        off = (np.zeros(term_days.shape) if discount is None
               else np.clip(np.nan_to_num(discount, nan=0.0), 0.0, 1.0))
        fee = np.nan_to_num(cols["sub_mrr"], nan=0.0).clip(0.0) * months * (1.0 - off)
        fee = np.where(active & np.isfinite(fee), fee, 0.0)
        d = np.clip(np.nan_to_num(cols["sub_days_to_renewal"], nan=np.inf), 0.0, None)
        step = np.maximum(np.nan_to_num(term_days, nan=DAYS_PER_MONTH), 28.0)
        n_renewals = np.where(active & (d <= self.horizon_days),
                              np.floor((self.horizon_days - d) / step) + 1.0, 0.0)
        t = renewals_made(cols["sub_tenure_days"], term_days)
        sbg = SBGModel(alpha=self.alpha, beta=self.beta)
        d0 = np.where(np.isfinite(d), d, 0.0)
        # One column per renewal (a handful in a horizon), each vectorised over the accounts.
        terms = [np.zeros(fee.shape)]
        for k in range(1, int(n_renewals.max(initial=0.0)) + 1):
            paying = np.asarray(sbg.conditional_survival(t, float(k)), dtype=float) * np.exp(
                -self.daily_hazard * (d0 + (k - 1) * step))
            terms.append(np.where(n_renewals >= k, paying, 0.0))
        paying_k = np.stack(terms[1:], axis=1) if len(terms) > 1 else np.zeros((fee.size, 1))
        return fee, paying_k

    def components_from(self, cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(P(buy), E[spend | buy] before ``scale``) from the columns of
        :data:`CONTRACT_CLV_COLUMNS` (+ the optional ones) as float arrays."""
        fee, paying = self.payments(cols)
        expected = paying.sum(axis=1)
        p_buy = np.clip(paying[:, 0], 0.0, 1.0)
        spend = np.where(p_buy > 0, fee * expected / np.where(p_buy > 0, p_buy, 1.0), 0.0)
        return p_buy, spend

    def interval(self, X: pd.DataFrame | np.ndarray, p_buy: np.ndarray, spend: np.ndarray,
                 names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) of the 80 % prediction interval of the invoiced revenue, exactly from
        the model: revenue = scale × fee × N, N the renewals paid, with P(N ≥ k) = the k-th
        term of :meth:`payments`, so the τ-quantile of N is the number of renewals paid with
        probability above 1 − τ [HF96]. The levels follow :func:`interval_levels` (N is
        discrete, so the interval holds at least 80 %). ``p_buy`` and ``spend`` are not
        needed."""
        fee, paying = self.payments(self._columns(X, names))
        lo, hi = interval_levels(1.0 - paying[:, 0])
        def quantile(tau: np.ndarray) -> np.ndarray:
            return self.scale * fee * (paying > (1.0 - tau)[:, None]).sum(axis=1)
        return quantile(lo), quantile(hi)

    def _columns(self, X: pd.DataFrame | np.ndarray, names: list[str] | None
                 ) -> dict[str, np.ndarray]:
        present = X.columns if isinstance(X, pd.DataFrame) else names or ()
        optional = tuple(c for c in CONTRACT_CLV_OPTIONAL if c in present)
        return feature_columns(X, (*CONTRACT_CLV_COLUMNS, *optional), names)

    def components(self, X: pd.DataFrame,
                   margins: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(P(buy), E[spend | buy] before ``scale``); ``margins`` must be None (no prior)."""
        if margins is not None:
            raise ValueError("a contract CLV model takes no BTYD margins")
        return self.components_from(self._columns(X, None))

    def components_encoded(self, X: np.ndarray, names: list[str]
                           ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`components` for an encoded float matrix with columns ``names``."""
        return self.components_from(self._columns(X, names))


#: A bundle's CLV model: the hurdle model, or for a contractual label the contract model.
AnyClvModel = ClvModel | ContractClvModel
