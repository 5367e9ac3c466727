"""``monitor.html``, the page a person reads of a :func:`churnguard.serving.monitor.monitor`
report, and the MLflow *monitoring run* that keeps each report (README, "Monitoring").

The page stands alone, like the training report (``training/report.py``): matplotlib figures
drawn in memory and embedded as base64 PNGs, inline CSS, no script and no asset fetched from
anywhere, so it can be mailed, attached to an MLflow run or opened offline. It shows the verdict
and its reasons, PSI per feature against the warn/alert lines, the churn-probability and CLV
distributions against the reference profile's bins, the estimated ROC AUC beside the realized
ones over time, the reliability diagram of each realized run, and the report's tables.

Every piece of text from the report (feature names, reasons, versions) is HTML-escaped, and
``$`` is escaped in figure labels so that matplotlib does not read a name as mathtext.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnguard.features.io import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from churnguard.model.registry import Tracking

__all__ = ["HTML_NAME", "RUN_KIND", "html_page", "log_monitoring_run", "monitoring_metrics",
           "monitoring_tags", "write_html"]

HTML_NAME = "monitor.html"
#: ``churnguard.run_kind`` tag of a monitoring run (training runs carry none).
RUN_KIND = "monitoring"
#: Most realized runs drawn in the reliability diagram (the latest ones).
MAX_RELIABILITY_RUNS = 6

_DPI = 110
_COLORS = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828"}
_LEVEL = {"ok": 0, "warn": 1, "alert": 2}
#: The colour class of a feature's or a feed's status.
_STATUS_CLASS = {"ok": "ok", "new": "ok", "warn": "warn", "thin": "warn", "alert": "alert",
                 "broken": "alert"}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#666;font-size:.9em}
.banner{padding:.8em 1em;border-radius:6px;color:#fff;margin:1em 0}
.banner h2{border:none;margin:0;color:#fff}.banner ul{margin:.4em 0 0 0}
.banner-ok{background:#2e7d32}.banner-warn{background:#ef6c00}.banner-alert{background:#c62828}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status-ok{color:#2e7d32;font-weight:600}.status-warn{color:#ef6c00;font-weight:600}
.status-alert{color:#c62828;font-weight:600}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;max-width:760px}
"""


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _f(value: Any, fmt: str = "{:.3f}") -> str:
    v = _num(value)
    return "–" if v is None else html.escape(fmt.format(v))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _mpl_text(value: Any) -> str:
    """Text for a matplotlib label: ``$`` would start mathtext."""
    return str(value).replace("$", r"\$")


def _edge(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _bin_labels(edges: Sequence[float]) -> list[str]:
    """Bin b holds edges[b-1] < x <= edges[b] (the first from −∞, the last to +∞)."""
    if not edges:
        return ["all"]
    labels = [f"≤ {_edge(edges[0])}"]
    labels += [f"{_edge(lo)}–{_edge(hi)}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"> {_edge(edges[-1])}")
    return labels


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, drawn in memory)
# ---------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    # The backend is chosen when a figure is drawn, not at import (as in training/report.py),
    # so importing this module never changes a notebook's backend.
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _img(fig: Figure, alt: str, caption: str) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{b64}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _drift_figure(features: Sequence[Mapping[str, Any]], thresholds: Mapping[str, Any]) -> str:
    plt = _pyplot()
    rows = sorted(features, key=lambda f: -(_num(f.get("psi")) or 0.0))
    fig, ax = plt.subplots(figsize=(8, max(2.4, 0.26 * len(rows) + 1.2)))
    names = [_mpl_text(f["name"]) for f in rows]
    psi = [_num(f.get("psi")) or 0.0 for f in rows]
    ax.barh(range(len(rows)), psi,
            color=[_COLORS.get(str(f.get("status")), "#607d8b") for f in rows])
    ax.set_yticks(range(len(rows)), names, fontsize="small")
    ax.invert_yaxis()  # highest PSI on top
    for key, style in (("psi_warn", "--"), ("psi_alert", "-")):
        level = _num(thresholds.get(key))
        if level is not None:
            ax.axvline(level, ls=style, c="#444", lw=1, label=f"{key} {level:g}")
    ax.set_xlabel("PSI against the reference profile")
    ax.set_title("Feature drift (bar colour: status)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _img(fig, "feature drift", (
        "PSI of each feature against the bundle's reference profile, highest first. Below the "
        "dashed line (psi_warn) the feature is stable, between the lines a shift worth a look, "
        "beyond the solid line (psi_alert) a major shift. A bar coloured warn without a long "
        "PSI is a null rate that moved (see the table)."))


