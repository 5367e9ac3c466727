"""The churn and CLV models, their probability calibration, and the baselines beside them.

References
----------
- [CG16] Chen & Guestrin (2016), "XGBoost: A Scalable Tree Boosting System", KDD.
- [Pla99] Platt (1999), "Probabilistic Outputs for Support Vector Machines and Comparisons to
  Regularized Likelihood Methods" (sigmoid calibration; here on the log-odds of the score).
- [ZE02] Zadrozny & Elkan (2002), "Transforming Classifier Scores into Accurate Multiclass
  Probability Estimates", KDD (isotonic calibration).
- [OF17] Oron & Flournoy (2017), "Centered Isotonic Regression: Point and Interval Estimation
  for Dose-Response Studies", Statistics in Biopharmaceutical Research 9(3), 258-267.
- [NC05] Niculescu-Mizil & Caruana (2005), "Predicting Good Probabilities With Supervised
  Learning", ICML (isotonic overfits small calibration sets; Platt suits them).
- [CCD18] Chernozhukov et al. (2018), "Double/debiased machine learning", Econometrics
  Journal 21(1) (cross-fitting: choose on one fold, evaluate on the other).
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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

EPS = 1e-6
CalibrationMethod = Literal["isotonic", "platt"]

#: Features whose effect on churn has a known sign (+1: more of it never lowers churn risk).
#: Constraining them ([CG16] monotone constraints) keeps the model sensible where data is thin
#: and helps it extrapolate to later cutoffs, where recency values run past the training range.
CHURN_MONOTONE: dict[str, int] = {
    "days_since_last_purchase": 1,
    "complaints_90d": 1,
    "complaints_365d": 1,
}

#: The same for the CLV hurdle's two boosters (-1: more of it never raises P(buy) or the
#: spend of a buyer): the longer since the last purchase, the fewer purchases to expect.
CLV_MONOTONE: dict[str, int] = {
    "days_since_last_purchase": -1,
}


#: Raw customer-age features. On a young business every training snapshot holds younger
#: customers than the one scored later, so splits on age are extrapolated; with a BTYD prior,
#: which models ageing itself, a candidate that never splits on them is tried (``masked``).
AGE_FEATURES: tuple[str, ...] = ("tenure_days", "days_since_first_purchase")

#: The feature columns a :class:`BtydPrior` reads.
PRIOR_COLUMNS = ("purchase_days_total", "days_since_first_purchase",
                 "days_since_last_purchase", "avg_order_value")


@dataclass(frozen=True)
class BoostConfig:
    """XGBoost settings shared by the churn and CLV models (hist trees, early stopping)."""

    max_depth: int = 4
    learning_rate: float = 0.05
    n_estimators: int = 800
    early_stopping_rounds: int = 50
    min_child_weight: float = 5.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    n_jobs: int = 2
    seed: int = 0

    def params(self) -> dict[str, Any]:
        return {
            "tree_method": "hist", "max_depth": self.max_depth,
            "learning_rate": self.learning_rate, "min_child_weight": self.min_child_weight,
            "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda, "n_jobs": self.n_jobs, "random_state": self.seed,
            "enable_categorical": True, "max_cat_to_onehot": 8,
        }


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)


def _logit(p: np.ndarray) -> np.ndarray:
    q = _clip(p)
    return np.log(q / (1.0 - q))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [1e-6, 1 - 1e-6]."""
    q = _clip(p)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)))


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

    @classmethod
    def fit(cls, method: CalibrationMethod, scores: np.ndarray, labels: np.ndarray) -> Calibrator:
        scores = np.asarray(scores, dtype=float)
        labels = np.asarray(labels, dtype=float)
        if scores.shape != labels.shape or scores.size == 0:
            raise ValueError("calibration needs equally long, non-empty scores and labels")
        if len(np.unique(labels)) < 2:
            raise ValueError("calibration needs both classes in the labels")
        if method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(_logit(scores).reshape(-1, 1), labels)
            return cls("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
        if method == "isotonic":
            fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(scores, labels)
            order = np.argsort(scores, kind="stable")
            s_sorted, f_sorted = scores[order], fitted[order]
            # Blocks are runs of equal fitted value along the sorted scores (equal scores
            # always share one, as the fit pools ties).
            starts = np.flatnonzero(np.r_[True, np.diff(f_sorted) != 0])
            centers = np.add.reduceat(s_sorted, starts) / np.diff(np.r_[starts, scores.size])
            return cls("isotonic", x=tuple(float(v) for v in centers),
                       y=tuple(float(v) for v in f_sorted[starts]))
        raise ValueError(f"unknown calibration method {method!r}; use 'isotonic' or 'platt'")

    def predict(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.method == "platt":
            z = self.a * _logit(scores) + self.b
            return _clip(1.0 / (1.0 + np.exp(-z)))
        return _clip(np.interp(scores, np.asarray(self.x), np.asarray(self.y)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x),
                "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(method=data["method"], a=float(data["a"]), b=float(data["b"]),
                   x=tuple(float(v) for v in data["x"]), y=tuple(float(v) for v in data["y"]))


@dataclass(frozen=True)
class CalibrationChoice:
    calibrator: Calibrator
    cv_log_loss: dict[str, float]
    raw_log_loss: float


def choose_calibration(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    methods: tuple[CalibrationMethod, ...] = ("isotonic", "platt"),
    n_folds: int = 2,
    seed: int = 0,
) -> CalibrationChoice:
    """Pick the calibration method by cross-fitted log loss, then fit it on all rows.

    Cross-fitting [CCD18]: the rows are split into ``n_folds`` random folds; each method is fitted
    on all folds but one and scored on the left-out fold, so the log loss that decides never
    comes from rows a candidate was fitted on. The winner is refitted on every row. Ties go to
    the first method listed.
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2")
    if scores.size < 2 * n_folds:
        raise ValueError(f"too few rows ({scores.size}) to cross-fit a calibration")
    folds = np.random.default_rng(seed).permutation(scores.size) % n_folds
    losses: dict[str, float] = {}
    for method in methods:
        total = 0.0
        for k in range(n_folds):
            fit_rows, eval_rows = folds != k, folds == k
            if len(np.unique(labels[fit_rows])) < 2:
                total = math.inf
                break
            cal = Calibrator.fit(method, scores[fit_rows], labels[fit_rows])
            total += log_loss(labels[eval_rows], cal.predict(scores[eval_rows])) * eval_rows.sum()
        losses[method] = total / scores.size
    best = min(methods, key=lambda m: losses[m])
    return CalibrationChoice(Calibrator.fit(best, scores, labels), losses,
                             log_loss(labels, scores))


# ---------------------------------------------------------------------------------------------
# BTYD prior: the base margin the boosters correct


def _prior_columns(X: pd.DataFrame | np.ndarray,
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


def _prior_frame(X: pd.DataFrame | np.ndarray, names: list[str] | None = None) -> pd.DataFrame:
    """:func:`_prior_columns` as a frame (index kept for a frame input)."""
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(X))
    return pd.DataFrame(_prior_columns(X, names), index=index)


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
    The RFM statistics come from the feature row (``BtydBaseline.rfm``). ``family=None`` fits
    both purchase models and keeps the one with the higher likelihood (both have four
    parameters, so this is also the AIC choice).
    """

    family: str
    purchase: dict[str, float]
    gg: dict[str, float]

    @classmethod
    def fit(cls, X: pd.DataFrame, *, family: str | None = None, max_rows: int = 20_000,
            seed: int = 0) -> BtydPrior:
        from churnguard.training.btyd import GammaGammaModel, ParetoNBDModel

        base = BtydBaseline(1, 1, max_fit_rows=max_rows, seed=seed).fit(_prior_frame(X))
        gg = dict(base.gg.params_)
        if family == "bgnbd":
            return cls("bgnbd", dict(base.bgnbd.params_), gg)
        r = BtydBaseline.rfm(_prior_frame(X))
        r = r[r["buyer"]]
        if len(r) > max_rows:
            r = r.sample(max_rows, random_state=seed)
        pnbd = ParetoNBDModel().fit(r["x"], r["t_x"], r["T"])
        if family == "pnbd":
            return cls("pnbd", dict(pnbd.params_), gg)
        if family is not None:
            raise ValueError(f"unknown BTYD family {family!r}; use 'bgnbd' or 'pnbd'")
        assert isinstance(base.gg, GammaGammaModel)
        bg_ll = float(np.sum(base.bgnbd.log_likelihood(r["x"], r["t_x"], r["T"])))
        pn_ll = float(np.sum(pnbd.log_likelihood(r["x"], r["t_x"], r["T"])))
        if pn_ll > bg_ll:
            return cls("pnbd", dict(pnbd.params_), gg)
        return cls("bgnbd", dict(base.bgnbd.params_), gg)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "purchase": dict(self.purchase), "gg": dict(self.gg)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BtydPrior:
        return cls(family=str(data["family"]),
                   purchase={k: float(v) for k, v in data["purchase"].items()},
                   gg={k: float(v) for k, v in data["gg"].items()})

    def quantities(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                   names: list[str] | None = None) -> dict[str, np.ndarray]:
        """buyer (bool), p0 = P(no purchase in the horizon), spend = expected spend in it."""
        from churnguard.training.btyd import BetaGeoModel, GammaGammaModel, ParetoNBDModel

        r = BtydBaseline.rfm_arrays(_prior_columns(X, names))
        buyer = r["buyer"]
        n = len(buyer)
        p0 = np.full(n, 0.5)
        spend = np.zeros(n)
        gg = GammaGammaModel.from_params(**self.gg)
        p, q, v = self.gg["p"], self.gg["q"], self.gg["v"]
        mean_value = v * p / (q - 1.0) if q > 1.0 else float("nan")
        if buyer.any():
            model = (ParetoNBDModel if self.family == "pnbd" else BetaGeoModel).from_params(
                **self.purchase)
            x, t_x, T, m = (r[c][buyer] for c in ("x", "t_x", "T", "m"))
            weeks = horizon_days / 7.0
            p0[buyer] = np.asarray(model.probability_no_purchase(weeks, x, t_x, T),
                                   dtype=float)
            value = np.where((x > 0) & (m > 0), np.asarray(
                gg.conditional_expected_average_value(np.where(m > 0, x, 0.0),
                                                      np.where(m > 0, m, 1.0)), dtype=float),
                mean_value)
            spend[buyer] = np.asarray(model.expected_purchases(weeks, x, t_x, T),
                                      dtype=float) * value
        return {"buyer": buyer, "p0": np.clip(p0, 1e-4, 1 - 1e-4),
                "spend": np.nan_to_num(spend, nan=0.0), "mean_value": np.full(n, mean_value)}

    def margins(self, X: pd.DataFrame | np.ndarray, horizon_days: float,
                names: list[str] | None = None) -> dict[str, np.ndarray]:
        """``churn``, ``buy`` and ``spend`` base margins (see the class docstring)."""
        qs = self.quantities(X, horizon_days, names)
        buyer, p0 = qs["buyer"], qs["p0"]
        churn = np.where(buyer, np.log(p0 / (1.0 - p0)), 0.0)
        churn = np.where(np.isfinite(churn), churn, 0.0)
        cond = qs["spend"] / (1.0 - p0)
        fallback = qs["mean_value"]
        spend = np.log(np.clip(np.where(buyer, cond, fallback), 1e-3, None))
        spend = np.where(np.isfinite(spend), spend, 0.0)
        return {"churn": churn, "buy": -churn, "spend": spend}


def _masked(X: pd.DataFrame, masked: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """``X`` with the ``masked`` columns set to missing: the trees never split on them."""
    cols = [c for c in masked if c in X.columns]
    if not cols:
        return X
    out = X.copy()
    for c in cols:
        out[c] = np.nan
    return out


def _masked_matrix(X: np.ndarray, names: list[str], masked: list[str]) -> np.ndarray:
    cols = [names.index(c) for c in masked if c in names]
    if not cols:
        return X
    out = np.array(X, copy=True)
    out[:, cols] = np.nan
    return out


def _dmatrix(X: pd.DataFrame, masked: tuple[str, ...] | list[str] = (),
             margin: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(_masked(X, masked), base_margin=margin, enable_categorical=True)


# ---------------------------------------------------------------------------------------------
# Churn model


@dataclass
class ChurnModel:
    """XGBoost churn classifier [CG16] plus its calibrator.

    ``info`` (saved with the bundle) may hold ``prior`` (a :class:`BtydPrior` as a dict) and
    ``prior_horizon_days``: the booster then adds its trees to the prior's churn log-odds
    (``base_margin``); and ``masked``: feature columns the booster never sees (set to missing).
    """

    booster: xgb.Booster
    calibrator: Calibrator | None = None
    best_iteration: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def prior(self) -> BtydPrior | None:
        data = self.info.get("prior")
        return BtydPrior.from_dict(data) if data else None

    @property
    def masked(self) -> list[str]:
        return list(self.info.get("masked", []))

    def margin(self, X: pd.DataFrame | np.ndarray,
               names: list[str] | None = None) -> np.ndarray | None:
        """The base margin from the stored prior (None without one)."""
        prior = self.prior
        if prior is None:
            return None
        return prior.margins(X, float(self.info["prior_horizon_days"]), names)["churn"]

    def raw(self, X: pd.DataFrame, margin: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated probability; ``margin`` overrides the stored prior's base margin."""
        m = self.margin(X) if margin is None else margin
        return np.asarray(self.booster.predict(_dmatrix(X, self.masked, m)))

    def predict(self, X: pd.DataFrame, margin: np.ndarray | None = None) -> np.ndarray:
        raw = self.raw(X, margin)
        return self.calibrator.predict(raw) if self.calibrator else _clip(raw)

    def raw_encoded(self, X: np.ndarray, names: list[str]) -> np.ndarray:
        """:meth:`raw` for an encoded float matrix with columns ``names`` (XGBoost
        ``inplace_predict``): boosters with a prior need its base margin, so callers that
        bypass :meth:`raw` must use this instead of ``booster.inplace_predict``."""
        m = self.margin(X, names)  # from the unmasked columns: the prior reads age
        X = _masked_matrix(X, names, self.masked)
        return np.asarray(self.booster.inplace_predict(X, base_margin=m), dtype=float)


def _monotone(columns: list[str], constraints: dict[str, int]) -> dict[str, int]:
    return {c: s for c, s in constraints.items() if c in columns}


def fit_churn(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    config: BoostConfig = BoostConfig(),
    *,
    monotone: dict[str, int] | None = None,
    margin_train: np.ndarray | None = None,
    margin_valid: np.ndarray | None = None,
    masked: tuple[str, ...] = (),
) -> ChurnModel:
    """Fit the churn classifier with early stopping on the out-of-time validation snapshot.

    With ``margin_*`` the trees boost from that log-odds offset [FHS05] (e.g. a BTYD prior's);
    ``masked`` columns are hidden from the trees.
    """
    _check_binary(y_train, "training")
    _check_binary(y_valid, "validation")
    clf = xgb.XGBClassifier(
        objective="binary:logistic", eval_metric="logloss", n_estimators=config.n_estimators,
        early_stopping_rounds=config.early_stopping_rounds,
        monotone_constraints=_monotone(list(X_train.columns), CHURN_MONOTONE
                                       if monotone is None else monotone) or None,
        **config.params(),
    )
    clf.fit(_masked(X_train, masked), y_train, base_margin=margin_train,
            eval_set=[(_masked(X_valid, masked), y_valid)],
            base_margin_eval_set=None if margin_valid is None else [margin_valid],
            verbose=False)
    best = int(clf.best_iteration)
    booster = clf.get_booster()[: best + 1]
    return ChurnModel(booster=booster, best_iteration=best,
                      info={"n_trees": best + 1, "n_train": len(X_train),
                            "masked": list(masked)})


def refit_churn(
    X: pd.DataFrame, y: np.ndarray, n_trees: int, config: BoostConfig = BoostConfig(),
    *, monotone: dict[str, int] | None = None, margin: np.ndarray | None = None,
    masked: tuple[str, ...] = (),
) -> ChurnModel:
    """Refit with a fixed number of trees (found by early stopping) on more recent rows."""
    _check_binary(y, "refit")
    clf = xgb.XGBClassifier(
        objective="binary:logistic", n_estimators=max(n_trees, 1),
        monotone_constraints=_monotone(list(X.columns), CHURN_MONOTONE
                                       if monotone is None else monotone) or None,
        **config.params(),
    )
    clf.fit(_masked(X, masked), y, base_margin=margin, verbose=False)
    return ChurnModel(booster=clf.get_booster(), best_iteration=n_trees - 1,
                      info={"n_trees": n_trees, "n_train": len(X), "masked": list(masked)})


def _check_binary(y: np.ndarray, what: str) -> None:
    values = np.unique(np.asarray(y))
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"{what} churn labels must be 0/1, got {values[:5].tolist()}")
    if len(values) < 2:
        raise ValueError(f"{what} snapshot has only one churn class ({values.tolist()}): "
                         "cannot fit or evaluate a classifier")


# ---------------------------------------------------------------------------------------------
# CLV hurdle model


@dataclass
class ClvModel:
    """Hurdle model of spend in the CLV horizon [Cra71]: P(buy) * E[spend | buy].

    E[spend | buy] = exp(f(x)) · smear, with f an XGBoost regression of log spend on buyers and
    ``smear`` Duan's smearing factor mean(exp(residual)) [Dua83]. Both boosters are monotone
    non-increasing in recency (:data:`CLV_MONOTONE`). ``scale`` multiplies the
    product so the total over the validation snapshot matches its actual total.
    """

    buy: xgb.Booster
    spend: xgb.Booster
    smear: float = 1.0
    scale: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def prior(self) -> BtydPrior | None:
        data = self.info.get("prior")
        return BtydPrior.from_dict(data) if data else None

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
        d_buy = _dmatrix(X, masked, None if m is None else m[0])
        d_spend = _dmatrix(X, masked, None if m is None else m[1])
        p_buy = np.clip(np.asarray(self.buy.predict(d_buy)), 0.0, 1.0)
        spend = np.exp(np.asarray(self.spend.predict(d_spend), dtype=float)) * self.smear
        return p_buy, spend

    def predict(self, X: pd.DataFrame,
                margins: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        p_buy, spend = self.components(X, margins)
        return np.maximum(self.scale * p_buy * spend, 0.0)

    def components_encoded(self, X: np.ndarray, names: list[str]
                           ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`components` for an encoded float matrix with columns ``names`` (see
        :meth:`ChurnModel.raw_encoded`)."""
        m = self.margins(X, names)  # from the unmasked columns: the prior reads age
        X = _masked_matrix(X, names, list(self.info.get("masked", [])))
        p_buy = np.clip(np.asarray(self.buy.inplace_predict(
            X, base_margin=None if m is None else m[0]), dtype=float), 0.0, 1.0)
        spend = np.exp(np.asarray(self.spend.inplace_predict(
            X, base_margin=None if m is None else m[1]), dtype=float)) * self.smear
        return p_buy, spend


def fit_clv(
    X_train: pd.DataFrame,
    spend_train: np.ndarray,
    X_valid: pd.DataFrame,
    spend_valid: np.ndarray,
    config: BoostConfig = BoostConfig(),
    *,
    margins_train: tuple[np.ndarray, np.ndarray] | None = None,
    margins_valid: tuple[np.ndarray, np.ndarray] | None = None,
    masked: tuple[str, ...] = (),
    monotone: dict[str, int] | None = None,
) -> ClvModel:
    """Fit the hurdle CLV model; early stopping and the total calibration on validation.

    With ``margins_*`` = (buy log-odds, log spend) offsets, both boosters boost from them
    [FHS05]; ``masked`` columns are hidden from the trees. ``monotone`` (default
    :data:`CLV_MONOTONE`) constrains both boosters [CG16].
    """
    if (margins_train is None) != (margins_valid is None):
        raise ValueError("pass both margins_train and margins_valid, or neither")
    X_train, X_valid = _masked(X_train, masked), _masked(X_valid, masked)
    mb_tr, ms_tr = margins_train if margins_train is not None else (None, None)
    mb_va, ms_va = margins_valid if margins_valid is not None else (None, None)
    y_tr = np.asarray(spend_train, dtype=float)
    y_va = np.asarray(spend_valid, dtype=float)
    if (y_tr < 0).any() or (y_va < 0).any():
        raise ValueError("CLV targets (future spend) must be non-negative")
    b_tr, b_va = (y_tr > 0).astype(int), (y_va > 0).astype(int)
    _check_binary(b_tr, "CLV training (buy / no buy)")
    _check_binary(b_va, "CLV validation (buy / no buy)")
    mono = _monotone(list(X_train.columns), CLV_MONOTONE if monotone is None else monotone)
    buy = xgb.XGBClassifier(objective="binary:logistic", eval_metric="logloss",
                            n_estimators=config.n_estimators,
                            early_stopping_rounds=config.early_stopping_rounds,
                            monotone_constraints=mono or None, **config.params())
    buy.fit(X_train, b_tr, base_margin=mb_tr, eval_set=[(X_valid, b_va)],
            base_margin_eval_set=None if mb_va is None else [mb_va], verbose=False)
    tr, va = y_tr > 0, y_va > 0
    if tr.sum() < 10 or va.sum() < 5:
        raise ValueError(f"too few buyers to fit the spend model (train {tr.sum()}, "
                         f"validation {va.sum()})")
    reg = xgb.XGBRegressor(objective="reg:squarederror", eval_metric="rmse",
                           n_estimators=config.n_estimators,
                           early_stopping_rounds=config.early_stopping_rounds,
                           monotone_constraints=mono or None, **config.params())
    reg.fit(X_train[tr], np.log(y_tr[tr]), base_margin=None if ms_tr is None else ms_tr[tr],
            eval_set=[(X_valid[va], np.log(y_va[va]))],
            base_margin_eval_set=None if ms_va is None else [ms_va[va]], verbose=False)
    buy_booster = buy.get_booster()[: int(buy.best_iteration) + 1]
    spend_booster = reg.get_booster()[: int(reg.best_iteration) + 1]
    resid = np.log(y_tr[tr]) - np.asarray(spend_booster.predict(xgb.DMatrix(
        X_train[tr], base_margin=None if ms_tr is None else ms_tr[tr],
        enable_categorical=True)))
    model = ClvModel(buy=buy_booster, spend=spend_booster, smear=float(np.mean(np.exp(resid))),
                     info={"masked": list(masked)})
    pred_va = model.predict(X_valid, margins_valid)
    total_pred = float(pred_va.sum())
    model.scale = float(y_va.sum() / total_pred) if total_pred > 0 else 1.0
    model.info.update({"buy_trees": int(buy.best_iteration) + 1,
                       "spend_trees": int(reg.best_iteration) + 1,
                       "smear": model.smear, "scale": model.scale})
    return model


def refit_clv(
    X: pd.DataFrame, spend: np.ndarray, buy_trees: int, spend_trees: int,
    config: BoostConfig = BoostConfig(), *, scale: float = 1.0,
    margins: tuple[np.ndarray, np.ndarray] | None = None, masked: tuple[str, ...] = (),
    monotone: dict[str, int] | None = None,
) -> ClvModel:
    """Refit both hurdle boosters with fixed tree counts (found by early stopping) on more
    recent rows; ``scale`` (the total calibration) is measured out of sample by the caller."""
    y = np.asarray(spend, dtype=float)
    b = (y > 0).astype(int)
    _check_binary(b, "CLV refit (buy / no buy)")
    Xm = _masked(X, masked)
    mb, ms = margins if margins is not None else (None, None)
    mono = _monotone(list(X.columns), CLV_MONOTONE if monotone is None else monotone)
    buy = xgb.XGBClassifier(objective="binary:logistic", n_estimators=max(buy_trees, 1),
                            monotone_constraints=mono or None, **config.params())
    buy.fit(Xm, b, base_margin=mb, verbose=False)
    pos = y > 0
    reg = xgb.XGBRegressor(objective="reg:squarederror", n_estimators=max(spend_trees, 1),
                           monotone_constraints=mono or None, **config.params())
    reg.fit(Xm[pos], np.log(y[pos]), base_margin=None if ms is None else ms[pos],
            verbose=False)
    resid = np.log(y[pos]) - reg.predict(Xm[pos], base_margin=None if ms is None else ms[pos])
    smear = float(np.mean(np.exp(resid)))
    return ClvModel(buy=buy.get_booster(), spend=reg.get_booster(), smear=smear, scale=scale,
                    info={"masked": list(masked), "buy_trees": buy_trees,
                          "spend_trees": spend_trees, "smear": smear, "scale": scale})


# ---------------------------------------------------------------------------------------------
# Baselines


class LogisticBaseline:
    """Logistic regression on the same features: impute (+ missing indicators) and scale the
    numbers, one-hot the categories (unknown levels ignored)."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C
        self.pipeline: Any = None

    @staticmethod
    def _frame(X: pd.DataFrame) -> pd.DataFrame:
        out = X.copy()
        for col in out.columns:
            if isinstance(out[col].dtype, pd.CategoricalDtype):
                out[col] = out[col].astype(object).where(out[col].notna(), "__missing__")
        return out

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LogisticBaseline:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
        nums = [c for c in X.columns if c not in cats]
        pre = ColumnTransformer([
            ("num", Pipeline([
                ("impute", SimpleImputer(strategy="median", add_indicator=True,
                                         keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]), nums),
            ("cat", OneHotEncoder(handle_unknown="ignore"), cats),
        ])
        self.pipeline = Pipeline([
            ("pre", pre), ("lr", LogisticRegression(C=self.C, max_iter=2000)),
        ])
        self.pipeline.fit(self._frame(X), np.asarray(y, dtype=int))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.pipeline is None:
            raise RuntimeError("LogisticBaseline is not fitted")
        return _clip(self.pipeline.predict_proba(self._frame(X))[:, 1])


@dataclass
class BtydBaseline:
    """BG/NBD [FHL05] + Gamma-Gamma [FHL05b] fitted on the feature rows of one snapshot.

    From the features as of the cutoff, in weeks: frequency x = purchase_days_total - 1,
    T = days_since_first_purchase / 7, recency t_x = (days_since_first_purchase -
    days_since_last_purchase) / 7, monetary ≈ avg_order_value (the papers use the mean of the
    *repeat* purchases; the features carry the mean of all orders). Churn probability =
    P(no purchase in the horizon | x, t_x, T); CLV = E[purchases in the CLV horizon] * E[value].
    Customers without any purchase are outside the model: they get the training rates of
    customers without a purchase (``fallback_churn``, ``fallback_clv``).
    """

    horizon_days: int
    clv_horizon_days: int
    fallback_churn: float = 1.0
    fallback_clv: float = 0.0
    max_fit_rows: int = 20_000
    seed: int = 0
    bgnbd: Any = None
    gg: Any = None

    @staticmethod
    def rfm(X: pd.DataFrame) -> pd.DataFrame:
        """:meth:`rfm_arrays` of a feature frame, as a frame with its index."""
        return pd.DataFrame(BtydBaseline.rfm_arrays(
            {c: X[c].astype("float64").to_numpy() for c in PRIOR_COLUMNS}), index=X.index)

    @staticmethod
    def rfm_arrays(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """BTYD inputs in weeks: buyer, x (repeat purchase days), t_x (recency), T (age), m
        (average order value) from the RFM feature columns."""
        n_days = np.nan_to_num(np.asarray(cols["purchase_days_total"], dtype=float), nan=0.0)
        first = np.asarray(cols["days_since_first_purchase"], dtype=float)
        last = np.asarray(cols["days_since_last_purchase"], dtype=float)
        buyer = (n_days > 0) & np.isfinite(first) & np.isfinite(last)
        x = np.where(buyer, n_days - 1, 0.0)
        T = np.where(buyer, first / 7.0, 0.0)
        t_x = np.where(buyer & (x > 0), np.clip((first - last) / 7.0, 0.0, None), 0.0)
        t_x = np.minimum(t_x, T)
        m = np.nan_to_num(np.asarray(cols["avg_order_value"], dtype=float), nan=0.0).clip(0.0)
        return {"buyer": buyer, "x": x, "t_x": t_x, "T": T, "m": m}

    def fit(self, X: pd.DataFrame) -> BtydBaseline:
        from churnguard.training.btyd import BetaGeoModel, GammaGammaModel

        r = self.rfm(X)
        r = r[r["buyer"]]
        if len(r) > self.max_fit_rows:
            r = r.sample(self.max_fit_rows, random_state=self.seed)
        if len(r) < 20:
            raise ValueError(f"too few customers with purchases ({len(r)}) to fit BG/NBD")
        self.bgnbd = BetaGeoModel().fit(r["x"], r["t_x"], r["T"])
        rep = r[(r["x"] > 0) & (r["m"] > 0)]
        self.gg = GammaGammaModel().fit(rep["x"], rep["m"])
        return self

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(churn probability, CLV) for every row of ``X``."""
        from churnguard.training.btyd import customer_lifetime_value

        r = self.rfm(X)
        churn = np.full(len(r), self.fallback_churn, dtype=float)
        clv = np.full(len(r), self.fallback_clv, dtype=float)
        b = r["buyer"].to_numpy()
        if b.any():
            rb = r[b]
            churn[b] = np.asarray(self.bgnbd.probability_no_purchase(
                self.horizon_days / 7.0, rb["x"].to_numpy(), rb["t_x"].to_numpy(),
                rb["T"].to_numpy()))
            clv[b] = np.asarray(customer_lifetime_value(
                self.bgnbd, self.gg, rb["x"].to_numpy(), rb["t_x"].to_numpy(),
                rb["T"].to_numpy(), rb["m"].to_numpy(), t=self.clv_horizon_days / 7.0))
        return _clip(churn), np.maximum(clv, 0.0)
