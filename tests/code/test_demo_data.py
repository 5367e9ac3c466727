"""Tests for the synthetic CRM demo-data generator, its ground truth and its oracle.

The contractual (``subscriptions=True``) B2B SaaS demo is tested in test_demo_contractual.py.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnguard.features import _demo_sim as sim
from churnguard.features.demo_data import (
    DemoSummary,
    generate_demo_data,
    oracle_churn_probability,
)

START, END = date(2023, 1, 1), date(2025, 12, 31)
END_TS = pd.Timestamp("2026-01-01")
N = 20_000
CUTOFF = date(2024, 7, 1)
HORIZON = 90


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    out = tmp_path_factory.mktemp("demo") / "data"
    summary = generate_demo_data(out, n_customers=N, seed=7)
    return out, summary


def _read(d: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(d / f"{name}.parquet")


@pytest.fixture(scope="module")
def tables(demo: tuple[Path, DemoSummary]) -> dict[str, pd.DataFrame]:
    d, _ = demo
    names = ["customers", "transactions", "events", "campaigns"]
    out = {k: _read(d, k) for k in names}
    out["gt"] = _read(d / "ground_truth", "customers")
    out["gt_campaigns"] = _read(d / "ground_truth", "campaigns")
    out["paths"] = _read(d / "ground_truth", "stage_paths")
    return out


# --- determinism and contract --------------------------------------------------------------


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_demo_data(tmp_path / "a", n_customers=1500, seed=11)
    b = generate_demo_data(tmp_path / "b", n_customers=1500, seed=11)
    c = generate_demo_data(tmp_path / "c", n_customers=1500, seed=12)
    fa, fb, fc = _files(a.out_dir), _files(b.out_dir), _files(c.out_dir)
    assert fa.keys() == fb.keys()
    assert fa == fb
    assert fa["transactions.parquet"] != fc["transactions.parquet"]
    assert fa["events.parquet"] != fc["events.parquet"]


# Rows and content hashes (:func:`_digest`) of every table of the retail demo with
# n_customers=400, seed=3, recorded from the generator before the contractual demo was added:
# the retail output must not change (the oracle tests and benchmarks depend on it). Re-recorded
# with floats rounded on 2026-12-04, when a machine without AVX-512 gave other last bits in
# ground_truth/customers' rates while the six other tables hashed bit for bit as recorded.
PINNED = {
    "customers": (400, "8ac3afc57dab7824"),
    "transactions": (9755, "8e9ebad1d27d2075"),
    "events": (22070, "9cd02b099f5a406d"),
    "campaigns": (498, "0c804a16f4de98b5"),
    "ground_truth/customers": (400, "9bd368b89cba63c5"),
    "ground_truth/stage_paths": (794, "de940a62064551b3"),
    "ground_truth/campaigns": (498, "4d15243fe4983dd8"),
}


def _digest(df: pd.DataFrame) -> str:
    """The frame's content hash, floats taken to 9 decimals first: numpy's vectorised exp and
    log differ in the last bit between CPUs (AVX-512 against AVX2 builds of the same release),
    which moves the ground truth's rates by 1e-16 and says nothing about the generator."""
    floats = df.select_dtypes("float").columns
    rounded = df.assign(**{c: df[c].round(9) for c in floats})
    return hashlib.sha256(
        pd.util.hash_pandas_object(rounded, index=False).to_numpy().tobytes()).hexdigest()[:16]


def test_retail_output_is_pinned(tmp_path: Path) -> None:
    s = generate_demo_data(tmp_path / "x", n_customers=400, seed=3)
    for name, expected in PINNED.items():
        df = pd.read_parquet(s.out_dir / f"{name}.parquet")
        assert (len(df), _digest(df)) == expected, name
    tx = pd.read_parquet(s.out_dir / "transactions.parquet")
    assert tx.iloc[0].to_dict() == {"customer_id": "C0000000",
                                    "ts": pd.Timestamp("2023-01-01 15:32:10"),
                                    "amount": 18.43, "order_id": "O0000000000", "quantity": 1}
    readme = (s.out_dir / "README.md").read_bytes()
    assert hashlib.sha256(readme).hexdigest()[:16] == "d413bce95199068e"
    assert sorted(p.name for p in s.out_dir.glob("*.parquet")) == [
        "campaigns.parquet", "customers.parquet", "events.parquet", "transactions.parquet"]


