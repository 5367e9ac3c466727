"""Plots and a self-contained one-page HTML report for the churn and CLV models.

The plotting functions write labelled PNGs and return their paths; :func:`html_report` turns
metric dicts (one per model: churnguard and its baselines) and those PNGs into a single HTML
file with the images embedded as base64, so the file can be mailed or attached to an MLflow run
and still open anywhere.

Every plotting function accepts either one array of predictions or a mapping
``{model name: predictions}``, so the model and its baselines share one set of axes.

The plots follow the usual references: ROC [Faw06], precision-recall [DG06], reliability
diagram [NC05, GPSW17], cumulative gains / lift [LL98], CLV decile chart [WLM19] (full
citations in :mod:`churnguard.model.evaluate`).
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from sklearn.metrics import precision_recall_curve, roc_curve

from churnguard.model.evaluate import (
    ACTIVE_DAYS,
    TOP_FRACTION,
    _binary_inputs,
    _pair,
    _require_both_classes,
    churn_metrics,
    decile_calibration,
    gains_table,
    max_capture,
    max_lift,
    reliability_table,
)
from churnguard.training.bootstrap import DESCRIPTORS, Bootstrap

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "METRIC_GUIDE",
    "PLOT_GUIDE",
    "MetricsTable",
    "Section",
    "churn_plots",
    "clv_plots",
    "decile_table",
    "html_report",
    "importance_plot",
    "standard_sections",
    "write_html_report",
]

ArrayLike = npt.ArrayLike
Predictions = ArrayLike | Mapping[str, ArrayLike]

_DPI = 110
_MAX_SCATTER = 5_000  # above this a scatter is an ink blot; a fixed-seed subsample reads better

#: One-line "how to read" per metric key of ``churn_metrics`` / ``clv_metrics``, and whether a
#: higher value is better (None: neither, e.g. counts). Used for the table's last column and to
#: bold the best model per row.
METRIC_GUIDE: dict[str, tuple[str, bool | None]] = {
    "roc_auc": ("P(a random churner scores above a random non-churner); 0.5 = random. "
                "Customers who lapsed long ago are easy to rank and raise it: see "
                f"roc_auc_active_{ACTIVE_DAYS}d", True),
    f"roc_auc_active_{ACTIVE_DAYS}d": (
        f"ROC AUC among the customers with a purchase in the {ACTIVE_DAYS} days before the "
        "cutoff, where finding who will stop is hard; 0.5 = random", True),
    "pr_auc": ("Average precision for churners; compare with base_rate (= random)", True),
    "pr_auc_active": ("Average precision for the customers who do not churn (the CDNOW "
                      "benchmark figure)", True),
    "log_loss": ("Mean negative log-likelihood of the outcomes; lower is better", False),
    "brier": ("Mean squared error of the probabilities; lower is better", False),
    "ece": ("Expected calibration error: mean |predicted - observed| over 10 bins", False),
    "lift_at_10": ("Churn rate in the riskiest 10 % ÷ overall churn rate: 1 = random; at most "
                   "min(10, 1 ÷ base_rate), so it is low even for a perfect ranking when churn "
                   "is common", True),
    "capture_at_10": ("Share of all churners who are in the riskiest 10 %: random targeting "
                      "reaches 0.10 of them whatever the base rate, a perfect ranking "
                      "min(1, 0.10 ÷ base_rate); compare with that maximum", True),
    "base_rate": ("Share of churners in the evaluation set", None),
    f"active_share_{ACTIVE_DAYS}d": (f"Share of the customers evaluated with a purchase in the "
                                     f"{ACTIVE_DAYS} days before the cutoff", None),
    f"base_rate_active_{ACTIVE_DAYS}d": ("Churn rate among those active customers", None),
    "n": ("Number of customers evaluated", None),
    "mae": ("Mean absolute error of predicted spend (currency units); rewards the median, "
            "so predicting 0 for the many non-buyers scores well: per-customer accuracy, not "
            "the yardstick of an expected value", False),
    "rmse": ("Root-mean-squared error of predicted spend; dominated by big spenders", False),
    "poisson_deviance": ("Mean Poisson deviance 2·[y·log(y/pred) − (y − pred)]: a proper "
                         "loss for an expected value, less dominated by big spenders than "
                         "RMSE; ∞ = a zero prediction for a customer who spent", False),
    "decile_calibration_error": ("Mean |predicted − actual| per prediction decile ÷ mean "
                                 "spend (the decile chart in one number); 0 = exact", False),
    "spearman": ("Rank correlation of predicted and actual spend", True),
    "normalized_gini": ("Ranking quality: 1 = perfect order, 0 = random", True),
    "top10_spend_share": ("Share of actual spend from the top 10 % by prediction", True),
    "total_error": ("(total predicted - total actual) ÷ total actual; 0 = exact", None),
    "interval_coverage": ("Share of customers whose actual spend is inside their 80 % CLV "
                          "interval [clv_low, clv_high]; compare with interval_nominal", None),
    "interval_nominal": ("The coverage the model expects: 0.80, more for customers whose "
                         "interval is [0, 0] (no purchase is likely)", None),
    "interval_coverage_buyers": ("Coverage among the customers who bought: low = the spend "
                                 "distribution is too narrow", None),
    "interval_coverage_nonbuyers": ("Coverage among the customers who did not buy: low = "
                                    "P(buy) is too high for them", None),
    "interval_width": ("Mean width clv_high - clv_low of the 80 % interval (currency units)",
                       None),
    "total_pred": ("Sum of predicted spend", None),
    "total_actual": ("Sum of actual spend in the holdout window", None),
}

#: The best value a perfect ranking can reach, from the evaluation set's base rate: shown
#: after the guide of these metrics ("here at most …").
_BEST_POSSIBLE = {
    "capture_at_10": lambda base: max_capture(TOP_FRACTION, base),
    "lift_at_10": lambda base: max_lift(TOP_FRACTION, base),
}

#: Row order of a churn table: ROC AUC and its active-customer counterpart first.
CHURN_METRIC_ORDER = (
    "roc_auc", f"roc_auc_active_{ACTIVE_DAYS}d", "pr_auc", "pr_auc_active", "log_loss",
    "brier", "ece", "lift_at_10", "capture_at_10", "base_rate", f"active_share_{ACTIVE_DAYS}d",
    f"base_rate_active_{ACTIVE_DAYS}d", "n",
)

#: "How to read" captions keyed by the file stem :func:`churn_plots` / :func:`clv_plots` /
#: :func:`importance_plot` give their PNGs; :func:`html_report` uses them for images without an
#: explicit caption.
PLOT_GUIDE: dict[str, str] = {
    "churn_roc": (
        "ROC curve: true-positive rate against false-positive rate over all thresholds. The "
        "further above the diagonal (random), the better the ranking; the area is roc_auc."
    ),
    "churn_pr": (
        "Precision-recall: of the customers flagged at a threshold, the share that churn "
        "(precision) against the share of churners found (recall). The dashed line is the base "
        "rate, what random targeting achieves."
    ),
    "churn_reliability": (
        "Reliability diagram: observed churn rate per predicted-probability bin. Points on the "
        "diagonal mean the probabilities can be taken at face value (e.g. for expected-loss "
        "calculations); the bars below show how many customers fall in each bin."
    ),
    "churn_gains": (
        "Cumulative gains (left): share of all churners reached when contacting the top x % by "
        "score. The diagonal is random targeting; the dotted line a perfect ranking, which "
        "rises with slope 1 ÷ base rate until it has reached every churner, so when churn is "
        "common even it stays close to the diagonal. Lift per decile (right): churn rate in "
        "that decile ÷ overall rate (1 = random); the dotted line is a perfect ranking's. At "
        "base rate r the top fraction k has lift at most min(k, r) ÷ (k·r) = min(1 ÷ r, "
        "1 ÷ k), which the perfect ranking reaches, so a decile 1 at the line cannot be "
        "beaten however modest it looks (at 55 % churn the maximum is 1.82). "
        "A good model has decile 1 well above 1 and a steady decline."
    ),
    "clv_deciles": (
        "Decile calibration: customers sorted by predicted spend into 10 equal groups; mean "
        "predicted vs mean actual spend per group. Bars of equal height = well calibrated; "
        "rising actual bars = good ranking."
    ),
    "clv_scatter": (
        "Predicted vs actual spend per customer (symmetric-log axes, so zero spend is visible). "
        "Points on the diagonal are exact; the cloud's spread is the per-customer error."
    ),
    "feature_importance": (
        "Feature importance: the features the model relies on most. Importance is not "
        "causation; correlated features share credit."
    ),
}


def _as_models(pred: Predictions) -> dict[str, ArrayLike]:
    if isinstance(pred, Mapping):
        if not pred:
            raise ValueError(
                "no predictions given: the mapping of model name -> predictions is empty"
            )
        return {str(k): v for k, v in pred.items()}
    return {"model": pred}


def _use_agg() -> None:
    # Called by each plotting function, not at import, so importing this module never changes
    # the plotting backend of a notebook or of an application that imports churnguard.
    import matplotlib

    matplotlib.use("Agg", force=True)


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def _out_dir(out_dir: str | os.PathLike[str]) -> Path:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
# Churn plots
# ---------------------------------------------------------------------------------------------


def churn_plots(
    y: ArrayLike,
    p: Predictions,
    out_dir: str | os.PathLike[str],
    *,
    prefix: str = "churn",
    n_bins: int = 10,
) -> list[Path]:
    """ROC, precision-recall, reliability diagram and gains/lift PNGs for churn probabilities.

    ``y`` holds 0/1 churn labels, ``p`` churn probabilities: one array, or ``{model: array}``
    to overlay baselines. Returns ``[<prefix>_roc.png, <prefix>_pr.png,
    <prefix>_reliability.png, <prefix>_gains.png]`` in ``out_dir`` (created if missing).
    """
    models = _as_models(p)
    checked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, q in models.items():
        yy, qq = _binary_inputs(y, q)
        _require_both_classes(yy, f"churn_plots ({name})")
        checked[name] = (yy, qq)
    d = _out_dir(out_dir)
    _use_agg()
    import matplotlib.pyplot as plt

    y0 = next(iter(checked.values()))[0]
    base = float(y0.mean())

    fig, ax = plt.subplots(figsize=(6, 5.2))
    for name, (yy, qq) in checked.items():
        fpr, tpr, _ = roc_curve(yy, qq)
        auc = churn_metrics(yy, qq, n_bins=n_bins)["roc_auc"]
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="random")
    _label(ax, "ROC curve", "False-positive rate (actives flagged)", "True-positive rate (recall)")
    roc = _save(fig, d / f"{prefix}_roc.png")

    fig, ax = plt.subplots(figsize=(6, 5.2))
    for name, (yy, qq) in checked.items():
        prec, rec, _ = precision_recall_curve(yy, qq)
        ap = churn_metrics(yy, qq, n_bins=n_bins)["pr_auc"]
        ax.step(rec, prec, where="post", label=f"{name} (AP {ap:.3f})")
    ax.axhline(base, ls="--", c="grey", lw=1, label=f"random (base rate {base:.3f})")
    ax.set_ylim(0, 1.02)
    _label(ax, "Precision-recall curve (churn class)", "Recall", "Precision")
    pr = _save(fig, d / f"{prefix}_pr.png")

    fig, (ax, axh) = plt.subplots(
        2, 1, figsize=(6, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1.0 / n_bins / (len(checked) + 1)
    for i, (name, (yy, qq)) in enumerate(checked.items()):
        t = reliability_table(yy, qq, n_bins)
        ece = churn_metrics(yy, qq, n_bins=n_bins)["ece"]
        filled = t[t["count"] > 0]
        label = f"{name} (ECE {ece:.3f})"
        ax.plot(filled["mean_predicted"], filled["observed_rate"], marker="o", label=label)
        axh.bar(t["lower"] + (i + 0.5) * width, t["count"], width=width, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _label(ax, "Reliability diagram", "", "Observed churn rate")
    axh.set_xlabel("Mean predicted churn probability (bin)")
    axh.set_ylabel("Customers")
    axh.grid(alpha=0.3)
    rel = _save(fig, d / f"{prefix}_reliability.png")

    fig, (axg, axl) = plt.subplots(1, 2, figsize=(11, 4.8))
    width = 0.8 / len(checked)
    for i, (name, (yy, qq)) in enumerate(checked.items()):
        g = gains_table(yy, qq, n_bins)
        share, capture = np.r_[0, g["population_share"]], np.r_[0, g["cum_capture"]]
        axg.plot(share, capture, marker="o", label=name)
        axl.bar(g["bin"] - 0.4 + (i + 0.5) * width, g["lift"], width=width, label=name)
    # What a perfect ranking (every churner first) reaches at this base rate: its top deciles
    # are the maximum possible lift, so a bar that touches the line cannot be beaten.
    k = np.linspace(0.0, 1.0, 201)
    axg.plot(k, [max_capture(x, base) for x in k], c="black", lw=1, ls=":",
             label=f"perfect ranking (base rate {base:.2f})")
    axg.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="random")
    _label(axg, "Cumulative gains", "Share of customers contacted (by score)", "Churners reached")
    edges = np.arange(n_bins + 1) / n_bins
    best = np.diff([max_capture(x, base) for x in edges]) * n_bins
    axl.step(np.r_[0.5, np.arange(1, n_bins + 1) + 0.5], np.r_[best[0], best], where="pre",
             c="black", lw=1, ls=":",
             label=f"perfect ranking (decile 1: {max_lift(1.0 / n_bins, base):.2f}, the "
                   "maximum)")
    axl.axhline(1.0, ls="--", c="grey", lw=1, label="random (lift 1)")
    axl.set_xticks(range(1, n_bins + 1))
    _label(axl, "Lift by decile", "Score decile (1 = highest)", "Churn rate ÷ overall rate")
    gains = _save(fig, d / f"{prefix}_gains.png")
    return [roc, pr, rel, gains]


def _label(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")


# ---------------------------------------------------------------------------------------------
# CLV plots
# ---------------------------------------------------------------------------------------------


def clv_plots(
    y: ArrayLike,
    pred: Predictions,
    out_dir: str | os.PathLike[str],
    *,
    prefix: str = "clv",
    n_bins: int = 10,
) -> list[Path]:
    """Decile-calibration bars and predicted-vs-actual scatter for CLV (spend) predictions.

    ``y`` is the actual spend in the holdout window, ``pred`` one array or ``{model: array}``
    (one panel per model). Returns ``[<prefix>_deciles.png, <prefix>_scatter.png]``.
    """
    models = _as_models(pred)
    checked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, v in models.items():
        yy, vv = _pair(y, v, "y", f"pred ({name})")
        checked[name] = (yy, vv)
    d = _out_dir(out_dir)
    _use_agg()
    import matplotlib.pyplot as plt

    k = len(checked)

    fig, axes = plt.subplots(1, k, figsize=(5.5 * k, 4.6), squeeze=False, sharey=True)
    for ax, (name, (yy, vv)) in zip(axes[0], checked.items(), strict=True):
        t = decile_calibration(yy, vv, n_bins)
        ax.bar(t["bin"] - 0.2, t["mean_predicted"], width=0.4, label="mean predicted")
        ax.bar(t["bin"] + 0.2, t["mean_actual"], width=0.4, label="mean actual")
        ax.set_xticks(range(1, n_bins + 1))
        _label(ax, f"{name}: decile calibration", "Prediction decile (1 = lowest)", "Mean spend")
    deciles = _save(fig, d / f"{prefix}_deciles.png")

    fig, axes = plt.subplots(1, k, figsize=(5.2 * k, 5), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (name, (yy, vv)) in zip(axes[0], checked.items(), strict=True):
        idx = np.arange(yy.size)
        note = ""
        if yy.size > _MAX_SCATTER:
            idx = rng.choice(yy.size, _MAX_SCATTER, replace=False)
            note = f"\n(random sample of {_MAX_SCATTER:,} of {yy.size:,} customers)"
        ax.scatter(vv[idx], yy[idx], s=6, alpha=0.35)
        lo = float(min(vv.min(), yy.min(), 0.0))
        hi = float(max(vv.max(), yy.max(), 1.0))
        ax.plot([lo, hi], [lo, hi], ls="--", c="grey", lw=1, label="predicted = actual")
        # symlog keeps the many zero spenders visible; the linear zone ends near the smallest
        # typical non-zero spend so it does not swallow the low end of the distribution.
        nonzero = np.abs(yy[yy != 0])
        linthresh = max(1.0, float(np.quantile(nonzero, 0.05))) if nonzero.size else 1.0
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_yscale("symlog", linthresh=linthresh)
        _label(ax, f"{name}: predicted vs actual{note}", "Predicted spend", "Actual spend")
    scatter = _save(fig, d / f"{prefix}_scatter.png")
    return [deciles, scatter]


# ---------------------------------------------------------------------------------------------
# Feature importance
# ---------------------------------------------------------------------------------------------


def importance_plot(
    importances: Mapping[str, float],
    out_dir: str | os.PathLike[str],
    descriptions: Mapping[str, str] | None = None,
    *,
    top_n: int = 20,
    filename: str = "feature_importance.png",
    title: str = "Feature importance",
) -> Path:
    """Horizontal bar chart of the ``top_n`` features by absolute importance.

    ``descriptions`` (feature -> short human description) are appended to the labels so a
    reader need not know the column names. Signed importances (e.g. coefficients, mean SHAP
    with sign) keep their sign; bars are ordered by magnitude.
    """
    if not importances:
        raise ValueError("importances is empty: need at least one feature")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    bad = [k for k, v in importances.items() if not math.isfinite(float(v))]
    if bad:
        raise ValueError(
            f"importances has {len(bad)} non-finite value(s) out of {len(importances)} "
            f"(e.g. {bad[:3]})"
        )
    items = sorted(importances.items(), key=lambda kv: abs(float(kv[1])), reverse=True)[:top_n]
    items.reverse()  # barh draws bottom-up; the most important feature belongs on top
    desc = descriptions or {}

    def label(name: str) -> str:
        text = desc.get(name)
        if not text:
            return name
        text = text if len(text) <= 60 else text[:57] + "..."
        return f"{name}\n{text}"

    d = _out_dir(out_dir)
    _use_agg()
    import matplotlib.pyplot as plt

    per_bar = 0.55 if desc else 0.35
    fig, ax = plt.subplots(figsize=(8, 1.2 + per_bar * len(items)))
    values = [float(v) for _, v in items]
    ax.barh(range(len(items)), values, color=["C0" if v >= 0 else "C3" for v in values])
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([label(k) for k, _ in items], fontsize="small")
    ax.axvline(0, c="black", lw=0.8)
    ax.set_title(title if len(importances) <= top_n else f"{title} (top {top_n})")
    ax.set_xlabel("Importance")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, d / filename)


# ---------------------------------------------------------------------------------------------
# HTML report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsTable:
    """A table with one row per metric and one column per model.

    ``metrics`` maps model name -> {metric key -> value}, e.g. ``{"churnguard": churn_metrics(..),
    "logistic regression": churn_metrics(..), "BG/NBD": churn_metrics(..)}``. Rows follow
    ``metric_order`` if given, else first appearance; a model lacking a metric shows "-". The
    best value per row is bold when ``METRIC_GUIDE`` (or ``higher_is_better``) says which
    direction is better.

    With ``bootstrap`` (every model's metrics on the same resamples of these customers), each
    value shows its 95 % interval below it, and the best value is bold only when it is better
    than every other model's beyond noise: the paired interval of each difference excludes 0.
    With ``differences_of`` as well, the table shows that model minus each other model (its
    columns) instead of the values: the point difference, its paired interval and whether it
    is better, worse or within noise.
    """

    title: str
    metrics: Mapping[str, Mapping[str, float]]
    caption: str = ""
    metric_order: Sequence[str] | None = None
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)
    bootstrap: Bootstrap | None = None
    differences_of: str | None = None


@dataclass(frozen=True)
class Section:
    """A report section: a heading, how-to-read text, tables (shown side by side), images.

    ``text`` is plain text (escaped; blank lines separate paragraphs). ``images`` are PNG paths
    embedded as base64; ``image_captions`` maps a path's file name or stem to its caption,
    falling back to ``PLOT_GUIDE`` by stem.
    """

    title: str
    text: str = ""
    tables: Sequence[MetricsTable] = ()
    images: Sequence[str | os.PathLike[str]] = ()
    image_captions: Mapping[str, str] = field(default_factory=dict)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#555;font-size:.9em}
.context td{padding:.1em 1em .1em 0}
.tables{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
table.metrics{border-collapse:collapse;font-size:.92em}
table.metrics th,table.metrics td{border:1px solid #ddd;padding:.3em .6em}
table.metrics th{background:#f4f4f4}
table.metrics td.num{text-align:right;font-variant-numeric:tabular-nums}
table.metrics td.guide{color:#666;font-size:.88em;max-width:22em}
table.metrics caption{caption-side:top;text-align:left;font-weight:600;padding-bottom:.3em}
table.metrics .ci{color:#666;font-size:.85em;white-space:nowrap}
figure{display:inline-block;margin:1em 1.5em 1em 0;max-width:100%;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;max-width:640px}
.notes li{margin-bottom:.3em}
"""


def _fmt(key: str, value: object) -> str:
    if value is None:
        return "-"
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return html.escape(str(value))
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if key == "n" or (v.is_integer() and abs(v) >= 1000):
        return f"{v:,.0f}"
    if abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4f}"


