"""Scoring feature frames in tests: the one scoring path, with its output as a frame."""

from __future__ import annotations

from datetime import date

import pandas as pd

from churnguard.features.build import build_features
from churnguard.features.sources import Source
from churnguard.model.bundle import ScoringBundle
from churnguard.model.score import score_matrix


def score_frame(bundle: ScoringBundle, rows: pd.DataFrame, *,
                drivers: bool = False) -> pd.DataFrame:
    """:func:`score_matrix` of ``rows`` as a frame on ``rows``' index (``customer_id`` and
    ``as_of`` passed through when present)."""
    out = score_matrix(bundle, bundle.encode(rows), drivers=drivers).to_frame()
    out.index = rows.index
    for col in ("as_of", "customer_id"):
        if col in rows.columns:
            out.insert(0, col, rows[col].to_numpy())
    return out


def score_source(source: Source, bundle: ScoringBundle, as_of: date) -> pd.DataFrame:
    """Scores of every customer in the population at ``as_of``, from the bundle's own feature
    spec over rows strictly before ``as_of``."""
    feats = build_features(source, bundle.spec, as_of).to_pandas()
    return score_frame(bundle, feats).reset_index(drop=True)


def with_reference_profile(bundle: ScoringBundle, features: pd.DataFrame,
                           snapshot: str) -> ScoringBundle:
    """``bundle`` with the reference profile training gives a bundle, of ``features`` and the
    bundle's outputs on them (``snapshot``: the date it describes)."""
    from churnguard.model.profile import reference_profile

    full = score_matrix(bundle, bundle.encode(features), drivers=False)
    bundle.metadata["reference_profile"] = reference_profile(
        features, {f.name: f.kind for f in bundle.spec.features()}, bundle.levels,
        churn_probability=full.churn_probability, clv=full.clv, snapshot=snapshot)
    return bundle
