"""Tests for the contractual demo (``generate_demo_data(subscriptions=True)``): a B2B SaaS
subscription business with renewal-driven churn, its ground truth and
:func:`contractual_oracle`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from churnguard.cli import app
from churnguard.features.build import label_sql
from churnguard.features.demo_data import (
    DemoSummary,
    contractual_oracle,
    generate_demo_data,
    oracle_churn_probability,
)
from churnguard.features.sources import open_source

START, END = date(2023, 1, 1), date(2025, 12, 31)
N = 3000
CUTOFFS = [date(2024, 10, 1), date(2025, 1, 1), date(2025, 3, 1), date(2025, 5, 1),
           date(2025, 7, 1), date(2025, 9, 1)]
HORIZON = 30


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    out = tmp_path_factory.mktemp("saas") / "data"
    return out, generate_demo_data(out, n_customers=N, seed=4, subscriptions=True)


@pytest.fixture(scope="module")
def t(demo: tuple[Path, DemoSummary]) -> dict[str, pd.DataFrame]:
    d, _ = demo
    out = {k: pd.read_parquet(d / f"{k}.parquet")
           for k in ("customers", "subscriptions", "transactions", "events", "campaigns")}
    for k in ("accounts", "health", "terms", "renewals", "cancellations", "campaigns"):
        out[f"gt_{k}"] = pd.read_parquet(d / "ground_truth" / f"{k}.parquet")
    sub = out["subscriptions"]
    for c in ("start_date", "end_date", "renewal_date"):
        sub[c] = pd.to_datetime(sub[c])
    out["subscriptions"] = sub.sort_values(["customer_id", "start_date"]).reset_index(drop=True)
    return out


def _label(sub: pd.DataFrame, cutoff: date, horizon: int) -> pd.Series:
    """The contractual label computed directly: subscribed at T, none active at T + horizon."""
    t0 = pd.Timestamp(cutoff)
    th = t0 + pd.Timedelta(days=horizon)

    def active(at: pd.Timestamp) -> np.ndarray:
        ok = (sub["start_date"] < at) & (sub["end_date"].isna() | (sub["end_date"] >= at))
        return sub.loc[ok, "customer_id"].unique()

    pop = active(t0)
    return pd.Series(~pd.Index(pop).isin(active(th)), index=pop).astype(int).sort_index()


def _next_gaps(sub: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: the next row's start of the same customer, and the gap in days to it."""
    nxt = sub.groupby("customer_id")["start_date"].shift(-1)
    return nxt, (nxt - sub["end_date"]).dt.days


# --- the tables and the contract ------------------------------------------------------------


def test_tables_follow_the_contract_and_data_check_passes(
    demo: tuple[Path, DemoSummary], t: dict[str, pd.DataFrame]
) -> None:
    d, summary = demo
    assert list(t["subscriptions"].columns) == [
        "customer_id", "start_date", "end_date", "plan", "mrr", "renewal_date", "seats",
        "discount", "auto_renew", "term_months"]
    assert list(t["customers"].columns) == [
        "customer_id", "signup_date", "segment", "region", "channel", "industry"]
    assert list(t["events"].columns) == ["customer_id", "ts", "event_type", "channel", "count"]
    assert summary.n_subscriptions == len(t["subscriptions"])
    assert summary.n_transactions == len(t["transactions"])
    assert summary.n_events == len(t["events"])
    with open_source(d, thorough=True) as src:
        assert src.tables == {"customers", "transactions", "events", "campaigns",
                              "subscriptions"}
        assert src.issues == []
    result = CliRunner().invoke(app, ["data", "check", "--data", str(d)])
    assert result.exit_code == 0, result.output
    assert "0 issue(s)" in result.output
    readme = (d / "README.md").read_text()
    assert "one row per term" in readme and "late payment" in readme
    meta = json.loads((d / "ground_truth" / "params.json").read_text())
    assert meta["business"] == "b2b_saas" and meta["subscriptions"] is True


def test_same_seed_same_files_other_seed_differs(tmp_path: Path) -> None:
    def files(s: DemoSummary) -> dict[str, bytes]:
        return {str(p.relative_to(s.out_dir)): p.read_bytes()
                for p in sorted(s.out_dir.rglob("*")) if p.is_file()}

    a = files(generate_demo_data(tmp_path / "a", n_customers=300, seed=2, subscriptions=True))
    b = files(generate_demo_data(tmp_path / "b", n_customers=300, seed=2, subscriptions=True))
    c = files(generate_demo_data(tmp_path / "c", n_customers=300, seed=3, subscriptions=True))
    assert a == b
    assert a["subscriptions.parquet"] != c["subscriptions.parquet"]


