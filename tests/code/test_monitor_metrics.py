"""The monitor's numbers on tiny inputs: rank AUC, calibration error, the confidence-based
estimate and the status thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churnguard.serving.monitor import (
    Thresholds,
    _status,
    estimated_performance,
    expected_calibration_error,
    log_loss,
    roc_auc,
)


def test_rank_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    p = np.round(rng.random(500), 1)  # many ties
    y = rng.random(500) < p
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_calibration_error_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    # bin 0: mean y 0.5 vs p 0.05; bin 9: 1.0 vs 0.95; each half the rows
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_estimate_of_a_calibrated_model_brackets_what_happens() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(1.0, 6.0, 4000)
    est = estimated_performance(p, seed=3)
    hits = 0
    for k in range(20):
        y = np.random.default_rng(100 + k).random(p.size) < p
        lo, hi = est["roc_auc_band"]
        hits += lo <= roc_auc(y, p) <= hi
        assert log_loss(y, p) == pytest.approx(est["log_loss"], rel=0.05)
    assert hits >= 15  # a 90 % band
    assert est["churn_rate"] == pytest.approx(p.mean())


def test_status_thresholds() -> None:
    t = Thresholds()
    assert _status(0.05, 0.0, t) == "ok"
    assert _status(0.12, 0.0, t) == "warn"
    assert _status(0.05, 0.2, t) == "warn"  # a feed half gone shows in its null rate
    assert _status(0.3, 0.0, t) == "alert"
