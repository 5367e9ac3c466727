"""Shared fixtures: small demo data, a fake-fit bundle built in well under a second, and one
small *trained* churn + CLV model per test session.

Two kinds of fitted bundle:

- ``fake_bundle`` (with ``fake_bundle_dir`` and the feature rows ``fake_features``): a real,
  valid :class:`~churnguard.model.bundle.ScoringBundle` (it saves, loads, scores with drivers
  and actions) whose boosters are 20 depth-2 trees each, fitted in a tenth of a second on the
  demo data's feature rows with *synthetic* labels, in the spirit of pymc-marketing's fake-fit
  fixtures. For every test that needs "a fitted bundle": the API, the batch job, the registry,
  the serving image. It uses nothing from ``churnguard.training``.
- ``small_fitted``: a real training run (``fit_models`` on 800 demo customers), for the tests of
  what only a trained model satisfies (tests/model: direction, invariance, calibration; the
  notebook that reports a training run's test metrics). Every test that requests it is marked
  ``slow`` (:func:`pytest_collection_modifyitems`), so ``make test-fast`` never fits.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

#: Small enough to fit in seconds, large enough for every split to hold both classes.
SMALL_CUSTOMERS = 800
SMALL_SEED = 11
SMALL_END = date(2025, 6, 30)
#: The fake bundle's as-of date: the day after the small demo data ends, which is also the
#: as-of date ``small_fitted`` trains at by default.
FAKE_AS_OF = SMALL_END + timedelta(days=1)
#: Boosting rounds and depth of the fake bundle's boosters: a tenth of a second to fit, and
#: enough trees that every demo customer gets churn drivers (with 8 rounds, about one in eight
#: has no feature raising its score, and a batch row has no drivers).
FAKE_ROUNDS = 20
FAKE_DEPTH = 2


def small_train_config(**overrides: Any) -> Any:
    """A TrainConfig with few cutoffs and few, shallow trees (fits in seconds)."""
    from churnguard.training.models import BoostConfig
    from churnguard.training.pipeline import TrainConfig

    kw: dict[str, Any] = {
        "horizon_days": 90, "clv_horizon_days": 120, "max_train_cutoffs": 6,
        "boost": BoostConfig(n_estimators=150, early_stopping_rounds=15, max_depth=3,
                             learning_rate=0.1),
    }
    kw.update(overrides)
    return TrainConfig(**kw)


#: Fixtures that run a real training fit: a test that requests one (directly or through
#: another fixture) is ``slow``.
REAL_FIT_FIXTURES = frozenset({"small_fitted"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration carries the ``integration`` marker, and every test
    that needs a real training fit (:data:`REAL_FIT_FIXTURES`) the ``slow`` marker: ``make
    test-fast`` leaves both out."""
    root = Path(__file__).parent / "integration"
    for item in items:
        if root in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
        if REAL_FIT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo data: 800 customers from 2023-01-01 to 2025-06-30 (with ground truth)."""
    from churnguard.features.demo_data import generate_demo_data

    out = tmp_path_factory.mktemp("demo") / "small"
    generate_demo_data(out, n_customers=SMALL_CUSTOMERS, seed=SMALL_SEED,
                       start=date(2023, 1, 1), end=SMALL_END)
    return out


@pytest.fixture(scope="session")
def small_source(small_demo_dir: Path) -> Iterator[Any]:
    from churnguard.features.sources import open_source

    source = open_source(small_demo_dir)
    yield source
    source.close()


@pytest.fixture(scope="session")
def small_fitted(small_source: Any) -> Any:
    """churnguard.training.pipeline.Fitted: a small *trained* bundle, its grid and test metrics
    (no MLflow involved). A real fit: tests that request it are ``slow``; for "some fitted
    bundle" use ``fake_bundle``."""
    from churnguard.training.pipeline import fit_models

    return fit_models(small_source, config=small_train_config())


# ---------------------------------------------------------------------------------------------
# The fake-fit bundle


