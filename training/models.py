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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from churnguard.model.evaluate import log_loss
from churnguard.model.predictors import (
    PRIOR_COLUMNS,
    BtydPrior,
    CalibrationMethod,
    Calibrator,
    ChurnModel,
    ClvModel,
    clip_probability,
    logit,
    masked_frame,
    prior_columns,
    rfm_arrays,
)

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# Calibration


def fit_calibrator(method: CalibrationMethod, scores: np.ndarray, labels: np.ndarray
                   ) -> Calibrator:
    """Fit a :class:`~churnguard.model.predictors.Calibrator` of ``method`` on raw scores
    and 0/1 labels."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError("calibration needs equally long, non-empty scores and labels")
    if len(np.unique(labels)) < 2:
        raise ValueError("calibration needs both classes in the labels")
    if method == "platt":
        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(logit(scores).reshape(-1, 1), labels)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    if method == "isotonic":
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(scores, labels)
        order = np.argsort(scores, kind="stable")
        s_sorted, f_sorted = scores[order], fitted[order]
        # Blocks are runs of equal fitted value along the sorted scores (equal scores
        # always share one, as the fit pools ties).
        starts = np.flatnonzero(np.r_[True, np.diff(f_sorted) != 0])
        centers = np.add.reduceat(s_sorted, starts) / np.diff(np.r_[starts, scores.size])
        return Calibrator("isotonic", x=tuple(float(v) for v in centers),
                          y=tuple(float(v) for v in f_sorted[starts]))
    raise ValueError(f"unknown calibration method {method!r}; use 'isotonic' or 'platt'")


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
            cal = fit_calibrator(method, scores[fit_rows], labels[fit_rows])
            total += log_loss(labels[eval_rows], cal.predict(scores[eval_rows])) * eval_rows.sum()
        losses[method] = total / scores.size
    best = min(methods, key=lambda m: losses[m])
    # The raw scores as the runtime would serve them uncalibrated (clipped like every
    # probability it returns, see ChurnModel.predict).
    return CalibrationChoice(fit_calibrator(best, scores, labels), losses,
                             log_loss(labels, clip_probability(scores)))


def fit_btyd_prior(X: pd.DataFrame, *, family: str | None = None, max_rows: int = 20_000,
                   seed: int = 0) -> BtydPrior:
    """Fit a :class:`~churnguard.model.predictors.BtydPrior` on one snapshot's feature rows
    (``family``: ``bgnbd``, ``pnbd``, or None for the one with the higher likelihood).
    """
    from churnguard.model.btyd import GammaGammaModel, ParetoNBDModel

    base = BtydBaseline(1, 1, max_fit_rows=max_rows, seed=seed).fit(_prior_frame(X))
    gg = dict(base.gg.params)
    if family == "bgnbd":
        return BtydPrior("bgnbd", dict(base.bgnbd.params), gg)
    r = BtydBaseline.rfm(_prior_frame(X))
    r = r[r["buyer"]]
    if len(r) > max_rows:
        r = r.sample(max_rows, random_state=seed)
    pnbd = ParetoNBDModel().fit(r["x"], r["t_x"], r["T"])
    if family == "pnbd":
        return BtydPrior("pnbd", dict(pnbd.params), gg)
    if family is not None:
        raise ValueError(f"unknown BTYD family {family!r}; use 'bgnbd' or 'pnbd'")
    assert isinstance(base.gg, GammaGammaModel)
    bg_ll = float(np.sum(base.bgnbd.log_likelihood(r["x"], r["t_x"], r["T"])))
    pn_ll = float(np.sum(pnbd.log_likelihood(r["x"], r["t_x"], r["T"])))
    if pn_ll > bg_ll:
        return BtydPrior("pnbd", dict(pnbd.params), gg)
    return BtydPrior("bgnbd", dict(base.bgnbd.params), gg)


def _prior_frame(X: pd.DataFrame) -> pd.DataFrame:
    """The prior's input columns of a feature frame, as a frame with its index."""
    return pd.DataFrame(prior_columns(X), index=X.index)


# ---------------------------------------------------------------------------------------------
# Churn model


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
    clf.fit(masked_frame(X_train, masked), y_train, base_margin=margin_train,
            eval_set=[(masked_frame(X_valid, masked), y_valid)],
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
    clf.fit(masked_frame(X, masked), y, base_margin=margin, verbose=False)
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
    X_train, X_valid = masked_frame(X_train, masked), masked_frame(X_valid, masked)
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
    Xm = masked_frame(X, masked)
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
        return clip_probability(self.pipeline.predict_proba(self._frame(X))[:, 1])


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
        """:func:`~churnguard.model.predictors.rfm_arrays` of a feature frame, as a frame with
        its index."""
        return pd.DataFrame(rfm_arrays(
            {c: X[c].astype("float64").to_numpy() for c in PRIOR_COLUMNS}), index=X.index)

    def fit(self, X: pd.DataFrame) -> BtydBaseline:
        from churnguard.model.btyd import BetaGeoModel, GammaGammaModel

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
        from churnguard.model.btyd import customer_lifetime_value

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
        return clip_probability(churn), np.maximum(clv, 0.0)
