"""The trained bundle carries the reference profile of its test snapshot (model/profile.py):
every feature and both outputs, and the snapshot it describes is stable against itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from churnguard.model.profile import population_stability_index
from churnguard.model.score import score_matrix


def test_the_bundle_profiles_its_test_snapshot(small_fitted: Any, tmp_path: Any) -> None:
    from churnguard.model.bundle import ScoringBundle

    bundle = ScoringBundle.load(small_fitted.bundle.save(tmp_path / "bundle"))
    prof = bundle.metadata["reference_profile"]
    assert prof["snapshot"] == small_fitted.churn_plan.test.isoformat()
    assert set(prof["features"]) == set(bundle.feature_names)
    test = small_fitted.grid.loc[small_fitted.test_rows]
    assert prof["rows"] == len(test)
    for name, entry in prof["features"].items():
        assert population_stability_index(entry, test[name]) == pytest.approx(0.0, abs=1e-9)
        assert entry["null_rate"] == pytest.approx(float(test[name].isna().mean()))
    full = score_matrix(bundle, bundle.encode(test), drivers=False)
    assert population_stability_index(prof["churn_probability"],
                                      full.churn_probability) == pytest.approx(0.0, abs=1e-9)
    assert population_stability_index(prof["clv"], full.clv) == pytest.approx(0.0, abs=1e-9)
    # An older snapshot of the same customers is measurably different in its ages.
    older = small_fitted.grid[small_fitted.grid["as_of"] == min(small_fitted.grid["as_of"])]
    assert population_stability_index(prof["features"]["days_since_first_purchase"],
                                      older["days_since_first_purchase"]) > 0.1
    assert np.isfinite(prof["clv"]["edges"]).all()
