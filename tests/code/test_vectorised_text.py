"""The batch's column-at-a-time text (numbers, facts, actions JSON) equals what the earlier
per-row f-strings wrote, kept here as the reference: on random numbers with the awkward cases
(ties, signed zeros, tiny, huge, non-finite) and on every row the fake-fit bundle scores,
through the column path and the row-by-row path of small batches alike."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnguard.model.policy import SIGNALS, Assessment, Policy, assess, evidence, load_catalog
from churnguard.model.policy import text as T
from churnguard.model.policy.catalog import NO_ACTION
from churnguard.model.policy.reasons import _templates

AWKWARD = [0.0, -0.0, 0.5, 1.5, 2.5, 0.125, 0.005, 0.015, 2.25, 1e-5, -1e-5, 1234567.891,
           999.995, 999999.999, 1e14, 3e15, 1e20, -2.675, math.nan, math.inf, -math.inf,
           0.00005, 0.00015, 5e-7, 1e-7, 1.0, -1.0]


def _numbers() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.concatenate([np.array(AWKWARD), rng.gamma(1.0, 400.0, 3000),
                           rng.uniform(-5, 5, 3000), np.round(rng.uniform(0, 2000, 3000), 3),
                           rng.integers(0, 400, 800) / 4.0, rng.uniform(0, 1e7, 500)])


def _days(x: float) -> str:
    if not math.isfinite(x):
        return "an unknown number of days"
    d = round(x)
    return f"{d} day{'s' if d != 1 else ''}"


def _plural(x: float, word: str) -> str:
    if not math.isfinite(x):
        return f"an unknown number of {word}s"
    n = int(x)
    return f"{n} {word}{'s' if n != 1 else ''}"


@pytest.mark.parametrize(("got", "expected"), [
    (lambda x: T.fixed(x, 2, grouped=True), lambda v: format(v, ",.2f")),
    (lambda x: T.fixed(x, 2, grouped=True, plus=True), lambda v: format(v, "+,.2f")),
    (lambda x: T.fixed(x, 1), lambda v: format(v, ".1f")),
    (lambda x: T.fixed(x, 0), lambda v: format(v, ".0f")),
    (T.percent, lambda v: format(v, ".0%")),
    (lambda x: T.rounded(x, 4), lambda v: repr(round(v, 4)) if math.isfinite(v) else repr(v)),
    (lambda x: T.rounded(x, 6), lambda v: repr(round(v, 6)) if math.isfinite(v) else repr(v)),
    (lambda x: T.counted(x, "day", "round", "an unknown number of days"), _days),
    (lambda x: T.counted(x, "complaint", "trunc", "an unknown number of complaints"),
     lambda v: _plural(v, "complaint")),
])
def test_numbers_read_as_python_formats_them(got: Any, expected: Any) -> None:
    x = _numbers()
    assert got(x).to_pylist() == [expected(v) for v in x.tolist()]


# ---------------------------------------------------------------------------------------------
# The per-row reference: the facts and the actions JSON as churnguard wrote them row by row


def _decline_fact(c: Mapping[str, list[Any]], i: int) -> str:
    window = c.get("interaction_decline_window")
    w = int(window[i]) if window is not None and window[i] in (30, 90) else (
        90 if not math.isfinite(c["expected_events_30d"][i])
        and math.isfinite(c["expected_events_90d"][i]) else 30)
    seen, usual = c[f"events_{w}d"][i], c[f"expected_events_{w}d"][i]
    if not (math.isfinite(seen) and math.isfinite(usual) and usual > 0):
        return f"interactions fell in the last {w} days vs. their usual"
    n = round(seen)
    return (f"{n} interaction{'s' if n != 1 else ''} in the last {w} days, "
            f"{1 - seen / usual:.0%} fewer than their usual {usual:.0f}")


def _row_fact(signal: str, c: Mapping[str, list[Any]], i: int) -> str:
    def fell(x: float) -> str:
        return f" {1 - x:.0%}" if math.isfinite(x) else ""

    return {
        "complaints": lambda: f"{_plural(c['complaints_90d'][i], 'complaint')} in the last "
                              "90 days",
        "support_friction": lambda: f"{_plural(c['tickets_90d'][i], 'support ticket')} in the "
                                    "last 90 days",
        "purchase_decline": lambda: f"purchase frequency fell{fell(c['purchase_trend'][i])} "
                                    "vs. their usual",
        "interaction_decline": lambda: _decline_fact(c, i),
        "overdue": lambda: f"{_days(c['days_since_last_purchase'][i])} since the last "
                           f"purchase, {c['overdue_ratio'][i]:.1f}\\u00d7 their usual gap",
        "inactive": lambda: f"no interaction for {_days(c['days_since_last_interaction'][i])}",
        "new_customer": lambda: f"signed up {_days(c['tenure_days'][i])} ago",
        "renewal_due": lambda: f"the subscription renews in "
                               f"{_days(c['sub_days_to_renewal'][i])}",
    }[signal]()


def _row_actions(a: Assessment, policy: Policy) -> list[str]:
    c = {k: np.asarray(v).tolist() for k, v in a.columns.items()}
    ev = a.ev
    n = ev.shape[0]
    none_j = next(j for j, act in enumerate(policy.actions) if act.id == NO_ACTION)
    heads, whys, costs, own = _templates(policy)
    out = []
    for i in range(n):
        row = ev[i]
        pos = [j for j in np.argsort(-row, kind="stable").tolist() if row[j] > 0]
        pairs = [(j, float(row[j])) for j in pos] or [(none_j, 0.0)]
        active = [b for b, s in enumerate(SIGNALS) if a.signals[s][i]]
        p, clv = c["churn_probability"][i], c["clv"][i]
        stake = (f"churn risk {p:.0%} ({a.risk_tier[i]}) with {clv:,.2f} expected spend at "
                 "stake")
        texts = []
        for j, v in pairs:
            if j == none_j:
                sel = active[:2]
            else:
                sel = [*(b for b in own[j] if b in active),
                       *(b for b in active if b not in own[j])][:3]
            detail = "; " + "; ".join(_row_fact(SIGNALS[b], c, i) for b in sel) if sel else ""
            if j == none_j:
                texts.append(f'{heads[j]}{v!r},"reason":"{whys[j]}: {stake}{detail}."}}')
            else:
                texts.append(f'{heads[j]}{round(v, 4)!r},"reason":"{whys[j]}: {stake}'
                             f'{detail}. Expected value {v:+,.2f} for a cost of {costs[j]}."}}')
        out.append("[" + ",".join(texts) + "]")
    return out


@pytest.fixture(params=["columns", "rows"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once through the column path and once through the row-by-row path that
    small batches take (the API's one customer)."""
    from churnguard.model.policy import reasons

    monkeypatch.setattr(reasons, "ROW_BY_ROW", 0 if request.param == "columns" else 10**9)
    return str(request.param)


