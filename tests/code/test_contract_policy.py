"""The action policy of a contractual model: its lifecycle stages (cancelled, onboarding,
at_renewal_risk, active), the renewal_due signal and its fact, and renewal actions that only
contractual models recommend."""

from __future__ import annotations

import json

import numpy as np

from churnguard.model.policy import assess, lifecycle_stage, load_catalog, signals
from tests.code.test_policy import frame

SUBSCRIBER = {"sub_active": 1.0, "sub_tenure_days": 400.0, "sub_days_to_renewal": 200.0}


def contract_frame(*rows: dict[str, float]) -> dict[str, np.ndarray]:
    keys = {k for r in rows for k in r} | set(SUBSCRIBER)
    return frame(**{k: [r.get(k, SUBSCRIBER.get(k, np.nan)) for r in rows] for k in keys})


def test_contract_stages_first_match_wins() -> None:
    policy = load_catalog().model_copy(update={"label": "contractual"})
    f = contract_frame(
        {"sub_active": 0.0, "sub_tenure_days": 30.0},           # cancelled beats onboarding
        {"sub_tenure_days": 30.0, "sub_days_to_renewal": 10.0},  # onboarding
        {"sub_days_to_renewal": 20.0, "churn_probability": 0.35},  # renewal due, medium risk
        {"sub_days_to_renewal": 20.0, "churn_probability": 0.05},  # renewal due, low risk
        {"sub_days_to_renewal": 90.0, "churn_probability": 0.9},   # high risk, renewal far
        {"sub_days_to_renewal": np.nan, "churn_probability": 0.9},  # no known term end
    )
    assert list(lifecycle_stage(f, policy)) == [
        "cancelled", "onboarding", "at_renewal_risk", "active", "active", "active"]
    # A non-contractual model never uses these stages, whatever the subscription columns say.
    assert not set(lifecycle_stage(f, load_catalog())) & {
        "cancelled", "onboarding", "at_renewal_risk"}


def test_renewal_actions_only_for_contractual_models_with_their_facts() -> None:
    contractual = load_catalog().model_copy(update={"label": "contractual"}).fit_value_tiers(
        np.arange(1000.0))  # CLV 4,000: the top tier
    f = contract_frame({"sub_days_to_renewal": 12.0, "churn_probability": 0.5, "clv": 4000.0})
    sig = signals(f, contractual)
    assert sig["renewal_due"].tolist() == [True]
    ids = [a.id for a in contractual.actions]
    ev = assess(f, contractual).ev[0]
    for aid in ("renewal_offer", "renewal_outreach"):
        assert np.isfinite(ev[ids.index(aid)]) and ev[ids.index(aid)] > 0, aid
    recs = json.loads(assess(f, contractual).recommendations(contractual).json[0])
    assert recs[0]["action_id"] in {"renewal_offer", "renewal_outreach"}
    assert "the subscription renews in 12 days" in recs[0]["reason"]
    # The same customer under a non-contractual model: no renewal action is eligible.
    plain = load_catalog().fit_value_tiers(np.arange(1000.0))
    ev_plain = assess(f, plain).ev[0]
    for aid in ("renewal_offer", "plan_rightsizing", "renewal_outreach"):
        assert ev_plain[ids.index(aid)] == -np.inf, aid
