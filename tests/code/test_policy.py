"""The action policy: catalog validation, tiers, stages, EV ranking, reasons, the planner, and
the bundle applying it the same way for every scorer."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnguard.training.policy import (
    NO_ACTION,
    Policy,
    PolicyError,
    assess,
    lifecycle_stage,
    load_catalog,
    plan_campaign,
)


def frame(**cols: Any) -> dict[str, np.ndarray]:
    base: dict[str, Any] = {
        "churn_probability": 0.5, "clv": 300.0, "tenure_days": 500.0,
        "days_since_last_purchase": 20.0, "purchase_days_total": 10, "overdue_ratio": 0.8,
        "purchase_trend": 1.0, "interaction_trend": 1.0, "orders_365d": 8, "events_90d": 20,
        "complaints_90d": 0, "tickets_90d": 0, "days_since_last_interaction": 3.0}
    base.update(cols)
    n = max(len(v) if isinstance(v, list) else 1 for v in base.values())
    return {k: np.asarray(v if isinstance(v, list) else [v] * n, dtype=float)
            for k, v in base.items()}


def test_default_catalog_has_the_crm_actions() -> None:
    policy = load_catalog()
    ids = {a.id for a in policy.actions}
    assert ids == {"care_email", "exclusive_offer", "loyalty_bonus", "satisfaction_survey",
                   "vip_outreach", "onboarding_nurture", "winback_offer", NO_ACTION}
    assert Policy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(("edit", "message"), [
    ({"actions": []}, "non-empty"),
    ({"actions": [{"id": "a", "name": "A", "cost": -1, "effect": 0.1}]}, "cost"),
    ({"actions": [{"id": "a", "name": "A", "cost": 1, "effect": 2}]}, "effect"),
    ({"actions": [{"id": "a", "name": "A", "cost": 1, "effect": 0.1, "stages": ["zombie"]}]},
     "zombie"),
    ({"actions": [{"id": "a", "name": "A", "cost": 1, "effect": 0.1, "colour": "red"}]},
     "colour"),
    ({"actions": [{"id": "a", "name": "A", "cost": 1, "effect": 0.1},
                  {"id": "a", "name": "B", "cost": 1, "effect": 0.1}]}, "duplicate"),
    ({"risk_tiers": [0.7, 0.2]}, "risk_tiers"),
])
def test_bad_catalogs_are_clear_errors(tmp_path: Path, edit: dict[str, Any],
                                       message: str) -> None:
    import yaml

    data = {"actions": [{"id": "a", "name": "A", "cost": 1, "effect": 0.1}], **edit}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError, match=message):
        load_catalog(path)
    with pytest.raises(PolicyError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")


def test_value_tiers_are_fixed_quantiles() -> None:
    policy = load_catalog().fit_value_tiers(np.arange(1000.0))
    assert policy.value_cuts is not None
    np.testing.assert_allclose(policy.value_cuts, np.quantile(np.arange(1000.0),
                                                              [0.5, 0.8, 0.95]))
    a = assess(frame(clv=[10.0, 600.0, 900.0, 990.0]), policy)
    assert a.value_tier.tolist() == ["low", "medium", "high", "top"]


def test_lifecycle_stages() -> None:
    policy = load_catalog()
    f = frame(
        tenure_days=[30, 500, 500, 500, 500, 120, 500],
        churn_probability=[0.2, 0.2, 0.7, 0.2, 0.2, 0.2, 0.2],
        purchase_days_total=[1, 10, 10, 10, 0, 2, 10],
        days_since_last_purchase=[5, 20, 20, 200, np.nan, 30, 40],
        purchase_trend=[1, 1, 1, 1, np.nan, 1, 0.4],
        overdue_ratio=[0.5, 0.8, 0.8, 3, np.nan, 0.5, 1.0],
    )
    assert lifecycle_stage(f, policy).tolist() == [
        "new", "loyal", "at_risk", "lapsed", "lapsed", "active", "declining"]


def test_actions_positive_ev_best_first_with_reasons() -> None:
    policy = load_catalog().fit_value_tiers(np.arange(1000.0))
    f = frame(churn_probability=0.7, clv=950.0, complaints_90d=2, purchase_trend=0.4)
    a = assess(f, policy)
    acts = a.actions(f, policy, 0)
    ids = [x["action_id"] for x in acts]
    assert "satisfaction_survey" in ids and "vip_outreach" in ids and NO_ACTION not in ids
    evs = [x["expected_value"] for x in acts]
    assert evs == sorted(evs, reverse=True) and min(evs) > 0
    by_id = {x["action_id"]: x for x in acts}
    survey = next(x for x in policy.actions if x.id == "satisfaction_survey")
    assert by_id["satisfaction_survey"]["expected_value"] == pytest.approx(
        0.7 * survey.effect * 950.0 - survey.cost, abs=1e-3)
    reason = by_id["satisfaction_survey"]["reason"]
    assert "2 complaints in the last 90 days" in reason
    assert "purchase frequency fell 60% vs. their usual" in reason
    # nothing pays: the catalog's no_action, with a reason
    g = frame(churn_probability=0.05, clv=5.0)
    none = assess(g, policy).actions(g, policy, 0)
    assert [x["action_id"] for x in none] == [NO_ACTION] and none[0]["reason"]


def _brute(ev: np.ndarray, costs: np.ndarray, budget: float) -> float:
    best = 0.0
    options = [[-1, *[a for a in range(ev.shape[1]) if np.isfinite(ev[i, a]) and ev[i, a] > 0]]
               for i in range(ev.shape[0])]
    for pick in itertools.product(*options):
        cost = sum(costs[a] for a in pick if a >= 0)
        if cost <= budget + 1e-9:
            best = max(best, sum(ev[i, a] for i, a in enumerate(pick) if a >= 0))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_planner_exact_matches_brute_force_and_greedy_is_bounded(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 7, 3
    costs = np.array([1.0, 2.5, 4.0])
    ev = rng.normal(2.0, 2.0, (n, k))
    ev[rng.random((n, k)) < 0.2] = -np.inf
    budget = float(rng.uniform(2, 12))
    best = _brute(ev, costs, budget)
    exact = plan_campaign(ev, costs, budget)
    assert exact.method in ("exact", "unconstrained")
    assert exact.expected_value == pytest.approx(best, abs=1e-9)
    assert exact.spend <= budget + 1e-9
    greedy = plan_campaign(ev, costs, budget, max_cells=0)
    assert greedy.spend <= budget + 1e-9
    assert greedy.expected_value <= best + 1e-9 <= greedy.upper_bound + 1e-9
    if greedy.method == "greedy":
        assert greedy.optimality_gap >= best - greedy.expected_value - 1e-9
    for plan in (exact, greedy):
        chosen = plan.choice[plan.choice >= 0]
        assert len(chosen) <= n


def test_planner_rejects_bad_budgets() -> None:
    with pytest.raises(ValueError, match="budget"):
        plan_campaign(np.zeros((1, 1)), np.ones(1), -1.0)


def test_bundle_score_full_matches_score_and_round_trips(small_fitted: Any,
                                                         tmp_path: Path) -> None:
    from churnguard.training.bundle import FeatureError, ScoringBundle

    bundle = small_fitted.bundle
    bundle.policy = load_catalog().fit_value_tiers(small_fitted.clv_preds["churnguard"]).to_dict()
    rows = small_fitted.grid[small_fitted.test_rows].head(200)
    plain = bundle.score(rows)
    full = bundle.score_full(rows)
    for col in ("churn_probability", "clv", "p_buy", "expected_spend_if_buy"):
        np.testing.assert_array_equal(plain[col].to_numpy(), full[col].to_numpy())
    assert set(full["lifecycle_stage"]) <= {"new", "active", "loyal", "declining", "at_risk",
                                            "lapsed"}
    assert all(a for a in full["actions"])
    loaded = ScoringBundle.load(bundle.save(tmp_path / "b"))
    again = loaded.score_full(rows)
    pd.testing.assert_frame_equal(full, again)
    # inline rows (JSON-like dicts) encode exactly like the frame
    recs = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
             for k, v in r.items()} for r in rows[bundle.feature_names].head(20)
            .astype(object).to_dict("records")]
    X = loaded.encoder().encode_records(recs)
    np.testing.assert_array_equal(X, loaded.encode(rows.head(20)))
    with pytest.raises(FeatureError, match="missing 1 feature"):
        loaded.encoder().encode_records([{k: v for k, v in recs[0].items()
                                          if k != "tenure_days"}])
