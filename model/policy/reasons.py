"""The reasons a CRM user reads: churn drivers, the facts behind each signal, and the
recommended actions assembled as JSON.

:func:`top_drivers` lists the features that push a customer's churn score up most (their
TreeSHAP contributions to the log-odds). :func:`evidence` turns the signals of an
:class:`~churnguard.model.policy.Assessment` into short facts ("2 complaints in the last 90
days"), and :meth:`Assessment.recommendations` (:func:`_recommend`) writes every row's actions
as compact JSON text — each action's catalog fields, its expected value and a reason: why the
action suits the customer, what is at stake, the facts, and the EV for its cost. The text is
assembled directly (templates escaped once per policy, :func:`_templates`) rather than through
``json.dumps`` per row, byte for byte what ``json.dumps(..., separators=(",", ":"))`` writes:
the API scores one customer per call and the batch job millions.
"""

from __future__ import annotations

import itertools
import json
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from churnguard.model.policy.catalog import NO_ACTION, SIGNALS, Action, Policy

if TYPE_CHECKING:
    from churnguard.model.policy.assessment import Assessment

#: Columns the readable reasons quote; :func:`~churnguard.model.policy.assess` converts them to
#: float arrays once per batch (:func:`~churnguard.model.policy.evidence_columns`).
EVIDENCE_COLUMNS = ("churn_probability", "clv", "complaints_90d", "tickets_90d",
                    "purchase_trend", "events_30d", "events_90d", "days_since_last_purchase",
                    "overdue_ratio", "days_since_last_interaction", "tenure_days",
                    "sub_days_to_renewal")


# ---------------------------------------------------------------------------------------------
# Drivers


#: What a null driver value means when its feature's definition does not say (a feature the
#: SQL never leaves NULL, sent as null inline).
UNKNOWN_VALUE = "unknown: no value was given"


