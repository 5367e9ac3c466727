"""The trained bundle carries the reference profile of the customers as of its training date
(model/profile.py): every feature and both outputs, and the snapshot it describes is stable
against itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from churnguard.model.profile import population_stability_index
from churnguard.model.score import score_matrix


def test_the_bundle_profiles_its_training_date(small_fitted: Any, small_source: Any,
                                               tmp_path: Any) -> None:
    from churnguard.features.build import build_features
    from churnguard.model.bundle import ScoringBundle

    bundle = ScoringBundle.load(small_fitted.bundle.save(tmp_path / "bundle"))
    prof = bundle.metadata["reference_profile"]
    assert prof["snapshot"] == small_fitted.as_of.isoformat()
    assert set(prof["features"]) == set(bundle.feature_names)
    test = build_features(small_source, bundle.spec, small_fitted.as_of).to_pandas()
    assert prof["rows"] == len(test)
    for name, entry in prof["features"].items():
        # A rebuild, not the same frame: DuckDB sums floats in parallel, so a spend total may
        # differ in its last bit and cross a decile edge it sat on (one row in a bin: ~1e-4).
        assert population_stability_index(entry, test[name]) < 1e-3, name
        assert entry["null_rate"] == pytest.approx(float(test[name].isna().mean()))
    full = score_matrix(bundle, bundle.encode(test), drivers=False)
    assert population_stability_index(prof["churn_probability"], full.churn_probability) < 1e-3
    assert population_stability_index(prof["clv"], full.clv) < 1e-3
    # An older snapshot of the same customers is measurably different in its ages.
    older = small_fitted.grid[small_fitted.grid["as_of"] == min(small_fitted.grid["as_of"])]
    assert population_stability_index(prof["features"]["days_since_first_purchase"],
                                      older["days_since_first_purchase"]) > 0.1
    assert np.isfinite(prof["clv"]["edges"]).all()