def _distribution_figure(report: Mapping[str, Any]) -> str | None:
    panels = [(key, title, report.get(key) or {})
              for key, title in (("score", "Churn probability"), ("clv", "CLV"))]
    panels = [p for p in panels if p[2].get("reference_shares")]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (_, title, d) in zip(axes[0], panels, strict=True):
        ref = [_num(v) or 0.0 for v in d["reference_shares"]]
        cur = [_num(v) or 0.0 for v in d.get("current_shares") or [0.0] * len(ref)]
        x = list(range(len(ref)))
        ax.bar([i - 0.2 for i in x], ref, width=0.4, color="#9e9e9e", label="reference")
        ax.bar([i + 0.2 for i in x], cur, width=0.4, color="#1565c0", label="current")
        ax.set_xticks(x, _bin_labels(list(d.get("edges") or [])), rotation=45, ha="right",
                      fontsize="small")
        psi = _num(d.get("psi"))
        ax.set_title(f"{title} (PSI {psi:.3f})" if psi is not None else title)
        ax.set_xlabel("bin of the reference deciles")
        ax.set_ylabel("share of customers")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return _img(fig, "score distribution", (
        "The model's outputs for the current customers against the reference snapshot, in the "
        "reference's decile bins (so each grey bar is about 0.1). Blue bars taller on the right "
        "of the churn panel: the model now sees more risk; the PSI sums the differences."))


def _auc_figure(report: Mapping[str, Any]) -> str | None:
    realized = [r for r in report.get("realized") or [] if _num(r.get("roc_auc")) is not None]
    est = report.get("estimated") or {}
    est_auc = _num(est.get("roc_auc"))
    if not realized and est_auc is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    versions = sorted({str(r["model_version"]) for r in realized})
    for v in versions:
        pts = sorted((date.fromisoformat(r["scored_as_of"]), float(r["roc_auc"]))
                     for r in realized if str(r["model_version"]) == v)
        ax.plot([d for d, _ in pts], [a for _, a in pts], marker="o",
                label=f"realized, v{_mpl_text(v)}")
    as_of = date.fromisoformat(str(report["as_of"]))
    if est_auc is not None:
        band = est.get("roc_auc_band") or [est_auc, est_auc]
        lo, hi = _num(band[0]) or est_auc, _num(band[1]) or est_auc
        ax.errorbar([as_of], [est_auc], yerr=[[est_auc - lo], [hi - est_auc]], fmt="s",
                    color="#6a1b9a", capsize=5, label="estimated at as-of (5–95 %)")
    test = _num(report.get("test_roc_auc"))
    if test is not None:
        ax.axhline(test, ls="--", c="#444", lw=1, label=f"test AUC at training {test:.3f}")
        drop = _num((report.get("thresholds") or {}).get("auc_drop_alert"))
        if drop is not None:
            ax.axhline(test - drop, ls=":", c=_COLORS["alert"], lw=1,
                       label=f"alert below {test - drop:.3f}")
    ax.set_xlabel("scored as of (realized) / as-of (estimated)")
    ax.set_ylabel("ROC AUC")
    ax.set_title("Estimated and realized ROC AUC")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    return _img(fig, "ROC AUC over time", (
        "Realized: the ROC AUC of each logged batch run against the labels once its churn "
        "window closed, at the date it was scored. Estimated: what the calibrated probabilities "
        "of today's customers imply, with its 5–95 % band, before any label exists. A realized "
        "point under the dotted line alerts."))


def _reliability_figure(realized: Sequence[Mapping[str, Any]]) -> str | None:
    runs = [r for r in realized if r.get("reliability")][-MAX_RELIABILITY_RUNS:]
    if not runs:
        return None
    plt = _pyplot()
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    width = 0.1 / (len(runs) + 1)
    for i, r in enumerate(runs):
        bins = r["reliability"]
        ece = _num(r.get("ece"))
        label = (f"scored {r['scored_as_of']} v{_mpl_text(r['model_version'])}"
                 + (f" (ECE {ece:.3f})" if ece is not None else ""))
        ax.plot([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins],
                marker="o", label=label)
        axh.bar([b["bin_low"] + (i + 0.5) * width for b in bins], [b["n"] for b in bins],
                width=width)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed churn rate")
    ax.set_title("Reliability of the realized runs")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    axh.set_xlabel("mean predicted churn probability (10 equal-width bins)")
    axh.set_ylabel("customers")
    axh.grid(alpha=0.3)
    return _img(fig, "reliability", (
        "Observed churn rate per predicted-probability bin of each realized run (the latest "
        f"{MAX_RELIABILITY_RUNS} at most). On the diagonal the probabilities can be taken at "
        "face value; the ECE is the customer-weighted mean distance from it."))


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """``rows`` hold ready HTML cells (``<td>…</td>``)."""
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    thead = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>"


