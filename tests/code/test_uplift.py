"""Action effects from campaign logs (training/uplift.py): hand-computed estimates and intervals,
the replace-or-keep-the-prior rule, bad input, point-in-time outcomes, and the demo generator's
true effects."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnguard.features.sources import open_source
from churnguard.model.policy import load_catalog
from churnguard.training.uplift import (
    PRIOR_SOURCE,
    UpliftError,
    apply_estimates,
    contact_outcomes,
    estimate_effects,
    estimate_from_source,
    relative_effect,
)

AS_OF = date(2024, 7, 1)


def _outcomes(rows: list[tuple[str, str, bool, bool]], *, complete: bool = True) -> pd.DataFrame:
    """(customer, action, treated, churned) rows, one contact each."""
    return pd.DataFrame({
        "customer_id": [r[0] for r in rows],
        "ts": pd.Timestamp("2024-01-01 10:00"),
        "action_id": [r[1] for r in rows],
        "treated": [r[2] for r in rows],
        "complete": complete,
        "churned": [r[3] if complete else None for r in rows],
    })


def _arm(action: str, prefix: str, treated: bool, n: int, churned: int) -> list[Any]:
    return [(f"{prefix}{i}", action, treated, i < churned) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The estimator, by hand


def test_relative_effect_and_katz_interval_by_hand() -> None:
    # 20/100 treated vs 40/100 hold-out churn: RR = 0.5, effect 0.5;
    # se(log RR) = sqrt(1/20 - 1/100 + 1/40 - 1/100) = sqrt(0.055) = 0.23452;
    # RR bounds 0.5 * exp(-/+ 1.95996 * 0.23452) = 0.315751 .. 0.791765.
    eff, lo, hi = relative_effect(20, 100, 40, 100)
    assert eff == pytest.approx(0.5)
    assert lo == pytest.approx(1 - 0.791765, abs=1e-5)
    assert hi == pytest.approx(1 - 0.315751, abs=1e-5)
    # A 90 % interval is narrower, around the same point.
    _, lo90, hi90 = relative_effect(20, 100, 40, 100, level=0.9)
    assert lo < lo90 < 0.5 < hi90 < hi


def test_relative_effect_zero_cells() -> None:
    # No churner in the hold-out: the ratio is undefined.
    assert all(math.isnan(v) for v in relative_effect(3, 4, 0, 4))
    assert all(math.isnan(v) for v in relative_effect(0, 0, 2, 4))
    # No churner among the treated: effect 1, interval from Haldane's +0.5 correction:
    # RR' = (0.5/50.5)/(10.5/50.5) = 0.047619, se = sqrt(2 - 1/50.5 + 1/10.5 - 1/50.5).
    eff, lo, hi = relative_effect(0, 50, 10, 50)
    se = math.sqrt(1 / 0.5 - 1 / 50.5 + 1 / 10.5 - 1 / 50.5)
    assert eff == 1.0
    assert lo == pytest.approx(1 - 0.047619 * math.exp(1.959964 * se), abs=1e-5)
    assert hi == pytest.approx(1 - 0.047619 * math.exp(-1.959964 * se), abs=1e-5)
    with pytest.raises(UpliftError, match="more churners than contacts"):
        relative_effect(5, 4, 1, 4)
    with pytest.raises(UpliftError, match="non-negative integer"):
        relative_effect(-1, 4, 1, 4)
    with pytest.raises(UpliftError, match="confidence level"):
        relative_effect(1, 4, 1, 4, level=1.5)


def test_estimate_effects_counts_arms_contacts_and_customers() -> None:
    rows = (_arm("care_email", "t", True, 4, 1) + _arm("care_email", "c", False, 4, 2)
            + [("t0", "care_email", True, False)])  # a second contact of customer t0
    frame = pd.concat([_outcomes(rows),
                       _outcomes([("p", "care_email", False, False)], complete=False)])
    est = estimate_effects(frame)["care_email"]
    assert (est.n_treated, est.n_control) == (5, 4)
    assert (est.customers_treated, est.customers_control) == (4, 4)
    assert (est.churned_treated, est.churned_control) == (1, 2)
    assert est.churn_treated == pytest.approx(0.2) and est.churn_control == pytest.approx(0.5)
    assert est.effect == pytest.approx(1 - 0.2 / 0.5)
    assert est.source() == (f"campaign log: n_treated=5, n_control=4, 95% CI "
                            f"[{est.ci_low:.3f}, {est.ci_high:.3f}]")


# ---------------------------------------------------------------------------------------------
# Replace the prior, or keep it


def _apply(frame: pd.DataFrame, **kw: Any) -> Any:
    return apply_estimates(load_catalog(), frame, as_of=AS_OF, horizon_days=90, **kw)


def test_trustworthy_estimates_replace_priors_clipped_to_unit_interval() -> None:
    rows = (_arm("winback_offer", "w", True, 400, 240) + _arm("winback_offer", "v", False, 300,
                                                              240)  # 0.6 vs 0.8: effect 0.25
            + _arm("care_email", "e", True, 300, 150) + _arm("care_email", "f", False, 300, 120)
            )  # 0.5 vs 0.4: harmful, clipped to 0
    policy, report = _apply(_outcomes(rows), max_ci_width=0.5)
    acts = {a.id: a for a in policy.actions}
    assert acts["winback_offer"].effect == pytest.approx(0.25)
    assert acts["winback_offer"].effect_source.startswith(
        "campaign log: n_treated=400, n_control=300, 95% CI [")
    assert acts["care_email"].effect == 0.0
    assert acts["care_email"].effect_source.startswith("campaign log: n_treated=300")
    # Actions without contacts keep the catalog prior, and say so.
    prior = {a.id: a for a in load_catalog().actions}
    for aid in ("exclusive_offer", "vip_outreach", "no_action"):
        assert acts[aid].effect == prior[aid].effect
        assert acts[aid].effect_source == PRIOR_SOURCE
    by_id = {a.action_id: a for a in report.actions}
    assert set(by_id) == set(acts)
    assert by_id["care_email"].estimate.effect == pytest.approx(-0.25)  # the raw estimate
    assert by_id["vip_outreach"].reason == "no completed contacts in the campaign log"
    assert report.n_contacts == 1300 and report.n_pending == 0
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["actions"][0]["source"]
    assert report.metrics()["effect_winback_offer"] == pytest.approx(0.25)
    assert "uplift_winback_offer_ci_low" in report.metrics()


def test_insufficient_samples_or_wide_intervals_keep_the_prior() -> None:
    prior = {a.id: a.effect for a in load_catalog().actions}
    rows = _arm("winback_offer", "w", True, 400, 240) + _arm("winback_offer", "v", False, 150,
                                                             120)
    policy, report = _apply(_outcomes(rows))  # default: 200 customers per arm
    act = next(a for a in policy.actions if a.id == "winback_offer")
    assert act.effect == prior["winback_offer"] and act.effect_source == PRIOR_SOURCE
    decided = next(a for a in report.actions if a.action_id == "winback_offer")
    assert not decided.used_estimate and "150 hold-out (need 200 each)" in decided.reason
    # The threshold is a parameter ...
    policy, _ = _apply(_outcomes(rows), min_customers=100)
    assert next(a for a in policy.actions if a.id == "winback_offer").effect == pytest.approx(
        0.25)
    # ... and so is the widest acceptable interval.
    policy, report = _apply(_outcomes(rows), min_customers=100, max_ci_width=0.05)
    assert next(a for a in policy.actions if a.id == "winback_offer").effect == prior[
        "winback_offer"]
    assert "too uncertain" in next(a.reason for a in report.actions
                                   if a.action_id == "winback_offer")
    # Repeated contacts of few customers are not "enough customers".
    few = pd.concat([_outcomes(_arm("winback_offer", "w", True, 10, 6))] * 30
                    + [_outcomes(_arm("winback_offer", "v", False, 10, 8))] * 30)
    policy, _ = _apply(few)
    assert next(a for a in policy.actions if a.id == "winback_offer").effect_source == \
        PRIOR_SOURCE
    # A hold-out without churners gives no ratio at all.
    none = _arm("winback_offer", "w", True, 300, 30) + _arm("winback_offer", "v", False, 300, 0)
    _, report = _apply(_outcomes(none))
    assert "no churner in the hold-out" in next(a.reason for a in report.actions
                                                if a.action_id == "winback_offer")


def test_unknown_actions_are_reported_with_row_counts() -> None:
    rows = (_arm("winback_offer", "w", True, 5, 1) + _arm("mystery_gift", "m", True, 3, 1)
            + _arm("old_coupon", "o", False, 1, 0))
    with pytest.raises(UpliftError) as err:
        _apply(_outcomes(rows))
    msg = str(err.value)
    assert "4 rows" in msg and "'mystery_gift' (3 rows)" in msg and "'old_coupon' (1 row)" in msg
    assert "campaigns.action_id" in msg
    _, report = _apply(_outcomes(rows), unknown_actions="ignore")
    assert report.unknown_actions == {"mystery_gift": 3, "old_coupon": 1}
    assert report.n_contacts == 5


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="treated"), "lack column"),
    (lambda f: f.assign(treated=["yes"] * len(f)), "campaigns.treated: expected true/false"),
    (lambda f: f.assign(action_id=None), "campaigns.action_id: 2 rows are null"),
    (lambda f: f.assign(churned=None), "completed contacts have no churn outcome"),
])
def test_bad_outcome_frames_fail_clearly(change: Any, message: str) -> None:
    frame = _outcomes([("a", "care_email", True, True), ("b", "care_email", False, True)])
    with pytest.raises(UpliftError, match=message):
        _apply(change(frame))


@pytest.mark.parametrize(("kw", "message"), [
    ({"min_customers": 0}, "min_customers"),
    ({"max_ci_width": -1.0}, "max_ci_width"),
    ({"level": 1.0}, "confidence level"),
    ({"unknown_actions": "skip"}, "unknown_actions"),
])
def test_bad_settings_fail_clearly(kw: dict[str, Any], message: str) -> None:
    frame = _outcomes([("a", "care_email", True, True), ("b", "care_email", False, True)])
    with pytest.raises(UpliftError, match=message):
        _apply(frame, **kw)
    with pytest.raises(UpliftError, match="horizon_days"):
        apply_estimates(load_catalog(), frame, as_of=AS_OF, horizon_days=0)


# ---------------------------------------------------------------------------------------------
# Outcomes from a source, point in time


def _source_tables() -> dict[str, pd.DataFrame]:
    customers = pd.DataFrame({"customer_id": ["a", "b", "c", "d", "e"],
                              "signup_date": pd.to_datetime(["2024-01-01"] * 5).date})
    transactions = pd.DataFrame({
        "customer_id": ["a", "b", "b", "c", "d", "e"],
        "ts": pd.to_datetime(["2024-03-15 00:00", "2024-03-01 09:00", "2024-04-30 10:00",
                              "2024-03-20 00:00", "2024-05-20 00:00", "2024-06-20 00:00"]),
        "amount": [10.0, 5.0, 8.0, -4.0, 7.0, 3.0],
    })
    events = pd.DataFrame({"customer_id": ["a"], "ts": pd.to_datetime(["2024-02-01 00:00"]),
                           "event_type": ["login"]})
    campaigns = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d", "e", "a"],
        "ts": pd.to_datetime(["2024-03-01 10:00"] * 3 + ["2024-04-01 10:00",
                              "2024-05-15 10:00", "2024-07-01 10:00"]),
        "action_id": ["care_email"] * 5 + ["winback_offer"],
        "treated": [True, True, False, True, False, False],
    })
    return {"customers": customers, "transactions": transactions, "events": events,
            "campaigns": campaigns}


def test_contact_outcomes_are_point_in_time() -> None:
    with open_source(_source_tables(), reference_time=pd.Timestamp("2025-01-01")) as source:
        out = contact_outcomes(source, as_of=AS_OF, horizon_days=60).set_index("customer_id")
        # a bought 14 days after the contact; b before it (09:00 < 10:00) and at the window's
        # end, which is excluded ([ts, ts + 60 days)); c's only row is a refund; d bought in its
        # window; e's window ends after as-of (pending, no outcome); a's July contact is on
        # as-of (not read).
        assert not out.loc["a", "churned"] and out.loc["b", "churned"]
        assert out.loc["c", "churned"] and not out.loc["d", "churned"]
        assert not out.loc["e", "complete"] and pd.isna(out.loc["e", "churned"])
        assert len(out) == 5 and set(out["action_id"]) == {"care_email"}
        _, report = estimate_from_source(source, load_catalog(), as_of=AS_OF, horizon_days=60)
        assert (report.n_contacts, report.n_pending) == (4, 1)
        # As of 2024-05-15 d's window (to 2024-05-31) is not over: pending, not "churned".
        early = contact_outcomes(source, as_of=date(2024, 5, 15), horizon_days=60)
        assert not early.set_index("customer_id").loc["d", "complete"]
        assert set(early["customer_id"]) == {"a", "b", "c", "d"}


def test_source_without_campaigns_keeps_every_prior() -> None:
    tables = _source_tables()
    del tables["campaigns"]
    with open_source(tables, reference_time=pd.Timestamp("2025-01-01")) as source:
        catalog = load_catalog()
        policy, report = estimate_from_source(source, catalog, as_of=AS_OF, horizon_days=90)
        assert policy == catalog
        assert all(a.source == PRIOR_SOURCE and not a.used_estimate for a in report.actions)
        with pytest.raises(UpliftError, match="no campaigns table"):
            contact_outcomes(source, as_of=AS_OF, horizon_days=90)


# ---------------------------------------------------------------------------------------------
# Demo data: the estimates recover the generator's true effects


def true_contact_churn(data_dir: Path, contacts: pd.DataFrame, horizon_days: int, *,
                       n_sims: int = 8, seed: int = 0) -> pd.DataFrame:
    """Both potential outcomes of every contact, from the generator's latent state.

    For each contact: the probability of no purchase in [ts, ts + horizon) if treated and if
    held out, by Monte Carlo over the latent stage path (decline hazard with the customer's
    complaint, ticket and earlier-contact history, future complaints and tickets, the contact's
    own hazard multiplier and revert probability; daily steps) and the analytic Poisson
    no-purchase probability given the path. Later contacts in the window are ignored.
    """
    from churnguard.features import _demo_sim as sim
    from churnguard.features._demo_sim import SimParams

    gt = data_dir / "ground_truth"
    meta = json.loads((gt / "params.json").read_text())
    params = SimParams.from_json(meta["params"])
    start, h = date.fromisoformat(meta["start"]), horizon_days
    assert h <= min(params.effect_days, params.ticket_window_days)
    cust = pd.read_parquet(gt / "customers.parquet").set_index("customer_id")
    camp = pd.read_parquet(gt / "campaigns.parquet")
    ev = pd.read_parquet(data_dir / "events.parquet", columns=["customer_id", "ts", "event_type"],
                         filters=[("event_type", "in", ["complaint", "support_ticket"])])
    ev["t"] = (ev["ts"] - pd.Timestamp(start)) / pd.Timedelta(days=1)
    k = contacts.merge(camp, on=["customer_id", "ts", "action_id", "treated"], how="left")
    assert k["t_day"].notna().all()
    n, d = len(k), k["t_day"].to_numpy()
    lat = cust.loc[k["customer_id"].to_numpy()]
    steps = np.arange(h) + 0.5
    offset = np.zeros((n, h))  # log-hazard from history, per day of the window
    idx = pd.DataFrame({"customer_id": k["customer_id"].to_numpy(), "k": np.arange(n), "d": d})

    def history(events: pd.DataFrame, window: float) -> None:
        m = idx.merge(events, on="customer_id")
        m = m[m["t"] < m["d"]]
        mid = m["d"].to_numpy()[:, None] + steps[None, :]
        t = m["t"].to_numpy()[:, None]
        np.add.at(offset, m["k"].to_numpy(),
                  ((mid >= t) & (mid < t + window)) * m["delta"].to_numpy()[:, None])

    for kind, beta, window in (("complaint", params.beta_complaint,
                                params.complaint_window_days),
                               ("support_ticket", params.beta_ticket, params.ticket_window_days)):
        history(ev.loc[ev["event_type"] == kind, ["customer_id", "t"]].assign(delta=beta), window)
    prev = camp[camp["treated"]]
    history(pd.DataFrame({"customer_id": prev["customer_id"], "t": prev["t_day"],
                          "delta": np.log(prev["hazard_multiplier"])}), params.effect_days)
    season = sim.season_by_day(start, int(np.ceil(d.max())) + h + 3, params)

    def spend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sim.season_integral(season, b) - sim.season_integral(season, a)

    stage0 = k["stage_at_contact"].to_numpy()
    lam = lat["purchase_rate"].to_numpy()
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    out = {}
    for arm in ("control", "treated"):
        p = np.zeros(n)
        for _ in range(n_sims):
            stage = stage0.copy()
            log_h = np.log(lat["base_hazard"].to_numpy())[:, None] + offset
            if arm == "treated":
                revert = (stage == "declining") & (rng.random(n) < k["revert_prob"].to_numpy())
                stage = np.where(revert, "active", stage)
                log_h = log_h + np.log(k["hazard_multiplier"].to_numpy())[:, None]
            for rate, beta in ((lat["complaint_rate"], params.beta_complaint),
                               (lat["ticket_rate"], params.beta_ticket)):
                log_h = log_h + beta * np.cumsum(
                    rng.poisson(rate.to_numpy()[:, None], (n, h)), axis=1)
            haz = np.exp(log_h)
            cum = np.concatenate([np.zeros((n, 1)), np.cumsum(haz, axis=1)], axis=1)
            e = rng.exponential(1.0, n)
            j = np.minimum((cum <= e[:, None]).sum(axis=1) - 1, h)
            jj = np.minimum(j, h - 1)
            tau = np.where(j < h, d + jj + (e - cum[rows, jj]) / haz[rows, jj], np.inf)
            tau = np.where(stage == "declining", d, tau)
            death = tau + rng.exponential(params.declining_mean_days, n)
            a1 = np.minimum(tau, d + h)
            a2 = np.minimum(np.maximum(death, a1), d + h)
            integral = lam * (spend(d, a1)
                              + params.declining_multipliers["purchase"] * spend(a1, a2))
            p += np.where(stage == "dead", 1.0, np.exp(-integral))
        out[f"p_{arm}"] = p / n_sims
    return k[["customer_id", "ts", "action_id", "treated"]].assign(**out)


@pytest.fixture(scope="module")
def uplift_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo data large enough for hold-outs of several hundred contacts per action."""
    from churnguard.features.demo_data import generate_demo_data

    out = tmp_path_factory.mktemp("uplift") / "demo"
    generate_demo_data(out, n_customers=20_000, seed=3, end=date(2025, 12, 31))
    return out