def test_csv_variant_has_the_same_content(tmp_path: Path) -> None:
    p = generate_demo_data(tmp_path / "p", n_customers=300, seed=5, subscriptions=True)
    c = generate_demo_data(tmp_path / "c", n_customers=300, seed=5, subscriptions=True,
                           fmt="csv")
    sp = pd.read_parquet(p.out_dir / "subscriptions.parquet")
    sc = pd.read_csv(c.out_dir / "subscriptions.csv")
    assert len(sp) == len(sc) and (sp["mrr"].to_numpy() == sc["mrr"].to_numpy()).all()
    assert (pd.to_datetime(sp["start_date"]) == pd.to_datetime(sc["start_date"])).all()
    ep = pd.read_parquet(p.out_dir / "events.parquet")
    ec = pd.read_csv(c.out_dir / "events.csv")
    assert (ep["count"].to_numpy() == ec["count"].to_numpy()).all()
    assert (ep["channel"].isna() == ec["channel"].isna()).all()
    o_p = contractual_oracle(p.out_dir, date(2025, 6, 1), 30, n_sims=10)
    o_c = contractual_oracle(c.out_dir, date(2025, 6, 1), 30, n_sims=10)
    pd.testing.assert_frame_equal(o_p, o_c)


def test_accounts_and_segments(t: dict[str, pd.DataFrame]) -> None:
    c, sub = t["customers"], t["subscriptions"]
    assert list(c["customer_id"]) == [f"C{i:07d}" for i in range(N)]
    assert set(c["segment"]) == {"smb", "mid_market", "enterprise"}
    assert c["industry"].nunique() >= 5 and c["channel"].nunique() == 4
    # Every account subscribes on its signup date.
    first = sub.groupby("customer_id")["start_date"].min()
    signup = pd.to_datetime(c.set_index("customer_id")["signup_date"])
    assert (first.reindex(signup.index) == signup).all()
    # Bigger accounts have more seats and longer terms.
    cur = sub.groupby("customer_id").head(1).merge(c[["customer_id", "segment"]])
    seats = cur.groupby("segment")["seats"].median()
    assert seats["smb"] < seats["mid_market"] < seats["enterprise"]
    annual = cur.groupby("segment")["term_months"].apply(lambda s: (s == 12).mean())
    assert annual["smb"] < annual["mid_market"] < annual["enterprise"]


def test_subscription_rows_are_terms(t: dict[str, pd.DataFrame]) -> None:
    sub = t["subscriptions"]
    assert set(sub["term_months"]) == {1, 6, 12}
    assert set(sub["plan"]) == {"starter", "team", "business", "enterprise"}
    assert sub["discount"].between(0, 0.5).all() and (sub["discount"] > 0).any()
    assert set(sub["auto_renew"]) == {True, False}
    assert (sub["seats"] >= 1).all()
    plan_price = {"starter": 15.0, "team": 35.0, "business": 65.0, "enterprise": 110.0}
    assert np.allclose(sub["mrr"], sub["seats"] * sub["plan"].map(plan_price))
    # renewal_date = the term's end: whole terms after the billing anchor (at most a few days
    # off the start plus term_months, from month-end clipping).
    months = ((sub["renewal_date"].dt.year - sub["start_date"].dt.year) * 12
              + sub["renewal_date"].dt.month - sub["start_date"].dt.month)
    assert ((months - sub["term_months"]).abs() <= 1).all()
    days = (sub["renewal_date"] - sub["start_date"]).dt.days
    expect = sub["term_months"] * 30.44
    assert ((days - expect).abs() <= 4 + 0.02 * expect).all()
    ended = sub["end_date"].notna()
    assert (sub.loc[ended, "end_date"] > sub.loc[ended, "start_date"]).all()
    assert (sub.loc[ended, "end_date"] <= sub.loc[ended, "renewal_date"]).all()
    assert (sub.loc[~ended, "renewal_date"] > pd.Timestamp(END)).all()
    assert (sub["start_date"] <= pd.Timestamp(END)).all()
    assert (sub.loc[ended, "end_date"] <= pd.Timestamp(END)).all()
    assert not sub.groupby("customer_id")["end_date"].apply(
        lambda s: s.iloc[:-1].isna().any()).any()  # only a customer's last row can be open
    # Continuity: a renewal ends a row and the next starts the same day; changes happen there.
    _, gap = _next_gaps(sub)
    chained = gap == 0
    assert chained.mean() > 0.7
    following = sub.shift(-1)[chained]
    here = sub[chained]
    assert (here["plan"] != following["plan"]).sum() > 30  # up- and downgrades
    assert (here["seats"] != following["seats"]).sum() > 100
    assert (here["term_months"] != following["term_months"]).sum() > 10
    order = {"starter": 0, "team": 1, "business": 2, "enterprise": 3}
    step = following["plan"].map(order) - here["plan"].map(order)
    assert (step > 0).sum() > (step < 0).sum() > 5


