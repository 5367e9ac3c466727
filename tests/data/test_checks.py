"""The contract checks are defined once (features/checks.py) and every engine runs them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnguard.features.build import build_features, infer_spec, txn_activity_sql
from churnguard.features.checks import (
    CARRIED_BY_AGGREGATES,
    NON_FINITE,
    below_minimum,
    row_checks,
)
from churnguard.features.contract import EVENTS, SUBSCRIPTIONS, TRANSACTIONS
from churnguard.features.definitions import FeatureSpec
from churnguard.features.sources import DataContractError, open_source
from churnguard.features.sql import ident, literal, qualified
from tests.tables import tiny_tables, write_source

CUTOFF = date(2024, 5, 1)


def test_quoting_per_dialect() -> None:
    assert ident('we"ird') == '"we""ird"'
    assert ident("we`ird", "spark") == "`we``ird`"
    assert ident('a"b', "postgres") == '"a""b"'
    assert literal("it's") == "'it''s'"
    assert literal("it's \\ here", "spark") == "'it\\'s \\\\ here'"
    assert qualified("crm", "scores", dialect="postgres") == '"crm"."scores"'


def test_row_checks_come_from_the_specs_in_order() -> None:
    checks = row_checks(TRANSACTIONS, ["customer_id", "ts", "amount"], raw_text=["amount"])
    assert [(c.column, c.kind) for c in checks] == [
        ("customer_id", "null"), ("ts", "null"),
        ("amount", "unparseable"), ("amount", "null"), ("amount", "non_finite")]
    # Text columns show their text; a blank text counts as missing.
    amount_null = checks[3]
    assert amount_null.shown == '"__raw_amount"' and "trim(" in amount_null.condition
    events = row_checks(EVENTS, ["customer_id", "ts", "event_type", "count"])
    assert (events[-1].kind, events[-1].condition, events[-1].message) == (
        "below_minimum", '"count" < 1', "with a count below 1")
    subs = row_checks(SUBSCRIPTIONS, ["customer_id", "start_date", "end_date"])
    assert (subs[-1].column, subs[-1].condition) == ("end_date", '"end_date" < "start_date"')


def test_the_checks_riding_along_in_the_aggregates_use_the_same_rules(tmp_path: Path) -> None:
    assert {(t, c) for t, c, _ in CARRIED_BY_AGGREGATES} == {("transactions", "amount"),
                                                              ("events", "count")}
    assert f"CASE WHEN {NON_FINITE.sql('amount')} THEN 1" in txn_activity_sql()
    bad_count = {a.name: a for a in FeatureSpec(event_types=()).aggregates()}["e_bad_count"]
    assert bad_count.cond == below_minimum(EVENTS.column("count")).sql("n")
    # And the default (aggregate-carried) path reports what a load-time check reports.
    tables = tiny_tables()
    tables["transactions"].loc[0, "amount"] = float("inf")
    tables["events"].loc[0, "count"] = 0
    with pytest.raises(DataContractError) as at_load:
        open_source(tables)  # in-memory tables: checked at load
    with open_source(write_source(tmp_path / "src", tables, "parquet")) as src, \
            pytest.raises(DataContractError) as in_build:
        build_features(src, infer_spec(src), CUTOFF)
    assert _summary(at_load.value) == _summary(in_build.value) == {
        ("events", "count", 1, "with a count below 1"),
        ("transactions", "amount", 1, "with a number that is not finite")}


def test_conflicting_customer_examples_name_only_conflicting_ids(tmp_path: Path) -> None:
    tables = tiny_tables()
    cust = tables["customers"]
    tables["customers"] = pd.concat(
        [cust, cust.iloc[[0]].assign(segment="other"), cust.iloc[[2]]], ignore_index=True)
    with pytest.raises(DataContractError) as exc:
        open_source(write_source(tmp_path / "src", tables, "parquet"))
    assert str(exc.value).endswith(
        "customers.customer_id: 1 row customer ids that appear more than once with different "
        "attributes (e.g. 'a')")


def test_problems_are_listed_in_table_order(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables["transactions"].loc[2, "customer_id"] = None
    tables["events"].loc[0, "event_type"] = None
    tables["customers"].loc[1, "signup_date"] = None
    with pytest.raises(DataContractError) as exc:
        open_source(write_source(tmp_path / "src", tables, "csv"))
    assert [p.table for p in exc.value.problems] == ["customers", "events", "transactions"]


# ---------------------------------------------------------------------------------------------
# DuckDB and Spark report the same problems for the same bad Parquet source


def _summary(exc: DataContractError) -> set[tuple[Any, ...]]:
    return {(p.table, p.column, p.n_rows, p.message) for p in exc.problems}


def _bad_sources() -> dict[str, dict[str, pd.DataFrame]]:
    cases = {}
    t = tiny_tables()
    t["transactions"].loc[[1, 4], "amount"] = [float("inf"), float("-inf")]
    t["events"].loc[[0, 3], "count"] = [0, -1]
    cases["values"] = t  # DuckDB: checked in the feature aggregation; Spark: at load
    t = tiny_tables()
    t["events"].loc[2, "event_type"] = None
    t["customers"].loc[1, "signup_date"] = None
    cases["nulls"] = t
    t = tiny_tables()
    cust = t["customers"]
    t["customers"] = pd.concat([cust, cust.iloc[[1]].assign(segment="z")], ignore_index=True)
    cases["conflicting customers"] = t
    t = tiny_tables()
    t["subscriptions"] = pd.DataFrame({
        "customer_id": ["a", "b"],
        "start_date": [date(2024, 2, 1), date(2024, 1, 1)],
        "end_date": [date(2024, 1, 1), None],
    })
    cases["subscription ends before it starts"] = t
    t = tiny_tables()
    t["subscriptions"] = pd.DataFrame({
        "customer_id": ["a", "ghost", "ghost"],
        "start_date": [date(2024, 1, 1)] * 3,
        "end_date": [None, None, date(2024, 3, 1)],
    })
    cases["unknown customers"] = t
    return cases


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from churnguard.features.spark import spark_session

    session = spark_session("local[1]")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.spark
@pytest.mark.parametrize("case", list(_bad_sources()))
def test_duckdb_and_spark_report_the_same_problems(spark: Any, tmp_path: Path,
                                                   case: str) -> None:
    from churnguard.features.spark import open_spark_source

    src_dir = write_source(tmp_path / "src", _bad_sources()[case], "parquet")
    with pytest.raises(DataContractError) as on_spark:
        open_spark_source(spark, str(src_dir), reference_time=datetime(2030, 1, 1))
    try:  # DuckDB checks some rows at load, the large tables' values in the aggregation
        with open_source(src_dir, reference_time=datetime(2030, 1, 1)) as src:
            build_features(src, infer_spec(src), CUTOFF)
    except DataContractError as exc:
        on_duckdb = exc
    else:  # pragma: no cover - shows the failure
        raise AssertionError("DuckDB accepted the source")
    assert _summary(on_duckdb) == _summary(on_spark.value)


def _dated_tables() -> dict[str, pd.DataFrame]:
    """A customer signed up in 1899, one who signs up after the reference time, and a purchase
    before its customer's signup (with rows of the first two in transactions)."""
    t = tiny_tables()
    t["customers"] = pd.concat([t["customers"], pd.DataFrame({
        "customer_id": ["old", "later"], "signup_date": [date(1899, 12, 30), date(2031, 1, 1)],
        "segment": ["x", "y"]})], ignore_index=True)
    t["transactions"] = pd.concat([t["transactions"], pd.DataFrame({
        "customer_id": ["b", "old", "later"],
        "ts": pd.to_datetime(["2024-01-15 10:00", "2024-02-01 00:00", "2024-03-01 00:00"]),
        "amount": [7.0, 1.0, 2.0]})], ignore_index=True)
    return t