def _td(text: str, cls: str = "num") -> str:
    return f'<td class="{cls}">{text}</td>'


def _status(status: Any) -> str:
    s = str(status)
    return f'<td class="status-{_STATUS_CLASS.get(s, "other")}">{_e(s)}</td>'


def _feeds_table(feeds: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<td>{_e(f.get('feed'))}</td>", _td(_f(f.get("window_days"), "{:,.0f}")),
             _td(_f(f.get("recent_rows"), "{:,.0f}")),
             _td(_f(f.get("expected_recent_rows"), "{:,.1f}")),
             f"<td>{_e(f.get('last_seen') or '–')}</td>", _status(f.get("status"))]
            for f in feeds]
    return _table(["feed", "window (days)", "rows in the window", "rows expected",
                   "last row", "status"], rows)


def _features_table(features: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<td>{_e(f['name'])}</td>", _td(_f(f.get("psi"), "{:.4f}")),
             _td(_f(f.get("reference_null_rate"), "{:.1%}")),
             _td(_f(f.get("null_rate"), "{:.1%}")), _status(f.get("status"))]
            for f in features]
    return _table(["feature", "PSI", "reference null rate", "null rate", "status"], rows)


def _distribution_table(title: str, d: Mapping[str, Any]) -> str:
    ref = list(d.get("reference_shares") or [])
    cur = list(d.get("current_shares") or [])
    labels = _bin_labels(list(d.get("edges") or []))
    rows = [[f"<td>{_e(lbl)}</td>", _td(_f(r, "{:.3f}")), _td(_f(c, "{:.3f}"))]
            for lbl, r, c in zip(labels, ref, cur, strict=False)]
    return (f"<details><summary>{_e(title)} bins</summary>"
            f"{_table(['bin', 'reference share', 'current share'], rows)}</details>")


def _realized_table(realized: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<td>{_e(r.get('scored_as_of'))}</td>", f"<td>{_e(r.get('model_version'))}</td>",
             _td(_f(r.get("n"), "{:,.0f}")), _td(_f(r.get("n_logged"), "{:,.0f}")),
             _td(_f(r.get("churn_rate"), "{:.1%}")),
             _td(_f((r.get("estimated") or {}).get("churn_rate"), "{:.1%}")),
             _td(_f(r.get("roc_auc"))), _td(_f((r.get("estimated") or {}).get("roc_auc"))),
             _td(_f(r.get("pr_auc"))), _td(_f(r.get("log_loss"), "{:.4f}")),
             _td(_f(r.get("ece"))), _td(_f(r.get("clv_total_error"), "{:+.1%}")),
             _td(_f(r.get("clv_gini")))]
            for r in realized]
    return _table(["scored as of", "model version", "customers labelled", "logged",
                   "churn rate", "estimated then", "ROC AUC", "estimated then", "PR AUC",
                   "log loss", "ECE", "CLV total error", "CLV Gini"], rows,
                  "Realized against the labels; 'estimated then': what the run's own "
                  "probabilities predicted when it was scored")


def _groups_table(title: str, groups: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<td>{_e(g.get('group'))}</td>", _td(_f(g.get("n"), "{:,.0f}")),
             _td(_f(g.get("churn_rate"), "{:.1%}")), _td(_f(g.get("roc_auc"))),
             _td(_f(g.get("log_loss"), "{:.4f}")), _td(_f(g.get("ece"))),
             _td(_f(g.get("clv_total_error"), "{:+.1%}"))] for g in groups]
    return _table([title, "customers", "churn rate", "ROC AUC", "log loss", "ECE",
                   "CLV total error"], rows)


def _campaigns_table(campaigns: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<td>{_e(c.get('action_id'))}</td>", _td(_f(c.get("n_treated"), "{:,.0f}")),
             _td(_f(c.get("churn_rate_treated"), "{:.1%}")),
             _td(_f(c.get("n_holdout"), "{:,.0f}")),
             _td(_f(c.get("churn_rate_holdout"), "{:.1%}")),
             _td(_f(c.get("churn_reduction"), "{:+.1%}"))] for c in campaigns]
    return _table(["action", "treated", "churn (treated)", "hold-out", "churn (hold-out)",
                   "hold-out − treated"], rows,
                  "Campaign contacts in the label window of the latest realized run")


