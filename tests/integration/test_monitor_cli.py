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
    from churnguard.model.profile import reference_profile
    from churnguard.model.pyfunc import ChurnguardPyfunc
    from churnguard.model.score import score_matrix

    root = tmp_path_factory.mktemp("monitored")
    bundle = ScoringBundle.load(fake_bundle.save(root / "copy"))
    full = score_matrix(bundle, bundle.encode(fake_features), drivers=False)
    bundle.metadata["reference_profile"] = reference_profile(
        fake_features, {f.name: f.kind for f in bundle.spec.features()}, bundle.levels,
        churn_probability=full.churn_probability, clv=full.clv,
        snapshot=bundle.metadata["as_of"])
    bundle.metadata["test_roc_auc"] = 0.8
    bundle.save(root / "bundle")
    mlflow.pyfunc.save_model(str(root / "pyfunc"), python_model=ChurnguardPyfunc(),
                             artifacts={"bundle": str(root / "bundle")})
    return str(root / "pyfunc")


def _monitor(data: Path, model: str, as_of: date, out: Path) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["monitor", "--data", str(data), "--as-of", as_of.isoformat(),
                                 "--model", model, "--out", str(out)])
    assert result.exit_code in (0, EXIT_ALERT), result.output
    report = json.loads((out / "monitor.json").read_text())
    assert (result.exit_code == EXIT_ALERT) == (report["verdict"] == "alert"), result.output
    return result.exit_code, report


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
        small_demo_dir: Path, profiled_model: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from churnguard.features.build import label_sql
    from churnguard.features.sources import open_source

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
    _, report = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m1")
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

    assert runner.invoke(app, score).exit_code == 0  # the same batch again
    _, again = _monitor(small_demo_dir, profiled_model, as_of, tmp_path / "m2")
    assert again["realized"] == report["realized"]
    assert np.isfinite(run["pr_auc"])
