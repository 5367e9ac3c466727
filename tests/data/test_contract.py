"""Contract checks: every class of bad input is refused with table, column, count and examples."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from churnguard.features.build import build_features, infer_spec
from churnguard.features.sources import DataContractError, open_source
from tests.tables import tiny_tables, write_source

CUTOFF = date(2024, 5, 1)


def _open(tables, tmp_path, fmt="csv", **kwargs):
    return open_source(write_source(tmp_path / "src", tables, fmt), **kwargs)


def _problem_text(exc: pytest.ExceptionInfo[DataContractError]) -> str:
    return str(exc.value)


def test_clean_tiny_source_opens_with_typed_views(tmp_path):
    with _open(tiny_tables(), tmp_path) as src:
        assert src.tables == {"customers", "transactions", "events"}
        kinds = dict(src.con.execute("DESCRIBE transactions").fetchall() and
                     [(r[0], r[1]) for r in src.con.execute("DESCRIBE transactions").fetchall()])
        assert kinds["ts"] == "TIMESTAMP" and kinds["amount"] == "DOUBLE"
        assert src.issues == []


def test_missing_required_table(tmp_path):
    tables = tiny_tables()
    del tables["transactions"]
    with pytest.raises(DataContractError, match=r"transactions: table not found"):
        _open(tables, tmp_path)


def test_a_source_without_events_has_zero_interaction_features(tmp_path):
    tables = tiny_tables()
    del tables["events"]
    with _open(tables, tmp_path) as src:
        assert not src.has("events")
        feats = build_features(src, infer_spec(src), CUTOFF).to_pandas().set_index("customer_id")
    assert feats.loc["a", "orders_total"] == 4
    assert (feats["events_90d"] == 0).all() and (feats["active_days_90d"] == 0).all()


def test_missing_required_column_names_table_and_column(tmp_path):
    tables = tiny_tables()
    tables["transactions"] = tables["transactions"].drop(columns=["amount"])
    with pytest.raises(DataContractError) as exc:
        _open(tables, tmp_path)
    assert "transactions.amount: required column is missing" in _problem_text(exc)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unparseable_numbers_are_counted_with_examples(tmp_path, fmt):
    tables = tiny_tables()
    tx = tables["transactions"].astype({"amount": object})
    tx.loc[[0, 3], "amount"] = ["ten", "12,5"]
    tables["transactions"] = tx.astype({"amount": str})
    with pytest.raises(DataContractError) as exc:
        _open(tables, tmp_path, fmt)
    text = _problem_text(exc)
    assert "transactions.amount: 2 rows that cannot be parsed as float" in text
    assert "'ten'" in text and "'12,5'" in text


def test_wrong_type_in_parquet_is_named(tmp_path):
    tables = tiny_tables()
    tables["transactions"]["amount"] = True
    with pytest.raises(DataContractError) as exc:
        _open(tables, tmp_path, "parquet")
    assert "transactions.amount: has type BOOLEAN, expected float" in _problem_text(exc)


def test_unparseable_timestamp(tmp_path):
    tables = tiny_tables()
    ev = tables["events"].astype({"ts": str})
    ev.loc[1, "ts"] = "yesterday"
    tables["events"] = ev
    with pytest.raises(DataContractError) as exc:
        _open(tables, tmp_path)
    assert ("events.ts: 1 row that cannot be parsed as timestamp (e.g. 'yesterday'"
            in _problem_text(exc))


def test_empty_table(tmp_path):
    tables = tiny_tables()
    tables["events"] = tables["events"].iloc[0:0]
    with pytest.raises(DataContractError, match=r"events: is empty \(no rows\)"):
        _open(tables, tmp_path, "parquet")


def test_null_in_required_column(tmp_path):
    tables = tiny_tables()
    tables["transactions"].loc[2, "customer_id"] = None
    with pytest.raises(DataContractError,
                       match=r"transactions.customer_id: 1 row with an empty \(null\) value"):
        _open(tables, tmp_path, "parquet")


def test_non_finite_amounts_and_bad_counts_stop_the_build(tmp_path):
    tables = tiny_tables()
    tables["transactions"].loc[0, "amount"] = float("inf")
    tables["events"].loc[0, "count"] = 0
    # Parquet with native types: these checks ride along in the feature aggregation.
    with _open(tables, tmp_path, "parquet") as src, pytest.raises(DataContractError) as exc:
        build_features(src, infer_spec(src), CUTOFF)
    text = _problem_text(exc)
    assert "transactions.amount: 1 row with a number that is not finite (e.g. 'a')" in text
    assert "events.count: 1 row with a count below 1 (e.g. 'a')" in text
    # CSV is parsed first and checked at load time.
    with pytest.raises(DataContractError,
                       match=r"transactions.amount: 1 row with a number that is not finite"):
        _open(tables, tmp_path / "csv", "csv")


def _with_ghost(tables):
    extra = pd.DataFrame({"customer_id": ["ghost", "ghost"], "ts": pd.to_datetime(
        ["2024-03-01", "2024-03-02"]), "amount": [5.0, 6.0]})
    tables["transactions"] = pd.concat([tables["transactions"], extra], ignore_index=True)
    return tables


def test_unknown_customers_fail_the_build_unless_allowed(tmp_path):
    tables = _with_ghost(tiny_tables())
    message = ("transactions.customer_id: 2 rows for customers that are not in the "
               "customers table (e.g. 'ghost')")
    with _open(tables, tmp_path) as src, pytest.raises(DataContractError) as exc:
        build_features(src, infer_spec(src), CUTOFF)
    assert message in _problem_text(exc)
    with _open(tables, tmp_path / "allowed", allow_unknown_customers=True) as src:
        feats = build_features(src, infer_spec(src), CUTOFF).to_pandas()
        assert "ghost" not in set(feats["customer_id"])
        assert [(i.table, i.kind, i.n_rows) for i in src.issues] == [
            ("transactions", "unknown_customer", 2)]


def test_thorough_load_finds_unknown_customers_up_front(tmp_path):
    tables = _with_ghost(tiny_tables())
    with pytest.raises(DataContractError, match="2 rows for customers"):
        _open(tables, tmp_path, thorough=True)


def test_duplicate_transactions_are_reported_and_count_once(tmp_path):
    tables = tiny_tables()
    clean = build_features(open_source(tables), infer_spec(open_source(tables)), CUTOFF)
    tx = tables["transactions"]
    tables["transactions"] = pd.concat([tx, tx.iloc[[0, 0, 2]]], ignore_index=True)
    with _open(tables, tmp_path) as src:
        feats = build_features(src, infer_spec(src), CUTOFF)
        assert feats.equals(clean)
        assert [(i.table, i.kind, i.n_rows) for i in src.issues] == [
            ("transactions", "duplicate", 3)]


def test_thorough_load_reports_duplicates_and_future_rows(tmp_path):
    tables = tiny_tables()
    tx, ev = tables["transactions"], tables["events"]
    future = pd.DataFrame({"customer_id": ["a"], "ts": pd.to_datetime(["2031-01-01"]),
                           "amount": [1.0]})
    tables["transactions"] = pd.concat([tx, tx.iloc[[0, 0]], future], ignore_index=True)
    tables["events"] = pd.concat([ev, ev.iloc[[1]]], ignore_index=True)
    with _open(tables, tmp_path, reference_time=datetime(2030, 1, 1), thorough=True) as src:
        kinds = {(i.table, i.kind): i.n_rows for i in src.issues}
        assert kinds == {("transactions", "duplicate"): 2,
                         ("transactions", "future_timestamp"): 1,
                         ("events", "duplicate"): 1}
        assert src.con.execute("SELECT count(*) FROM transactions").fetchall()[0][0] == len(tx)
        assert src.con.execute("SELECT count(*) FROM events").fetchall()[0][0] == len(ev)


def test_conflicting_customer_rows_fail(tmp_path):
    tables = tiny_tables()
    cust = tables["customers"]
    clash = cust.iloc[[0]].assign(signup_date=pd.Timestamp("2020-01-01").date())
    tables["customers"] = pd.concat([cust, clash], ignore_index=True)
    with pytest.raises(DataContractError, match=r"customers.customer_id: 1 row customer ids that "
                       r"appear more than once"):
        _open(tables, tmp_path)


def test_extra_columns_are_ignored_and_count_defaults_to_one(tmp_path):
    tables = tiny_tables()
    tables["events"] = tables["events"].drop(columns=["count"]).assign(note="x")
    with _open(tables, tmp_path) as src:
        assert "note" not in src.columns["events"]
        assert "count" not in src.columns["events"]


def test_csv_timestamp_offsets_are_converted_to_utc_as_parquet_time_zones_are(tmp_path):
    # Regression: "2025-01-01T10:00:00+05:00" in a CSV was read as 10:00 (the offset dropped),
    # while a Parquet timestamp with a time zone was converted to UTC. Now both are UTC;
    # timestamps without an offset are UTC already and stay as written.
    written = ["2024-01-05T10:00:00+05:00", "2024-01-05 12:00:00Z", "2024-02-04 09:00:00",
               "2024-03-05T09:00:00-03:30", "2024-04-04 09:00:00+00:00",
               "2024-03-01 00:00:00", "2024-07-01 00:00:00", "2024-05-10 00:00:00"]
    utc = ["2024-01-05 05:00", "2024-01-05 12:00", "2024-02-04 09:00", "2024-03-05 12:30",
           "2024-04-04 09:00", "2024-03-01 00:00", "2024-07-01 00:00", "2024-05-10 00:00"]
    tables = tiny_tables()
    tables["transactions"] = tables["transactions"].assign(ts=written)
    aware = tiny_tables()
    aware["transactions"] = aware["transactions"].assign(
        ts=pd.to_datetime(written, format="mixed", utc=True).tz_convert("Asia/Karachi"))
    read = {}
    for fmt, source in (("csv", tables), ("parquet", aware)):
        with _open(source, tmp_path / fmt, fmt) as src:
            read[fmt] = [r[0] for r in src.con.execute("SELECT ts FROM typed_transactions")
                         .fetchall()]
    assert read["csv"] == read["parquet"] == list(pd.to_datetime(utc))


def test_paths_with_quotes_reach_sql_only_as_literals(tmp_path):
    src = write_source(tmp_path / "it's \"quoted\"", tiny_tables(), "csv")
    with open_source(src) as s:
        assert s.con.execute("SELECT count(*) FROM transactions").fetchall()[0][0] == 8
