"""A subscription business end to end through the CLI and the HTTP API: `train` picks the
contractual label when the source has subscriptions, the label travels in the bundle and is
shown by `churnguard models` and `/v1/model`, a champion of one label is never compared with
a candidate of another, and the contractual model scores, stages and plans through the API."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from churnguard.cli import app
from tests.cli import cli_ok, registered_versions
from tests.integration.test_api import API_KEY, settings_for

runner = CliRunner()
TRAIN = ["--max-train-cutoffs", "4", "--horizon-days", "30", "--clv-horizon-days", "90"]
CONTRACT_STAGES = {"onboarding", "active", "at_renewal_risk", "cancelled"}

pytestmark = pytest.mark.slow




def test_contractual_model_trains_serves_and_plans(tmp_path: Path,
                                                    embedded_store: Path) -> None:
    data = tmp_path / "saas"
    cli_ok(["demo-data", "--out", str(data), "--customers", "600", "--seed", "2",
         "--subscriptions"])

    out = cli_ok(["train", "--data", str(data), *TRAIN])
    assert "churn (contractual)" in " ".join(out.split())
    assert "sBG" in out  # the contractual baseline beside logistic regression
    assert "contract CLV model" in " ".join(out.split())  # fee x retention, not purchases
    v = registered_versions()
    assert v["1"]["churn_label"] == "contractual, 30 days + 14 grace"
    if "champion" not in v["1"]["aliases"]:  # 600 accounts: few churners for the gate
        cli_ok(["promote", "1", "--force"])
    cli_ok(["models"])  # the table (its "churn label" column) prints too

    # The same data with the non-contractual label forced: a different question, so it is
    # not compared with the contractual champion and stays challenger.
    out = cli_ok(["train", "--data", str(data), *TRAIN, "--noncontractual"])
    v = registered_versions()
    assert v["2"]["churn_label"] == "noncontractual, 30 days"
    assert v["2"]["gate_decision"] == "challenger"
    assert "contractual churn label" in v["2"]["gate_reason"] and "--force" in v["2"][
        "gate_reason"]
    assert "champion" in v["1"]["aliases"]

    bad = runner.invoke(app, ["train", "--data", str(tmp_path / "nothing"), "--contractual"])
    assert bad.exit_code == 2

    # The batch job scores the contractual champion: stages of contracts, CLV from the fee.
    scores_file = tmp_path / "scores.parquet"
    cli_ok(["score", "--data", str(data), "--as-of", "2026-01-01", "--out", str(scores_file)])
    batch = pd.read_parquet(scores_file)
    assert set(batch["lifecycle_stage"]) <= CONTRACT_STAGES
    assert (batch["clv"] >= 0).all() and (batch["clv"] > 0).any()
    assert batch["churn_probability"].between(0, 1).all()

    # Serve the contractual champion on a snapshot as of the data's end.
    snapshot = embedded_store / "features.parquet"
    cli_ok(["features", "build", "--data", str(data), "--as-of", "2026-01-01", "--out",
         str(snapshot)])
    subs = pd.read_parquet(data / "subscriptions.parquet")
    active = subs[subs["end_date"].isna()]["customer_id"].astype(str).unique().tolist()[:40]
    assert len(active) >= 10
    from churnguard.serving.app import create_app

    with TestClient(create_app(settings_for(embedded_store)),
                    headers={"X-API-Key": API_KEY}) as client:
        info = client.get("/v1/model").json()
        assert info["version"] == "1"
        assert info["churn_label"] == {"kind": "contractual", "grace_days": 14}
        assert {"renewal_offer", "renewal_outreach", "plan_rightsizing"} <= {
            a["action_id"] for a in info["policy"]["actions"]}
        resp = client.post("/v1/scores", json={"customers": [
            {"customer_id": c} for c in active]})
        assert resp.status_code == 200, resp.text
        scores = resp.json()["scores"]
        assert len(scores) == len(active) and not resp.json()["errors"]
        assert {s["lifecycle_stage"] for s in scores} <= CONTRACT_STAGES
        assert all(0 <= s["churn_probability"] <= 1 and s["clv"] >= 0 for s in scores)
        assert all(s["horizon_days"] == 30 for s in scores)
        plan = client.post("/v1/campaigns/plan", json={
            "customers": [{"customer_id": c} for c in active], "budget": 200})
        assert plan.status_code == 200, plan.text
        body = plan.json()
        assert body["spend"] <= 200 + 1e-9
        assert len(body["assignments"]) + len(body["untargeted"]) == len(active)
