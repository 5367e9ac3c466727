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

import functools
import itertools
import json
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
                    "purchase_trend", "interaction_trend", "days_since_last_purchase",
                    "overdue_ratio", "days_since_last_interaction", "tenure_days")


# ---------------------------------------------------------------------------------------------
# Drivers


def top_drivers(contribs: np.ndarray, names: Sequence[str], value: Callable[[int, int], Any],
                descriptions: Mapping[str, str], k: int) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` features that raise the churn score most (positive contributions to
    the log-odds, largest first), with description and the customer's value.

    ``contribs``: n × len(names) (without the bias column); ``value(i, j)``: the display
    value of feature ``j`` of row ``i`` (called only for the features shown).
    """
    out: list[list[dict[str, Any]]] = []
    if k <= 0:
        return [[] for _ in range(len(contribs))]
    k = min(k, contribs.shape[1])
    order = np.argsort(-contribs, axis=1, kind="stable")[:, :k]
    # Python numbers for the whole batch at once: indexing numpy scalars per element is slow.
    top = np.take_along_axis(contribs, order, axis=1).tolist()
    for i, (cols, cs) in enumerate(zip(order.tolist(), top, strict=True)):
        row: list[dict[str, Any]] = []
        for j, c in zip(cols, cs, strict=True):
            if c <= 0:
                break
            name = names[j]
            row.append({"feature": name, "description": descriptions.get(name, name),
                        "value": value(i, j), "contribution": round(c, 6)})
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Evidence


def _fmt_days(x: float) -> str:
    d = round(x)
    return f"{d} day{'s' if d != 1 else ''}"


def evidence(columns: Mapping[str, np.ndarray],
             sig: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Readable facts behind each active signal (signal name → object array of text, None
    where the signal is off), from the batch's :data:`EVIDENCE_COLUMNS`. Only the rows where a
    signal is on are formatted. The text is ASCII and needs no JSON escaping ("×" is written
    ``\\u00d7``), so reasons are assembled as JSON directly."""
    c = {k: v.tolist() for k, v in columns.items()}

    def on(name: str) -> list[int]:
        return np.flatnonzero(np.asarray(sig[name], dtype=bool)).tolist()

    def fill(rows: list[int], texts: list[str]) -> np.ndarray:
        out = np.full(len(c["clv"]), None, dtype=object)
        if rows:
            out[rows] = texts
        return out

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'s' if n != 1 else ''}"

    r = {name: on(name) for name in SIGNALS}
    return {
        "complaints": fill(r["complaints"], [
            f"{plural(int(c['complaints_90d'][i]), 'complaint')} in the last 90 days"
            for i in r["complaints"]]),
        "support_friction": fill(r["support_friction"], [
            f"{int(c['tickets_90d'][i])} support tickets in the last 90 days"
            for i in r["support_friction"]]),
        "purchase_decline": fill(r["purchase_decline"], [
            f"purchase frequency fell {1 - c['purchase_trend'][i]:.0%} vs. their usual"
            for i in r["purchase_decline"]]),
        "interaction_decline": fill(r["interaction_decline"], [
            f"interactions fell {1 - c['interaction_trend'][i]:.0%} vs. the last 90 days"
            for i in r["interaction_decline"]]),
        "overdue": fill(r["overdue"], [
            f"{_fmt_days(c['days_since_last_purchase'][i])} since the last purchase, "
            f"{c['overdue_ratio'][i]:.1f}\\u00d7 their usual gap" for i in r["overdue"]]),
        "inactive": fill(r["inactive"], [
            f"no interaction for {_fmt_days(c['days_since_last_interaction'][i])}"
            for i in r["inactive"]]),
        "new_customer": fill(r["new_customer"], [
            f"signed up {_fmt_days(c['tenure_days'][i])} ago" for i in r["new_customer"]]),
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


@functools.lru_cache(maxsize=16)
def _templates(policy: Policy) -> tuple[list[str], list[str], list[str], list[tuple[int, ...]]]:
    """Per action, escaped once per policy (the API scores one customer per call): its JSON
    object up to the expected value, its reason's opening, its cost as text, its signals."""
    esc = json.encoder.encode_basestring_ascii
    heads = [json.dumps(_action_out(act, 0.0, ""), separators=(",", ":"))
             .split('"expected_value":')[0] + '"expected_value":' for act in policy.actions]
    whys = [esc(act.why)[1:-1] for act in policy.actions]
    costs = [f"{act.cost:,.2f}" for act in policy.actions]
    own = [tuple(SIGNALS.index(s) for s in act.signals if s in SIGNALS)
           for act in policy.actions]
    return heads, whys, costs, own


def _action_out(a: Action, ev: float, reason: str) -> dict[str, Any]:
    return {"action_id": a.id, "name": a.name, "channel": a.channel, "cost": a.cost,
            "expected_effect": a.effect, "expected_value": round(ev, 4), "reason": reason}

