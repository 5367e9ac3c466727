"""Plots are written as real PNGs and the HTML report carries the numbers and inlined images."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from churnguard.model.evaluate import churn_metrics, clv_metrics, decile_calibration
from churnguard.training.report import (
    MetricsTable,
    Section,
    churn_plots,
    clv_plots,
    decile_table,
    html_report,
    importance_plot,
    standard_sections,
    write_html_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def churn_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=400)
    y = (rng.uniform(size=400) < p).astype(int)
    baseline = np.clip(p + rng.normal(0, 0.3, size=400), 0, 1)
    return y, p, baseline


def _assert_pngs(paths: list[Path], names: list[str]) -> None:
    assert [p.name for p in paths] == names
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC), p
        assert len(data) > 5_000, p  # a labelled chart, not an empty canvas


def test_churn_plots_write_four_pngs(tmp_path: Path, churn_data: tuple) -> None:
    y, p, baseline = churn_data
    paths = churn_plots(y, {"churnguard": p, "logistic regression": baseline}, tmp_path / "a")
    _assert_pngs(
        paths, ["churn_roc.png", "churn_pr.png", "churn_reliability.png", "churn_gains.png"]
    )
    single = churn_plots(y, p, tmp_path / "b", prefix="holdout")
    assert single[0].name == "holdout_roc.png"


def test_churn_plots_reject_bad_input(tmp_path: Path, churn_data: tuple) -> None:
    y, p, _ = churn_data
    with pytest.raises(ValueError, match="has 400 values but p has 399"):
        churn_plots(y, p[:-1], tmp_path)
    with pytest.raises(ValueError, match="empty"):
        churn_plots(y, {}, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_clv_plots_write_two_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    spend = rng.gamma(0.5, 100.0, size=300) * (rng.uniform(size=300) < 0.6)
    pred = spend * rng.lognormal(0, 0.5, size=300)
    paths = clv_plots(spend, {"churnguard": pred, "mean": np.full(300, spend.mean())}, tmp_path)
    _assert_pngs(paths, ["clv_deciles.png", "clv_scatter.png"])


def test_importance_plot(tmp_path: Path) -> None:
    imp = {f"f{i}": float(i) for i in range(30)} | {"recency_days": -40.0}
    path = importance_plot(imp, tmp_path, {"recency_days": "Days since the last order"}, top_n=5)
    _assert_pngs([path], ["feature_importance.png"])
    with pytest.raises(ValueError, match="empty"):
        importance_plot({}, tmp_path)
    with pytest.raises(ValueError, match="1 non-finite value"):
        importance_plot({"a": 1.0, "b": float("nan")}, tmp_path)


def test_html_report_contains_metrics_images_and_context(tmp_path: Path, churn_data: tuple) -> None:
    y, p, baseline = churn_data
    churn = {"churnguard": churn_metrics(y, p), "logistic regression": churn_metrics(y, baseline)}
    spend = np.array([10.0, 0, 0, 5, 0, 0, 0, 0, 0, 5])
    clv = {"churnguard": clv_metrics(spend, [8.0, 1, 1, 9, 1, 1, 1, 1, 1, 2])}
    images = churn_plots(y, {"churnguard": p, "logistic regression": baseline}, tmp_path)
    sections = standard_sections(churn=churn, clv=clv, churn_images=images)
    out = write_html_report(
        tmp_path / "out" / "report.html",
        "churnguard <holdout> report",
        sections,
        context={"cutoff": "2024-07-01", "horizon": "90 days"},
        notes=["Synthetic data."],
        generated_at=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
    )
    doc = out.read_text(encoding="utf-8")
    assert doc.count('<img src="data:image/png;base64,') == 4
    # the embedded image is the PNG itself, so the file stands alone
    first = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    assert first is not None
    assert base64.b64decode(first.group(1)) == images[0].read_bytes()
    # metric values as rendered (4 decimals), model columns, context, notes
    assert f"{churn['churnguard']['roc_auc']:.4f}" in doc
    assert f"{churn['logistic regression']['roc_auc']:.4f}" in doc
    assert "0.3000" in doc  # CLV total_error (26 - 20) / 20
    assert "0.2500" in doc  # CLV top10_spend_share
    for text in ("logistic regression", "2024-07-01", "90 days", "Synthetic data.", "how to read"):
        assert text in doc
    assert "&lt;holdout&gt;" in doc and "<holdout>" not in doc  # titles are escaped
    assert "2025-01-02 03:04" in doc


def test_report_shows_clv_deciles_deviance_and_an_infinite_deviance() -> None:
    spend = np.array([10.0, 0, 0, 5, 0, 0, 0, 0, 0, 5])
    pred = np.array([8.0, 1, 1, 9, 1, 1, 1, 1, 1, 2])
    zero = np.array([8.0, 1, 1, 0, 1, 1, 1, 1, 1, 2])  # 0 for a customer who spent 5
    clv = {"churnguard": clv_metrics(spend, pred), "BG/NBD": clv_metrics(spend, zero)}
    deciles = decile_calibration(spend, pred, n_bins=5).to_dict("list")
    doc = html_report("r", standard_sections(clv=clv, clv_tables=[decile_table(deciles)]))
    for text in ("poisson_deviance", "decile_calibration_error", "decile 5", "mean actual",
                 "∞"):
        assert text in doc
    assert "8.5000" in doc  # decile 5's mean prediction (8 + 9) / 2
    assert f"<b>{clv['churnguard']['poisson_deviance']:.4f}</b>" in doc  # finite beats ∞


def test_html_report_bolds_the_best_model_per_row() -> None:
    table = MetricsTable(
        "Churn",
        {
            "churnguard": {"roc_auc": 0.81, "log_loss": 0.40, "n": 1000},
            "BG/NBD": {"roc_auc": 0.74, "log_loss": 0.38, "n": 1000},
        },
    )
    doc = html_report("r", [Section("Headline", tables=[table])])
    assert "<b>0.8100</b>" in doc and "<b>0.7400</b>" not in doc  # higher AUC is better
    assert "<b>0.3800</b>" in doc and "<b>0.4000</b>" not in doc  # lower log loss is better
    assert "<b>1,000</b>" not in doc and "1,000" in doc  # counts have no "best"


def test_capture_and_lift_guides_give_random_and_the_best_possible() -> None:
    """Random targeting captures 0.10 of the churners whatever the base rate; a perfect ranking
    min(1, 0.10 / base rate), and lift at most min(10, 1 / base rate): with churn common (60 %)
    even a perfect model captures only 0.17 and lifts 1.67, and the guide says so."""
    common = {"churnguard": {"roc_auc": 0.9, "lift_at_10": 1.6, "capture_at_10": 0.16,
                             "base_rate": 0.6, "n": 100}}
    doc = html_report("r", standard_sections(churn=common))
    assert "random targeting reaches 0.10 of them whatever the base rate" in doc
    assert "min(1, 0.10 ÷ base_rate)" in doc and "(here at most 0.17)" in doc
    assert "1 = random" in doc and "min(10, 1 ÷ base_rate)" in doc
    assert "(here at most 1.67)" in doc
    rare = {"churnguard": {"lift_at_10": 5.0, "capture_at_10": 0.5, "base_rate": 0.05}}
    doc = html_report("r", standard_sections(churn=rare))
    assert "(here at most 1.00)" in doc and "(here at most 10.00)" in doc


def test_churn_table_shows_roc_auc_among_active_customers_next_to_roc_auc(
        churn_data: tuple) -> None:
    from churnguard.model.evaluate import active_churn_metrics

    y, p, _ = churn_data
    recency = np.where(np.arange(y.size) % 4 == 0, 500.0, 30.0)
    metrics = {**churn_metrics(y, p), **active_churn_metrics(y, p, recency)}
    doc = html_report("r", standard_sections(churn={"churnguard": metrics}))
    rows = re.findall(r"<tr><th>([a-z0-9_]+)</th>", doc)[1:]  # after the header
    assert rows[:2] == ["roc_auc", "roc_auc_active_365d"]
    assert {"active_share_365d", "base_rate_active_365d", "n"} <= set(rows)
    assert f"{metrics['roc_auc_active_365d']:.4f}" in doc
    assert "purchase in the 365 days before the cutoff" in doc


def test_html_report_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one section"):
        html_report("r", [])
    not_png = tmp_path / "x.png"
    not_png.write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match="not a PNG"):
        html_report("r", [Section("s", images=[not_png])])
    with pytest.raises(ValueError, match="no models"):
        html_report("r", [Section("s", tables=[MetricsTable("t", {})])])


def test_importing_report_has_no_plotting_side_effects() -> None:
    code = "import sys, churnguard.training.report; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_report_shows_intervals_and_bolds_only_wins_beyond_noise(churn_data: tuple) -> None:
    """Every value carries its bootstrap interval; a best value is bold only when the paired
    interval of its difference to every other model excludes 0, so a near-tie is not a win;
    the differences section says better / worse / within noise."""
    from churnguard.training.bootstrap import CHURN_METRICS, bootstrap

    y, p, baseline = churn_data
    y = y.astype(float)
    twin = np.clip(p + 1e-4, 0, 1)  # a near-copy of churnguard: every difference is noise
    preds = {"churnguard": p, "twin": twin, "noisy": baseline}
    churn = {name: churn_metrics(y, q) for name, q in preds.items()}
    boot = bootstrap(y, preds, CHURN_METRICS, resamples=200)
    doc = html_report("r", standard_sections(churn=churn, churn_bootstrap=boot))
    low, high = boot.interval("churnguard", "roc_auc")
    assert f'<span class="ci">[{low:.4f}, {high:.4f}]</span>' in doc
    assert "200 resamples" in doc and "Efron &amp; Tibshirani 1993" in doc
    # churnguard and its twin tie within noise: neither is bold on log loss or ROC AUC.
    best_auc = max(churn[m]["roc_auc"] for m in ("churnguard", "twin"))
    assert f"<b>{best_auc:.4f}</b>" not in doc
    assert "<b>" not in re.search(r"<tr><th>log_loss</th>.*?</tr>", doc).group(0)
    # Against the noisy baseline alone it wins beyond noise, and is bold.
    solo = {m: churn[m] for m in ("churnguard", "noisy")}
    doc2 = html_report("r", standard_sections(churn=solo, churn_bootstrap=boot))
    assert f"<b>{churn['churnguard']['roc_auc']:.4f}</b>" in doc2
    # The differences section: churnguard minus each baseline, paired.
    assert "Differences to the baselines (paired bootstrap)" in doc
    assert "churnguard − twin" in doc and "churnguard − noisy" in doc
    diff_rows = re.search(r"Churn: churnguard − baseline.*?</table>", doc, re.S).group(0)
    auc_row = re.search(r"<tr><th>roc_auc</th>.*?</tr>", diff_rows).group(0)
    assert "equal" in auc_row and "better" in auc_row  # the twin ranks exactly alike
    loss_row = re.search(r"<tr><th>log_loss</th>.*?</tr>", diff_rows).group(0)
    assert "within noise" in loss_row
    assert "<tr><th>base_rate</th>" not in diff_rows  # the same for every model


def test_report_without_a_bootstrap_keeps_plain_values() -> None:
    table = MetricsTable("Churn", {"a": {"roc_auc": 0.81}, "b": {"roc_auc": 0.80}})
    doc = html_report("r", [Section("Headline", tables=[table])])
    assert "<b>0.8100</b>" in doc and 'class="ci"' not in doc


def test_lift_chart_caption_and_guide_give_the_maximum_achievable_lift() -> None:
    from churnguard.model.evaluate import max_capture, max_lift
    from churnguard.training.report import PLOT_GUIDE

    # At base rate r the top fraction k holds at most min(k, r) churners: lift min(k, r)/(k r).
    assert max_lift(0.1, 0.55) == pytest.approx(1 / 0.55)
    assert max_lift(0.1, 0.05) == pytest.approx(10.0)
    assert max_lift(1.0, 0.3) == pytest.approx(1.0)
    assert max_capture(0.1, 0.05) == 1.0 and max_capture(0.1, 0.5) == pytest.approx(0.2)
    assert "min(k, r) ÷ (k·r)" in PLOT_GUIDE["churn_gains"]
    assert "perfect ranking" in PLOT_GUIDE["churn_gains"]
