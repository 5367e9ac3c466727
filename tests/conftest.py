"""Shared fixtures: small demo data and one small fitted churn + CLV model per test session."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

#: Small enough to fit in seconds, large enough for every split to hold both classes.
SMALL_CUSTOMERS = 800
SMALL_SEED = 11
SMALL_END = date(2025, 6, 30)


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
    """churnguard.training.pipeline.Fitted: a small fitted bundle, its grid and test metrics
    (no MLflow involved)."""
    from churnguard.training.pipeline import fit_models

    return fit_models(small_source, config=small_train_config())


@pytest.fixture()
def embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for the embedded MLflow store; MLflow env settings cleared."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHURNGUARD_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / "store"
    monkeypatch.setenv("CHURNGUARD_DATA_DIR", str(data_dir))
    return data_dir