def fake_labels(X: Any, seed: int = 0) -> dict[str, Any]:
    """Synthetic targets for feature rows ``X`` (a model matrix): ``churned`` (0/1), ``bought``
    (0/1) and ``spend`` (> 0 where bought, else 0), drawn from fixed rules of recency,
    complaints and recent orders so that the boosters learn the expected directions."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def col(name: str, fill: float) -> Any:
        return X[name].fillna(fill).to_numpy(dtype=float)

    recency = np.clip(col("days_since_last_purchase", 400.0), 0.0, 400.0)
    z = (recency - 90.0) / 45.0 + 0.8 * col("complaints_90d", 0.0) \
        - 0.5 * np.log1p(col("orders_90d", 0.0))
    churned = (rng.random(len(X)) < 1.0 / (1.0 + np.exp(-z))).astype(float)
    bought = (rng.random(len(X)) < 1.0 / (1.0 + np.exp(z - 0.3))).astype(float)
    order_value = np.clip(col("avg_order_value", 50.0), 5.0, None)
    spend = bought * order_value * (1.0 + col("orders_365d", 0.0) / 4.0) \
        * np.exp(rng.normal(0.0, 0.3, len(X)))
    return {"churned": churned, "bought": bought, "spend": spend}


def make_fake_bundle(spec: Any, features: Any, *, as_of: date = FAKE_AS_OF, seed: int = 0,
                     rounds: int = FAKE_ROUNDS, depth: int = FAKE_DEPTH) -> Any:
    """A small, real :class:`ScoringBundle` for ``spec``, fitted in a fraction of a second on the
    feature rows ``features`` (a frame with the spec's columns) with :func:`fake_labels`: churn,
    CLV buy and CLV spend boosters of ``rounds`` depth-``depth`` trees on
    ``enable_categorical`` DMatrices of :func:`model_matrix` (so their feature names are the
    spec's, in order), a fixed Platt calibrator, smear and scale 1, the spend distribution of
    the CLV interval, metadata in the shape training writes, and the default action catalog
    with value tiers fitted on the bundle's own CLVs of ``features``."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.encode import model_matrix
    from churnguard.model.policy import load_catalog
    from churnguard.model.predictors import Calibrator, ChurnModel, ClvModel, SpendQuantiles
    from churnguard.training.data import category_levels

    levels = category_levels(spec, features)
    X = model_matrix(features, spec, levels)
    y = fake_labels(X, seed)
    base = {"max_depth": depth, "eta": 0.3, "nthread": 1, "seed": seed}

    def fit(objective: str, rows: Any, label: Any) -> xgb.Booster:
        d = xgb.DMatrix(X[rows], label=label[rows], enable_categorical=True)
        return xgb.train({**base, "objective": objective}, d, num_boost_round=rounds)

    every = np.ones(len(X), dtype=bool)
    buyers = y["bought"] > 0
    churn = fit("binary:logistic", every, y["churned"])
    buy = fit("binary:logistic", every, y["bought"])
    spend = fit("reg:squarederror", buyers, np.log(np.where(buyers, y["spend"], 1.0)))
    info = {"kind": "fake", "rounds": rounds, "max_depth": depth, "seed": seed}
    bundle = ScoringBundle(
        spec=spec, levels=levels,
        churn=ChurnModel(booster=churn, calibrator=Calibrator(method="platt", a=0.9, b=-0.1),
                         best_iteration=rounds - 1, info=dict(info)),
        clv=ClvModel(buy=buy, spend=spend, smear=1.0, scale=1.0,
                     info={**info, "buy_trees": rounds, "spend_trees": rounds}),
        horizon_days=90, clv_horizon_days=120,
        metadata={
            "as_of": as_of.isoformat(),
            "churn_plan": _fake_plan(as_of, 90), "clv_plan": _fake_plan(as_of, 120),
            "data_fingerprint": "fake", "spec_fingerprint": spec.fingerprint(),
            "feature_set_version": spec.version, "calibration": "platt", "refit": False,
            "trained_at": pd.Timestamp(as_of, tz="UTC").isoformat(), "fake_fit": True,
        })
    # The spend distribution of the CLV interval, measured on the rows the boosters were
    # fitted on (training measures it on a held-out snapshot; a fake needs only its shape).
    _, expected = bundle.clv.components(X)
    bundle.clv.quantiles = SpendQuantiles.measure(
        y["spend"][buyers], expected[buyers] / bundle.clv.smear, snapshot=as_of.isoformat())
    bundle.policy = load_catalog().fit_value_tiers(bundle.clv.predict(X)).to_dict()
    return bundle


def _fake_plan(as_of: date, label_days: int) -> dict[str, Any]:
    """A split plan in the shape training records (``SplitPlan.to_dict``): the latest month
    start whose label window ends by ``as_of`` is the test cutoff, a month earlier the
    validation cutoff, the four months before it the training cutoffs (descriptive only: nothing
    was fitted on them)."""
    def months_before(d: date, k: int) -> date:
        m = d.year * 12 + d.month - 1 - k
        return date(m // 12, m % 12 + 1, 1)

    test = months_before(as_of, 0)
    while test + timedelta(days=label_days) > as_of:
        test = months_before(test, 1)
    cuts = [months_before(test, k) for k in range(5, 0, -1)]
    return {"label_days": label_days, "train": [c.isoformat() for c in cuts[:4]],
            "valid": cuts[-1].isoformat(), "test": test.isoformat(), "purged": False}


@pytest.fixture(scope="session")
def fake_spec(small_source: Any) -> Any:
    """The feature spec of the small demo data as of :data:`FAKE_AS_OF` (its event types and
    customer attributes), as training infers it."""
    from churnguard.features.build import infer_spec

    return infer_spec(small_source, as_of=FAKE_AS_OF)


@pytest.fixture(scope="session")
def fake_features(small_source: Any, fake_spec: Any) -> Any:
    """Feature rows of every small-demo customer as of :data:`FAKE_AS_OF` (a pandas frame with
    ``customer_id``, ``as_of`` and the spec's features): what the fake bundle was fitted on,
    and the rows the API tests serve from their snapshot. Shared by the session: copy it
    before changing it."""
    from churnguard.features.build import build_features

    return build_features(small_source, fake_spec, FAKE_AS_OF).to_pandas()


@pytest.fixture(scope="session")
def fake_bundle(fake_spec: Any, fake_features: Any) -> Any:
    """A small fake-fit :class:`ScoringBundle` (:func:`make_fake_bundle`) for the small demo
    data's spec. Shared by the session: treat it as read-only (``ScoringBundle.load`` of
    ``fake_bundle_dir`` gives a private copy)."""
    return make_fake_bundle(fake_spec, fake_features)


@pytest.fixture(scope="session")
def fake_bundle_dir(fake_bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fake_bundle`` saved as a bundle directory (``ScoringBundle.save``)."""
    out: Path = fake_bundle.save(tmp_path_factory.mktemp("fake-bundle") / "bundle")
    return out


@pytest.fixture(autouse=True, scope="session")
def _prediction_log_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Scoring logs what it scores (README, "Prediction log"), by default under the data dir,
    which is ./data for a test that sets none: the session's log goes to a temporary folder
    instead (subprocesses inherit it). Tests of the log set their own."""
    import os

    os.environ.setdefault("CHURNGUARD_PREDICTION_LOG_DIR",
                          str(tmp_path_factory.mktemp("prediction-log")))
    # A PostgreSQL log of the shell's would take every test's rows: the tests of it set their own.
    os.environ.pop("CHURNGUARD_PREDICTION_LOG_URL", None)
    # Likewise ``churnguard monitor``'s last verdict (README, "Monitoring").
    os.environ.setdefault("CHURNGUARD_MONITOR_STATE_PATH",
                          str(tmp_path_factory.mktemp("monitoring") / "last_verdict.json"))


@pytest.fixture()
def embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for the embedded MLflow store; MLflow env settings cleared."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHURNGUARD_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / "store"
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(data_dir))
    return data_dir