def test_late_payments_and_win_backs(t: dict[str, pd.DataFrame]) -> None:
    sub, ren = t["subscriptions"], t["gt_renewals"]
    _, gap = _next_gaps(sub)
    late = gap.between(1, 10)
    assert late.sum() > 50
    share = sub.loc[late, "customer_id"].nunique() / N
    assert 0.02 < share < 0.2  # a small share of accounts pays late at some point
    assert (sub.loc[late, "end_date"] == sub.loc[late, "renewal_date"]).all()
    assert not gap.between(11, 89).any()
    assert (gap >= 90).sum() >= 5  # win-backs after a long gap
    lapsed = ren[ren["outcome"] == "lapsed"]
    restart = pd.to_datetime(lapsed["renewal_date"]) + pd.to_timedelta(lapsed["gap_days"], "D")
    assert (restart <= pd.Timestamp(END)).sum() == late.sum()  # the rest restart after the end
    assert ren.loc[ren["outcome"] == "lapsed", "gap_days"].between(1, 10).all()


def test_invoices_one_per_term(t: dict[str, pd.DataFrame]) -> None:
    sub, tx = t["subscriptions"], t["transactions"]
    assert len(tx) == len(sub) and tx["order_id"].is_unique
    inv = tx.assign(day=tx["ts"].dt.normalize()).sort_values(["customer_id", "day"])
    assert (inv["customer_id"].to_numpy() == sub["customer_id"].to_numpy()).all()
    assert (inv["day"].to_numpy() == sub["start_date"].to_numpy()).all()
    expect = np.round(sub["mrr"] * sub["term_months"] * (1 - sub["discount"]), 2)
    assert np.allclose(inv["amount"].to_numpy(), expect.to_numpy())
    assert (inv["quantity"].to_numpy() == sub["seats"].to_numpy()).all()
    # Accounts on annual terms all through 2024 get exactly one invoice in 2024 ...
    y0, y1 = pd.Timestamp("2024-01-01"), pd.Timestamp("2025-01-01")
    overlap = (sub["start_date"] < y1) & (sub["end_date"].isna() | (sub["end_date"] >= y0))
    rows24 = sub[overlap]
    covered = rows24.groupby("customer_id").agg(
        first=("start_date", "min"), last_end=("end_date", lambda s: s.max()),
        open_=("end_date", lambda s: s.isna().any()),
        annual=("term_months", lambda s: (s == 12).all()))
    full = covered[covered["annual"] & (covered["first"] < y0)
                   & (covered["open_"] | (covered["last_end"] >= y1))].index
    assert len(full) > 50
    n24 = tx[(tx["ts"] >= y0) & (tx["ts"] < y1)].groupby("customer_id").size()
    assert (n24.reindex(full).fillna(0) == 1).all()
    # ... so "no purchase in 30 days" calls most of them churned; the contract says otherwise.
    cut = date(2025, 3, 1)
    y = _label(sub, cut, 30)
    cur = sub[(sub["start_date"] < pd.Timestamp(cut))
              & (sub["end_date"].isna() | (sub["end_date"] >= pd.Timestamp(cut)))]
    annual_ids = cur.loc[cur["term_months"] == 12, "customer_id"]
    bought = tx[(tx["ts"] >= pd.Timestamp(cut))
                & (tx["ts"] < pd.Timestamp(cut) + pd.Timedelta(days=30))]["customer_id"]
    no_purchase = ~annual_ids.isin(bought)
    assert no_purchase.mean() > 0.85
    assert y.reindex(annual_ids).mean() < 0.05