def _has_draws(boot: Bootstrap | None, model: str, key: str) -> bool:
    return boot is not None and key in boot.draws.get(model, {})


def _interval_html(key: str, interval: tuple[float, float]) -> str:
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return ""
    return f'<br><span class="ci">[{_fmt(key, low)}, {_fmt(key, high)}]</span>'


def _beyond_noise(boot: Bootstrap, model: str, other: str, key: str, higher: bool) -> bool:
    """``model`` better than ``other`` on ``key`` beyond noise: the paired 95 % interval of the
    difference lies wholly on the better side of 0."""
    low, high = boot.difference(model, other, key)
    return low > 0 if higher else high < 0


def _render_table(t: MetricsTable) -> str:
    models = list(t.metrics)
    if not models:
        raise ValueError(f"metrics table {t.title!r} has no models")
    if t.differences_of is not None:
        return _render_differences(t)
    keys: list[str] = list(t.metric_order or [])
    if not t.metric_order:
        for m in models:
            keys.extend(k for k in t.metrics[m] if k not in keys)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    rows = []
    for key in keys:
        guide, direction = _guide(t, key)
        vals = {m: t.metrics[m].get(key) for m in models}
        # An infinite value (a Poisson deviance of a zero prediction for a buyer) takes part:
        # it is the worst of its row, not a missing one.
        numeric = {
            m: float(v)
            for m, v in vals.items()
            if isinstance(v, int | float | np.number) and not math.isnan(float(v))
        }
        best: set[str] = set()
        if direction is not None and len(numeric) > 1:
            target = max(numeric.values()) if direction else min(numeric.values())
            best = {m for m, v in numeric.items() if v == target}
            boot = t.bootstrap
            if boot is not None and all(_has_draws(boot, m, key) for m in numeric):
                # A near-tie is not a win: the best is bold only when it beats every other
                # model beyond the noise of a paired bootstrap over these customers.
                best = {b for b in best if all(_beyond_noise(boot, b, m, key, direction)
                                               for m in numeric if m != b)}
        cells = "".join(
            f'<td class="num">{"<b>" if m in best else ""}{_fmt(key, vals[m])}'
            f"{'</b>' if m in best else ''}"
            + (_interval_html(key, t.bootstrap.interval(m, key))
               if t.bootstrap is not None and _has_draws(t.bootstrap, m, key) else "")
            + "</td>"
            for m in models
        )
        rows.append(
            f"<tr><th>{html.escape(key)}</th>{cells}"
            f'<td class="guide">{html.escape(guide)}</td></tr>'
        )
    return _table_html(t, head, rows)


