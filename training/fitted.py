"""What the fitting steps hand to the registration step (and to tests, notebooks, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from churnguard.features.definitions import FeatureSpec
from churnguard.model.bundle import ScoringBundle
from churnguard.training.bootstrap import Bootstrap
from churnguard.training.config import TrainConfig
from churnguard.training.split import SplitPlan


@dataclass
class Fitted:
    """Everything :func:`~churnguard.training.pipeline.fit_models` produced, before anything
    is logged or registered."""

    as_of: date
    #: The configuration actually used (the CLV horizon may have been shortened).
    config: TrainConfig
    churn_plan: SplitPlan
    clv_plan: SplitPlan
    spec: FeatureSpec
    #: The snapshot grid: features and labels of every cutoff of both plans.
    grid: pd.DataFrame
    bundle: ScoringBundle
    #: Run metrics: validation choices, test metrics of churnguard and the baselines.
    metrics: dict[str, float]
    #: Evaluation tables logged as ``evaluation_tables.json`` (reliability, CLV deciles).
    extra: dict[str, Any]
    #: Lines of the report's notes section.
    notes: list[str]
    #: Test-snapshot predictions and metric tables per model ("churnguard" first).
    churn_preds: dict[str, np.ndarray]
    churn_table: dict[str, dict[str, float]]
    clv_preds: dict[str, np.ndarray]
    clv_table: dict[str, dict[str, float]]
    fingerprint: dict[str, Any]
    #: Trees of the churn model (found by early stopping).
    churn_trees: int
    #: Grid row masks of the churn and the CLV test snapshots.
    test_rows: np.ndarray
    clv_test_rows: np.ndarray
    #: Every model's test metrics on the same bootstrap resamples of the churn and the CLV
    #: test customers: their intervals and the paired differences between models.
    churn_bootstrap: Bootstrap
    clv_bootstrap: Bootstrap
