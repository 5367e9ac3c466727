"""The CLV interval of a trained model (a real fit: ``slow``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from churnguard.model.predictors import ClvModel
from churnguard.model.score import score_matrix


def test_a_trained_bundle_ships_its_interval_and_measures_its_coverage(
        small_fitted: Any) -> None:
    f = small_fitted
    clv = f.bundle.clv
    assert isinstance(clv, ClvModel) and clv.quantiles is not None
    # the shipped spend distribution is the latest out-of-sample one: the test snapshot's
    assert clv.quantiles.snapshot == f.clv_plan.test.isoformat() and clv.quantiles.n > 0
    m = f.metrics
    for key in ("interval_coverage", "interval_nominal", "interval_coverage_buyers",
                "interval_coverage_nonbuyers", "interval_width"):
        assert np.isfinite(m[f"test_clv_{key}"]), key
    # 800 customers: only a broad band, but an interval that misses most customers (or
    # covers everyone by being huge) is wrong
    assert 0.5 < m["test_clv_interval_coverage"] <= 1.0
    assert m["test_clv_interval_nominal"] >= 0.8
    assert "interval_coverage" in f.clv_table["churnguard"]
    test = f.grid.loc[f.clv_test_rows]
    full = score_matrix(f.bundle, f.bundle.encode(test), drivers=False)
    assert full.clv_low is not None and full.clv_high is not None
    assert (full.clv_low <= full.clv_high).all()
    assert (full.clv_low[full.p_buy <= 0.9] == 0).all()
