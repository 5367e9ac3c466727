"""The reference profile and the population stability index (model/profile.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnguard.model.profile import (
    OTHER,
    categorical_entry,
    numeric_entry,
    population_stability_index,
    reference_profile,
)


def test_numeric_entry_has_decile_bins_and_the_null_rate() -> None:
    x = np.r_[np.arange(1.0, 101.0), [np.nan] * 25]
    e = numeric_entry(x)
    assert e["edges"] == pytest.approx([10.9 + 9.9 * k for k in range(9)])
    assert e["shares"] == pytest.approx([0.1] * 10)
    assert e["null_rate"] == pytest.approx(0.2) and e["n"] == 125


def test_repeated_values_merge_bins_and_all_null_is_a_null_rate_of_one() -> None:
    e = numeric_entry(np.r_[np.zeros(90), np.arange(1.0, 11.0)])
    assert e["edges"][0] == 0.0 and len(e["edges"]) < 9
    assert sum(e["shares"]) == pytest.approx(1.0) and e["shares"][0] == pytest.approx(0.9)
    empty = numeric_entry(np.full(4, np.nan))
    assert empty["null_rate"] == 1.0 and population_stability_index(empty, [1.0, 2.0]) == 0.0


def test_psi_is_zero_on_the_reference_small_on_a_resample_large_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.gamma(2.0, 30.0, 20_000)
    e = numeric_entry(ref)
    assert population_stability_index(e, ref) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(e, rng.gamma(2.0, 30.0, 20_000)) < 0.01
    assert population_stability_index(e, rng.gamma(2.0, 45.0, 20_000)) > 0.1
    assert population_stability_index(e, np.zeros(1000)) > 0.25  # a feed that went to zero


def test_categorical_entry_counts_unseen_levels_as_other() -> None:
    values = pd.Series(["web", "web", "store", "partner", None])
    e = categorical_entry(values, ["web", "store"])
    assert e["shares"] == {"web": 0.5, "store": 0.25, OTHER: 0.25}
    assert e["null_rate"] == pytest.approx(0.2)
    assert population_stability_index(e, ["web", "web", "store", "partner"]) == 0.0
    assert population_stability_index(e, ["store"] * 9 + ["web"]) > 0.25


def test_reference_profile_covers_every_feature_and_both_outputs() -> None:
    frame = pd.DataFrame({"n_orders": [1.0, 2.0, 3.0, np.nan], "channel": ["a", "b", "a", None]})
    prof = reference_profile(frame, {"n_orders": "int", "channel": "category"},
                             {"channel": ["a", "b"]}, churn_probability=np.array([.1, .2, .3, .4]),
                             clv=np.array([0.0, 5.0, 10.0, 20.0]), snapshot="2025-06-01")
    assert set(prof["features"]) == {"n_orders", "channel"} and prof["rows"] == 4
    assert prof["features"]["channel"]["kind"] == "categorical"
    assert prof["features"]["n_orders"]["null_rate"] == pytest.approx(0.25)
    assert prof["churn_probability"]["kind"] == "numeric" and prof["clv"]["n"] == 4
