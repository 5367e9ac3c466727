"""The benchmark's pandas reference computes the same features as churnguard (bench/features.py).

The feature benchmark compares churnguard's DuckDB build with ``bench/pandas_features.py``; that
comparison is only honest if both compute the same thing. On small demo data, at several
cutoffs, every feature must agree: exactly for counts and categories, to 1e-9 relative for
floats (sums of money in a different order may differ in the last bits, hence also a 1e-9
absolute slack for values that cancel to zero), and NaN exactly where churnguard has NULL.
Either side may be wrong when this fails.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from churnguard.features.build import build_features, infer_spec
from churnguard.features.sources import open_source

ROOT = Path(__file__).resolve().parents[2]
CUTOFFS = [date(2023, 3, 1), date(2024, 2, 29), date(2024, 11, 1), date(2025, 7, 1)]


def _load_reference() -> ModuleType:
    path = ROOT / "bench" / "pandas_features.py"
    spec = importlib.util.spec_from_file_location("bench_pandas_features", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _load_reference()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from churnguard.features.demo_data import generate_demo_data

    out = tmp_path_factory.mktemp("parity") / "demo"
    generate_demo_data(out, n_customers=400, seed=11, start=date(2023, 1, 1),
                       end=date(2025, 12, 31))
    return out


@pytest.fixture(scope="module")
def source(demo_dir: Path):
    src = open_source(demo_dir)
    yield src
    src.close()


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


@pytest.mark.parametrize("cutoff", CUTOFFS, ids=str)
def test_pandas_reference_matches_churnguard(reference, source, demo_dir, cutoff):
    spec = infer_spec(source)
    ours = build_features(source, spec, cutoff).to_pandas().set_index("customer_id")
    theirs = reference.build_features_pandas(demo_dir, cutoff).set_index("customer_id")
    ours, theirs = ours.sort_index(), theirs.sort_index()

    assert len(ours) > 0
    assert list(theirs.columns) == list(ours.columns), "same feature names, same order"
    assert theirs.index.equals(ours.index), "same population"
    assert (pd.to_datetime(theirs["as_of"]) == pd.Timestamp(cutoff)).all()

    kinds = {f.name: f.kind for f in spec.features()}
    mismatches = []
    for name in ours.columns.drop("as_of"):
        a, b = ours[name], theirs[name]
        if kinds[name] == "category" or _is_text(a):
            same = (a.astype(object) == b.astype(object)) | (a.isna() & b.isna())
        elif kinds[name] == "int":
            assert pd.api.types.is_integer_dtype(b), f"{name} should be an integer column"
            same = a.to_numpy() == b.to_numpy()
        else:
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            same = np.isclose(x, y, rtol=1e-9, atol=1e-9) | (np.isnan(x) & np.isnan(y))
            same &= np.isnan(x) == np.isnan(y)
        if not np.all(same):
            bad = ~np.asarray(same)
            mismatches.append(
                f"{name}: {int(bad.sum())} customers differ, e.g. "
                + str(pd.DataFrame({"churnguard": a[bad], "pandas": b[bad]}).head(3)
                      .to_dict("index"))
            )
    assert not mismatches, "\n".join(mismatches)


def test_reference_exercises_every_family(reference, demo_dir):
    """The demo data is rich enough that the comparison is not vacuous."""
    feats = reference.build_features_pandas(demo_dir, date(2025, 7, 1))
    for name in ("orders_30d", "refunds_365d", "complaints_365d", "tickets_90d", "login_7d",
                 "active_days_30d"):
        assert (feats[name] > 0).any(), name
    assert feats["gap_std_days"].notna().any() and feats["gap_std_days"].isna().any()
