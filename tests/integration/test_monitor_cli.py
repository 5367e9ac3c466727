"""``churnguard monitor`` through the CLI: no drift on the reference snapshot itself, and the
realized performance of a logged batch run equals the metrics computed straight from the
data's labels, unchanged by a re-run of the batch."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnguard.cli import EXIT_ALERT, app

runner = CliRunner()
T0 = date(2025, 3, 1)


@pytest.fixture(scope="module")
def profiled_model(fake_bundle: Any, fake_features: pd.DataFrame,
                   tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fake-fit bundle with the reference profile training gives a bundle (of the fake
    features it was fitted on), as a local pyfunc model."""
    import mlflow.pyfunc

    from churnguard.model.bundle import ScoringBundle
    from churnguard.model.pyfunc import ChurnguardPyfunc
    from tests.scoring import with_reference_profile

    root = tmp_path_factory.mktemp("monitored")
    bundle = with_reference_profile(ScoringBundle.load(fake_bundle.save(root / "copy")),
                                    fake_features, fake_bundle.metadata["as_of"])
    bundle.metadata["test_roc_auc"] = 0.8
    bundle.save(root / "bundle")
    mlflow.pyfunc.save_model(str(root / "pyfunc"), python_model=ChurnguardPyfunc(),
                             artifacts={"bundle": str(root / "bundle")})
    return str(root / "pyfunc")


def _monitor(data: Path, model: str, as_of: date, out: Path, *args: str
             ) -> tuple[int, dict[str, Any]]:
    code, report, _ = _monitor_output(data, model, as_of, out, *args)
    return code, report


def _monitor_output(data: Path, model: str, as_of: date, out: Path, *args: str
                    ) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["monitor", "--data", str(data), "--as-of", as_of.isoformat(),
                                 "--model", model, "--out", str(out), *args])
    assert result.exit_code in (0, EXIT_ALERT), result.output
    report = json.loads((out / "monitor.json").read_text())
    assert (result.exit_code == EXIT_ALERT) == (report["verdict"] == "alert"), result.output
    assert (out / "monitor.html").is_file(), result.output
    return result.exit_code, report, result.output


def test_no_drift_on_the_reference_snapshot(small_demo_dir: Path, profiled_model: str,
                                            fake_bundle: Any, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path / "log"))
    as_of = date.fromisoformat(fake_bundle.metadata["as_of"])
    _, report = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m")
    assert report["verdict"] == "ok" and report["realized"] == []
    # Not exactly 0: DuckDB sums floats in parallel, so a spend total may differ from the
    # reference's in its last bit and cross a decile edge it sat on.
    assert max(f["psi"] for f in report["features"]) < 1e-3, report["features"][:3]
    assert report["score"]["psi"] < 1e-3
    assert {"verdict", "as_of", "model_version", "features", "score", "estimated",
            "realized"} <= set(report)
    assert {"name", "psi", "null_rate", "reference_null_rate", "status"} == set(
        report["features"][0])
    assert 0 < report["estimated"]["churn_rate"] < 1
    # The calendar is one value per snapshot: not a drift signal.
    assert "season_sin" in report["not_compared"]
    assert "season_sin" not in {f["name"] for f in report["features"]}
    # An older population (fewer, younger customers) drifts in its ages.
    _, old = _monitor(small_demo_dir, profiled_model, date(2024, 1, 1), tmp_path / "old")
    top = old["features"][0]
    assert top["psi"] > 0.1 and top["status"] in ("warn", "alert")
    assert old["verdict"] in ("warn", "alert")


def test_realized_performance_equals_the_labels_and_survives_a_rerun(
        small_demo_dir: Path, profiled_model: str, tmp_path: Path, embedded_store: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from churnguard.features.build import label_sql
    from churnguard.features.sources import open_source
    from churnguard.model.registry import Tracking

    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path / "log"))
    scores = tmp_path / "scores.parquet"
    score = ["score", "--data", str(small_demo_dir), "--as-of", T0.isoformat(), "--out",
             str(scores), "--model", profiled_model, "--no-drivers"]
    assert runner.invoke(app, score).exit_code == 0
    as_of = T0 + timedelta(days=95)
    # The window is still open the day before it closes: nothing realized yet.
    _, early = _monitor(small_demo_dir, profiled_model, T0 + timedelta(days=89),
                        tmp_path / "early")
    assert early["realized"] == []
    _, report = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m1", "--mlflow")
    [run] = report["realized"]
    with open_source(small_demo_dir) as source:
        labels = source.con.sql(label_sql(T0, 90, 120)).to_df()
    joined = pd.read_parquet(scores).merge(labels, on="customer_id")
    y = joined["churned"].to_numpy(float)
    p = joined["churn_probability"].to_numpy(float)
    assert run["scored_as_of"] == T0.isoformat() and run["n"] == len(joined)
    q = np.clip(p, np.finfo(float).eps, 1 - np.finfo(float).eps)
    assert run["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert run["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-9)
    assert run["log_loss"] == pytest.approx(
        -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)), abs=1e-9)
    bins = np.minimum(np.ceil(p * 10).astype(int) - 1, 9).clip(0)  # right-closed bins
    ece = sum((bins == b).mean() * abs(y[bins == b].mean() - p[bins == b].mean())
              for b in range(10) if (bins == b).any())
    assert run["ece"] == pytest.approx(ece, abs=1e-9)
    # Per value tier and lifecycle stage, the groups add up to the run.
    for key in ("by_value_tier", "by_lifecycle_stage"):
        assert run[key] and sum(g["n"] for g in run[key]) == run["n"]
    tiers = joined.groupby("value_tier")
    for g in run["by_value_tier"]:
        part = tiers.get_group(g["group"])
        assert g["churn_rate"] == pytest.approx(part["churned"].mean(), abs=1e-12)
    assert 0 < run["estimated"]["churn_rate"] < 1
    assert sum(c["n"] for c in run["reliability"]) == run["n"]
    assert run["clv_total_error"] is None  # the 120-day CLV window is still open
    # The reliability bins are the calibration error's; the MLflow run has the run's metrics.
    assert run["ece"] == pytest.approx(sum(
        b["n"] / run["n"] * abs(b["observed_rate"] - b["mean_predicted"])
        for b in run["reliability"]), abs=1e-12)
    client = Tracking.resolve(embedded_store).client()
    [logged] = client.search_runs(
        [client.get_experiment_by_name("churnguard-monitoring").experiment_id])
    assert logged.data.metrics["realized_roc_auc"] == pytest.approx(run["roc_auc"])
    assert logged.data.metrics["realized_ece"] == pytest.approx(run["ece"])
    assert logged.data.tags["churnguard.realized_scored_as_of"] == T0.isoformat()

    assert runner.invoke(app, score).exit_code == 0  # the same batch again
    _, again = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m2")
    assert again["realized"] == report["realized"]
    assert np.isfinite(run["pr_auc"])