def _guide(t: MetricsTable, key: str) -> tuple[str, bool | None]:
    guide, direction = METRIC_GUIDE.get(key, ("", None))
    bases = [float(t.metrics[m]["base_rate"]) for m in t.metrics
             if isinstance(t.metrics[m].get("base_rate"), int | float | np.number)
             and 0 < float(t.metrics[m]["base_rate"]) <= 1]
    if key in _BEST_POSSIBLE and bases:
        # Every model is scored on the same customers: one base rate.
        guide += f" (here at most {_BEST_POSSIBLE[key](bases[0]):.2f})"
    return guide, t.higher_is_better.get(key, direction)


def _render_differences(t: MetricsTable) -> str:
    """``t.differences_of`` minus each other model, paired (see :class:`MetricsTable`)."""
    ref, boot = t.differences_of, t.bootstrap
    if ref is None or boot is None or ref not in t.metrics:
        raise ValueError(f"metrics table {t.title!r}: differences need the bootstrap and the "
                         f"values of {ref!r}")
    others = [m for m in t.metrics if m != ref]
    keys = [k for k in (t.metric_order or list(t.metrics[ref]))
            if k not in DESCRIPTORS and _has_draws(boot, ref, k)]
    head = "".join(f"<th>{html.escape(ref)} − {html.escape(m)}</th>" for m in others)
    rows = []
    for key in keys:
        guide, direction = _guide(t, key)
        cells = []
        for m in others:
            a, b = t.metrics[ref].get(key), t.metrics[m].get(key)
            if a is None or b is None or not _has_draws(boot, m, key):
                cells.append('<td class="num">-</td>')
                continue
            with np.errstate(invalid="ignore"):
                diff = float(np.float64(a) - np.float64(b))
            low, high = boot.difference(ref, m, key)
            verdict = ""
            if low == high == 0.0:
                # Identical on every resample: e.g. both at the maximum lift for this base rate.
                verdict = "equal"
            elif direction is not None and not (math.isnan(low) or math.isnan(high)):
                verdict = ("better" if (low > 0 if direction else high < 0) else
                           "worse" if (high < 0 if direction else low > 0) else
                           "within noise")
            sign = "+" if diff > 0 else ""
            cells.append(f'<td class="num">{sign}{_fmt(key, diff)}'
                         f"{_interval_html(key, (low, high))}"
                         + (f'<br><span class="ci">{verdict}</span>' if verdict else "")
                         + "</td>")
        rows.append(f"<tr><th>{html.escape(key)}</th>{''.join(cells)}"
                    f'<td class="guide">{html.escape(guide)}</td></tr>')
    return _table_html(t, head, rows)