def test_fake_fit_scores_write_the_per_row_actions_and_facts(
        fake_bundle: Any, fake_features: pd.DataFrame, path: str) -> None:
    from churnguard.model.score import score_matrix

    full = score_matrix(fake_bundle, fake_bundle.encode(fake_features), drivers=False)
    a, policy = full.assessment, full.policy
    assert a.actions_json(policy) == _row_actions(a, policy)
    c = {k: np.asarray(v).tolist() for k, v in a.columns.items()}
    facts = evidence(a.columns, a.signals)
    for s in SIGNALS:
        on = np.flatnonzero(a.signals[s]).tolist()
        assert facts[s][on].tolist() == [_row_fact(s, c, i) for i in on]
        assert all(f is None for f in np.delete(facts[s], on))
    assert sum(len(np.flatnonzero(a.signals[s])) for s in SIGNALS) > 0


def test_random_frames_write_the_per_row_actions(path: str) -> None:
    """Every signal on and off, missing facts, ties of the rounding: the same text."""
    rng = np.random.default_rng(5)
    n = 600
    policy = load_catalog().fit_value_tiers(np.arange(1000.0))

    def some_nan(x: np.ndarray) -> np.ndarray:
        return np.where(rng.uniform(size=n) < 0.1, np.nan, x)

    f = {"churn_probability": rng.uniform(0, 1, n), "clv": rng.gamma(1.0, 900.0, n),
         "complaints_90d": some_nan(rng.poisson(0.6, n).astype(float)),
         "tickets_90d": some_nan(rng.poisson(1.0, n).astype(float)),
         "purchase_trend": some_nan(rng.integers(0, 12, n) / 8.0),
         "orders_365d": rng.poisson(3, n).astype(float),
         "events_30d": some_nan(rng.poisson(3, n).astype(float)),
         "events_90d": some_nan(rng.poisson(20, n).astype(float)),
         "interaction_trend_90_365": some_nan(rng.uniform(0.1, 2, n)),
         "tenure_days": rng.uniform(10, 900, n),
         "overdue_ratio": some_nan(rng.integers(0, 40, n) / 4.0),
         "days_since_last_purchase": some_nan(rng.uniform(1, 400, n)),
         "days_since_last_interaction": some_nan(rng.integers(0, 90, n) + 0.5),
         "sub_days_to_renewal": some_nan(rng.uniform(0, 120, n))}
    a = assess(f, policy)
    assert a.actions_json(policy) == _row_actions(a, policy)
    kinds = {t.count('"action_id"') for t in a.actions_json(policy)}
    assert {1, 2} <= kinds
    # every fact of every row, also where its signal is off and its numbers are missing
    on = {s: np.ones(n, dtype=bool) for s in SIGNALS}
    c = {k: np.asarray(v).tolist() for k, v in a.columns.items()}
    facts = evidence(a.columns, on)
    for s in SIGNALS:
        assert facts[s].tolist() == [_row_fact(s, c, i) for i in range(n)]


def test_fake_fit_drivers_json_is_json_dumps_of_the_dicts(
        fake_bundle: Any, fake_features: pd.DataFrame) -> None:
    """The batch's drivers column, assembled a column at a time, against ``json.dumps`` of
    each row's driver dicts, as the batch job wrote it row by row."""
    import json

    from churnguard.model.score import score_matrix

    rows = fake_features.reset_index(drop=True).copy()
    cats = [f.name for f in fake_bundle.spec.features() if f.kind == "category"]
    rows.loc[0, cats[0]] = "a level never seen"
    full = score_matrix(fake_bundle, fake_bundle.encode(rows))
    assert full.drivers is not None
    texts = full.drivers_json()
    assert texts is not None
    assert texts.to_pylist() == [json.dumps(d, separators=(",", ":")) for d in full.drivers]
    listed = [d for row in full.drivers for d in row]
    assert any(d["value"] is None for d in listed)
    assert {type(d["value"]) for d in listed} >= {int, float}