def test_demo_estimates_recover_the_generators_true_effects(uplift_demo_dir: Path) -> None:
    as_of, horizon = date(2025, 10, 1), 90
    with open_source(uplift_demo_dir) as source:
        outcomes = contact_outcomes(source, as_of=as_of, horizon_days=horizon)
        policy, report = estimate_from_source(source, load_catalog(), as_of=as_of,
                                              horizon_days=horizon)
    done = outcomes[outcomes["complete"]]
    assert (done["ts"] + pd.Timedelta(days=horizon) <= pd.Timestamp(as_of)).all()
    assert report.n_pending > 0  # contacts of July-September 2025 wait for their window
    truth = true_contact_churn(uplift_demo_dir, done.drop(columns=["complete", "churned"]),
                               horizon)
    # The oracle is calibrated: observed churn matches it in each arm.
    obs = done.merge(truth, on=["customer_id", "ts", "action_id", "treated"])
    for treated, col in ((True, "p_treated"), (False, "p_control")):
        arm = obs[obs["treated"] == treated]
        assert abs(arm["churned"].mean() - arm[col].mean()) < 0.02
    checked = 0
    for a in report.actions:
        est = a.estimate
        if est is None:
            continue
        rows = truth[truth["action_id"] == a.action_id]
        true_effect = 1 - rows["p_treated"].mean() / rows["p_control"].mean()
        se = (est.ci_high - est.ci_low) / (2 * 1.959964)
        if a.used_estimate:  # trustworthy: close to the truth, and within the tolerance
            checked += 1
            assert se < 0.08, a
            assert abs(est.effect - true_effect) <= max(3 * se, 0.02), (a, true_effect)
            assert next(x for x in policy.actions if x.id == a.action_id).effect == \
                pytest.approx(min(max(est.effect, 0.0), 1.0))
        else:  # too few customers: vip_outreach and loyalty_bonus at this size
            assert a.action_id in {"vip_outreach", "loyalty_bonus"}, a
    assert checked >= 4
