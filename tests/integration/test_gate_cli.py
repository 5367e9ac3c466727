"""The promotion gate through the CLI (README, "Promotion"): too short a history is refused
with the days it needs, a tiny data set never becomes champion, and a champion of another
horizon is not compared with."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnguard.cli import app
from tests.cli import cli_ok, registered_versions

runner = CliRunner()

pytestmark = pytest.mark.slow




def test_nine_months_is_too_short_to_train(tmp_path: Path, embedded_store: Path) -> None:
    data = tmp_path / "d9"
    cli_ok(["demo-data", "--out", str(data), "--customers", "30", "--start", "2025-04-01",
         "--end", "2025-12-31"])
    short = runner.invoke(app, ["train", "--data", str(data)])
    assert short.exit_code == 2, short.output
    text = " ".join(short.output.split())
    assert "not enough history" in text and "needs at least" in text and " days" in text
    assert "--clv-horizon-days" in text
    assert "no versions" in cli_ok(["models"])


def test_eighteen_months_of_thirty_customers_stay_challenger(tmp_path: Path,
                                                             embedded_store: Path) -> None:
    data = tmp_path / "d18"
    cli_ok(["demo-data", "--out", str(data), "--customers", "30", "--start", "2024-07-01",
         "--end", "2025-12-31"])
    out = " ".join(cli_ok(["train", "--data", str(data)]).split())
    assert "registered churnguard v1 (challenger:" in out
    assert "churners and" in out and "non-churners among" in out and "at least 50" in out
    v = registered_versions()
    assert v["1"]["gate_decision"] == "challenger" and v["1"]["aliases"] == ["challenger"]
    assert "CHURNGUARD_GATE_MIN_POSITIVES" in v["1"]["gate_reason"]
    refused = runner.invoke(app, ["promote", "1"])
    assert refused.exit_code == 2 and "--force" in refused.output


def test_a_champion_of_another_horizon_is_not_compared(tmp_path: Path,
                                                       embedded_store: Path) -> None:
    data = tmp_path / "demo"
    cli_ok(["demo-data", "--out", str(data), "--customers", "400", "--seed", "5",
         "--start", "2023-06-01", "--end", "2025-06-30"])
    common = ["--max-train-cutoffs", "3", "--clv-horizon-days", "90"]
    cli_ok(["train", "--data", str(data), "--horizon-days", "90", *common])
    cli_ok(["promote", "1", "--force"])
    cli_ok(["train", "--data", str(data), "--horizon-days", "60", *common])
    v = registered_versions()
    assert v["2"]["gate_decision"] == "challenger"
    reason = v["2"]["gate_reason"]
    assert "champion v1 predicts churn over 90 days" in reason and "over 60 days" in reason
    assert "promote VERSION --force" in reason
    assert "champion" in v["1"]["aliases"]
    cli_ok(["promote", "2", "--force"])
    assert "champion" in registered_versions()["2"]["aliases"]