def test_monitor_writes_the_page_and_a_monitoring_run(
        small_demo_dir: Path, profiled_model: str, fake_bundle: Any, tmp_path: Path,
        embedded_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from churnguard.model.registry import Tracking

    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path / "log"))
    as_of = date.fromisoformat(fake_bundle.metadata["as_of"])
    # A local model and no tracking store: the page, and no store created for it.
    _, report = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "local")
    page = (tmp_path / "local" / "monitor.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "verdict: ok" in page
    assert len(report["score"]["current_shares"]) == len(report["score"]["edges"]) + 1
    assert not (embedded_store / "mlflow.db").exists()

    # --mlflow creates the embedded store and logs the run there.
    code, report = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m", "--mlflow")
    client = Tracking.resolve(embedded_store).client()
    exp = client.get_experiment_by_name("churnguard-monitoring")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["churnguard.run_kind"] == "monitoring"
    assert tags["churnguard.model_version"] == report["model_version"] == profiled_model
    assert tags["churnguard.model_name"] == "churnguard"
    assert tags["churnguard.verdict"] == report["verdict"] and tags["as_of"] == report["as_of"]
    assert metrics["score_psi"] == pytest.approx(report["score"]["psi"])
    assert metrics["max_feature_psi"] == pytest.approx(report["features"][0]["psi"])
    assert metrics["estimated_roc_auc"] == pytest.approx(report["estimated"]["roc_auc"])
    assert {"clv_psi", "estimated_churn_rate", "estimated_log_loss"} <= set(metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"monitor.json",
                                                                         "monitor.html"}
    # Now that the store exists, the default logs too; a failure to log only warns.
    _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m2")
    assert len(client.search_runs([exp.experiment_id])) == 2

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("tracking server down")

    monkeypatch.setattr("churnguard.serving.monitor_report.log_monitoring_run", broken)
    again, _, output = _monitor_output(small_demo_dir, profiled_model, as_of, tmp_path / "m3")
    assert again == code
    assert "warning:" in output and "tracking server down" in output, output
    _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m4", "--no-mlflow")
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_chunks_add_up_to_the_whole(small_demo_dir: Path, profiled_model: str,
                                    tmp_path: Path) -> None:
    """The monitor keeps counts per chunk: three chunks give the report of one."""
    from churnguard.features.build import build_features
    from churnguard.features.sources import open_source
    from churnguard.model.registry import load_bundle
    from churnguard.serving.monitor import monitor

    bundle, version = load_bundle(profiled_model)
    as_of = T0 + timedelta(days=30)
    with open_source(small_demo_dir) as source:
        whole = monitor(source, bundle, version, as_of=as_of, log_root=tmp_path / "log")
        frame = build_features(source, bundle.spec, as_of).to_pandas()
        parts = np.array_split(np.arange(len(frame)), 3)
        steps: list[tuple[int, int]] = []
        chunked = monitor(source, bundle, version, as_of=as_of, log_root=tmp_path / "log",
                          features_as_of=(frame.iloc[i] for i in parts),
                          progress=lambda d, t: steps.append((d, t)))
    assert chunked["customers"] == whole["customers"] == len(frame)
    # Not exactly equal: DuckDB sums floats in parallel (see the first test).
    psi = {f["name"]: f["psi"] for f in whole["features"]}
    assert all(abs(f["psi"] - psi[f["name"]]) < 1e-3 for f in chunked["features"])
    assert chunked["score"]["psi"] == pytest.approx(whole["score"]["psi"], abs=1e-3)
    assert steps[-1][0] == steps[-1][1] and len(steps) == steps[-1][1]


def test_monitor_records_its_verdict_for_the_api(small_demo_dir: Path, profiled_model: str,
                                                fake_bundle: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from churnguard.serving.monitor_state import last_verdict

    state = tmp_path / "state" / "last_verdict.json"
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setenv("CHURNGUARD_MONITOR_STATE_PATH", str(state))
    _, report = _monitor(small_demo_dir, profiled_model, date(2024, 1, 1), tmp_path / "m",
                         "--no-mlflow")
    v = last_verdict(state)
    assert v is not None and v["verdict"] == report["verdict"]
    assert v["as_of"] == report["as_of"] and v["model_version"] == report["model_version"]
    assert v["reasons"] == report["reasons"][:10]
    assert v["score_psi"] == pytest.approx(report["score"]["psi"])
    assert v["report_path"] == str((tmp_path / "m" / "monitor.json").resolve())
