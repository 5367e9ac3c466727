"""demo-data → train → models → promote → score through the CLI, on the embedded MLflow store."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnguard.cli import app
from tests.cli import cli_ok, registered_versions
from tests.scoring import score_frame

runner = CliRunner()
TRAIN = ["--max-train-cutoffs", "3", "--horizon-days", "60", "--clv-horizon-days", "90"]




def test_train_promote_score(tmp_path: Path, embedded_store: Path) -> None:
    data = tmp_path / "demo"
    cli_ok(["demo-data", "--out", str(data), "--customers", "400", "--seed", "5",
         "--start", "2023-06-01", "--end", "2025-06-30"])

    out = cli_ok(["train", "--data", str(data), *TRAIN])
    assert "registered churnguard v1" in out
    assert "AUC active" in out  # ROC AUC among customers who bought in the last year
    assert (embedded_store / "mlflow.db").is_file()
    assert any((embedded_store / "mlartifacts").rglob("bundle.json"))
    v = registered_versions()
    assert v["1"]["gate_reason"]
    if v["1"]["gate_decision"] == "challenger":  # 400 customers rarely beat the baselines
        cli_ok(["promote", "1", "--force"])
        v = registered_versions()
    assert v["1"]["aliases"] == ["challenger", "champion"]
    assert 0.5 < v["1"]["metrics"]["test_churn_roc_auc"] <= 1.0
    # Each key metric with its 95 % bootstrap interval, stored with the run.
    low, high = v["1"]["intervals"]["test_churn_roc_auc"]
    assert low <= v["1"]["metrics"]["test_churn_roc_auc"] <= high

    # A second version, trained a month earlier, goes through the gate against v1.
    out = cli_ok(["train", "--data", str(data), "--as-of", "2025-06-01", *TRAIN,
               "--min-uplift-customers", "20", "--seed", "4"])
    assert "registered churnguard v2" in out
    v = registered_versions()
    assert "challenger" in v["2"]["aliases"] and "challenger" not in v["1"]["aliases"]
    assert v["2"]["gate_reason"]
    champion = "2" if v["2"]["gate_decision"] == "champion" else "1"
    assert "champion" in v[champion]["aliases"]

    if champion == "1":
        refused = runner.invoke(app, ["promote", "2"])
        assert refused.exit_code == 2 and "--force" in refused.output
    cli_ok(["promote", "2", "--force"])
    v = registered_versions()
    assert "champion" in v["2"]["aliases"] and "champion" not in v["1"]["aliases"]
    table = cli_ok(["models"])
    assert "registered model churnguard" in table
    assert "95 % bootstrap interval" in table
    assert "v2 (as of 2025-06-01, test cutoff" in table
    assert "v1 (as of 2025-07-01, test cutoff" in table

    scores_file = tmp_path / "scores.parquet"
    cli_ok(["score", "--data", str(data), "--as-of", "2025-07-01", "--out", str(scores_file)])
    scores = pd.read_parquet(scores_file)
    customers = pd.read_parquet(data / "customers.parquet")
    population = customers[pd.to_datetime(customers["signup_date"]) < pd.Timestamp("2025-07-01")]
    assert sorted(scores["customer_id"]) == sorted(population["customer_id"])
    assert {"customer_id", "as_of", "churn_probability", "clv", "model_version"} <= set(scores)
    assert (scores["model_version"] == "2").all()
    assert scores["churn_probability"].between(0, 1).all() and (scores["clv"] >= 0).all()

    csv_file = tmp_path / "scores_v1.csv"
    cli_ok(["score", "--data", str(data), "--as-of", "2025-07-01", "--out", str(csv_file),
         "--model", "models:/churnguard/1"])
    v1 = pd.read_csv(csv_file)
    assert (v1["model_version"] == 1).all() and len(v1) == len(scores)

    # The registered pyfunc scores exactly like the bundle behind it, on raw feature rows
    # (int64 counts, NaN recency, string categories) as build_features returns them.
    import mlflow

    from churnguard.features.build import build_features
    from churnguard.features.sources import open_source
    from churnguard.model.registry import Tracking, load_bundle

    Tracking.resolve(embedded_store).activate()
    bundle, version = load_bundle("models:/churnguard@champion")
    assert version == "2"
    # v2 measured the effects with enough hold-out customers from the campaign log; the rest
    # kept the catalog's priors, and the run logged every estimate.
    sources = {a.id: a.effect_source for a in bundle.policy_obj().actions}
    assert sources["winback_offer"].startswith("campaign log: n_treated=")
    assert sources["vip_outreach"] == "catalog prior"
    run_id = bundle.metadata["run_id"]
    effects = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="action_effects.json", dst_path=str(tmp_path))).read_text())
    assert {a["action_id"]: a["source"] for a in effects["actions"]} == sources
    assert effects["min_customers"] == 20 and effects["as_of"] == "2025-06-01"
    run = mlflow.get_run(run_id)
    assert "effect_winback_offer" in run.data.metrics
    # Ranking among customers active at the test cutoff, churnguard and logistic regression.
    for key in ("test_churn_roc_auc_active_365d", "test_baseline_logreg_churn_roc_auc_active_365d"):
        assert 0.0 <= run.data.metrics[key] <= 1.0, key
    assert 0.0 < run.data.metrics["test_churn_active_share_365d"] <= 1.0
    report = Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="report/report.html", dst_path=str(tmp_path))).read_text()
    assert "roc_auc_active_365d" in report and "here at most" in report
    # Intervals under the values, and churnguard minus each baseline, paired.
    assert 'class="ci"' in report and "Differences to the baselines (paired bootstrap)" in report
    m = run.data.metrics
    assert m["test_churn_log_loss_lo"] <= m["test_churn_log_loss"] <= m["test_churn_log_loss_hi"]
    assert "test_churn_log_loss_diff_logreg_lo" in m
    # churnguard minus every baseline that was fitted (BG/NBD may not converge on 400 customers)
    for metric, diff in (("logreg_churn_log_loss", "test_churn_log_loss_diff_logreg_lo"),
                         ("btyd_churn_log_loss", "test_churn_log_loss_diff_btyd_lo"),
                         ("btyd_clv_rmse", "test_clv_rmse_diff_btyd_hi")):
        assert (f"test_baseline_{metric}" in m) == (diff in m), diff
    if "gate_logistic_regression_churn_log_loss_gain_low" in m:  # the gate read the same draws
        assert m["gate_logistic_regression_churn_log_loss_gain_low"] == pytest.approx(
            -m["test_churn_log_loss_diff_logreg_hi"])
    assert run.data.params["seed"] == "4" and run.data.params["xgb_random_state"] == "4"
    # Logged from code: the version holds no pickle, and MLflow's own loader runs the pyfunc.
    model_files = Path(mlflow.artifacts.download_artifacts(
        "models:/churnguard@champion", dst_path=str(tmp_path / "version")))
    assert not list(model_files.rglob("*.pkl")), list(model_files.rglob("*.pkl"))
    pyfunc = mlflow.pyfunc.load_model("models:/churnguard@champion")
    with open_source(data) as source:
        feats = build_features(source, bundle.spec, date(2025, 7, 1)).to_pandas()
    cols = ["customer_id", *bundle.feature_names]
    via_pyfunc = pyfunc.predict(feats[cols])
    direct = score_frame(bundle, feats)
    for col in ("churn_probability", "clv", "p_buy"):
        assert via_pyfunc[col].to_numpy() == pytest.approx(direct[col].to_numpy(), rel=1e-6)
    merged = scores.merge(direct, on="customer_id", suffixes=("", "_direct"))
    assert merged["clv"].to_numpy() == pytest.approx(merged["clv_direct"].to_numpy())


def test_bad_requests_fail_clearly(tmp_path: Path, embedded_store: Path) -> None:
    data = tmp_path / "demo"
    cli_ok(["demo-data", "--out", str(data), "--customers", "50", "--seed", "1",
         "--start", "2025-01-01", "--end", "2025-06-30"])
    short = runner.invoke(app, ["train", "--data", str(data), "--clv-horizon-days", "120"])
    assert short.exit_code == 2
    assert "not enough history" in short.output
    missing = runner.invoke(app, ["promote", "7"])
    assert missing.exit_code == 2 and "no version 7" in missing.output
    no_model = runner.invoke(app, ["score", "--data", str(data), "--as-of", "2025-06-01",
                                   "--out", str(tmp_path / "s.parquet")])
    assert no_model.exit_code == 1 and "cannot load model" in no_model.output
    assert not (tmp_path / "s.parquet").exists()
    bad_out = runner.invoke(app, ["score", "--data", str(data), "--as-of", "2025-06-01",
                                  "--out", str(tmp_path / "s.json")])
    assert bad_out.exit_code == 2


def test_train_rejects_a_bad_catalog_or_campaign_log(tmp_path: Path,
                                                     embedded_store: Path) -> None:
    data = tmp_path / "demo"
    cli_ok(["demo-data", "--out", str(data), "--customers", "50", "--seed", "1",
         "--start", "2024-06-01", "--end", "2025-06-30"])
    missing = runner.invoke(app, ["train", "--data", str(data), "--actions",
                                  str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml does not exist" in missing.output
    # A catalog without the campaign log's winback_offer: training stops before fitting.
    catalog = tmp_path / "actions.yaml"
    catalog.write_text("actions:\n  - {id: care_email, name: Care, cost: 0.1, effect: 0.05}\n"
                       "  - {id: exclusive_offer, name: Offer, cost: 5, effect: 0.1}\n"
                       "  - {id: loyalty_bonus, name: Bonus, cost: 3, effect: 0.1}\n"
                       "  - {id: satisfaction_survey, name: Survey, cost: 5, effect: 0.1}\n"
                       "  - {id: vip_outreach, name: VIP, cost: 35, effect: 0.3}\n")
    unknown = runner.invoke(app, ["train", "--data", str(data), "--actions", str(catalog)])
    assert unknown.exit_code == 2, unknown.output
    assert "'winback_offer' (" in unknown.output and "not in the action catalog" in unknown.output


def _leaf_commands() -> list[list[str]]:
    """Every command of the CLI, as the words that name it (``["features", "list"]``)."""
    import typer

    found: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group (typer's click)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            found.append(path)

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_has_help_with_an_example() -> None:
    commands = _leaf_commands()
    assert ["features", "list"] in commands and ["score"] in commands and len(commands) >= 10
    for words in commands:
        text = cli_ok([*words, "--help"])
        assert "Example" in text, f"churnguard {' '.join(words)} --help has no example"
        assert f"churnguard {words[0]}" in text, words  # the example is a real command line