# --- churn magnitudes and where it happens --------------------------------------------------


def test_monthly_churn_of_active_accounts_is_plausible(t: dict[str, pd.DataFrame]) -> None:
    sub = t["subscriptions"]
    rates = [_label(sub, c.date(), 30).mean()
             for c in pd.date_range("2024-01-01", "2025-11-01", freq="MS")]
    assert 0.01 < np.mean(rates) < 0.03
    assert max(rates) < 0.045
    # Annual terms churn less per month than monthly ones.
    cut = pd.Timestamp("2024-10-01")
    cur = sub[(sub["start_date"] < cut) & (sub["end_date"].isna() | (sub["end_date"] >= cut))]
    term = cur.set_index("customer_id")["term_months"]
    y365 = _label(sub, cut.date(), 365)
    by_term = y365.groupby(term.reindex(y365.index)).mean()
    assert by_term[12] < 0.6 * by_term[1]


def test_cancellations_concentrate_at_renewal_dates(t: dict[str, pd.DataFrame]) -> None:
    sub = t["subscriptions"]
    nxt, gap = _next_gaps(sub)
    churn_end = sub["end_date"].notna() & (nxt.isna() | (gap > 10))
    ends = sub[churn_end]
    assert len(ends) > 200
    at_renewal = (ends["renewal_date"] - ends["end_date"]).dt.days.abs() <= 3
    assert 0.6 < at_renewal.mean() < 0.99  # most at the renewal, a few mid-term
    gt = t["gt_cancellations"]
    assert set(gt["kind"]) == {"renewal", "mid_term"}
    ren = t["gt_renewals"]
    lapsed = ren[ren["outcome"] == "lapsed"]
    restart = pd.to_datetime(lapsed["renewal_date"]) + pd.to_timedelta(lapsed["gap_days"], "D")
    # Every ending without a follow-up is a cancellation, or a late payment paid after the end.
    assert len(gt) + (restart > pd.Timestamp(END)).sum() == len(ends)


def test_usage_declines_and_tickets_rise_before_cancellation(
    t: dict[str, pd.DataFrame]
) -> None:
    ev, gt = t["events"], t["gt_cancellations"]
    canc = gt[gt["kind"] == "renewal"].drop_duplicates("customer_id").set_index("customer_id")
    c_day = pd.to_datetime(canc["cancel_date"])
    signup = pd.to_datetime(t["customers"].set_index("customer_id")["signup_date"])
    old = c_day[(c_day - signup.reindex(c_day.index)).dt.days >= 150]
    assert len(old) > 60

    def per_day(kind: str, lo: int, hi: int) -> float:
        e = ev[(ev["event_type"] == kind) & ev["customer_id"].isin(old.index)]
        back = (old.reindex(e["customer_id"]).to_numpy() - e["ts"].to_numpy()) / np.timedelta64(
            1, "D")
        sel = (back > lo) & (back <= hi)
        return float(e["count"].to_numpy()[sel].sum() / ((hi - lo) * len(old)))

    late_use, early_use = per_day("login", 0, 28), per_day("login", 84, 140)
    assert late_use < 0.85 * early_use
    assert per_day("support_ticket", 0, 56) > 1.1 * per_day("support_ticket", 84, 140)
    # The ground truth tells why: health is lower at cancelling renewals.
    ren = t["gt_renewals"]
    h = ren.groupby("outcome")["health"].mean()
    assert h["cancelled"] < h["renewed"] - 0.4