def test_customer_ids_are_dense_padded_and_in_creation_order(tmp_path: Path) -> None:
    s = generate_demo_data(tmp_path / "x", n_customers=1234, seed=1)
    c = pd.read_parquet(s.out_dir / "customers.parquet")
    assert list(c["customer_id"]) == [f"C{i:07d}" for i in range(1234)]
    assert c["signup_date"].is_monotonic_increasing
    assert c["signup_date"].min() >= START and c["signup_date"].max() < END
    # Growing acquisition: more signups in the last year than in the first.
    year = pd.to_datetime(c["signup_date"]).dt.year
    assert (year == 2025).sum() > 1.3 * (year == 2023).sum()


def test_contract_columns_and_types(demo: tuple[Path, DemoSummary]) -> None:
    d, summary = demo
    expect = {
        "customers": ["customer_id", "signup_date", "segment", "region", "channel"],
        "transactions": ["customer_id", "ts", "amount", "order_id", "quantity"],
        "events": ["customer_id", "ts", "event_type", "channel", "count"],
        "campaigns": ["customer_id", "ts", "action_id", "treated"],
    }
    for name, cols in expect.items():
        schema = pq.read_schema(d / f"{name}.parquet")
        assert schema.names == cols, name
        assert str(schema.field("customer_id").type) == "string"
    tx = pq.read_schema(d / "transactions.parquet")
    assert str(tx.field("amount").type) == "double"
    assert str(tx.field("quantity").type) == "int64"
    assert str(tx.field("ts").type).startswith("timestamp")
    assert str(pq.read_schema(d / "customers.parquet").field("signup_date").type) == "date32[day]"
    assert str(pq.read_schema(d / "campaigns.parquet").field("treated").type) == "bool"
    for f in ["customers", "campaigns", "stage_paths", "params.json", "segment_effects.json"]:
        assert (d / "ground_truth" / (f if "." in f else f + ".parquet")).exists()
    assert (d / "README.md").read_text().startswith("# churnguard")
    assert summary.n_customers == N
    assert summary.n_transactions == pq.read_metadata(d / "transactions.parquet").num_rows
    assert summary.n_events == pq.read_metadata(d / "events.parquet").num_rows
    assert summary.n_subscriptions == 0
    assert not (d / "subscriptions.parquet").exists()


def test_categorical_values_and_counts(tables: dict[str, pd.DataFrame]) -> None:
    c, ev, tx = tables["customers"], tables["events"], tables["transactions"]
    assert set(c["segment"]) == {"consumer", "smb", "enterprise"}
    assert set(c["region"]) == {"north_america", "europe", "apac", "latam"}
    assert set(c["channel"]) == {"organic", "paid_search", "social", "referral", "affiliate"}
    assert set(ev["event_type"]) == {
        "login", "email_open", "email_click", "web_visit", "support_ticket", "complaint"
    }
    assert set(ev["channel"]) <= {"web", "app", "email", "phone"}
    assert (ev["count"] >= 1).all()
    assert (ev.loc[ev["event_type"] != "web_visit", "count"] == 1).all()
    assert ev.loc[ev["event_type"] == "web_visit", "count"].mean() > 2
    assert tx["order_id"].is_unique
    # Scale targets: about 20 transactions and 50 events per customer.
    assert 12 < len(tx) / N < 30
    assert 30 < len(ev) / N < 80


def test_no_rows_before_signup_or_after_end(tables: dict[str, pd.DataFrame]) -> None:
    signup = tables["customers"].set_index("customer_id")["signup_date"]
    for name in ["transactions", "events", "campaigns"]:
        t = tables[name]
        su = pd.to_datetime(signup.reindex(t["customer_id"]).to_numpy()).to_numpy()
        assert (t["ts"].to_numpy() >= su).all(), name
        assert (t["ts"] < END_TS).all(), name


def test_first_purchase_on_signup_day(tables: dict[str, pd.DataFrame]) -> None:
    tx, c = tables["transactions"], tables["customers"]
    first = tx[tx["amount"] > 0].groupby("customer_id")["ts"].min().dt.date
    same_day = first.reindex(c["customer_id"]).to_numpy() == c["signup_date"].to_numpy()
    assert 0.65 < same_day.mean() < 0.78


