"""Bad input and unsafe settings through the CLI, the way a user meets them: a contract error
(exit 2, the table and the file named, what is wrong and how to fix it, nothing written) or a
reported issue, never a traceback."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from churnguard.cli import app
from churnguard.features.definitions import FeatureSpec
from tests.tables import tiny_tables, write_source

runner = CliRunner()


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))


# ---------------------------------------------------------------------------------------------
# 1. A table given twice


@pytest.mark.parametrize(("first", "second"), [
    ("transactions.csv", "transactions/ (a folder of Parquet files)"),
    ("transactions.parquet", "transactions.csv"),
])
def test_a_table_given_twice_exits_2_naming_both_files(tmp_path: Path, first: str,
                                                       second: str) -> None:
    # Regression: one of the two copies was used, silently.
    src = write_source(tmp_path / "src", tiny_tables(), "parquet" if "parquet" in first
                       else "csv")
    tx = tiny_tables()["transactions"]
    if second.startswith("transactions/"):
        (src / "transactions").mkdir()
        tx.to_parquet(src / "transactions" / "part-0.parquet")
    else:
        tx.to_csv(src / "transactions.csv", index=False)
    out = tmp_path / "out.parquet"
    for args in (["data", "check", "--data", str(src)],
                 ["features", "build", "--data", str(src), "--as-of", "2024-05-01", "--out",
                  str(out)]):
        result = _cli(*args)
        assert result.exit_code == 2, result.output
        assert f"transactions: is given more than once in {src}: " in result.output
        assert first in result.output and second in result.output
        assert "keep one of them" in result.output
        _no_traceback(result)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 3. CSV files that the reader cannot parse


@pytest.fixture(scope="module")
def csv_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csv-demo") / "data"
    result = _cli("demo-data", "--out", str(out), "--customers", "300", "--seed", "2",
                  "--start", "2024-01-01", "--end", "2025-06-30", "--format", "csv")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def fake_model(fake_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fitted bundle as a local pyfunc model, for ``score --model``."""
    import mlflow.pyfunc

    from churnguard.model.pyfunc import ChurnguardPyfunc

    root = tmp_path_factory.mktemp("model")
    mlflow.pyfunc.save_model(str(root / "pyfunc"), python_model=ChurnguardPyfunc(),
                             artifacts={"bundle": str(fake_bundle_dir)})
    return str(root / "pyfunc")


def _mixed_line_endings(csv_demo: Path, dest: Path) -> Path:
    """The demo data with a CRLF transactions.csv to which one LF-terminated row was appended."""
    src = Path(shutil.copytree(csv_demo, dest))
    path = src / "transactions.csv"
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\r\n".join(lines) + b"\r\n" + lines[1] + b"\n")
    return src


@pytest.mark.parametrize("command", ["data check", "features build", "train", "score"])
def test_mixed_line_endings_exit_2_naming_the_file_not_a_traceback(
        command: str, csv_demo: Path, tmp_path: Path, embedded_store: Path,
        fake_model: str) -> None:
    # Regression: "_duckdb.InvalidInputException: ... Error when sniffing file", exit 1.
    src = _mixed_line_endings(csv_demo, tmp_path / "src")
    n_lines = len((src / "transactions.csv").read_bytes().splitlines())
    out = tmp_path / "out" / "result.parquet"
    out.parent.mkdir()
    args = {
        "data check": ["data", "check", "--data", str(src)],
        "features build": ["features", "build", "--data", str(src), "--as-of", "2025-06-01",
                           "--out", str(out)],
        "train": ["train", "--data", str(src), "--max-train-cutoffs", "2"],
        "score": ["score", "--data", str(src), "--as-of", "2025-06-01", "--out", str(out),
                  "--model", fake_model],
    }[command]
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    assert (f"transactions: {src / 'transactions.csv'} mixes line endings: {n_lines - 1:,} "
            "lines end in CRLF (the first is line 1) and 1 in LF alone (the first is line "
            f"{n_lines})") in result.output
    assert "save it with one kind of line ending, LF or CRLF" in result.output
    _no_traceback(result)
    assert list(out.parent.iterdir()) == []
    assert not (embedded_store / "mlflow.db").exists()


