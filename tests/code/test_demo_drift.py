"""Faults injected into the retail demo data (``demo-data --drift KIND@DATE``).

Small data (800 customers, 18 months): every kind's data-level effect, the rows before the date
against the run without faults, ground_truth/drift.json, the oracle under churn-rise, and the
CLI's parsing of ``--drift``.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnguard.cli import app
from churnguard.features.demo_data import (
    DemoSummary,
    generate_demo_data,
    oracle_churn_probability,
    read_drift,
)
from churnguard.features.demo_drift import DRIFT_KINDS, DriftSpec, parse_drift

START, END = date(2024, 1, 1), date(2025, 6, 30)
DAY = date(2025, 3, 1)
DAY_TS = pd.Timestamp(DAY)
N, SEED = 800, 5


def _gen(out: Path, *drift: str, n: int = N, seed: int = SEED) -> DemoSummary:
    return generate_demo_data(out, n_customers=n, seed=seed, start=START, end=END,
                              drift=[parse_drift(d) for d in drift])


def _tables(d: Path) -> dict[str, pd.DataFrame]:
    names = ["customers", "transactions", "events", "campaigns"]
    out = {k: pd.read_parquet(d / f"{k}.parquet") for k in names}
    for k in ("customers", "stage_paths", "campaigns"):
        out[f"gt_{k}"] = pd.read_parquet(d / "ground_truth" / f"{k}.parquet")
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return _tables(_gen(tmp_path_factory.mktemp("base") / "d").out_dir)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoSummary]:
    root = tmp_path_factory.mktemp("drift")
    return {
        "broken-feed": _gen(root / "bf", f"broken-feed@{DAY}"),
        "price-change": _gen(root / "pc", f"price-change@{DAY}"),
        "acquisition-shift": _gen(root / "as", f"acquisition-shift@{DAY}"),
        "churn-rise": _gen(root / "cr", f"churn-rise@{DAY}"),
    }


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# --- parsing -------------------------------------------------------------------------------


def test_parse_fills_defaults_and_reads_arguments() -> None:
    assert parse_drift("broken-feed@2025-03-01") == DriftSpec("broken-feed", DAY, "web_visit")
    assert parse_drift("broken-feed:email_open@2025-03-01").target == "email_open"
    assert parse_drift("price-change@2025-03-01").amount == 1.4
    assert parse_drift("price-change:1.25@2025-03-01") == DriftSpec("price-change", DAY, None,
                                                                   1.25)
    assert parse_drift("acquisition-shift@2025-03-01") == DriftSpec(
        "acquisition-shift", DAY, "social", 0.6)
    assert parse_drift("acquisition-shift:latam:0.5@2025-03-01").target == "latam"
    assert parse_drift("churn-rise@2025-03-01") == DriftSpec("churn-rise", DAY, "smb", 3.0)
    spec = parse_drift("churn-rise:consumer:2@2025-03-01")
    assert (spec.target, spec.amount, spec.label) == ("consumer", 2.0,
                                                      "churn-rise:consumer:2@2025-03-01")
    for kind in DRIFT_KINDS:  # the label round-trips (the oracle reads faults back by it)
        d = parse_drift(f"{kind}@2025-03-01")
        assert parse_drift(d.label) == d


@pytest.mark.parametrize(("text", "message"), [
    ("price-drop@2025-03-01", "valid kinds: broken-feed, acquisition-shift, price-change"),
    ("broken-feed@2025-13-01", "is not a date"),
    ("broken-feed", "expected KIND"),
    ("broken-feed:complaint@2025-03-01", "valid: login, email_open"),
    ("churn-rise:vip@2025-03-01", "unknown segment 'vip'"),
    ("churn-rise:smb:x@2025-03-01", "'x' is not a number"),
    ("acquisition-shift:social:1.5@2025-03-01", "share must be in (0, 1)"),
    ("price-change:0@2025-03-01", "factor must be in"),
])
def test_parse_rejects_bad_input_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--drift") as exc:
        parse_drift(text)
    assert message in str(exc.value)


def test_generator_rejects_dates_outside_the_period_and_subscriptions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the data's period"):
        _gen(tmp_path / "a", "price-change@2026-01-01")
    with pytest.raises(ValueError, match="retail demo only"):
        generate_demo_data(tmp_path / "b", n_customers=50, seed=1, start=START, end=END,
                           subscriptions=True, drift=[parse_drift(f"price-change@{DAY}")])
    with pytest.raises(ValueError, match="usual share"):
        _gen(tmp_path / "c", f"acquisition-shift:organic:0.3@{DAY}")


# --- each kind's effect ------------------------------------------------------------------


def test_broken_feed_drops_only_that_type_from_the_date(
        base: dict[str, pd.DataFrame], drifted: dict[str, DemoSummary]) -> None:
    t = _tables(drifted["broken-feed"].out_dir)
    ev, ev0 = t["events"], base["events"]
    after = ev["ts"] >= DAY_TS
    assert not (after & (ev["event_type"] == "web_visit")).any()
    assert ((ev0["ts"] >= DAY_TS) & (ev0["event_type"] == "web_visit")).sum() > 500
    # Exactly the undrifted events without the broken feed's rows from the date.
    keep = ~((ev0["ts"] >= DAY_TS) & (ev0["event_type"] == "web_visit"))
    _same(ev, ev0[keep])
    _same(ev[~after], ev0[ev0["ts"] < DAY_TS])
    for k in ("customers", "transactions", "campaigns", "gt_customers", "gt_stage_paths"):
        _same(t[k], base[k])


def test_price_change_scales_order_values_from_the_date_only(
        base: dict[str, pd.DataFrame], drifted: dict[str, DemoSummary]) -> None:
    t = _tables(drifted["price-change"].out_dir)
    tx, tx0 = t["transactions"], base["transactions"]
    _same(tx[tx["ts"] < DAY_TS], tx0[tx0["ts"] < DAY_TS])
    _same(tx.drop(columns="amount"), tx0.drop(columns="amount"))
    orders = ~tx0["order_id"].str.endswith("-R")
    up = orders & (tx0["ts"] >= DAY_TS)
    assert up.sum() > 300
    np.testing.assert_allclose(tx.loc[up, "amount"], np.round(tx0.loc[up, "amount"] * 1.4, 2),
                               atol=0.006)
    ratio = tx.loc[up, "amount"].sum() / tx0.loc[up, "amount"].sum()
    assert ratio == pytest.approx(1.4, abs=0.002)
    # Mean order value after vs before the date: the factor, up to the usual drift of the mix.
    before = orders & (tx0["ts"] < DAY_TS)
    assert tx.loc[up, "amount"].mean() / tx.loc[before, "amount"].mean() == pytest.approx(
        1.4 * tx0.loc[up, "amount"].mean() / tx0.loc[before, "amount"].mean(), rel=1e-3)
    for k in ("customers", "events", "campaigns", "gt_customers", "gt_stage_paths"):
        _same(t[k], base[k])


def test_acquisition_shift_adds_signups_from_the_channel(
        base: dict[str, pd.DataFrame], drifted: dict[str, DemoSummary]) -> None:
    s = drifted["acquisition-shift"]
    t = _tables(s.out_dir)
    c, c0 = t["customers"], base["customers"]
    assert s.n_customers == len(c) == N + s.n_extra_customers
    # The usual customers are exactly those of the run without the fault, in every table.
    for k in t:
        known = t[k]["customer_id"].isin(c0["customer_id"])
        _same(t[k][known], base[k])
    new = c[pd.to_datetime(c["signup_date"]) >= DAY_TS]
    new0 = c0[pd.to_datetime(c0["signup_date"]) >= DAY_TS]
    assert (new["channel"] == "social").mean() == pytest.approx(0.6, abs=0.03)
    assert (new0["channel"] == "social").mean() < 0.3
    assert len(new) / len(new0) == pytest.approx(1 + 0.45 / 0.4, abs=0.1)
    extra = c.iloc[N:]
    assert (extra["channel"] == "social").all()
    assert (pd.to_datetime(extra["signup_date"]) >= DAY_TS).all()
    assert list(extra["customer_id"]) == [f"C{i:07d}" for i in range(N, len(c))]
    gt = t["gt_customers"].iloc[N:]
    assert (gt["channel"] == "social").all()
    # Extra customers have rows (orders, events) of their own, none before the date.
    tx = t["transactions"][t["transactions"]["customer_id"].isin(extra["customer_id"])]
    assert len(tx) > 0 and (tx["ts"] >= DAY_TS).all()


def test_churn_rise_raises_the_segments_decline_and_lowers_its_activity(
        base: dict[str, pd.DataFrame], drifted: dict[str, DemoSummary]) -> None:
    t = _tables(drifted["churn-rise"].out_dir)
    day = (DAY - START).days

    def declined_after(gt: pd.DataFrame, segment: str) -> float:
        g = gt[(gt["segment"] == segment) & (gt["signup_day"] < day)]
        active = g["decline_ts"].isna() | (g["decline_ts"] >= DAY_TS)
        g = g[active]
        return float((g["decline_ts"] < DAY_TS + pd.Timedelta(days=120)).mean())

    p1, p0 = declined_after(t["gt_customers"], "smb"), declined_after(base["gt_customers"], "smb")
    assert p1 > 1.8 * p0 and p1 - p0 > 0.15, (p0, p1)
    # The latent past is the same: stage paths and contacts before the date are identical
    # (final decline dates are not: a reverted decline can be followed by another).
    def past(paths: pd.DataFrame) -> pd.DataFrame:
        p = paths[paths["start_day"] < day].copy()
        p["end_day"] = p["end_day"].clip(upper=float(day))
        return p[["customer_id", "stage", "start_day", "end_day"]]

    _same(past(t["gt_stage_paths"]), past(base["gt_stage_paths"]))
    gt, gt0 = t["gt_customers"], base["gt_customers"]
    _same(gt.drop(columns=["decline_date", "churn_date", "decline_ts", "churn_ts",
                           "stage_at_end"]),
          gt0.drop(columns=["decline_date", "churn_date", "decline_ts", "churn_ts",
                            "stage_at_end"]))
    gc, gc0 = t["gt_campaigns"], base["gt_campaigns"]
    _same(gc[gc["ts"] < DAY_TS], gc0[gc0["ts"] < DAY_TS])

    def smb_orders_after(tb: dict[str, pd.DataFrame]) -> float:
        smb = tb["customers"].loc[tb["customers"]["segment"] == "smb", "customer_id"]
        tx = tb["transactions"]
        return float(((tx["ts"] >= DAY_TS) & tx["customer_id"].isin(smb)
                      & (tx["amount"] > 0)).sum())

    assert smb_orders_after(t) < 0.9 * smb_orders_after(base)


def test_oracle_applies_the_churn_rise(drifted: dict[str, DemoSummary], tmp_path: Path) -> None:
    d = drifted["churn-rise"].out_dir
    assert read_drift(d) == (DriftSpec("churn-rise", DAY, "smb", 3.0),)
    cutoff = date(2025, 3, 15)
    p1 = oracle_churn_probability(d, cutoff, 90, n_sims=40, seed=1)
    # The same data with the fault's record removed: the oracle no longer knows of it.
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    (copy / "ground_truth" / "drift.json").unlink()
    assert read_drift(copy) == ()
    p0 = oracle_churn_probability(copy, cutoff, 90, n_sims=40, seed=1)
    seg = pd.read_parquet(d / "customers.parquet").set_index("customer_id")["segment"]
    by = pd.DataFrame({"seg": seg.loc[p1["customer_id"]].to_numpy(),
                       "p1": p1["p_churn"].to_numpy(), "p0": p0["p_churn"].to_numpy()})
    # Among customers not already dead: smb's 90-day no-purchase probability rises (by ~1.7
    # points here: a declining customer still buys at half rate for ~60 days), others stay.
    m = by[by["p0"] < 0.999].groupby("seg")[["p1", "p0"]].mean()
    assert m.loc["smb", "p1"] - m.loc["smb", "p0"] > 0.01, m
    assert abs(m.loc["consumer", "p1"] - m.loc["consumer", "p0"]) < 0.003, m


# --- ground truth, README, determinism -------------------------------------------------------


def test_drift_json_records_each_fault(drifted: dict[str, DemoSummary]) -> None:
    expect = {
        "broken-feed": ({"event_type": "web_visit"}, "web_visit_30d", {"events"}),
        "price-change": ({"factor": 1.4}, "avg_order_value", {"transactions"}),
        "acquisition-shift": ({"channel": "social", "share": 0.6}, "channel",
                              {"customers", "transactions", "events", "campaigns"}),
        "churn-rise": ({"segment": "smb", "hazard_factor": 3.0}, "days_since_last_purchase",
                       {"transactions", "events", "campaigns", "ground_truth/customers",
                        "ground_truth/stage_paths"}),
    }
    for kind, s in drifted.items():
        doc = json.loads((s.out_dir / "ground_truth" / "drift.json").read_text())
        (f,) = doc["faults"]
        params, feature, tables = expect[kind]
        assert (f["kind"], f["date"], f["day_index"]) == (kind, "2025-03-01", 425)
        assert f["params"] == params
        assert feature in f["features_expected_to_move"]
        assert set(f["affects"]) == tables
        assert f["behaviour_change"] is (kind == "churn-rise")
        readme = (s.out_dir / "README.md").read_text()
        assert "## Injected faults" in readme and f["spec"] in readme
    extra = json.loads((drifted["acquisition-shift"].out_dir / "ground_truth"
                        / "drift.json").read_text())["faults"][0]["observed"]
    assert extra["extra_signups"] == drifted["acquisition-shift"].n_extra_customers > 0


def test_no_drift_writes_no_drift_json_and_drift_is_deterministic(tmp_path: Path) -> None:
    a = _gen(tmp_path / "a", n=300)
    assert not (a.out_dir / "ground_truth" / "drift.json").exists()
    assert "Injected faults" not in (a.out_dir / "README.md").read_text()
    specs = (f"churn-rise:consumer:2@{DAY}", f"acquisition-shift:latam:0.4@{DAY}",
             f"broken-feed:login@{DAY}", f"price-change:0.8@{DAY}")
    b, c = _gen(tmp_path / "b", *specs, n=300), _gen(tmp_path / "c", *specs, n=300)
    files = sorted(p.relative_to(b.out_dir) for p in b.out_dir.rglob("*") if p.is_file())
    assert Path("ground_truth/drift.json") in files
    for f in files:
        assert (b.out_dir / f).read_bytes() == (c.out_dir / f).read_bytes(), f
    cust = pd.read_parquet(b.out_dir / "customers.parquet")
    assert (cust.iloc[300:]["region"] == "latam").all()


# --- CLI -----------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["demo-data", *args])
    return r.exit_code, r.output + (r.stderr if r.stderr_bytes is not None else "")


@pytest.mark.parametrize(("drift", "message"), [
    ("spike@2025-03-01", "valid kinds: broken-feed, acquisition-shift, price-change, churn-rise"),
    ("price-change@2025-02-30", "is not a date"),
    ("price-change@2023-12-31", "outside the data's period 2024-01-01 .. 2025-06-30"),
    ("churn-rise:vip@2025-03-01", "valid: consumer, smb, enterprise"),
])
def test_cli_rejects_bad_drift_with_exit_2(tmp_path: Path, drift: str, message: str) -> None:
    code, text = _cli("--out", str(tmp_path / "x"), "--customers", "50", "--start",
                      str(START), "--end", str(END), "--drift", drift)
    assert code == 2, text
    assert message in " ".join(text.split())
    assert not (tmp_path / "x").exists()


def test_cli_rejects_drift_with_subscriptions(tmp_path: Path) -> None:
    code, text = _cli("--out", str(tmp_path / "x"), "--customers", "50", "--subscriptions",
                      "--drift", "price-change@2025-03-01")
    assert code == 2 and "retail demo only" in text


def test_cli_drift_is_repeatable(tmp_path: Path) -> None:
    out = tmp_path / "x"
    code, text = _cli("--out", str(out), "--customers", "300", "--seed", "2", "--start",
                      str(START), "--end", str(END), "--drift", "broken-feed:email_open@2025-03-01",
                      "--drift", "price-change:1.2@2025-04-01")
    assert code == 0, text
    assert "injected broken-feed:email_open@2025-03-01" in text
    assert "injected price-change:1.2@2025-04-01" in text
    faults = json.loads((out / "ground_truth" / "drift.json").read_text())["faults"]
    assert [(f["kind"], f["date"]) for f in faults] == [("broken-feed", "2025-03-01"),
                                                        ("price-change", "2025-04-01")]
    ev = pd.read_parquet(out / "events.parquet")
    assert not ((ev["event_type"] == "email_open") & (ev["ts"] >= DAY_TS)).any()
    assert ((ev["event_type"] == "email_open") & (ev["ts"] < DAY_TS)).any()