def top_drivers(contribs: np.ndarray, names: Sequence[str], value: Callable[[int, int], Any],
                descriptions: Mapping[str, str], k: int, *,
                shown: np.ndarray | None = None,
                null_meanings: Mapping[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` features that raise the churn score most (positive contributions to
    the log-odds, largest first), with description and the customer's value; a null value
    comes with ``value_meaning``, what null means for that feature ("no purchase yet").

    ``contribs``: n × len(names) (without the bias column); ``value(i, j)``: the display
    value of feature ``j`` of row ``i`` (called only for the features shown); ``shown``: a
    boolean mask over ``names``, the features that may be listed (the actionable ones: a
    context feature such as the season still counts in the score, but is never a driver).
    """
    out: list[list[dict[str, Any]]] = []
    if k <= 0:
        return [[] for _ in range(len(contribs))]
    if shown is not None and not shown.all():
        contribs = np.where(np.asarray(shown, dtype=bool)[None, :], contribs, -np.inf)
        k = min(k, int(np.count_nonzero(shown)))
    k = min(k, contribs.shape[1])
    meanings = null_meanings or {}
    order = np.argsort(-contribs, axis=1, kind="stable")[:, :k]
    # Python numbers for the whole batch at once: indexing numpy scalars per element is slow.
    top = np.take_along_axis(contribs, order, axis=1).tolist()
    for i, (cols, cs) in enumerate(zip(order.tolist(), top, strict=True)):
        row: list[dict[str, Any]] = []
        for j, c in zip(cols, cs, strict=True):
            if c <= 0:
                break
            name = names[j]
            v = value(i, j)
            d = {"feature": name, "description": descriptions.get(name, name), "value": v}
            if v is None:
                d["value_meaning"] = meanings.get(name, UNKNOWN_VALUE)
            d["contribution"] = round(c, 6)
            row.append(d)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Evidence


def _fmt_days(x: float) -> str:
    if not math.isfinite(x):  # a signal is off without its facts; inline rows may still lack them
        return "an unknown number of days"
    d = round(x)
    return f"{d} day{'s' if d != 1 else ''}"


def _decline_fact(c: Mapping[str, list[Any]], i: int) -> str:
    """The interaction_decline fact of row ``i``: the window that shows it (30 days unless
    only the 90-day window does), its count, and the usual count."""
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


def evidence(columns: Mapping[str, np.ndarray],
             sig: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Readable facts behind each active signal (signal name → object array of text, None
    where the signal is off), from the batch's :data:`EVIDENCE_COLUMNS`. Only the rows where a
    signal is on are formatted. The text is ASCII and needs no JSON escaping ("×" is written
    ``\\u00d7``), so reasons are assembled as JSON directly.
    :func:`~churnguard.model.policy.signals` keeps a signal off where its facts are missing; a
    missing value given anyway reads as unknown ("an unknown number of days"), never as an
    error."""
    c = {k: v.tolist() for k, v in columns.items()}

    def on(name: str) -> list[int]:
        return np.flatnonzero(np.asarray(sig[name], dtype=bool)).tolist()

    def fill(rows: list[int], texts: list[str]) -> np.ndarray:
        out = np.full(len(c["clv"]), None, dtype=object)
        if rows:
            out[rows] = texts
        return out

    def plural(x: float, word: str) -> str:
        if not math.isfinite(x):
            return f"an unknown number of {word}s"
        n = int(x)
        return f"{n} {word}{'s' if n != 1 else ''}"

    def fell(x: float) -> str:
        return f" {1 - x:.0%}" if math.isfinite(x) else ""

    r = {name: on(name) for name in SIGNALS}
    return {
        "complaints": fill(r["complaints"], [
            f"{plural(c['complaints_90d'][i], 'complaint')} in the last 90 days"
            for i in r["complaints"]]),
        "support_friction": fill(r["support_friction"], [
            f"{plural(c['tickets_90d'][i], 'support ticket')} in the last 90 days"
            for i in r["support_friction"]]),
        "purchase_decline": fill(r["purchase_decline"], [
            f"purchase frequency fell{fell(c['purchase_trend'][i])} vs. their usual"
            for i in r["purchase_decline"]]),
        "interaction_decline": fill(r["interaction_decline"], [
            _decline_fact(c, i) for i in r["interaction_decline"]]),
        "overdue": fill(r["overdue"], [
            f"{_fmt_days(c['days_since_last_purchase'][i])} since the last purchase, "
            f"{c['overdue_ratio'][i]:.1f}\\u00d7 their usual gap" for i in r["overdue"]]),
        "inactive": fill(r["inactive"], [
            f"no interaction for {_fmt_days(c['days_since_last_interaction'][i])}"
            for i in r["inactive"]]),
        "new_customer": fill(r["new_customer"], [
            f"signed up {_fmt_days(c['tenure_days'][i])} ago" for i in r["new_customer"]]),
        "renewal_due": fill(r["renewal_due"], [
            f"the subscription renews in {_fmt_days(c['sub_days_to_renewal'][i])}"
            for i in r["renewal_due"]]),
    }


# ---------------------------------------------------------------------------------------------
# Recommended actions as JSON


@dataclass
class Recommendations:
    """The recommended actions of a batch: row ``i`` owns the pairs ``offsets[i]:offsets[i +
    1]`` (at least one: the catalog's no_action when nothing pays), best first, each an action
    index; ``json[i]`` is row ``i``'s list of actions (:func:`_action_out` dicts
    with their reasons) as compact JSON text, what ``json.dumps`` with ``separators=(",",
    ":")`` writes."""

    offsets: np.ndarray
    action: np.ndarray
    json: list[str]

    def first(self) -> np.ndarray:
        """The recommended (best) action index of each row."""
        return self.action[self.offsets[:-1]]


def _recommend(a: Assessment, policy: Policy) -> Recommendations:
    """Every row's recommended actions with their JSON text (see
    :meth:`~churnguard.model.policy.Assessment.recommendations`)."""
    ev = a.ev
    n = ev.shape[0]
    none_j = next(j for j, act in enumerate(policy.actions) if act.id == NO_ACTION)
    count = (ev > 0).sum(axis=1)
    # Stable, so equal EVs keep catalog order; −inf (ineligible) sorts last.
    order = np.argsort(-ev, axis=1, kind="stable")
    n_pairs = np.maximum(count, 1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_pairs, out=offsets[1:])
    rows = np.repeat(np.arange(n), n_pairs)
    rank = np.arange(len(rows)) - offsets[rows]
    paid = count[rows] > 0
    action = np.where(paid, order[rows, rank], none_j)
    value = np.where(paid, ev[rows, action], 0.0)

    facts = evidence(a.columns, a.signals)
    fact_cols = [facts[s] for s in SIGNALS]
    bits = np.zeros(n, dtype=np.int64)
    for b, s in enumerate(SIGNALS):
        bits |= np.asarray(a.signals[s], dtype=np.int64) << b
    p = a.columns["churn_probability"].tolist()
    clv = a.columns["clv"].tolist()
    tiers = a.risk_tier.tolist()  # RISK_TIERS: plain ASCII
    stake = [f"churn risk {p[i]:.0%} ({tiers[i]}) with {clv[i]:,.2f} expected spend at stake"
             for i in range(n)]
    heads, whys, costs, own = _templates(policy)
    chosen: dict[tuple[int, int], tuple[int, ...]] = {}

    def quoted(j: int, mask: int) -> tuple[int, ...]:
        """The facts quoted for action ``j``: its own signals first, then the others; at most
        three (two for no_action)."""
        active = [b for b in range(len(SIGNALS)) if mask >> b & 1]
        if j == none_j:
            return tuple(active[:2])
        mine = [b for b in own[j] if mask >> b & 1]
        return tuple([*mine, *(b for b in active if b not in own[j])][:3])

    pairs: list[str] = []
    mask = bits.tolist()
    for i, j, v in zip(rows.tolist(), action.tolist(), value.tolist(), strict=True):
        key = (j, mask[i])
        sel = chosen.get(key)
        if sel is None:
            sel = chosen[key] = quoted(j, mask[i])
        detail = "; " + "; ".join([fact_cols[b][i] for b in sel]) if sel else ""
        if j == none_j:
            pairs.append(f'{heads[j]}{v!r},"reason":"{whys[j]}: {stake[i]}{detail}."}}')
        else:
            pairs.append(f'{heads[j]}{round(v, 4)!r},"reason":"{whys[j]}: {stake[i]}{detail}. '
                         f'Expected value {v:+,.2f} for a cost of {costs[j]}."}}')
    off = offsets.tolist()
    texts = [f"[{pairs[s]}]" if e - s == 1 else "[" + ",".join(pairs[s:e]) + "]"
             for s, e in itertools.pairwise(off)]
    return Recommendations(offsets=offsets, action=action, json=texts)


_Templates = tuple[list[str], list[str], list[str], list[tuple[int, ...]]]
#: :func:`_templates` by ``id(policy)``, with a weak reference that tells a live policy from
#: a new one at a reused address. By identity, not by value: an ``lru_cache`` hashed the
#: whole frozen policy (every action, field by field) on every call, a few percent of a
#: one-customer score. A policy lives as long as its bundle, so there are few.
_TEMPLATES: dict[int, tuple[weakref.ref[Policy], _Templates]] = {}


def _templates(policy: Policy) -> _Templates:
    """Per action, escaped once per policy (the API scores one customer per call): its JSON
    object up to the expected value, its reason's opening, its cost as text, its signals."""
    found = _TEMPLATES.get(id(policy))
    if found is not None and found[0]() is policy:
        return found[1]
    if len(_TEMPLATES) >= 16:
        _TEMPLATES.clear()
    out = _build_templates(policy)
    _TEMPLATES[id(policy)] = (weakref.ref(policy), out)
    return out


def _build_templates(policy: Policy) -> _Templates:
    esc = json.encoder.encode_basestring_ascii
    heads = [json.dumps(_action_out(act, 0.0, ""), separators=(",", ":"))
             .split('"expected_value":')[0] + '"expected_value":' for act in policy.actions]
    whys = [esc(act.why)[1:-1] for act in policy.actions]
    costs = [f"{act.cost:,.2f}" for act in policy.actions]
    own = [tuple(SIGNALS.index(s) for s in act.signals if s in SIGNALS)
           for act in policy.actions]
    return heads, whys, costs, own


def _action_out(a: Action, ev: float, reason: str) -> dict[str, Any]:
    # Effects measured on campaign logs have every digit of a ratio of counts: 4 decimals (a
    # hundredth of a percentage point) is what they mean.
    return {"action_id": a.id, "name": a.name, "channel": a.channel, "cost": a.cost,
            "expected_effect": round(a.effect, 4), "expected_value": round(ev, 4),
            "reason": reason}