def test_refunds_follow_and_never_exceed_their_order(tables: dict[str, pd.DataFrame]) -> None:
    tx = tables["transactions"]
    refunds = tx[tx["amount"] < 0]
    orders = tx[tx["amount"] > 0].set_index("order_id")
    assert 0.01 < len(refunds) / len(orders) < 0.04
    assert refunds["order_id"].str.endswith("-R").all()
    orig = orders.reindex(refunds["order_id"].str[:-2])
    assert orig["amount"].notna().all()
    assert (-refunds["amount"].to_numpy() <= orig["amount"].to_numpy() + 1e-9).all()
    assert (refunds["ts"].to_numpy() > orig["ts"].to_numpy()).all()
    assert (orig["customer_id"].to_numpy() == refunds["customer_id"].to_numpy()).all()


def test_enterprise_spends_more_and_order_values_are_skewed(
    tables: dict[str, pd.DataFrame],
) -> None:
    tx, c = tables["transactions"], tables["customers"]
    orders = tx[tx["amount"] > 0].merge(c[["customer_id", "segment"]], on="customer_id")
    by_seg = orders.groupby("segment")["amount"].median()
    assert by_seg["enterprise"] > 2 * by_seg["consumer"]
    assert orders["amount"].mean() > orders["amount"].median()


# --- the latent process shows in the data --------------------------------------------------


def test_no_purchases_after_churn(tables: dict[str, pd.DataFrame]) -> None:
    tx, gt = tables["transactions"], tables["gt"]
    churn = gt.set_index("customer_id")["churn_ts"]
    buys = tx[tx["amount"] > 0]
    ct = churn.reindex(buys["customer_id"]).to_numpy()
    after = ~pd.isna(ct) & (buys["ts"].to_numpy() >= ct)
    assert not after.any()
    assert gt["churn_ts"].notna().mean() > 0.2  # churn is substantial ...
    assert gt["churn_ts"].notna().mean() < 0.8  # ... but not total


def test_degradation_interactions_drop_before_churn(tables: dict[str, pd.DataFrame]) -> None:
    ev, gt = tables["events"], tables["gt"]
    g = gt[gt["churn_ts"].notna()].copy()
    g["life"] = (g["churn_ts"] - g["signup_ts"]).dt.total_seconds() / 86_400
    g = g[g["life"] > 240].set_index("customer_id")
    inter = ev[ev["event_type"].isin(["login", "web_visit", "email_click"])]
    inter = inter[inter["customer_id"].isin(g.index)]
    churn = g["churn_ts"].reindex(inter["customer_id"]).to_numpy()
    late = (inter["ts"].to_numpy() >= churn - np.timedelta64(60, "D")) & (
        inter["ts"].to_numpy() < churn
    )
    early = inter["ts"].to_numpy() < churn - np.timedelta64(60, "D")
    late_rate = late.sum() / (60.0 * len(g))
    early_rate = early.sum() / (g["life"] - 60).sum()
    assert late_rate < 0.6 * early_rate
    # Dead customers still open the odd email but never log in.
    after = inter["ts"].to_numpy() >= churn
    assert not after.any()
    opens = ev[(ev["event_type"] == "email_open") & ev["customer_id"].isin(g.index)]
    assert (opens["ts"].to_numpy() > g["churn_ts"].reindex(opens["customer_id"]).to_numpy()).any()


def test_complaints_raise_churn(tables: dict[str, pd.DataFrame]) -> None:
    ev, paths = tables["events"], tables["paths"]
    t = pd.Timestamp("2024-01-01")
    alive = paths[(paths["start_ts"] <= t) & (paths["end_ts"] > t) & (paths["stage"] == "active")]
    ids = alive["customer_id"]
    comp = ev[(ev["event_type"] == "complaint") & (ev["ts"] < t)
              & (ev["ts"] >= t - pd.Timedelta(days=180))]
    complained = ids.isin(comp["customer_id"])
    declined = paths[(paths["stage"] == "declining") & (paths["start_ts"] >= t)
                     & (paths["start_ts"] < t + pd.Timedelta(days=180))]
    y = ids.isin(declined["customer_id"])
    assert complained.sum() > 50
    assert y[complained.to_numpy()].mean() > 1.3 * y[~complained.to_numpy()].mean()


