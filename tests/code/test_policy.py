"""The action policy: catalog validation, tiers, stages, EV ranking, reasons, the planner, and
the bundle applying it the same way for every scorer."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnguard.model.policy import (
    NO_ACTION,
    Policy,
    PolicyError,
    assess,
    lifecycle_stage,
    load_catalog,
    plan_campaign,
)
from tests.scoring import score_frame


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
                   "vip_outreach", "onboarding_nurture", "winback_offer", "renewal_offer",
                   "plan_rightsizing", "training_workshop", "renewal_outreach", NO_ACTION}
    # The renewal actions are for contractual models only.
    assert {a.id for a in policy.actions if a.label == "contractual"} == {
        "renewal_offer", "plan_rightsizing", "training_workshop", "renewal_outreach"}
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


def _action(**edit: Any) -> dict[str, Any]:
    return {"id": "a", "name": "A", "cost": 1, "effect": 0.1, **edit}


@pytest.mark.parametrize(("data", "message"), [
    ({"actions": [_action(cost=-1)]},
     "catalog.yaml: actions[0] (a): cost must be a finite number >= 0, got -1"),
    ({"actions": [_action(), _action(id="b", cost="cheap")]},
     "catalog.yaml: actions[1] (b): cost must be a finite number >= 0, got 'cheap'"),
    ({"actions": [_action(), _action(id="b"), _action(id="care_email", effect=1.5)]},
     "catalog.yaml: actions[2] (care_email): effect (relative churn reduction) must be in "
     "[0, 1], got 1.5"),
    ({"actions": [_action(colour="red", size=3)]},
     "catalog.yaml: actions[0] (a): unknown key(s) colour, size; known: channel, cost, effect, "
     "effect_source, id, label, min_clv, name, risk, signals, stages, value_tiers, why"),
    ({"actions": [_action()], "lifecycle": {"old_days": 3}},
     "catalog.yaml: lifecycle: unknown key(s) old_days; known: declining_interaction_ratio, "
     "declining_min_interactions, declining_overdue_ratio, declining_purchase_trend, "
     "lapsed_overdue_ratio, lapsed_quiet_days, loyal_days, loyal_min_purchase_days, new_days, "
     "onboarding_days, renewal_window_days"),
    # settings of the format-1 stage rules are unknown in a catalog (a bundle drops them)
    ({"actions": [_action()], "lifecycle": {"lapsed_days": 180}},
     "catalog.yaml: lifecycle: unknown key(s) lapsed_days; known: declining_interaction_ratio, "
     "declining_min_interactions, declining_overdue_ratio, declining_purchase_trend, "
     "lapsed_overdue_ratio, lapsed_quiet_days, loyal_days, loyal_min_purchase_days, new_days, "
     "onboarding_days, renewal_window_days"),
    ({"actions": [_action(stages=["new", "zombie"])]},
     "catalog.yaml: actions[0] (a): stages: unknown zombie; allowed: new, active, loyal, "
     "declining, at_risk, lapsed, onboarding, at_renewal_risk, cancelled"),
    ({"actions": [_action(stages="new")]},
     "catalog.yaml: actions[0] (a): stages must be a list of names from new, active, loyal, "
     "declining, at_risk, lapsed, onboarding, at_renewal_risk, cancelled, got 'new'"),
    ({"actions": [_action(risk=[0.8, 0.2])]},
     "catalog.yaml: actions[0] (a): risk must be [min, max] within [0, 1], got [0.8, 0.2]"),
    ({"actions": [_action()], "risk_tiers": [0.7, 0.2]},
     "catalog.yaml: risk_tiers must increase strictly inside (0, 1), got [0.7, 0.2]"),
    ({"actions": [_action(), _action(name="B"), _action(id="b"), _action(id="b")]},
     "catalog.yaml: duplicate action id(s) a, b"),
    ({"actions": [{"id": "a"}]}, "catalog.yaml: actions[0] (a): missing 'name', 'cost', 'effect'"),
    ({"actions": ["care_email"]}, "catalog.yaml: actions[0]: expected a mapping, got str"),
    ({"actions": [_action(id="care email")]},
     "catalog.yaml: actions[0] (care email): id must be a non-empty identifier, got 'care email'"),
    ({"actions": [_action()], "lifecycle": {"new_days": "soon"}},
     "catalog.yaml: lifecycle: new_days must be a number, got 'soon'"),
    ({"actions": [_action()], "top_drivers": 2.5},
     "catalog.yaml: top_drivers must be an integer in 0..50, got 2.5"),
    ({"risk_tiers": [0.2, 0.4]}, "catalog.yaml: missing 'actions'"),
])
def test_validation_errors_name_the_entry_and_the_field(data: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(data, source="catalog.yaml")
    assert str(err.value) == message


def test_validation_reports_every_problem_one_line_each(tmp_path: Path) -> None:
    import yaml

    data = load_catalog().to_dict()
    data["actions"] = [dict(a) for a in data["actions"]]
    data["actions"][2]["effect"] = 1.5
    data["actions"][4]["stages"] = ["zombie"]
    data["lifecycle"] = {"new_days": "soon"}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "format"}))
    with pytest.raises(PolicyError) as err:
        load_catalog(path)
    assert str(err.value).splitlines() == [
        f"{path}: actions[2] (loyalty_bonus): effect (relative churn reduction) must be in "
        "[0, 1], got 1.5",
        f"{path}: actions[4] (vip_outreach): stages: unknown zombie; allowed: new, active, "
        "loyal, declining, at_risk, lapsed, onboarding, at_renewal_risk, cancelled",
        f"{path}: lifecycle: new_days must be a number, got 'soon'",
    ]


#: A bundle's ``policy`` as bundle.json stores it (written by Policy.to_dict of policy format 1,
#: before the policy became a package validated with pydantic): it must load, and write back
#: unchanged but for its lifecycle, which follows today's stage rules (format 2).
STORED_POLICY = {
    "actions": [
        {"id": "care_email", "name": "Care email", "channel": "email", "cost": 0.1,
         "effect": 0.02, "why": "Keeps it warm", "risk": [0.15, 1.0], "min_clv": 0.0,
         "stages": ["active", "loyal"], "value_tiers": [], "signals": [],
         "effect_source": "campaign log: n_treated=400, n_control=400"},
        {"id": "no_action", "name": "No action", "channel": "none", "cost": 0.0, "effect": 0.0,
         "why": "No retention action is expected to pay for its cost", "risk": [0.0, 1.0],
         "min_clv": 0.0, "stages": [], "value_tiers": [], "signals": [],
         "effect_source": "catalog prior"}],
    "risk_tiers": [0.3, 0.6], "value_quantiles": [0.5, 0.8, 0.95],
    "value_cuts": [49.5, 79.2, 94.05],
    "lifecycle": {"new_days": 60.0, "loyal_days": 365.0, "loyal_min_purchase_days": 6.0,
                  "lapsed_days": 180.0, "lapsed_overdue_ratio": 4.0,
                  "declining_purchase_trend": 0.6, "declining_interaction_trend": 0.5,
                  "declining_overdue_ratio": 1.5},
    "top_drivers": 3, "source": "default catalog (actions.yaml)", "format": 1}


def test_stored_bundle_policies_load_unchanged() -> None:
    import json

    from churnguard.model.policy import POLICY_FORMAT, Lifecycle

    policy = Policy.from_dict(STORED_POLICY, source="bundle policy")
    assert policy.source == "default catalog (actions.yaml)"
    assert policy.value_cuts == (49.5, 79.2, 94.05) and policy.top_drivers == 3
    # Format 1's lapsed_days and declining_interaction_trend belong to stage rules that are
    # gone: the current defaults replace them; the settings whose meaning stayed are kept.
    assert policy.lifecycle == Lifecycle(new_days=60.0)
    assert POLICY_FORMAT == 2
    written = policy.to_dict()
    assert written["format"] == 2 and written["lifecycle"] == Lifecycle(new_days=60).model_dump()
    unchanged = {k: v for k, v in STORED_POLICY.items() if k not in ("lifecycle", "format")}
    # Fields added since (the churn label of the policy and of each action) get their defaults.
    assert written["label"] == "noncontractual"
    assert all(a["label"] is None for a in written["actions"])
    kept = {k: v for k, v in written.items() if k not in ("lifecycle", "format", "label")}
    kept["actions"] = [{k: v for k, v in a.items() if k != "label"} for a in kept["actions"]]
    assert json.dumps(kept) == json.dumps(unchanged)
    # a format-2 policy writes back exactly
    assert Policy.from_dict(json.loads(json.dumps(written))).to_dict() == written
    # immutable and hashable: the reason templates are cached per policy
    assert hash(policy) == hash(Policy.from_dict(json.loads(json.dumps(STORED_POLICY))))
    with pytest.raises(ValueError, match="frozen"):
        policy.top_drivers = 4
    # an estimate that is not an effect is refused, naming the action
    with pytest.raises(PolicyError, match=r"action care_email \(effect from campaign log\): "
                                          r"effect \(relative churn reduction\) must be in"):
        policy.with_effects({"care_email": 1.5}, "campaign log")


def test_value_tiers_are_fixed_quantiles() -> None:
    policy = load_catalog().fit_value_tiers(np.arange(1000.0))
    assert policy.value_cuts is not None
    np.testing.assert_allclose(policy.value_cuts, np.quantile(np.arange(1000.0),
                                                              [0.5, 0.8, 0.95]))
    a = assess(frame(clv=[10.0, 600.0, 900.0, 990.0]), policy)
    assert a.value_tier.tolist() == ["low", "medium", "high", "top"]


def test_lifecycle_stages() -> None:
    # Stages after bench/lifecycle.py: a high churn risk alone is no longer at_risk (row 2:
    # loyal), a purchase dip alone no longer declining (row 6: active), and a customer who
    # still interacts is not lapsed by purchase recency alone (row 3: 200 days without a
    # purchase but an interaction 3 days ago, 3x their usual gap: loyal). Declining and
    # at_risk are tested in tests/code/test_lifecycle.py.
    policy = load_catalog()
    f = frame(
        tenure_days=[30, 500, 500, 500, 500, 120, 500, 500],
        churn_probability=[0.2, 0.2, 0.7, 0.2, 0.2, 0.2, 0.2, 0.2],
        purchase_days_total=[1, 10, 10, 10, 0, 2, 10, 10],
        days_since_last_purchase=[5, 20, 20, 200, np.nan, 30, 40, 200],
        purchase_trend=[1, 1, 1, 1, np.nan, 1, 0.4, 1],
        overdue_ratio=[0.5, 0.8, 0.8, 3, np.nan, 0.5, 1.0, 3],
        days_since_last_interaction=[3, 3, 3, 3, 60, 3, 3, 50],
    )
    assert lifecycle_stage(f, policy).tolist() == [
        "new", "loyal", "loyal", "loyal", "lapsed", "active", "loyal", "lapsed"]


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


def test_bundle_scores_like_the_models_own_methods_and_round_trips(
        fake_bundle_dir: Path, fake_features: pd.DataFrame, tmp_path: Path) -> None:
    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.encode import FeatureError, model_matrix

    bundle = ScoringBundle.load(fake_bundle_dir)  # a private copy
    rows = fake_features.head(200)
    full = score_frame(bundle, rows, drivers=True)
    X = model_matrix(rows, bundle.spec, bundle.levels)
    np.testing.assert_array_equal(full["churn_probability"].to_numpy(), bundle.churn.predict(X))
    np.testing.assert_array_equal(full["clv"].to_numpy(), bundle.clv.predict(X))
    assert set(full["lifecycle_stage"]) <= {"new", "active", "loyal", "declining", "at_risk",
                                            "lapsed"}
    assert all(a for a in full["actions"])
    loaded = ScoringBundle.load(bundle.save(tmp_path / "b"))
    again = score_frame(loaded, rows, drivers=True)
    pd.testing.assert_frame_equal(full, again)
    # inline rows (JSON-like dicts) encode exactly like the frame
    recs = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
             for k, v in r.items()} for r in rows[bundle.feature_names].head(20)
            .astype(object).to_dict("records")]
    inline = loaded.encoder().encode_records(recs)
    np.testing.assert_array_equal(inline, loaded.encode(rows.head(20)))
    with pytest.raises(FeatureError, match="missing 1 feature"):
        loaded.encoder().encode_records([{k: v for k, v in recs[0].items()
                                          if k != "tenure_days"}])


def _reference_actions(f: dict[str, np.ndarray], policy: Policy, i: int) -> list[dict[str, Any]]:
    """Row ``i``'s recommended actions computed the slow, obvious way (one row at a time), to
    check the batch-wide :meth:`Assessment.recommendations` against."""
    a = assess({k: v[i:i + 1] for k, v in f.items()}, policy)
    row = a.ev[0]
    pos = [j for j in np.argsort(-row, kind="stable") if row[j] > 0]
    if pos:
        return [{"action_id": policy.actions[j].id, "expected_value": round(float(row[j]), 4)}
                for j in pos]
    return [{"action_id": NO_ACTION, "expected_value": 0.0}]


def test_batch_recommendations_equal_row_by_row_and_json_round_trips() -> None:
    import json

    rng = np.random.default_rng(3)
    n = 300
    policy = load_catalog().fit_value_tiers(np.arange(1000.0))
    f = frame(churn_probability=rng.uniform(0, 1, n).tolist(),
              clv=rng.gamma(1.0, 400.0, n).tolist(),
              complaints_90d=rng.poisson(0.4, n).tolist(),
              tickets_90d=rng.poisson(0.8, n).tolist(),
              purchase_trend=rng.uniform(0, 1.5, n).tolist(),
              interaction_trend=rng.uniform(0, 1.5, n).tolist(),
              tenure_days=rng.uniform(10, 900, n).tolist(),
              overdue_ratio=rng.uniform(0, 5, n).tolist(),
              days_since_last_purchase=rng.uniform(1, 400, n).tolist(),
              days_since_last_interaction=rng.uniform(0, 90, n).tolist())
    a = assess(f, policy)
    texts = a.actions_json(policy)
    kinds = set()
    for i in range(n):
        acts = a.actions(f, policy, i)
        assert [{k: x[k] for k in ("action_id", "expected_value")} for x in acts] == \
            _reference_actions(f, policy, i)
        assert json.loads(texts[i]) == acts
        assert texts[i] == json.dumps(acts, separators=(",", ":"))
        assert all(x["reason"].endswith(".") for x in acts)
        kinds.add(len(acts))
    assert {1, 2} <= kinds  # single and several recommendations were both exercised


def test_actions_json_escapes_catalog_text(tmp_path: Path) -> None:
    import json

    import yaml

    policy = load_catalog()
    data = policy.to_dict()
    data["actions"][0]["name"] = 'The "special" \\ offer'
    data["actions"][0]["why"] = 'Say "hi"\nnow'
    data["actions"][0]["risk"] = [0.0, 1.0]
    data["actions"][0]["stages"] = []
    data["actions"][0]["signals"] = []
    data["actions"][0]["value_tiers"] = []
    data["actions"][0]["min_clv"] = 0.0
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "format"}))
    custom = load_catalog(path)
    f = frame(churn_probability=0.9, clv=5000.0)
    a = assess(f, custom)
    acts = json.loads(a.actions_json(custom)[0])
    assert acts == a.actions(f, custom, 0)
    assert any(x["name"] == 'The "special" \\ offer' and x["reason"].startswith('Say "hi"\nnow')
               for x in acts)


def test_encode_arrow_equals_encode(fake_bundle: Any, fake_features: pd.DataFrame) -> None:
    import pyarrow as pa

    bundle = fake_bundle
    rows = fake_features.head(300).reset_index(drop=True).copy()
    cats = [f.name for f in bundle.spec.features() if f.kind == "category"]
    assert cats, "the demo spec has category features"
    rows.loc[0, cats[0]] = "a level never seen"
    rows.loc[1, cats[0]] = None
    num = next(n for n in bundle.feature_names if n not in cats)
    rows.loc[2, num] = np.nan
    expected = bundle.encode(rows)
    got = bundle.encode_arrow(pa.Table.from_pandas(rows, preserve_index=False))
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[0, bundle.encoder().index[cats[0]]])
    # categories stored as dictionaries or as non-string values follow the same str(v) rule
    as_dict = pa.Table.from_pandas(rows.assign(**{cats[0]: rows[cats[0]].astype("category")}),
                                   preserve_index=False)
    np.testing.assert_array_equal(bundle.encode_arrow(as_dict), expected)
    with pytest.raises(ValueError, match="missing 1 column"):
        bundle.encode_arrow(pa.Table.from_pandas(rows.drop(columns=[num]),
                                                 preserve_index=False))
    with pytest.raises(ValueError, match=f"feature '{num}' must be numeric"):
        bundle.encode_arrow(pa.Table.from_pandas(rows.assign(**{num: "x"}),
                                                 preserve_index=False))


def test_expected_effect_is_rounded_and_the_json_stays_json_dumps() -> None:
    """A campaign-log effect has every digit of a ratio of counts; actions show 4 decimals,
    and the batch JSON is still byte for byte json.dumps of the dicts."""
    import json

    effect = 1 - 37 / 41  # 0.0975609756097561
    policy = load_catalog().fit_value_tiers(np.arange(1000.0)).with_effects(
        {"satisfaction_survey": effect, "care_email": 0.04}, "campaign log")
    f = frame(churn_probability=[0.7, 0.4], clv=[950.0, 300.0], complaints_90d=[2, 1])
    a = assess(f, policy)
    texts = a.actions_json(policy)
    survey = [x for x in json.loads(texts[0]) if x["action_id"] == "satisfaction_survey"]
    assert survey and survey[0]["expected_effect"] == 0.0976
    assert '"expected_effect":0.0976,' in texts[0]
    for i, text in enumerate(texts):
        assert text == json.dumps(a.actions(f, policy, i), separators=(",", ":"))
    # the expected value still uses the effect itself, not the rounded one
    assert survey[0]["expected_value"] == round(0.7 * effect * 950.0 - 5.0, 4)