def _issues(issues: Any) -> set[tuple[Any, ...]]:
    return {(i.table, i.kind, i.n_rows, i.examples, i.kept) for i in issues}


def test_implausible_and_future_signups_and_purchases_before_signup(tmp_path: Path) -> None:
    with open_source(write_source(tmp_path / "src", _dated_tables(), "parquet"),
                     reference_time=datetime(2030, 1, 1), thorough=True) as src:
        assert _issues(src.issues) == {
            ("customers", "future_timestamp", 1, ("'later: 2031-01-01'",), False),
            ("customers", "implausible_date", 1, ("'old: 1899-12-30'",), False),
            ("transactions", "before_signup", 1,
             ("'b: bought 2024-01-15 10:00:00, signed up 2024-02-01'",), True)}
        # Left out with their rows (not "unknown customers"); the early purchase is kept.
        feats = build_features(src, infer_spec(src), CUTOFF).to_pandas().set_index(
            "customer_id")
    assert sorted(feats.index) == ["a", "b"] and feats.loc["b", "orders_total"] == 2


@pytest.mark.spark
def test_duckdb_and_spark_report_the_same_date_issues(spark: Any, tmp_path: Path) -> None:
    from churnguard.features.spark import open_spark_source

    src_dir = write_source(tmp_path / "src", _dated_tables(), "parquet")
    ref = datetime(2030, 1, 1)
    on_spark = open_spark_source(spark, str(src_dir), reference_time=ref)
    from churnguard.features.spark import spark_features

    with open_source(src_dir, reference_time=ref, thorough=True) as on_duckdb:
        assert _issues(on_duckdb.issues) == _issues(on_spark.issues)
        assert len(on_spark.issues) == 3
        spec = infer_spec(on_duckdb)
        duck = build_features(on_duckdb, spec, CUTOFF).to_pandas()
    sparked = spark_features(on_spark, spec, CUTOFF).toPandas()
    assert sorted(duck["customer_id"]) == sorted(sparked["customer_id"]) == ["a", "b"]


@pytest.mark.spark
def test_a_table_given_twice_is_refused_on_spark_as_on_duckdb(spark: Any,
                                                              tmp_path: Path) -> None:
    from churnguard.features.spark import open_spark_source

    src_dir = write_source(tmp_path / "src", tiny_tables(), "parquet")
    (src_dir / "transactions").mkdir()
    tiny_tables()["transactions"].to_parquet(src_dir / "transactions" / "part-0.parquet")
    with pytest.raises(DataContractError) as on_spark:
        open_spark_source(spark, str(src_dir))
    with pytest.raises(DataContractError) as on_duckdb:
        open_source(src_dir)
    for exc in (on_spark, on_duckdb):
        text = str(exc.value)
        assert f"transactions: is given more than once in {src_dir}: transactions.parquet and " \
               "transactions" in text