def test_usage_rollups_are_daily_and_sparse(t: dict[str, pd.DataFrame]) -> None:
    ev = t["events"]
    assert set(ev["event_type"]) == {"login", "api_call", "report_run", "seat_active",
                                     "support_ticket", "complaint"}
    assert (ev["count"] >= 1).all()
    assert ev.duplicated(["customer_id", "ts", "event_type"]).sum() == 0
    rollup = ev[ev["event_type"].isin(["login", "api_call", "report_run", "seat_active"])]
    assert (rollup["ts"] == rollup["ts"].dt.normalize()).all()
    assert (rollup.loc[rollup["event_type"] == "seat_active", "ts"].dt.day_of_week == 6).all()
    assert ev.loc[ev["event_type"] == "seat_active", "channel"].isna().all()
    assert ev.loc[ev["event_type"] != "seat_active", "channel"].notna().all()
    assert 100 < len(ev) / N < 500
    # No usage outside a subscription (nor before signup, nor after the end).
    sub = t["subscriptions"]
    logins = ev.loc[ev["event_type"] == "login", ["customer_id", "ts"]]
    logins = logins.assign(day=logins["ts"].dt.normalize().astype(sub["start_date"].dtype))
    m = pd.merge_asof(logins.sort_values("day"),
                      sub[["customer_id", "start_date", "end_date"]].sort_values("start_date"),
                      left_on="day", right_on="start_date", by="customer_id")
    assert m["start_date"].notna().all()
    assert (m["end_date"].isna() | (m["day"] < m["end_date"])).all()
    assert (ev["ts"] < pd.Timestamp(END) + pd.Timedelta(days=1)).all()


def test_campaigns_are_randomised_and_protective(t: dict[str, pd.DataFrame]) -> None:
    camp, gtc, ren = t["campaigns"], t["gt_campaigns"], t["gt_renewals"]
    assert len(camp) > 100 and set(camp["action_id"]) <= {
        "plan_rightsizing", "training_workshop", "renewal_outreach", "renewal_offer"}
    assert 0.7 < camp["treated"].mean() < 0.9
    assert (gtc.loc[gtc["treated"], "logit_shift"] < 0).all()
    assert (gtc.loc[~gtc["treated"], "logit_shift"] == 0).all()
    # At-risk accounts are targeted more often: contacts have lower health than renewals.
    assert gtc["health_at_contact"].mean() < ren["health"].mean() - 0.3
    # The contacted renewal's cancel probability carries the shift.
    key = ["customer_id", "renewal_date"]
    m = gtc.merge(ren, on=key, how="inner")
    assert len(m) > 50
    assert np.allclose(m["campaign_shift"], m["logit_shift"])


# --- the oracle ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pooled(demo: tuple[Path, DemoSummary], t: dict[str, pd.DataFrame]) -> pd.DataFrame:
    d, _ = demo
    frames = []
    for cut in CUTOFFS:
        o = contractual_oracle(d, cut, HORIZON, n_sims=100, seed=1)
        y = _label(t["subscriptions"], cut, HORIZON)
        assert sorted(o["customer_id"]) == list(y.index)  # exactly the subscribed at T
        frames.append(o.assign(y=y.reindex(o["customer_id"]).to_numpy(), cutoff=cut))
    return pd.concat(frames, ignore_index=True)


def test_oracle_is_calibrated_and_discriminates(pooled: pd.DataFrame) -> None:
    p, y = pooled["churn_probability"], pooled["y"]
    assert p.between(0, 1).all()
    assert len(pooled) > 6000 and y.sum() > 100
    assert abs(p.mean() - y.mean()) < 0.01
    bins = pd.qcut(p.rank(method="first"), 4, labels=False)
    cal = pd.DataFrame({"p": p, "y": y, "b": bins}).groupby("b").mean()
    assert (cal["p"] - cal["y"]).abs().max() < 0.02
    auc = roc_auc_score(y, p)
    assert 0.75 < auc < 0.95
    per_cutoff = pooled.groupby("cutoff")[["churn_probability", "y"]].mean()
    assert (per_cutoff["churn_probability"] - per_cutoff["y"]).abs().max() < 0.015


def test_days_to_renewal_alone_is_far_from_the_oracle(
    pooled: pd.DataFrame, t: dict[str, pd.DataFrame]
) -> None:
    sub = t["subscriptions"]
    aucs = []
    for cut, g in pooled.groupby("cutoff"):
        ct = pd.Timestamp(cut)
        cur = sub[(sub["start_date"] < ct) & (sub["end_date"].isna() | (sub["end_date"] >= ct))]
        days = (cur.set_index("customer_id")["renewal_date"] - ct).dt.days
        aucs.append(roc_auc_score(g["y"], -days.reindex(g["customer_id"]).to_numpy()))
    assert np.mean(aucs) < roc_auc_score(pooled["y"], pooled["churn_probability"]) - 0.05
    assert np.mean(aucs) < 0.85


