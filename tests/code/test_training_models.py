"""Calibration choice, the CLV hurdle model, the baselines and the promotion rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnguard.model.evaluate import log_loss
from churnguard.model.predictors import Calibrator
from churnguard.training.models import (
    BoostConfig,
    BtydBaseline,
    LogisticBaseline,
    choose_calibration,
    fit_btyd_prior,
    fit_calibrator,
    fit_churn,
    fit_clv,
    refit_clv,
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
        cal = fit_calibrator(method, s, y)  # type: ignore[arg-type]
        again = Calibrator.from_dict(cal.to_dict())
        grid = np.linspace(0.001, 0.999, 200)
        np.testing.assert_allclose(cal.predict(grid), again.predict(grid))
        assert np.all(np.diff(cal.predict(grid)) >= -1e-12)
        assert cal.predict(grid).min() > 0 and cal.predict(grid).max() < 1
    platt = fit_calibrator("platt", s, y)
    assert platt.a == pytest.approx(2.0, abs=0.3) and platt.b == pytest.approx(-0.5, abs=0.2)
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator("platt", s, np.zeros_like(s))
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibrator("beta", s, y)  # type: ignore[arg-type]


def test_isotonic_is_centered_and_keeps_the_ranking() -> None:
    """Plain isotonic regression ties every score of a block; the centered fit [OF17] is
    strictly increasing between its outer knots, with knots at the blocks' mean scores."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    s = rng.uniform(0.01, 0.99, 3000)
    y = (rng.uniform(size=s.size) < _sigmoid(1.5 * _logit(s))).astype(float)
    cal = fit_calibrator("isotonic", s, y)
    plain = IsotonicRegression(y_min=0.0, y_max=1.0).fit(s, y)
    assert len(cal.x) == len(np.unique(plain.predict(s))) > 5
    assert np.all(np.diff(cal.x) > 0) and np.all(np.diff(cal.y) > 0)
    # A knot sits at the mean score of its block, at the block's fitted value.
    block = plain.predict(s) == cal.y[2]
    assert cal.x[2] == pytest.approx(s[block].mean())
    inner = (s > cal.x[0]) & (s < cal.x[-1])
    p = cal.predict(s[inner])
    assert np.unique(p).size == inner.sum()
    assert roc_auc_score(y[inner], p) == pytest.approx(roc_auc_score(y[inner], s[inner]))
    assert np.unique(plain.predict(s[inner])).size < inner.sum() / 10