def test_csv_lines_that_cannot_be_parsed_are_counted_with_their_line_numbers(
        tmp_path: Path) -> None:
    src = write_source(tmp_path / "src", tiny_tables(), "csv")
    with (src / "transactions.csv").open("a") as f:
        f.write("a,2024-03-02 00:00:00,5.0,extra\n\"b,2024-03-03 00:00:00,6.0\n")
    result = _cli("data", "check", "--data", str(src))
    assert result.exit_code == 2, result.output
    assert (f"transactions: 2 lines of {src / 'transactions.csv'} cannot be read as CSV "
            "(comma-separated, double quotes, a header line, UTF-8, LF or CRLF line endings); "
            "fix or remove them (e.g. line 10: more values than the header has columns, line 11: "
            "a quoted value that is not closed (or a stray quote))") in result.output
    _no_traceback(result)


def test_csv_with_a_byte_order_mark_and_crlf_lines_is_read(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src", tiny_tables(), "csv")
    path = src / "transactions.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    result = _cli("data", "check", "--data", str(src))
    assert result.exit_code == 0, result.output
    assert "transactions: 8 rows" in result.output


def test_an_empty_csv_file_is_reported_as_empty(tmp_path: Path) -> None:
    # Regression: "required column is missing (found: column0)".
    src = write_source(tmp_path / "src", tiny_tables(), "csv")
    (src / "events.csv").write_bytes(b"")
    result = _cli("data", "check", "--data", str(src))
    assert result.exit_code == 2, result.output
    assert f"events: the file is empty ({src / 'events.csv'} has no header" in result.output
    assert "column0" not in result.output
    _no_traceback(result)


# ---------------------------------------------------------------------------------------------
# 4. Implausible dates


def test_signups_in_1899_or_the_future_are_left_out_and_early_purchases_kept(
        tmp_path: Path) -> None:
    # Regression: all three were accepted silently (the 1899 customer got 45,000 days of
    # tenure; the future one entered the population of every cutoff after its signup).
    tables = tiny_tables()
    tables["customers"] = pd.concat([tables["customers"], pd.DataFrame({
        "customer_id": ["old", "later"], "signup_date": [date(1899, 12, 30), date(2099, 1, 1)],
        "segment": ["x", "y"]})], ignore_index=True)
    tables["transactions"] = pd.concat([tables["transactions"], pd.DataFrame({
        "customer_id": ["b", "old", "later"],
        "ts": pd.to_datetime(["2024-01-15 10:00", "2024-02-01 00:00", "2024-03-01 00:00"]),
        "amount": [7.0, 1.0, 2.0]})], ignore_index=True)
    src = write_source(tmp_path / "src", tables, "csv")
    result = _cli("data", "check", "--data", str(src))
    assert result.exit_code == 0, result.output
    for line in (
        "customers: 1 row dated after the data's reference time left out, with their rows in "
        "the other tables (e.g. 'later: 2099-01-01')",
        "customers: 1 row dated before 1900-01-01 (an implausible date) left out, with their "
        "rows in the other tables (e.g. 'old: 1899-12-30')",
        "transactions: 1 purchase dated before the customer's signup date kept (e.g. 'b: "
        "bought 2024-01-15 10:00:00, signed up 2024-02-01')",
    ):
        assert f"warning: {line}" in result.output
    assert "not in the customers table" not in result.output  # their rows go with them
    out = tmp_path / "f.parquet"
    result = _cli("features", "build", "--data", str(src), "--as-of", "2024-05-01", "--out",
                  str(out))
    assert result.exit_code == 0, result.output
    feats = pd.read_parquet(out).set_index("customer_id")
    assert sorted(feats.index) == ["a", "b"]
    assert feats.loc["b", "orders_total"] == 2  # the purchase before signup counts


# ---------------------------------------------------------------------------------------------
# 5. demo-data over a short period


def test_demo_data_for_a_short_period_writes_no_empty_table(tmp_path: Path) -> None:
    # Regression: an empty campaigns table was written, which every command then rejected.
    out = tmp_path / "short"
    result = _cli("demo-data", "--out", str(out), "--customers", "300", "--start",
                  "2025-11-01", "--end", "2025-12-01")
    assert result.exit_code == 0, result.output
    assert "campaigns.parquet not written" in " ".join(result.output.split())
    assert not (out / "campaigns.parquet").exists()
    assert "Not written: `campaigns.parquet`" in (out / "README.md").read_text()
    checked = _cli("data", "check", "--data", str(out))
    assert checked.exit_code == 0, checked.output
    built = _cli("features", "build", "--data", str(out), "--as-of", "2025-12-01", "--out",
                 str(tmp_path / "f.parquet"))
    assert built.exit_code == 0, built.output


# ---------------------------------------------------------------------------------------------
# 6. SQL in a setting


def test_sql_in_the_memory_limit_setting_is_refused_and_never_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: the value was interpolated into "SET memory_limit = ..." and validated only
    # by its first and last characters.
    src = write_source(tmp_path / "src", tiny_tables(), "csv")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    bad = "1GB'; COPY (SELECT 42) TO 'x.csv'; SELECT '1B"
    result = _cli("data", "check", "--data", str(src),
                  env={"CHURNGUARD_DUCKDB_MEMORY_LIMIT": bad})
    assert result.exit_code == 2, result.output
    assert "CHURNGUARD_DUCKDB_MEMORY_LIMIT: expected a size such as 1536MB" in result.output
    assert "COPY" not in result.output  # the value is not repeated
    _no_traceback(result)
    assert list(work.iterdir()) == []


def test_a_bad_setting_is_one_clean_message_without_its_value() -> None:
    secret = "redis-password-0123456789"
    result = _cli("models", env={"CHURNGUARD_ONLINE_STORE": f"postgres://u:{secret}@h/db",
                                 "CHURNGUARD_PORT": "eighty"})
    assert result.exit_code == 2, result.output
    assert "CHURNGUARD_ONLINE_STORE: expected 'memory' or a redis://" in result.output
    assert "CHURNGUARD_PORT: Input should be a valid integer" in result.output
    assert secret not in result.output and "eighty" not in result.output
    _no_traceback(result)


# ---------------------------------------------------------------------------------------------
# 7. Features built for a model's spec


def test_features_build_with_a_model_spec_emits_every_column_of_the_model(
        tmp_path: Path) -> None:
    # Regression: a spec naming what the data lacks (an attribute, the subscriptions table)
    # failed with a Binder/Catalog error instead of building the model's columns.
    spec = FeatureSpec(event_types=("complaint", "login", "webinar"),
                       attribute_columns=("segment", "plan"), subscriptions=True,
                       attribute_categories={"segment": ("x", "y"), "plan": ("pro",)})
    spec_file = tmp_path / "feature_spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    src = write_source(tmp_path / "src", tiny_tables(), "csv")
    out = tmp_path / "features.parquet"
    result = _cli("features", "build", "--data", str(src), "--as-of", "2024-05-01", "--out",
                  str(out), "--spec", str(spec_file))
    assert result.exit_code == 0, result.output
    logged = " ".join(result.output.split())  # (the log handler wraps long lines)
    assert "customer attribute 'plan' is not a text column of the customers table" in logged
    assert "the source has no subscriptions table" in logged
    feats = pd.read_parquet(out).set_index("customer_id")
    assert list(feats.columns) == ["as_of", *spec.feature_names()]
    assert (feats[["webinar_7d", "webinar_30d", "webinar_90d"]] == 0).all().all()
    assert (feats[["sub_active", "sub_mrr", "sub_ended", "sub_plan_changes"]] == 0).all().all()
    assert feats["plan"].isna().all() and feats["sub_plan"].isna().all()
    assert feats.loc["a", "login_30d"] == 3 and feats.loc["a", "segment"] == "x"