def test_oracle_matches_label_sql_population_and_is_deterministic(
    demo: tuple[Path, DemoSummary]
) -> None:
    d, _ = demo
    cut = date(2025, 6, 1)
    with open_source(d) as src:
        lab = src.con.sql(label_sql(cut, 60, 60, mode="contractual")).df()
    o = contractual_oracle(d, cut, 60, n_sims=20, seed=3)
    assert sorted(o["customer_id"]) == sorted(lab["customer_id"])
    again = contractual_oracle(d / "ground_truth", cut, 60, n_sims=20, seed=3)
    pd.testing.assert_frame_equal(o, again)
    other = contractual_oracle(d, cut, 60, n_sims=20, seed=4)
    assert not np.allclose(o["churn_probability"], other["churn_probability"])
    m = o.merge(lab, on="customer_id")
    assert abs(m["churn_probability"].mean() - m["churned"].mean()) < 0.02


def test_oracle_accepts_frames(demo: tuple[Path, DemoSummary]) -> None:
    d, _ = demo
    gt = d / "ground_truth"
    frames = {k: pd.read_parquet(gt / f"{k}.parquet")
              for k in ("accounts", "health", "terms", "campaigns")}
    frames["params"] = json.loads((gt / "params.json").read_text())
    cut = date(2025, 2, 1)
    a = contractual_oracle(frames, cut, 30, n_sims=10, seed=0)
    b = contractual_oracle(d, cut, 30, n_sims=10, seed=0)
    pd.testing.assert_frame_equal(a, b)


def test_oracle_uses_the_state_at_the_cutoff(
    demo: tuple[Path, DemoSummary], t: dict[str, pd.DataFrame]
) -> None:
    """Annual accounts far from their renewal only carry the small mid-term hazard; accounts in
    poor health just before their renewal are the riskiest."""
    d, _ = demo
    cut = date(2025, 5, 1)
    o = contractual_oracle(d, cut, 30, n_sims=50).set_index("customer_id")
    sub = t["subscriptions"]
    ct = pd.Timestamp(cut)
    cur = sub[(sub["start_date"] < ct) & (sub["end_date"].isna() | (sub["end_date"] >= ct))]
    cur = cur.set_index("customer_id")
    far = cur.index[(cur["term_months"] == 12) & ((cur["renewal_date"] - ct).dt.days > 60)]
    assert o.loc[far, "churn_probability"].max() < 0.02
    soon = cur.index[(cur["renewal_date"] - ct).dt.days < 25]
    h = t["gt_health"]
    h = h[pd.to_datetime(h["week_start"]).between(ct - pd.Timedelta(days=7),
                                                  ct - pd.Timedelta(days=1))]
    health = h.set_index("customer_id")["health"].reindex(soon)
    low, high = health < health.quantile(0.2), health > health.quantile(0.8)
    p = o.loc[soon, "churn_probability"]
    assert p[low.to_numpy()].mean() > 3 * p[high.to_numpy()].mean()


def test_oracles_reject_the_wrong_demo_and_bad_input(
    demo: tuple[Path, DemoSummary], tmp_path: Path
) -> None:
    d, _ = demo
    retail = generate_demo_data(tmp_path / "retail", n_customers=50, seed=1).out_dir
    with pytest.raises(ValueError, match="not a contractual demo"):
        contractual_oracle(retail, date(2025, 1, 1), 30)
    with pytest.raises(ValueError, match="contractual_oracle"):
        oracle_churn_probability(d, date(2025, 1, 1), 30)
    with pytest.raises(ValueError, match="cutoff"):
        contractual_oracle(d, date(2030, 1, 1), 30)
    with pytest.raises(ValueError, match="horizon_days"):
        contractual_oracle(d, date(2025, 1, 1), 0)
    with pytest.raises(ValueError, match="ground_truth"):
        contractual_oracle(tmp_path, date(2025, 1, 1), 30)


def test_a_short_period_still_writes_a_valid_demo(tmp_path: Path) -> None:
    s = generate_demo_data(tmp_path / "x", n_customers=20, seed=1, subscriptions=True,
                           start=date(2025, 11, 1), end=date(2025, 12, 1))
    assert s.n_subscriptions >= 20
    with open_source(s.out_dir, thorough=True) as src:
        assert {"customers", "transactions", "subscriptions"} <= src.tables
        assert src.issues == []
    o = contractual_oracle(s.out_dir, date(2025, 11, 20), 10, n_sims=5)
    assert o["churn_probability"].between(0, 1).all()