def test_choice_is_cross_fitted_not_in_sample() -> None:
    """Isotonic always wins in-sample (it is the monotone MLE); when the truth is a sigmoid of
    the score and the set is small, the cross-fitted choice must pick Platt."""
    rng = np.random.default_rng(3)
    s = rng.uniform(0.02, 0.98, 300)
    y = (rng.uniform(size=s.size) < _sigmoid(1.7 * _logit(s) + 0.3)).astype(float)
    in_sample = {m: log_loss(y, fit_calibrator(m, s, y).predict(s))  # type: ignore[arg-type]
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


def test_clv_model_never_rises_with_recency() -> None:
    """Both hurdle boosters are monotone (non-increasing) in days since the last purchase, in
    the fitted model and in its refit (``CLV_MONOTONE``), however the data was drawn."""
    rng = np.random.default_rng(4)
    X, _, spend = _frame(3000, rng)
    Xv, _, spend_v = _frame(1500, rng)
    # Spend that rises with recency in the sample: the constraint must still hold.
    spend = spend * (1 + X["days_since_last_purchase"].to_numpy() / 50)
    model = fit_clv(X, spend, Xv, spend_v, FAST)
    refit = refit_clv(X, spend, int(model.info["buy_trees"]), int(model.info["spend_trees"]),
                      FAST)
    probe = X.head(50)
    for m in (model, refit):
        prev = None
        for days in (0, 10, 30, 60, 120, 400, 2000):
            p_buy, spend_if_buy = m.components(probe.assign(days_since_last_purchase=float(days)))
            if prev is not None:
                assert np.all(p_buy <= prev[0] + 1e-7)
                assert np.all(spend_if_buy <= prev[1] * (1 + 1e-6))
            prev = (p_buy, spend_if_buy)


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


def _rfm_frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Feature rows as of 1997-10-01 of the CDNOW 1/10 sample (real BG/NBD-like histories),
    resampled to ``n`` rows, plus a few customers without a purchase."""
    from datetime import date
    from pathlib import Path

    from churnguard.model.btyd import rfm_summary

    path = Path(__file__).resolve().parents[1] / "fixtures" / "cdnow_sample.txt.gz"
    raw = pd.read_csv(path, sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "date", "cds", "amount"],
                      dtype={"master_id": str, "customer_id": str, "date": str})
    raw["ts"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    r = rfm_summary(raw, as_of=date(1997, 10, 1)).sample(n, replace=True, random_state=0)
    buyer = rng.uniform(size=n) > 0.05
    first = r["T"].to_numpy() * 7
    return pd.DataFrame({
        "purchase_days_total": np.where(buyer, r["frequency"] + 1, 0).astype(float),
        "days_since_first_purchase": np.where(buyer, first, np.nan),
        "days_since_last_purchase": np.where(buyer, first - r["recency"].to_numpy() * 7,
                                             np.nan),
        "avg_order_value": np.where(buyer, np.where(r["monetary_value"] > 0,
                                                    r["monetary_value"], 15.0), np.nan),
        "tenure_days": first,
    }).reset_index(drop=True)


def test_btyd_prior_margins_match_the_models_and_round_trip() -> None:
    from churnguard.model.btyd import BetaGeoModel
    from churnguard.model.predictors import BtydPrior

    X = _rfm_frame(3000, np.random.default_rng(6))
    prior = fit_btyd_prior(X, family="bgnbd")
    again = BtydPrior.from_dict(prior.to_dict())
    m = again.margins(X, 91)
    r = BtydBaseline.rfm(X)
    b = r["buyer"].to_numpy()
    p0 = BetaGeoModel.from_params(**prior.purchase).probability_no_purchase(
        13.0, r["x"][b].to_numpy(), r["t_x"][b].to_numpy(), r["T"][b].to_numpy())
    np.testing.assert_allclose(m["churn"][b], _logit(np.clip(np.asarray(p0), 1e-4, 1 - 1e-4)))
    np.testing.assert_allclose(m["buy"], -m["churn"])
    assert np.all(m["churn"][~b] == 0) and np.isfinite(m["spend"]).all()
    # The same margins from an encoded matrix and its column names.
    names = list(X.columns)
    np.testing.assert_allclose(prior.margins(X.to_numpy(), 91, names)["spend"], m["spend"])
    # Without a family, the purchase model with the higher likelihood is kept.
    best = fit_btyd_prior(X)
    assert best.family in ("bgnbd", "pnbd")
    assert BtydPrior.from_dict(best.to_dict()) == best
    assert np.isfinite(best.margins(X, 91)["churn"]).all()


def test_churn_model_boosts_from_the_stored_prior_and_hides_masked_columns() -> None:

    rng = np.random.default_rng(8)
    X = _rfm_frame(4000, rng)
    prior = fit_btyd_prior(X)
    m = prior.margins(X, 91)
    y = (rng.uniform(size=len(X)) < _sigmoid(m["churn"])).astype(int)
    tr, va = np.arange(len(X)) < 3000, np.arange(len(X)) >= 3000
    model = fit_churn(X[tr], y[tr], X[va], y[va], FAST, margin_train=m["churn"][tr],
                      margin_valid=m["churn"][va], masked=("tenure_days",))
    explicit = model.raw(X[va], m["churn"][va])
    model.info.update(prior=prior.to_dict(), prior_horizon_days=91)
    np.testing.assert_allclose(model.raw(X[va]), explicit, rtol=1e-6)
    moved = X[va].assign(tenure_days=X["tenure_days"][va] * 10)
    np.testing.assert_allclose(model.raw(moved), explicit, rtol=1e-6)
    # The prior already explains the labels: the boosted corrections stay small.
    assert abs(log_loss(y[va], model.raw(X[va])) - log_loss(y[va], _sigmoid(m["churn"][va]))
               ) < 0.02
    spend = np.where(y == 0, rng.gamma(2.0, 30.0, len(X)), 0.0)
    clv = refit_clv(X, spend, 20, 20, FAST, scale=1.1, margins=(m["buy"], m["spend"]))
    assert clv.scale == 1.1 and (clv.predict(X, (m["buy"], m["spend"])) >= 0).all()


def test_overlapping_fallback_when_a_purged_split_does_not_fit() -> None:
    from datetime import date, timedelta

    from churnguard.training.split import PlanError, plan_split

    first, as_of = date(1997, 1, 1), date(1998, 1, 1)
    with pytest.raises(PlanError, match="purged"):
        plan_split(first, as_of, 182)
    plan = plan_split(first, as_of, 182, purge=False)
    assert not plan.purged and plan.to_dict()["purged"] is False
    assert plan.train == (date(1997, 4, 1), date(1997, 5, 1))
    assert (plan.valid, plan.test) == (date(1997, 6, 1), date(1997, 7, 1))
    assert plan.test + timedelta(days=182) <= as_of


def test_encoded_matrix_paths_match_the_frame_paths() -> None:
    """raw_encoded / components_encoded (for callers scoring a float matrix with
    ``inplace_predict``) apply the stored prior and the masking exactly like raw/components."""

    rng = np.random.default_rng(9)
    X = _rfm_frame(2000, rng)
    prior = fit_btyd_prior(X)
    m = prior.margins(X, 91)
    y = (rng.uniform(size=len(X)) < _sigmoid(m["churn"])).astype(int)
    spend = np.where(y == 0, rng.gamma(2.0, 30.0, len(X)), 0.0)
    churn = fit_churn(X, y, X, y, FAST, margin_train=m["churn"], margin_valid=m["churn"],
                      masked=("days_since_first_purchase",))
    clv = fit_clv(X, spend, X, spend, FAST, margins_train=(m["buy"], m["spend"]),
                  margins_valid=(m["buy"], m["spend"]), masked=("days_since_first_purchase",))
    for model, h in ((churn, 91), (clv, 91)):
        model.info.update(prior=prior.to_dict(), prior_horizon_days=h)
    names = list(X.columns)
    enc = X.to_numpy(dtype=np.float32)
    np.testing.assert_allclose(churn.raw_encoded(enc, names), churn.raw(X), rtol=1e-4)
    for a, b in zip(clv.components_encoded(enc, names), clv.components(X), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4)