def test_campaigns_are_randomised_and_work(tables: dict[str, pd.DataFrame]) -> None:
    camp, gtc, gt = tables["campaigns"], tables["gt_campaigns"], tables["gt"]
    assert set(camp["action_id"]) == set(sim.ACTIONS)
    share = camp.groupby("action_id")["treated"].agg(["mean", "size"])
    big = share[share["size"] >= 200]
    assert len(big) >= 4
    assert ((big["mean"] > 0.74) & (big["mean"] < 0.86)).all()
    # Heterogeneous true effect, always protective.
    assert (gtc["hazard_multiplier"] < 1).all()
    assert gtc.groupby("action_id")["hazard_multiplier"].std().max() > 0.01
    assert not gtc.loc[~gtc["treated"], "reverted"].any()
    # Treated customers (alive at contact) churn less within 180 days than the hold-out.
    g = gtc[gtc["stage_at_contact"] != "dead"]
    churn = gt.set_index("customer_id")["churn_ts"].reindex(g["customer_id"]).to_numpy()
    dead180 = ~pd.isna(churn) & (churn < (g["ts"] + pd.Timedelta(days=180)).to_numpy())
    in_window = (g["ts"] < END_TS - pd.Timedelta(days=180)).to_numpy()
    tr = g["treated"].to_numpy()
    assert dead180[tr & in_window].mean() < dead180[~tr & in_window].mean() - 0.02


# --- oracle ----------------------------------------------------------------------------------


def test_oracle_is_the_true_probability(
    demo: tuple[Path, DemoSummary], tables: dict[str, pd.DataFrame]
) -> None:
    d, _ = demo
    c, tx, paths = tables["customers"], tables["transactions"], tables["paths"]
    o = oracle_churn_probability(d, CUTOFF, HORIZON, n_sims=50, seed=1)
    elig = c.loc[c["signup_date"] < CUTOFF, "customer_id"]
    assert sorted(o["customer_id"]) == sorted(elig)
    assert o["p_churn"].between(0, 1).all()
    ct = pd.Timestamp(CUTOFF)
    dead = paths[(paths["stage"] == "dead") & (paths["start_ts"] <= ct)]["customer_id"]
    o = o.set_index("customer_id")
    assert (o.loc[o.index.isin(dead), "p_churn"] == 1.0).all()
    assert (o.loc[~o.index.isin(dead), "p_churn"] < 1.0).all()
    buys = tx[(tx["amount"] > 0) & (tx["ts"] >= ct) & (tx["ts"] < ct + pd.Timedelta(days=HORIZON))]
    y = ~o.index.isin(buys["customer_id"])
    assert len(o) > 3000
    assert 0.3 < y.mean() < 0.65
    assert abs(o["p_churn"].mean() - y.mean()) < 0.025
    # Calibrated across the range, not just on average.
    bins = pd.qcut(o["p_churn"].rank(method="first"), 5, labels=False)
    cal = pd.DataFrame({"p": o["p_churn"], "y": y, "b": bins}).groupby("b").mean()
    assert (cal["p"] - cal["y"]).abs().max() < 0.06
    # And it beats a recency rule (days since last purchase before the cutoff).
    from sklearn.metrics import roc_auc_score

    last = tx[(tx["amount"] > 0) & (tx["ts"] < ct)].groupby("customer_id")["ts"].max()
    recency = (ct - last.reindex(o.index)).dt.days.fillna(10_000)
    assert roc_auc_score(y, o["p_churn"]) > roc_auc_score(y, recency) + 0.02


def test_oracle_rejects_bad_input(demo: tuple[Path, DemoSummary], tmp_path: Path) -> None:
    d, _ = demo
    with pytest.raises(ValueError, match="cutoff"):
        oracle_churn_probability(d, date(2030, 1, 1), 90)
    with pytest.raises(ValueError, match="horizon_days"):
        oracle_churn_probability(d, CUTOFF, 0)
    with pytest.raises(ValueError, match="ground_truth"):
        oracle_churn_probability(tmp_path, CUTOFF, 90)


# --- API behaviour -----------------------------------------------------------------------------


def test_refuses_non_empty_out_dir_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        generate_demo_data(tmp_path / "full", n_customers=10)
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="n_customers"):
        generate_demo_data(tmp_path / "a", n_customers=0)
    with pytest.raises(ValueError, match="end"):
        generate_demo_data(tmp_path / "a", n_customers=10, start=END, end=START)
    with pytest.raises(ValueError, match="fmt"):
        generate_demo_data(tmp_path / "a", n_customers=10, fmt="xlsx")  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["full"]


