"""Behavioural tests of a small trained bundle (the session fixture ``small_fitted``, a real fit:
``slow``), and the contracts every valid bundle meets, on the trained bundle (slow) and on the
fake-fit bundle (``fake_bundle``: fast, so ``make test-fast`` checks them too).

Direction and calibration hold only for a trained model; invariance to customer ids, CLV >= 0,
TreeSHAP additivity, the file round trip and the missing-feature error hold for any bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnguard.model.bundle import BundleError, ScoringBundle
from churnguard.model.encode import model_matrix
from churnguard.model.predictors import masked_frame
from churnguard.model.score import contributions
from tests.scoring import score_frame


def _test_rows(fitted: Any) -> pd.DataFrame:
    return fitted.grid.loc[fitted.test_rows].reset_index(drop=True)


@pytest.fixture(params=["fake", pytest.param("trained", marks=pytest.mark.slow)])
def any_bundle(request: pytest.FixtureRequest) -> tuple[ScoringBundle, pd.DataFrame]:
    """(bundle, feature rows): the fake-fit bundle with the small demo data's feature rows, and
    (slow) the small trained bundle with its test snapshot. Both are shared by the session:
    tests copy the rows before changing them."""
    if request.param == "fake":
        return request.getfixturevalue("fake_bundle"), request.getfixturevalue("fake_features")
    fitted = request.getfixturevalue("small_fitted")
    return fitted.bundle, _test_rows(fitted)


@pytest.mark.slow
def test_more_recent_last_purchase_never_raises_churn(small_fitted: Any) -> None:
    rows = _test_rows(small_fitted).sample(200, random_state=0)
    bundle: ScoringBundle = small_fitted.bundle
    previous = None
    for days in (0, 3, 7, 14, 30, 45, 60, 90, 120, 180, 270, 365, 540, 900, 2000):
        p = score_frame(bundle, rows.assign(days_since_last_purchase=float(days)))[
            "churn_probability"]
        if previous is not None:
            assert (p.to_numpy() >= previous - 1e-9).all(), f"churn fell at {days} days"
        previous = p.to_numpy()


@pytest.mark.slow
def test_more_complaints_never_lower_churn(small_fitted: Any) -> None:
    rows = _test_rows(small_fitted).sample(200, random_state=1)
    bundle: ScoringBundle = small_fitted.bundle
    for col in ("complaints_90d", "complaints_365d"):
        previous = None
        for n in (0, 1, 2, 3, 5, 10, 50):
            p = score_frame(bundle, rows.assign(**{col: n}))["churn_probability"].to_numpy()
            if previous is not None:
                assert (p >= previous - 1e-9).all(), f"churn fell at {col}={n}"
            previous = p


def test_renaming_customers_changes_nothing(
        any_bundle: tuple[ScoringBundle, pd.DataFrame]) -> None:
    bundle, rows = any_bundle
    rows = rows.head(300)
    a = score_frame(bundle, rows)
    renamed = rows.assign(customer_id=[f"zz-{i}" for i in range(len(rows))])
    b = score_frame(bundle, renamed)
    cols = ["churn_probability", "clv", "p_buy", "expected_spend_if_buy"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert b["customer_id"].tolist() == renamed["customer_id"].tolist()
    shuffled = rows.sample(frac=1.0, random_state=3)
    c = score_frame(bundle, shuffled).loc[rows.index]
    pd.testing.assert_frame_equal(a[cols], c[cols])


def test_clv_is_never_negative(any_bundle: tuple[ScoringBundle, pd.DataFrame]) -> None:
    bundle, rows = any_bundle
    assert (score_frame(bundle, rows)["clv"] >= 0).all()
    rng = np.random.default_rng(0)
    noisy = rows.copy()
    for feat in bundle.spec.features():
        if feat.kind != "category":
            noisy[feat.name] = rng.normal(0, 1e4, len(rows))
    scores = score_frame(bundle, noisy)
    assert (scores["clv"] >= 0).all()
    assert scores["churn_probability"].between(0, 1).all()


@pytest.mark.slow
def test_scores_are_informative_and_roughly_calibrated(small_fitted: Any) -> None:
    m = small_fitted.metrics
    assert m["test_churn_roc_auc"] > 0.85
    assert m["test_churn_ece"] < 0.08
    assert m["test_clv_normalized_gini"] > 0.5
    assert abs(m["test_clv_total_error"]) < 0.5


def test_contributions_add_up_to_the_raw_log_odds(
        any_bundle: tuple[ScoringBundle, pd.DataFrame]) -> None:
    bundle, rows = any_bundle
    rows = rows.head(50)
    contrib = contributions(bundle, bundle.encode(rows))
    assert contrib.shape == (len(rows), len(bundle.feature_names) + 1)  # + bias
    X = model_matrix(rows, bundle.spec, bundle.levels)
    margin = bundle.churn.margin(X)
    if margin is None:
        raw = bundle.churn.raw(X)
        logit = np.log(raw / (1 - raw))
        np.testing.assert_allclose(contrib.sum(axis=1), logit, atol=1e-4)
    else:
        # Boosted from a BTYD prior: the base margin replaces XGBoost's constant base score,
        # which the ``bias`` column includes, so the raw log-odds are
        # sum(contributions) - logit(base score) + margin.
        import xgboost as xgb

        booster = bundle.churn.booster
        log_odds = booster.predict(
            xgb.DMatrix(masked_frame(X, bundle.churn.masked), base_margin=margin,
                        enable_categorical=True), output_margin=True)
        score = json.loads(booster.save_config())["learner"]["learner_model_param"][
            "base_score"]
        b = float(str(score).strip("[]"))
        expected = contrib.sum(axis=1) - np.log(b / (1 - b)) + margin
        np.testing.assert_allclose(expected, log_odds, atol=1e-3)


def test_bundle_round_trips_through_files(any_bundle: tuple[ScoringBundle, pd.DataFrame],
                                          tmp_path: Path) -> None:
    bundle, rows = any_bundle
    rows = rows.head(100)
    loaded = ScoringBundle.load(bundle.save(tmp_path / "b"))
    pd.testing.assert_frame_equal(score_frame(bundle, rows, drivers=True),
                                  score_frame(loaded, rows, drivers=True))
    assert loaded.spec == bundle.spec and loaded.levels == bundle.levels
    assert loaded.policy_obj().to_dict() == bundle.policy_obj().to_dict()
    assert loaded.metadata == json.loads(json.dumps(bundle.metadata, default=str))
    # The scoring path relies on every booster reading the spec's columns in order.
    for booster in loaded.boosters():
        assert list(booster.feature_names or []) == bundle.feature_names
    with pytest.raises(BundleError, match="not a churnguard bundle"):
        ScoringBundle.load(tmp_path)


def test_bundle_rejects_missing_features(
        any_bundle: tuple[ScoringBundle, pd.DataFrame]) -> None:
    bundle, rows = any_bundle
    with pytest.raises(ValueError, match="days_since_last_purchase"):
        score_frame(bundle, rows.head(5).drop(columns=["days_since_last_purchase"]))
