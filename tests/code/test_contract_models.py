"""The contractual label's models: the sBG prior the churn booster starts from, and the contract
CLV model (fee × sBG retention over the renewals in the horizon), through the one scoring path
and the bundle files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnguard.model.predictors import ContractClvModel, SbgPrior, prior_from_dict
from churnguard.model.sbg import sbg_survival

MODEL = ContractClvModel(alpha=1.5, beta=30.0, daily_hazard=0.0004, horizon_days=90,
                         scale=1.0)


def accounts(*rows: dict[str, float]) -> pd.DataFrame:
    base = {"sub_active": 1.0, "sub_mrr": 100.0, "sub_tenure_days": 62.0,
            "sub_term_days": 31.0, "sub_days_to_renewal": 10.0, "sub_term_months": 1.0,
            "sub_discount": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_monthly_account_pays_the_fee_at_each_renewal_it_survives() -> None:
    # Tenure 62 days of 31-day terms: 2 renewals made. Renewals in 90 days: days 10, 41, 72.
    X = accounts({"sub_discount": 0.2})
    a, b, h = MODEL.alpha, MODEL.beta, MODEL.daily_hazard
    expected = sum(float(sbg_survival(2 + k, a, b)) / float(sbg_survival(2, a, b))
                   * np.exp(-h * (10 + (k - 1) * 31)) for k in (1, 2, 3))
    fee = 100.0 * 1 * 0.8
    np.testing.assert_allclose(MODEL.predict(X), [fee * expected], rtol=1e-12)
    p_buy, spend = MODEL.components(X)
    first = float(sbg_survival(3, a, b)) / float(sbg_survival(2, a, b)) * np.exp(-h * 10)
    np.testing.assert_allclose(p_buy, [first], rtol=1e-12)
    np.testing.assert_allclose(p_buy * spend, [fee * expected], rtol=1e-12)


def test_annual_fee_counts_only_when_the_renewal_falls_in_the_horizon() -> None:
    X = accounts({"sub_term_days": 365.0, "sub_term_months": 12.0, "sub_tenure_days": 400.0,
                  "sub_days_to_renewal": 30.0},
                 {"sub_term_days": 365.0, "sub_term_months": 12.0, "sub_tenure_days": 400.0,
                  "sub_days_to_renewal": 200.0})
    clv = MODEL.predict(X)
    # One renewal (t = 1) at day 30: the annual fee times P(renew | 1 renewal made).
    a, b = MODEL.alpha, MODEL.beta
    renew = float(sbg_survival(2, a, b)) / float(sbg_survival(1, a, b))
    np.testing.assert_allclose(clv[0], 1200.0 * renew * np.exp(-MODEL.daily_hazard * 30))
    assert clv[1] == 0.0


def test_more_renewals_made_means_more_revenue_expected() -> None:
    """sBG: the survivors of more renewals are the loyal ones (heterogeneity, [FH07])."""
    X = accounts(*({"sub_tenure_days": 31.0 * t} for t in (0, 1, 3, 10, 30)))
    assert np.all(np.diff(MODEL.predict(X)) > 0)


def test_no_revenue_without_an_active_subscription_and_nothing_negative_or_nan() -> None:
    X = accounts({"sub_active": 0.0},
                 {"sub_mrr": np.nan, "sub_days_to_renewal": np.nan, "sub_term_days": np.nan,
                  "sub_tenure_days": np.nan, "sub_term_months": np.nan,
                  "sub_discount": np.nan},
                 {"sub_mrr": -5.0}, {"sub_days_to_renewal": -3.0}, {"sub_discount": 1.5})
    clv = MODEL.predict(X)
    assert np.isfinite(clv).all() and (clv >= 0).all()
    assert clv[0] == 0.0 and clv[1] == 0.0 and clv[2] == 0.0 and clv[4] == 0.0
    assert clv[3] > 0  # a renewal already due counts as today's


def test_term_months_and_discount_may_be_absent() -> None:
    """Without the contract features the term in months comes from its length in days."""
    X = accounts({"sub_term_days": 365.0, "sub_days_to_renewal": 5.0}).drop(
        columns=["sub_term_months", "sub_discount"])
    full = accounts({"sub_term_days": 365.0, "sub_days_to_renewal": 5.0,
                     "sub_term_months": 12.0})
    np.testing.assert_allclose(MODEL.predict(X), MODEL.predict(full))


def test_scale_multiplies_and_the_dict_round_trips() -> None:
    X = accounts({}, {"sub_mrr": 250.0})
    scaled = ContractClvModel.from_dict({**MODEL.to_dict(), "scale": 1.25})
    np.testing.assert_allclose(scaled.predict(X), 1.25 * MODEL.predict(X))
    assert ContractClvModel.from_dict(MODEL.to_dict()) == MODEL


def test_encoded_matrix_and_frame_give_the_same_numbers() -> None:
    X = accounts(*({"sub_tenure_days": 31.0 * t, "sub_days_to_renewal": float(d)}
                   for t, d in ((0, 3), (4, 20), (12, 31))))
    names = list(X.columns)
    enc = X.to_numpy(dtype=np.float32)
    frame = pd.DataFrame(enc, columns=names)
    for a, b in zip(MODEL.components(frame), MODEL.components_encoded(enc, names), strict=True):
        np.testing.assert_array_equal(a, b)


PRIOR = SbgPrior(alpha=0.8, beta=6.0, between_renewals=0.002, window_days=44)


def test_sbg_prior_cancels_at_renewal_by_renewals_made_and_rarely_between() -> None:
    X = accounts({"sub_tenure_days": 0.0, "sub_days_to_renewal": 20.0},
                 {"sub_tenure_days": 31.0 * 5, "sub_days_to_renewal": 44.0},
                 {"sub_days_to_renewal": 45.0}, {"sub_days_to_renewal": np.nan})
    np.testing.assert_allclose(PRIOR.probability(X),
                               [0.8 / 6.8, 0.8 / (6.8 + 5), 0.002, 0.002])
    m = PRIOR.margins(X, 44)
    np.testing.assert_allclose(1 / (1 + np.exp(-m["churn"])), PRIOR.probability(X))
    enc = X.to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(PRIOR.margins(enc, 44, list(X.columns))["churn"],
                                  m["churn"])
    assert prior_from_dict(PRIOR.to_dict()) == PRIOR


def test_the_sbg_baseline_fit_recovers_the_renewal_hazard() -> None:
    """Renewal decisions simulated from θ ~ Beta(1.2, 8): the fit finds α/(α+β) ≈ 0.13 and a
    hazard that falls with renewals made."""
    from churnguard.training.baselines import SbgBaseline

    rng = np.random.default_rng(0)
    n = 6000
    theta = rng.beta(1.2, 8.0, n)
    t = rng.integers(0, 6, n).astype(float)
    # Survivors of t renewals: keep each account with probability (1-θ)^t (Bayes' rule).
    keep = rng.random(n) < (1 - theta) ** t
    theta, t = theta[keep], t[keep]
    y = (rng.random(theta.size) < theta).astype(float)
    X = pd.DataFrame({"sub_tenure_days": 31.0 * t, "sub_term_days": 31.0,
                      "sub_days_to_renewal": 10.0})
    fit = SbgBaseline(44).fit(X, y)
    assert fit.prior is not None and fit.model is not None
    mean = fit.model.alpha / (fit.model.alpha + fit.model.beta)
    assert abs(mean - 1.2 / 9.2) < 0.03
    p = fit.predict(X.iloc[:0].assign(sub_tenure_days=[0.0, 31.0 * 5], sub_term_days=31.0,
                                       sub_days_to_renewal=10.0))
    assert p[0] > p[1]


@pytest.fixture(scope="module")
def saas_features(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pd.DataFrame]:
    from churnguard.features.build import build_features, infer_spec
    from churnguard.features.demo_data import generate_demo_data
    from churnguard.features.sources import open_source

    out = tmp_path_factory.mktemp("saas") / "demo"
    generate_demo_data(out, n_customers=120, seed=3, subscriptions=True,
                       start=date(2024, 1, 1), end=date(2025, 3, 31))
    as_of = date(2025, 1, 1)
    with open_source(out) as source:
        spec = infer_spec(source, as_of=as_of)
        return spec, build_features(source, spec, as_of).to_pandas()


def test_a_contract_bundle_saves_loads_and_scores_through_the_one_path(
        saas_features: tuple[object, pd.DataFrame], tmp_path: Path) -> None:
    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.score import score_matrix
    from tests.conftest import make_fake_bundle

    spec, feats = saas_features
    bundle = make_fake_bundle(spec, feats)
    bundle.clv = ContractClvModel(alpha=1.2, beta=20.0, daily_hazard=1e-4, horizon_days=365,
                                  scale=1.1, info={"kind": "sbg_contract"})
    saved = bundle.save(tmp_path / "bundle")
    assert not (saved / "clv_buy.ubj").exists()
    loaded = ScoringBundle.load(saved)
    assert loaded.clv == bundle.clv and len(loaded.boosters()) == 1
    X = loaded.encode(feats)
    full = score_matrix(loaded, X, drivers=False)
    assert loaded.fast_path is True  # encoded and frame paths agree bit for bit
    frame = loaded.encoder().frame(X)
    np.testing.assert_array_equal(full.clv, bundle.clv.predict(frame))
    active = feats["sub_active"].to_numpy() > 0
    assert active.any() and (full.clv[~active] == 0).all() and (full.clv >= 0).all()
    assert (full.clv[active] > 0).any()


def test_a_churn_booster_on_the_sbg_prior_scores_the_same_on_both_paths(
        saas_features: tuple[object, pd.DataFrame], tmp_path: Path) -> None:
    """The prior travels in the bundle's JSON and the fast path (inplace_predict with the base
    margin) equals the models' own predict methods bit for bit."""
    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.score import score_matrix
    from tests.conftest import make_fake_bundle

    spec, feats = saas_features
    bundle = make_fake_bundle(spec, feats)
    bundle.churn.info.update(prior=PRIOR.to_dict(), prior_horizon_days=44)
    loaded = ScoringBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.churn.prior == PRIOR
    X = loaded.encode(feats)
    full = score_matrix(loaded, X, drivers=False)
    assert loaded.fast_path is True
    frame = loaded.encoder().frame(X)
    without = make_fake_bundle(spec, feats).churn.raw(frame)
    # The margin moves the raw score: the prior is used, not ignored.
    assert not np.allclose(loaded.churn.raw(frame), without)
    np.testing.assert_array_equal(full.churn_probability, loaded.churn.predict(frame))