def test_empty_existing_dir_is_filled_and_progress_reported(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    calls: list[tuple[int, int]] = []
    s = generate_demo_data(
        tmp_path / "out", n_customers=300, seed=2, progress=lambda a, b: calls.append((a, b))
    )
    assert calls == [(300, 300)]
    assert (s.out_dir / "customers.parquet").exists()
    assert not (s.out_dir / "subscriptions.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_csv_variant_matches_parquet(tmp_path: Path) -> None:
    p = generate_demo_data(tmp_path / "p", n_customers=800, seed=5)
    c = generate_demo_data(tmp_path / "c", n_customers=800, seed=5, fmt="csv")
    assert (c.n_transactions, c.n_events) == (p.n_transactions, p.n_events)
    tp = pd.read_parquet(p.out_dir / "transactions.parquet")
    tc = pd.read_csv(c.out_dir / "transactions.csv")
    assert tc["ts"].iloc[0][10] == "T"
    assert (pd.to_datetime(tc["ts"]).to_numpy() == tp["ts"].to_numpy()).all()
    assert np.allclose(tc["amount"], tp["amount"])
    o_p = oracle_churn_probability(p.out_dir, date(2024, 6, 1), 60, n_sims=5, seed=0)
    o_c = oracle_churn_probability(c.out_dir, date(2024, 6, 1), 60, n_sims=5, seed=0)
    pd.testing.assert_frame_equal(o_p, o_c)


# --- simulation core -----------------------------------------------------------------------------


def test_first_passage_matches_piecewise_exponential() -> None:
    rng = np.random.default_rng(0)
    m = 200_000
    # Hazard 0.01 on [0, 50), 0.03 on [50, 100), 0.01 after; survival at 120 is
    # exp(-(0.5 + 1.5 + 0.2)).
    idx = np.arange(m)
    tau = sim.first_passage(
        np.zeros(m),
        np.full(m, 1000.0),
        np.full(m, np.log(0.01)),
        np.concatenate([idx, idx]),
        np.concatenate([np.full(m, 50.0), np.full(m, 100.0)]),
        np.concatenate([np.full(m, np.log(3.0)), np.full(m, -np.log(3.0))]),
        rng.exponential(1.0, m),
    )
    assert abs((tau > 120).mean() - np.exp(-2.2)) < 0.005
    assert abs((tau > 50).mean() - np.exp(-0.5)) < 0.005
    assert np.isfinite(tau).mean() > 0.99


def test_season_integral_is_exact() -> None:
    season = sim.season_by_day(START, 800, sim.SimParams())
    assert season.max() > 1.3 and season.min() < 0.9  # holiday peak, summer dip
    t = np.array([0.0, 0.5, 10.25, 799.0])
    expect = [0.0, 0.5 * season[0], season[:10].sum() + 0.25 * season[10], season[:799].sum()]
    assert np.allclose(sim.season_integral(season, t), expect)


def test_a_period_without_campaigns_or_events_writes_no_empty_table(tmp_path: Path) -> None:
    # Regression: --start 2025-11-01 --end 2025-12-01 wrote an empty campaigns table, which the
    # contract rejects ("is empty"); a missing optional table means "none".
    from churnguard.features.sources import open_source

    s = generate_demo_data(tmp_path / "x", n_customers=1, seed=1, start=date(2025, 11, 1),
                           end=date(2025, 12, 1))
    assert s.omitted == ("events", "campaigns")
    assert s.n_campaign_contacts == 0 and s.n_events == 0
    assert sorted(p.name for p in s.out_dir.glob("*.parquet")) == [
        "customers.parquet", "transactions.parquet"]
    assert (s.out_dir / "ground_truth" / "campaigns.parquet").exists()
    readme = (s.out_dir / "README.md").read_text()
    assert "Not written: `events.parquet`" in readme
    assert "Not written: `campaigns.parquet`" in readme
    with open_source(s.out_dir, thorough=True) as src:
        assert src.tables == {"customers", "transactions"}
    # The oracle reads the (absent) events table as no events.
    p = oracle_churn_probability(s.out_dir, date(2025, 11, 20), 10, n_sims=4)
    assert len(p) <= 1
