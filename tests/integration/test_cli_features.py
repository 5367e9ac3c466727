"""The CLI end to end: demo data → features, and every class of bad input → exit 2, no output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnguard.cli import app
from churnguard.features.definitions import FEATURE_SET_VERSION
from tests.tables import tiny_tables, write_source

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    result = runner.invoke(app, ["demo-data", "--out", str(out), "--customers", "400",
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_demo_data_then_features_build(demo_dir, tmp_path):
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "build", "--data", str(demo_dir),
                                 "--as-of", "2025-06-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    customers = pd.read_parquet(demo_dir / "customers.parquet")
    signed_up = (pd.to_datetime(customers["signup_date"]) < "2025-06-01").sum()
    assert len(frame) == signed_up
    assert {"customer_id", "as_of", "days_since_last_purchase", "login_30d",
            "complaints_90d", "segment"} <= set(frame.columns)
    assert f"feature set {FEATURE_SET_VERSION}" in result.output
    assert not list(tmp_path.glob(".*tmp*"))


def test_features_grid_writes_labels(demo_dir, tmp_path):
    out = tmp_path / "grid.parquet"
    result = runner.invoke(app, ["features", "grid", "--data", str(demo_dir), "--first",
                                 "2024-06-01", "--last", "2024-08-01", "--out", str(out),
                                 "--horizon-days", "60", "--clv-horizon-days", "90"])
    assert result.exit_code == 0, result.output
    grid = pd.read_parquet(out)
    assert grid["as_of"].astype(str).nunique() == 3
    assert set(grid["churned"].unique()) <= {0, 1}
    assert (grid["future_spend"] >= 0).all()


def test_features_list_describes_every_feature():
    result = runner.invoke(app, ["features", "list", "--json"])
    assert result.exit_code == 0
    assert "days_since_last_purchase" in result.output and "Days since" in result.output
    features = {f["name"]: f for f in json.loads(result.output)["features"]}
    assert features["days_since_last_purchase"]["role"] == "actionable"
    assert features["season_sin"]["role"] == "context"
    assert features["days_since_last_purchase"]["null_meaning"] == "no purchase yet"
    assert runner.invoke(app, ["features", "list"]).exit_code == 0  # the table prints too


def _bad_sources() -> dict[str, tuple[dict[str, pd.DataFrame], str, str]]:
    missing = tiny_tables()
    missing["transactions"] = missing["transactions"].drop(columns=["amount"])
    wrong_type = tiny_tables()
    wrong_type["transactions"]["amount"] = wrong_type["transactions"]["amount"].map(
        lambda v: "n/a" if v == 20.0 else v)
    bad_ts = tiny_tables()
    bad_ts["events"] = bad_ts["events"].astype({"ts": str})
    bad_ts["events"].loc[0, "ts"] = "2024-13-45 99:00"
    empty = tiny_tables()
    empty["events"] = empty["events"].iloc[0:0]
    unknown = tiny_tables()
    unknown["events"] = pd.concat([unknown["events"], unknown["events"].iloc[[0]].assign(
        customer_id="nobody")], ignore_index=True)
    return {
        "missing column": (missing, "transactions.amount", "required column is missing"),
        "wrong type": (wrong_type, "transactions.amount", "1 row that cannot be parsed as float"),
        "unparseable timestamp": (bad_ts, "events.ts", "1 row that cannot be parsed as timestamp"),
        "empty table": (empty, "events", "is empty"),
        "unknown customer": (unknown, "events.customer_id", "not in the customers table"),
    }


@pytest.mark.parametrize("case", list(_bad_sources()))
def test_bad_input_exits_2_with_a_clear_message_and_no_output(case, tmp_path):
    tables, where, what = _bad_sources()[case]
    src = write_source(tmp_path / "src", tables, "csv")
    out = tmp_path / "out" / "features.parquet"
    result = runner.invoke(app, ["features", "build", "--data", str(src), "--as-of",
                                 "2024-05-01", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert where in result.output and what in result.output
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_bad_date_argument_exits_2(demo_dir, tmp_path):
    result = runner.invoke(app, ["features", "build", "--data", str(demo_dir), "--as-of",
                                 "June 1st", "--out", str(tmp_path / "f.parquet")])
    assert result.exit_code == 2
    assert "--as-of must be a date" in result.output


def test_console_script_runs(demo_dir, tmp_path):
    exe = Path(sys.executable).with_name("churnguard")
    out = tmp_path / "f.csv"
    proc = subprocess.run([str(exe), "features", "build", "--data", str(demo_dir), "--as-of",
                           "2025-01-01", "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["customer_id"].is_unique