def _table_html(t: MetricsTable, head: str, rows: list[str]) -> str:
    caption = f"<caption>{html.escape(t.title)}</caption>"
    note = f'<p class="meta">{html.escape(t.caption)}</p>' if t.caption else ""
    return (
        f'<div><table class="metrics">{caption}<thead><tr><th>metric</th>{head}'
        f"<th>how to read</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}</div>"
    )


def _render_image(path: str | os.PathLike[str], captions: Mapping[str, str]) -> str:
    p = Path(path)
    data = p.read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise ValueError(f"{p} is not a PNG file ({len(data)} bytes)")
    b64 = base64.b64encode(data).decode("ascii")
    caption = captions.get(p.name) or captions.get(p.stem) or PLOT_GUIDE.get(p.stem, "")
    if not caption:
        # A custom prefix (churn_plots(prefix="q3")) gives q3_roc: match on the plot kind.
        caption = next(
            (v for k, v in PLOT_GUIDE.items() if p.stem.endswith("_" + k.split("_", 1)[-1])), ""
        )
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(p.stem)}">{cap}</figure>'
    )


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in parts)


def html_report(
    title: str,
    sections: Sequence[Section],
    *,
    context: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
    generated_at: datetime | None = None,
) -> str:
    """Render a self-contained one-page HTML model report and return it as a string.

    ``context`` is a small key/value block under the title for what a reader needs to trust the
    numbers: cutoff date, prediction horizon, training / holdout window, number of customers,
    MLflow run id. ``sections`` hold tables (model vs baselines, side by side) and plots;
    ``notes`` are caveats listed at the end. Images are inlined as base64 PNGs so the single
    file stands alone.
    """
    if not sections:
        raise ValueError("html_report needs at least one section")
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M %Z").strip()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Generated {html.escape(when)} by churnguard.</p>',
    ]
    if context:
        rows = "".join(
            f"<tr><td><b>{html.escape(str(k))}</b></td><td>{html.escape(str(v))}</td></tr>"
            for k, v in context.items()
        )
        parts.append(f'<table class="context">{rows}</table>')
    toc = "".join(
        f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)
    )
    parts.append(f"<nav><ol>{toc}</ol></nav>")
    for i, s in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>')
        parts.append(_paragraphs(s.text))
        if s.tables:
            parts.append('<div class="tables">')
            parts.extend(_render_table(t) for t in s.tables)
            parts.append("</div>")
        parts.extend(_render_image(img, s.image_captions) for img in s.images)
        parts.append("</section>")
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        parts.append(f'<section class="notes"><h2>Notes</h2><ul>{items}</ul></section>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html_report(
    path: str | os.PathLike[str],
    title: str,
    sections: Sequence[Section],
    *,
    context: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
    generated_at: datetime | None = None,
) -> Path:
    """Write :func:`html_report` to ``path`` (UTF-8, parent folders created); return the path."""
    out = Path(path)
    doc = html_report(title, sections, context=context, notes=notes, generated_at=generated_at)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


