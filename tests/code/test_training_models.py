"""Calibration choice, the CLV hurdle model, the baselines and the promotion rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnguard.training.models import (
    BoostConfig,
    BtydBaseline,
    Calibrator,
    LogisticBaseline,
    choose_calibration,
    fit_churn,
    fit_clv,
    log_loss,
)
from churnguard.training.registry import promotion_decision

FAST = BoostConfig(n_estimators=60, early_stopping_rounds=10, max_depth=3, learning_rate=0.2)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_calibrators_round_trip_and_are_monotone() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.01, 0.99, 2000)
    y = (rng.uniform(size=s.size) < _sigmoid(2 * _logit(s) - 0.5)).astype(float)
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(method, s, y)  # type: ignore[arg-type]
        again = Calibrator.from_dict(cal.to_dict())
        grid = np.linspace(0.001, 0.999, 200)
        np.testing.assert_allclose(cal.predict(grid), again.predict(grid))
        assert np.all(np.diff(cal.predict(grid)) >= -1e-12)
        assert cal.predict(grid).min() > 0 and cal.predict(grid).max() < 1
    platt = Calibrator.fit("platt", s, y)
    assert platt.a == pytest.approx(2.0, abs=0.3) and platt.b == pytest.approx(-0.5, abs=0.2)
    with pytest.raises(ValueError, match="both classes"):
        Calibrator.fit("platt", s, np.zeros_like(s))
    with pytest.raises(ValueError, match="unknown calibration"):
        Calibrator.fit("beta", s, y)  # type: ignore[arg-type]


def test_choice_is_cross_fitted_not_in_sample() -> None:
    """Isotonic always wins in-sample (it is the monotone MLE); when the truth is a sigmoid of
    the score and the set is small, the cross-fitted choice must pick Platt."""
    rng = np.random.default_rng(3)
    s = rng.uniform(0.02, 0.98, 300)
    y = (rng.uniform(size=s.size) < _sigmoid(1.7 * _logit(s) + 0.3)).astype(float)
    in_sample = {m: log_loss(y, Calibrator.fit(m, s, y).predict(s))  # type: ignore[arg-type]
                 for m in ("isotonic", "platt")}
    assert in_sample["isotonic"] < in_sample["platt"]
    choice = choose_calibration(s, y, seed=0)
    assert choice.calibrator.method == "platt"
    assert choice.cv_log_loss["platt"] < choice.cv_log_loss["isotonic"]


def test_choice_picks_isotonic_for_a_non_sigmoid_shape() -> None:
    rng = np.random.default_rng(5)
    s = rng.uniform(0, 1, 20_000)
    truth = np.where(s < 0.5, 0.05, 0.9)  # a step: no sigmoid of logit(s) fits it
    y = (rng.uniform(size=s.size) < truth).astype(float)
    assert choose_calibration(s, y).calibrator.method == "isotonic"


def _frame(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    X = pd.DataFrame({
        "days_since_last_purchase": rng.exponential(60, n),
        "complaints_90d": rng.poisson(0.3, n).astype(float),
        "orders_total": rng.poisson(3, n).astype(float),
        "segment": pd.Categorical(rng.choice(["a", "b"], n), categories=["a", "b"]),
    })
    z = -1.0 + 0.03 * X["days_since_last_purchase"] + 0.8 * X["complaints_90d"]
    y = (rng.uniform(size=n) < _sigmoid(z.to_numpy() - 2)).astype(int)
    spend = np.where(rng.uniform(size=n) < 0.6,
                     rng.gamma(2.0, 50.0 * (1 + X["orders_total"].to_numpy())), 0.0)
    return X, y, spend


def test_churn_model_is_monotone_in_recency_and_complaints() -> None:
    rng = np.random.default_rng(1)
    X, y, _ = _frame(3000, rng)
    Xv, yv, _ = _frame(1000, rng)
    model = fit_churn(X, y, Xv, yv, FAST)
    probe = X.head(50)
    prev = None
    for days in (0, 10, 30, 60, 120, 400, 2000):
        p = model.raw(probe.assign(days_since_last_purchase=float(days)))
        if prev is not None:
            assert np.all(p >= prev - 1e-7)
        prev = p


def test_clv_hurdle_is_non_negative_and_total_calibrated_on_validation() -> None:
    rng = np.random.default_rng(2)
    X, _, spend = _frame(3000, rng)
    Xv, _, spend_v = _frame(1500, rng)
    model = fit_clv(X, spend, Xv, spend_v, FAST)
    pred_v = model.predict(Xv)
    assert pred_v.sum() == pytest.approx(spend_v.sum(), rel=1e-6)
    extreme = Xv.assign(orders_total=-50.0, days_since_last_purchase=1e6)
    assert (model.predict(extreme) >= 0).all()
    assert model.smear >= 1.0  # Jensen: mean(exp(resid)) >= exp(mean(resid)) = ~1
    with pytest.raises(ValueError, match="non-negative"):
        fit_clv(X, -spend, Xv, spend_v, FAST)


def test_logistic_baseline_handles_missing_and_unseen_levels() -> None:
    rng = np.random.default_rng(4)
    X, y, _ = _frame(800, rng)
    X.loc[X.index[:50], "days_since_last_purchase"] = np.nan
    lr = LogisticBaseline().fit(X, y)
    test = X.head(5).copy()
    test["segment"] = pd.Categorical([None, "a", "b", None, "a"], categories=["a", "b"])
    p = lr.predict(test)
    assert p.shape == (5,) and np.all((p > 0) & (p < 1))


def test_btyd_rfm_from_feature_rows() -> None:
    X = pd.DataFrame({
        "purchase_days_total": [0, 1, 4],
        "days_since_first_purchase": [np.nan, 70.0, 140.0],
        "days_since_last_purchase": [np.nan, 70.0, 14.0],
        "avg_order_value": [np.nan, 20.0, 35.0],
    })
    r = BtydBaseline.rfm(X)
    assert r["buyer"].tolist() == [False, True, True]
    assert r["x"].tolist() == [0.0, 0.0, 3.0]
    assert r["T"].tolist() == [0.0, 10.0, 20.0]
    assert r["t_x"].tolist() == [0.0, 0.0, 18.0]
    assert r["m"].tolist() == [0.0, 20.0, 35.0]


def test_promotion_rule() -> None:
    champ = {"churn_log_loss": 0.40, "clv_mae": 100.0, "clv_normalized_gini": 0.60}
    assert promotion_decision(champ, None).promote
    better = {"churn_log_loss": 0.39, "clv_mae": 100.5, "clv_normalized_gini": 0.60}
    assert promotion_decision(better, champ).promote
    same = dict(champ)
    d = promotion_decision(same, champ)
    assert not d.promote and "no better" in d.reason
    worse_clv = {"churn_log_loss": 0.30, "clv_mae": 110.0, "clv_normalized_gini": 0.60}
    d = promotion_decision(worse_clv, champ)
    assert not d.promote and "CLV MAE" in d.reason
    worse_gini = {"churn_log_loss": 0.39, "clv_mae": 90.0, "clv_normalized_gini": 0.55}
    assert not promotion_decision(worse_gini, champ).promote
    nan_new = {"churn_log_loss": float("nan"), "clv_mae": 1.0, "clv_normalized_gini": 1.0}
    assert not promotion_decision(nan_new, champ).promote
