"""Churn drivers: only actionable features are listed (context still counts in the score), a
null value says what null means, and every feature's role comes from its definition, for
bundles saved before roles existed too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnguard.features.definitions import FeatureSpec, feature_catalog
from churnguard.model.policy import top_drivers
from churnguard.model.policy.reasons import UNKNOWN_VALUE
from churnguard.model.score import contributions, score_matrix

#: The context features: the calendar, how long ago the customer arrived, who they are.
CONTEXT = {"season_sin", "season_cos", "tenure_days", "days_since_first_purchase",
           "sub_tenure_days", "segment", "region"}

#: A feature spec as a bundle saved before roles existed stores it (FeatureSpec.to_dict).
STORED_SPEC = {"event_types": ["complaint", "email_click", "email_open", "login",
                               "support_ticket", "web_visit"],
               "attribute_columns": ["segment", "region", "channel"], "subscriptions": False,
               "complaint_types": ["complaint"], "ticket_types": ["support_ticket"],
               "version": "1.0",
               "attribute_categories": {"segment": ["consumer", "enterprise", "smb"],
                                        "region": ["apac", "europe", "latam", "north_america"],
                                        "channel": ["affiliate", "organic", "paid_search",
                                                    "referral", "social"]}}


def test_every_feature_is_actionable_or_context() -> None:
    spec = FeatureSpec(event_types=("login", "complaint"), attribute_columns=("segment",
                                                                                "region"),
                       subscriptions=True)
    catalog = feature_catalog(spec)
    assert {f["role"] for f in catalog} == {"actionable", "context"}
    assert {f["name"] for f in catalog if f["role"] == "context"} == CONTEXT
    roles = spec.roles()
    assert roles["sub_days_to_renewal"] == "actionable"  # when to act: before the renewal
    assert roles["login_30d"] == roles["complaints_90d"] == roles["overdue_ratio"] == "actionable"
    by_name = {f["name"]: f for f in catalog}
    assert by_name["days_since_last_purchase"]["null_meaning"] == "no purchase yet"
    assert "null_meaning" not in by_name["orders_total"]  # a count is never null
    assert spec.null_meanings()["days_since_last_interaction"] == "no interaction yet"


def test_a_stored_spec_gets_its_roles_from_the_definitions() -> None:
    """The spec stores only what the data decides: an old bundle's spec loads unchanged (same
    fingerprint as before roles existed) and its features carry their roles."""
    spec = FeatureSpec.from_dict(json.loads(json.dumps(STORED_SPEC)))
    assert set(spec.to_dict()) == set(STORED_SPEC)  # roles are not stored
    assert json.loads(json.dumps(spec.to_dict())) == STORED_SPEC
    assert spec.fingerprint() == "19f03a2234e1"  # what churnguard wrote before roles existed
    assert {n for n, r in spec.roles().items() if r == "context"} == (
        CONTEXT - {"sub_tenure_days"}) | {"channel"}


def test_every_nullable_feature_says_what_null_means(fake_features: pd.DataFrame,
                                                     fake_spec: Any) -> None:
    meanings = fake_spec.null_meanings()
    nullable = [c for c in fake_spec.feature_names() if fake_features[c].isna().any()]
    assert nullable and set(nullable) <= set(meanings)


def test_top_drivers_leave_out_context_and_explain_nulls() -> None:
    names = ["season_sin", "days_since_last_purchase", "orders_90d", "tenure_days"]
    contribs = np.array([[2.0, 1.0, 0.5, 3.0],
                         [0.1, -1.0, 0.2, 0.3]])
    values: list[list[Any]] = [[0.5, None, 0, 400.0], [0.5, 10.0, 3, 400.0]]
    shown = np.array([False, True, True, False])
    out = top_drivers(contribs, names, lambda i, j: values[i][j], {}, 5, shown=shown,
                      null_meanings={"days_since_last_purchase": "no purchase yet"})
    assert out[0] == [
        {"feature": "days_since_last_purchase", "description": "days_since_last_purchase",
         "value": None, "value_meaning": "no purchase yet", "contribution": 1.0},
        {"feature": "orders_90d", "description": "orders_90d", "value": 0,
         "contribution": 0.5}]
    assert [d["feature"] for d in out[1]] == ["orders_90d"]
    # a null the definitions never produce (sent inline) is "unknown"
    odd = top_drivers(contribs[:1], names, lambda i, j: None, {}, 1, shown=shown)
    assert odd[0][0]["value_meaning"] == UNKNOWN_VALUE
    # without a mask, every feature may be listed (the function's old behaviour)
    assert [d["feature"] for d in top_drivers(contribs, names, lambda i, j: 1, {}, 2)[0]] == [
        "tenure_days", "season_sin"]


def test_score_drivers_are_actionable_and_context_still_scores(
        fake_bundle_dir: Path, fake_features: pd.DataFrame) -> None:
    from churnguard.model.bundle import ScoringBundle

    bundle = ScoringBundle.load(fake_bundle_dir)  # through bundle.json, as a server loads it
    rows = fake_features.head(400)
    X = bundle.encode(rows)
    full = score_matrix(bundle, X)
    roles = bundle.spec.roles()
    meanings = bundle.spec.null_meanings()
    listed = [d for row in (full.drivers or []) for d in row]
    assert listed and all(roles[d["feature"]] == "actionable" for d in listed)
    for d in listed:
        if d["value"] is None:
            assert d["value_meaning"] == meanings[d["feature"]]
        else:
            assert "value_meaning" not in d
    assert any(d["value"] is None for d in listed)  # never-buyers: "no purchase yet"
    # context features still move the score: the model reads them (nonzero contributions),
    # the drivers only leave them out
    c = contributions(bundle, X)[:, :-1]
    context = [j for j, n in enumerate(bundle.feature_names) if roles[n] == "context"]
    assert np.abs(c[:, context]).sum() > 0