def decile_table(deciles: Mapping[str, Sequence[float]],
                 title: str = "churnguard: CLV decile calibration (holdout)") -> MetricsTable:
    """A :func:`~churnguard.model.evaluate.decile_calibration` table (as ``to_dict("list")``)
    as a report table: one row per decile (1 = lowest predictions), the mean predicted and
    mean actual spend and the customers in it as columns."""
    rows = {f"decile {int(b)}": i for i, b in enumerate(deciles["bin"])}
    cols = {"mean predicted": "mean_predicted", "mean actual": "mean_actual",
            "customers": "count"}
    return MetricsTable(title, {label: {row: float(deciles[col][i]) for row, i in rows.items()}
                                for label, col in cols.items()},
                        caption="Customers sorted by predicted spend into ten equal groups: "
                                "the two spend columns should be close in every row.")


def standard_sections(
    *,
    churn: Mapping[str, Mapping[str, float]] | None = None,
    clv: Mapping[str, Mapping[str, float]] | None = None,
    churn_images: Sequence[str | os.PathLike[str]] = (),
    clv_images: Sequence[str | os.PathLike[str]] = (),
    importance_images: Sequence[str | os.PathLike[str]] = (),
    clv_tables: Sequence[MetricsTable] = (),
    churn_bootstrap: Bootstrap | None = None,
    clv_bootstrap: Bootstrap | None = None,
    reference: str = "churnguard",
) -> list[Section]:
    """The usual report layout from per-model metric dicts and plot paths.

    Headline (churn and CLV tables side by side), then churn plots, CLV plots (after
    ``clv_tables``, e.g. :func:`decile_table`) and feature importance; sections with nothing to
    show are left out. With the bootstraps of the two test snapshots
    (:func:`churnguard.training.bootstrap.bootstrap`), every value carries its 95 % interval,
    bold marks only wins beyond noise, and a section after the headline shows ``reference``
    minus each baseline with paired intervals.
    """
    tables = []
    diffs = []
    if churn:
        present = {k for m in churn.values() for k in m}
        order = [k for k in CHURN_METRIC_ORDER if k in present]
        order += [k for m in churn.values() for k in m if k not in order]
        order = list(dict.fromkeys(order))
        tables.append(MetricsTable("Churn (holdout)", churn, metric_order=order,
                                   bootstrap=churn_bootstrap))
        if churn_bootstrap is not None and reference in churn and len(churn) > 1:
            diffs.append(MetricsTable(f"Churn: {reference} − baseline (paired)", churn,
                                      metric_order=order, bootstrap=churn_bootstrap,
                                      differences_of=reference))
    if clv:
        tables.append(MetricsTable("CLV / spend (holdout)", clv, bootstrap=clv_bootstrap))
        if clv_bootstrap is not None and reference in clv and len(clv) > 1:
            diffs.append(MetricsTable(f"CLV: {reference} − baseline (paired)", clv,
                                      bootstrap=clv_bootstrap, differences_of=reference))
    sections: list[Section] = []
    boot = churn_bootstrap or clv_bootstrap
    noise = ("" if boot is None else
             f" Below each value, its 95 % bootstrap interval ({boot.resamples:,} resamples of "
             "the test customers, percentile method, Efron & Tibshirani 1993). Every model is "
             "scored on the same resamples, so differences are paired; bold marks a best value "
             "only when it beats every other model beyond noise (the paired interval of each "
             "difference excludes 0): a best value that is not bold is a near-tie.")
    if tables:
        sections.append(
            Section(
                "Headline metrics: model vs baselines",
                "One column per model, scored on the same holdout customers. Bold marks the "
                "best value in a row where a direction is meaningful." + noise + " Compare "
                "churnguard with the simple baselines first: a gain that is small against "
                "logistic regression or BG/NBD rarely justifies the extra machinery.",
                tables=tables,
            )
        )
    if diffs:
        sections.append(
            Section(
                "Differences to the baselines (paired bootstrap)",
                f"{reference} minus each baseline on the same test customers, with the 95 % "
                "interval of the difference over the same bootstrap resamples. \"better\" or "
                "\"worse\" only when the whole interval is on one side of 0; \"within noise\" "
                "when it contains 0, whatever the sign of the point difference; \"equal\" when "
                "the two agree on every resample (e.g. both at the maximum possible lift). The "
                "promotion gate reads its log loss, ROC AUC, RMSE and |total error| comparisons "
                "from these resamples (README \"Promotion\").",
                tables=diffs,
            )
        )
    if churn_images:
        sections.append(
            Section(
                "Churn model",
                "Ranking (ROC, precision-recall, gains) decides who gets a retention offer; "
                "calibration (reliability) decides whether the probabilities can be multiplied "
                "by customer value to estimate expected loss.",
                images=churn_images,
            )
        )
    if clv_images or clv_tables:
        sections.append(
            Section(
                "Customer lifetime value",
                "Spend is heavy-tailed: judge the expected values by RMSE, Poisson deviance "
                "and the decile calibration, ranking by normalized Gini and top-decile share, "
                "the portfolio total by total_error; MAE is per-customer accuracy (it rewards "
                "the median, not the mean).",
                tables=clv_tables,
                images=clv_images,
            )
        )
    if importance_images:
        sections.append(Section("What drives the predictions", images=importance_images))
    return sections