def _breakdown(run: Mapping[str, Any]) -> list[str]:
    """The latest realized run per value tier, lifecycle stage and campaign action."""
    parts = []
    for key, title in (("by_value_tier", "value tier"),
                       ("by_lifecycle_stage", "lifecycle stage")):
        if run.get(key):
            parts.append(f"<details open><summary>scored {_e(run.get('scored_as_of'))}, "
                         f"per {title}</summary>{_groups_table(title, run[key])}</details>")
    if run.get("campaigns"):
        parts.append(_campaigns_table(run["campaigns"]))
    return parts


def _kv_table(pairs: Sequence[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>"
                               for k, v in pairs) + "</table>"


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def html_page(report: Mapping[str, Any], *, generated_at: datetime | None = None) -> str:
    """The self-contained HTML page of a monitoring ``report`` (the ``monitor.json`` dict)."""
    verdict = str(report.get("verdict", "ok"))
    version = report.get("model_version")
    title = f"churnguard monitoring: v{version} as of {report.get('as_of')}"
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M %Z").strip()
    reasons = report.get("reasons") or []
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons) or "<li>nothing crossed a threshold</li>"
    banner_cls = verdict if verdict in _COLORS else "alert"
    est = report.get("estimated") or {}
    band = est.get("roc_auc_band") or [None, None]
    features = list(report.get("features") or [])
    realized = list(report.get("realized") or [])
    thresholds = report.get("thresholds") or {}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(when)} by churnguard monitor.</p>',
        f'<div class="banner banner-{banner_cls}"><h2>verdict: {_e(verdict)}</h2>'
        f"<ul>{items}</ul></div>",
        _kv_table([("as of", _e(report.get("as_of"))), ("model version", _e(version)),
                   ("reference snapshot", _e(report.get("reference_snapshot"))),
                   ("customers", _f(report.get("customers"), "{:,.0f}")),
                   ("test ROC AUC at training", _f(report.get("test_roc_auc")))]),
    ]
    if report.get("feeds"):
        parts.append("<h2>Feeds</h2>")
        parts.append("<p>A broken feed (no rows where rows were expected) zeroes the features "
                     "it feeds and moves the scores for a reason that is not the customers: "
                     "read this first.</p>")
        parts.append(_feeds_table(report["feeds"]))
    parts.append("<h2>Feature drift</h2>")
    if features:
        parts.append(_drift_figure(features, thresholds))
        parts.append(_features_table(features))
    else:
        parts.append("<p>No feature compared.</p>")
    if report.get("not_compared"):
        names = ", ".join(_e(n) for n in report["not_compared"])
        parts.append(f"<p>Not compared (one value for every reference customer, e.g. the "
                     f"calendar's): {names}.</p>")
    parts.append("<h2>Model outputs</h2>")
    dist = _distribution_figure(report)
    if dist:
        parts.append(dist)
    for key, name in (("score", "churn probability"), ("clv", "CLV")):
        d = report.get(key) or {}
        parts.append(f"<p>{_e(name)} PSI: <b>{_f(d.get('psi'))}</b></p>")
        if d.get("reference_shares"):
            parts.append(_distribution_table(name, d))
    parts.append("<h2>Performance: estimated and realized</h2>")
    auc = _auc_figure(report)
    if auc:
        parts.append(auc)
    parts.append(_kv_table([
        ("estimated churn rate", _f(est.get("churn_rate"), "{:.1%}")),
        ("estimated ROC AUC", f"{_f(est.get('roc_auc'))} (5–95 %: {_f(band[0])} – "
                              f"{_f(band[1])})"),
        ("estimated log loss", _f(est.get("log_loss"), "{:.4f}")),
        ("customers scored", _f(est.get("n"), "{:,.0f}"))]))
    if realized:
        parts.append(_realized_table(realized))
        parts.extend(_breakdown(realized[-1]))
        rel = _reliability_figure(realized)
        if rel:
            parts.append(rel)
    else:
        parts.append("<p>No logged batch run has a closed churn label window by this as-of "
                     "date yet: only the estimate above speaks for the model.</p>")
    parts.append("<h2>Thresholds</h2>")
    parts.append(_kv_table([(k, _e(v)) for k, v in thresholds.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Mapping[str, Any], out_dir: Path) -> Path:
    """``out_dir/monitor.html`` (:func:`html_page`), written atomically."""
    path = Path(out_dir) / HTML_NAME
    page = html_page(report)
    with atomic_output(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The MLflow monitoring run
# ---------------------------------------------------------------------------------------------


def latest_realized(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The realized entry of the most recent scored date (the monitored version's when
    several versions were scored that day)."""
    realized = list(report.get("realized") or [])
    if not realized:
        return None
    last = max(str(r["scored_as_of"]) for r in realized)
    same_day = [r for r in realized if str(r["scored_as_of"]) == last]
    mine = [r for r in same_day if str(r["model_version"]) == str(report.get("model_version"))]
    return (mine or same_day)[-1]


def monitoring_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The run metrics of a report (missing or NaN values left out): ``score_psi``,
    ``clv_psi``, ``max_feature_psi``, ``estimated_*``, ``verdict_level`` (0 ok, 1 warn,
    2 alert), the feature and feed counts by status, and ``realized_*`` of
    :func:`latest_realized`."""
    est = report.get("estimated") or {}
    band = est.get("roc_auc_band") or [None, None]
    features = report.get("features") or []
    psis = [p for p in (_num(f.get("psi")) for f in features) if p is not None]
    values: dict[str, Any] = {
        "verdict_level": _LEVEL.get(str(report.get("verdict")), 2),
        "customers": report.get("customers"),
        "score_psi": (report.get("score") or {}).get("psi"),
        "clv_psi": (report.get("clv") or {}).get("psi"),
        "max_feature_psi": max(psis) if psis else None,
        "features_warn": sum(f.get("status") == "warn" for f in features),
        "features_alert": sum(f.get("status") == "alert" for f in features),
        "feeds_broken": sum(f.get("status") == "broken" for f in report.get("feeds") or []),
        "feeds_thin": sum(f.get("status") == "thin" for f in report.get("feeds") or []),
        "estimated_roc_auc": est.get("roc_auc"), "estimated_roc_auc_p05": band[0],
        "estimated_roc_auc_p95": band[1], "estimated_churn_rate": est.get("churn_rate"),
        "estimated_log_loss": est.get("log_loss"),
        "realized_runs": len(report.get("realized") or []),
    }
    last = latest_realized(report)
    if last is not None:
        for key in ("n", "churn_rate", "roc_auc", "pr_auc", "log_loss", "ece",
                    "clv_total_error", "clv_gini"):
            values[f"realized_{key}"] = last.get(key)
    return {k: v for k, v in ((k, _num(v)) for k, v in values.items()) if v is not None}


def monitoring_tags(report: Mapping[str, Any], model_name: str) -> dict[str, str]:
    """``churnguard.run_kind=monitoring``, the model name and version, the verdict, the as-of
    date and the scored date of :func:`latest_realized`."""
    tags = {"churnguard.run_kind": RUN_KIND, "churnguard.model_name": model_name,
            "churnguard.model_version": str(report.get("model_version")),
            "churnguard.verdict": str(report.get("verdict")),
            "as_of": str(report.get("as_of")),
            "reference_snapshot": str(report.get("reference_snapshot"))}
    last = latest_realized(report)
    if last is not None:
        tags["churnguard.realized_scored_as_of"] = str(last["scored_as_of"])
    return tags


def log_monitoring_run(report: Mapping[str, Any], files: Sequence[Path], tracking: Tracking,
                       *, experiment: str, model_name: str,
                       extra_tags: Mapping[str, str] | None = None) -> str:
    """One finished MLflow run in ``experiment`` with :func:`monitoring_tags`,
    :func:`monitoring_metrics`, the thresholds as parameters and ``files`` as artifacts;
    returns its id. Through an :class:`~mlflow.MlflowClient` of ``tracking`` (the fluent API's
    global URIs are left alone). A failure marks the run FAILED and raises."""
    from mlflow.entities import Metric, Param, RunTag

    client = tracking.client()
    tags = {**monitoring_tags(report, model_name), **(extra_tags or {})}
    name = f"monitor {report.get('as_of')} v{report.get('model_version')}"
    run = client.create_run(tracking.experiment_id(experiment), run_name=name, tags=tags)
    run_id = str(run.info.run_id)
    try:
        now = int(datetime.now(UTC).timestamp() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in monitoring_metrics(report).items()],
            params=[Param(f"threshold_{k}", str(v))
                    for k, v in (report.get("thresholds") or {}).items()],
            tags=[RunTag(k, v) for k, v in tags.items()])
        for f in files:
            client.log_artifact(run_id, str(f))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
