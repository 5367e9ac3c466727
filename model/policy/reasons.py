"""The reasons a CRM user reads: churn drivers, the facts behind each signal, and the
recommended actions assembled as JSON.

:func:`top_drivers` lists the features that push a customer's churn score up most (their
TreeSHAP contributions to the log-odds). :func:`evidence` turns the signals of an
:class:`~churnguard.model.policy.Assessment` into short facts ("2 complaints in the last 90
days"), and :meth:`Assessment.recommendations` (:func:`_recommend`) writes every row's actions
as compact JSON text — each action's catalog fields, its expected value and a reason: why the
action suits the customer, what is at stake, the facts, and the EV for its cost. The text is
assembled directly (templates escaped once per policy, :func:`_templates`) rather than through
``json.dumps`` per row, byte for byte what ``json.dumps(..., separators=(",", ":"))`` writes,
and a column at a time (numbers formatted by :mod:`~churnguard.model.policy.text`, parts
joined by Arrow) rather than an f-string per row: the batch job writes millions.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnguard.model.policy import text
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


#: The JSON text of listed driver values (``listed`` rows and columns of the encoded matrix)
#: and which of them are null: :meth:`~churnguard.model.encode.RowEncoder.display_json`.
ValuesJson = Callable[[np.ndarray, np.ndarray], tuple[pa.Array, np.ndarray]]


@dataclass
class Drivers:
    """The churn drivers of a batch: row ``i`` lists the features ``cols[i, :count[i]]`` with
    the contributions ``contrib[i, :count[i]]``, largest first (:func:`rank_drivers`)."""

    cols: np.ndarray
    contrib: np.ndarray
    count: np.ndarray
    names: Sequence[str]
    descriptions: Mapping[str, str]
    meanings: Mapping[str, str]

    def dicts(self, value: Callable[[int, int], Any]) -> list[list[dict[str, Any]]]:
        """Per row its drivers as dicts, with ``value(i, j)`` the display value of feature
        ``j`` of row ``i`` (called only for the features listed)."""
        out: list[list[dict[str, Any]]] = []
        names, descriptions, meanings = self.names, self.descriptions, self.meanings
        # Python numbers for the whole batch at once: indexing numpy scalars per element is slow.
        for i, (cols, cs, m) in enumerate(zip(self.cols.tolist(), self.contrib.tolist(),
                                             self.count.tolist(), strict=True)):
            row: list[dict[str, Any]] = []
            for j, c in zip(cols[:m], cs[:m], strict=True):
                name = names[j]
                v = value(i, j)
                d = {"feature": name, "description": descriptions.get(name, name), "value": v}
                if v is None:
                    d["value_meaning"] = meanings.get(name, UNKNOWN_VALUE)
                d["contribution"] = round(c, 6)
                row.append(d)
            out.append(row)
        return out

    def json(self, values: ValuesJson) -> pa.Array:
        """Per row the JSON text of :meth:`dicts` as ``json.dumps`` with ``separators=(",",
        ":")`` writes it, assembled a column at a time."""
        listed = np.arange(self.cols.shape[1])[None, :] < self.count[:, None]
        rows = np.repeat(np.arange(len(self.count)), self.count)
        cols = self.cols[listed]
        value, null = values(rows, cols)
        at = pa.array(cols, pa.int64())
        heads = [f'{{"feature":{json.dumps(n)},"description":'
                 f'{json.dumps(self.descriptions.get(n, n))},"value":' for n in self.names]
        meanings = [f',"value_meaning":{json.dumps(self.meanings.get(n, UNKNOWN_VALUE))}'
                    for n in self.names]
        entries = text.join(
            text.strings(heads).take(at), value,
            pc.if_else(pa.array(null), text.strings(meanings).take(at), None),
            ',"contribution":', text.rounded(self.contrib[listed], 6), "}")
        offsets = np.zeros(len(self.count) + 1, dtype=np.int64)
        np.cumsum(self.count, out=offsets[1:])
        lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), entries)
        return text.join("[", pc.binary_join(lists, ","), "]")


def rank_drivers(contribs: np.ndarray, names: Sequence[str], descriptions: Mapping[str, str],
                 k: int, *, shown: np.ndarray | None = None,
                 null_meanings: Mapping[str, str] | None = None) -> Drivers:
    """Per row, the ``k`` features that raise the churn score most (positive contributions to
    the log-odds, largest first); a null value comes with what null means for its feature
    (``null_meanings``, else :data:`UNKNOWN_VALUE`).

    ``contribs``: n × len(names) (without the bias column); ``shown``: a boolean mask over
    ``names``, the features that may be listed (the actionable ones: a context feature such
    as the season still counts in the score, but is never a driver).
    """
    n = len(contribs)
    meanings = dict(null_meanings or {})
    if k <= 0:
        empty = np.zeros((n, 0), dtype=np.int64)
        return Drivers(empty, empty.astype(np.float64), np.zeros(n, dtype=np.int64), names,
                       descriptions, meanings)
    if shown is not None and not shown.all():
        contribs = np.where(np.asarray(shown, dtype=bool)[None, :], contribs, -np.inf)
        k = min(k, int(np.count_nonzero(shown)))
    k = min(k, contribs.shape[1])
    order = np.argsort(-contribs, axis=1, kind="stable")[:, :k]
    # float64 of the booster's float32 numbers: the Python floats the dicts held.
    top = np.take_along_axis(contribs, order, axis=1).astype(np.float64)
    # Listed up to the first contribution that does not raise the score.
    count = np.logical_and.accumulate(~(top <= 0), axis=1).sum(axis=1)
    return Drivers(order, top, count, names, descriptions, meanings)


def top_drivers(contribs: np.ndarray, names: Sequence[str], value: Callable[[int, int], Any],
                descriptions: Mapping[str, str], k: int, *,
                shown: np.ndarray | None = None,
                null_meanings: Mapping[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """:func:`rank_drivers` as dicts (:meth:`Drivers.dicts`): ``value(i, j)`` is the display
    value of feature ``j`` of row ``i``."""
    return rank_drivers(contribs, names, descriptions, k, shown=shown,
                        null_meanings=null_meanings).dicts(value)


# ---------------------------------------------------------------------------------------------
# Evidence


def _col(c: Mapping[str, np.ndarray], name: str, rows: np.ndarray) -> np.ndarray:
    return np.asarray(c[name], dtype=np.float64)[rows]


def _days(x: np.ndarray) -> pa.Array:
    # A signal is off without its facts; inline rows may still lack them.
    return text.counted(x, "day", "round", "an unknown number of days")


def _in_90_days(x: np.ndarray, word: str) -> pa.Array:
    return text.join(text.counted(x, word, "trunc", f"an unknown number of {word}s"),
                     " in the last 90 days")


def _purchase_decline(c: Mapping[str, np.ndarray], rows: np.ndarray) -> pa.Array:
    x = _col(c, "purchase_trend", rows)
    fell = pc.if_else(pa.array(np.isfinite(x)), text.join(" ", text.percent(1 - x)), None)
    return text.join("purchase frequency fell", fell, " vs. their usual")


def _decline_fact(c: Mapping[str, np.ndarray], rows: np.ndarray) -> pa.Array:
    """The interaction_decline facts: the window that shows it (30 days unless only the
    90-day window does), its count, and the usual count."""
    e30, e90 = _col(c, "expected_events_30d", rows), _col(c, "expected_events_90d", rows)
    w = np.where(~np.isfinite(e30) & np.isfinite(e90), 90, 30)
    if "interaction_decline_window" in c:
        window = np.asarray(c["interaction_decline_window"])[rows]
        w = np.where(np.isin(window, (30, 90)), window, w).astype(np.int64)
    thirty = w == 30
    seen = np.where(thirty, _col(c, "events_30d", rows), _col(c, "events_90d", rows))
    usual = np.where(thirty, e30, e90)
    with np.errstate(invalid="ignore", divide="ignore"):
        known = np.isfinite(seen) & np.isfinite(usual) & (usual > 0)
        share = 1 - seen / usual
    days = pc.cast(pa.array(w), pa.string())
    facts = text.join(text.counted(seen, "interaction", "round", ""), " in the last ", days,
                      " days, ", text.percent(share), " fewer than their usual ",
                      text.fixed(usual, 0))
    vague = text.join("interactions fell in the last ", days, " days vs. their usual")
    return pc.if_else(pa.array(known), facts, vague)


_NO_TEXT = pa.array([], pa.string())
#: Per signal, its facts for the rows where it is on.
_FACTS: dict[str, Callable[[Mapping[str, np.ndarray], np.ndarray], pa.Array]] = {
    "complaints": lambda c, r: _in_90_days(_col(c, "complaints_90d", r), "complaint"),
    "support_friction": lambda c, r: _in_90_days(_col(c, "tickets_90d", r), "support ticket"),
    "purchase_decline": _purchase_decline,
    "interaction_decline": _decline_fact,
    "overdue": lambda c, r: text.join(
        _days(_col(c, "days_since_last_purchase", r)), " since the last purchase, ",
        text.fixed(_col(c, "overdue_ratio", r), 1), "\\u00d7 their usual gap"),
    "inactive": lambda c, r: text.join("no interaction for ",
                                       _days(_col(c, "days_since_last_interaction", r))),
    "new_customer": lambda c, r: text.join("signed up ", _days(_col(c, "tenure_days", r)),
                                           " ago"),
    "renewal_due": lambda c, r: text.join("the subscription renews in ",
                                          _days(_col(c, "sub_days_to_renewal", r))),
}


def _facts(columns: Mapping[str, np.ndarray],
           sig: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, pa.Array]]:
    """Per signal of :data:`SIGNALS`: the rows where it is on and their facts, formatted for
    those rows only, a column at a time."""
    out = []
    for name in SIGNALS:
        rows = np.flatnonzero(np.asarray(sig[name], dtype=bool))
        # Most signals are off for most customers, all of them for many one-customer calls.
        out.append((rows, _FACTS[name](columns, rows) if len(rows) else _NO_TEXT))
    return out


#: Up to this many rows the facts and reasons are formatted row by row with f-strings: the API
#: scores one customer per call, where the column path's hundred-odd Arrow kernel calls cost
#: more than the rest of the score. Above it, a column at a time. Both write the same text
#: (tests/code/test_vectorised_text.py checks them against each other).
ROW_BY_ROW = 64


def _fmt_days(x: float) -> str:
    if not math.isfinite(x):
        return "an unknown number of days"
    d = round(x)
    return f"{d} day{'s' if d != 1 else ''}"


def _row_decline_fact(c: Mapping[str, list[Any]], i: int) -> str:
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


def _row_facts(columns: Mapping[str, np.ndarray],
               sig: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`evidence` of a few rows, one f-string per fact (see :data:`ROW_BY_ROW`)."""
    c = {k: np.asarray(v).tolist() for k, v in columns.items()}

    def plural(x: float, word: str) -> str:
        if not math.isfinite(x):
            return f"an unknown number of {word}s"
        n = int(x)
        return f"{n} {word}{'s' if n != 1 else ''}"

    def fell(x: float) -> str:
        return f" {1 - x:.0%}" if math.isfinite(x) else ""

    write: dict[str, Callable[[int], str]] = {
        "complaints": lambda i: f"{plural(c['complaints_90d'][i], 'complaint')} in the last "
                                "90 days",
        "support_friction": lambda i: f"{plural(c['tickets_90d'][i], 'support ticket')} in "
                                      "the last 90 days",
        "purchase_decline": lambda i: f"purchase frequency fell{fell(c['purchase_trend'][i])} "
                                      "vs. their usual",
        "interaction_decline": lambda i: _row_decline_fact(c, i),
        "overdue": lambda i: f"{_fmt_days(c['days_since_last_purchase'][i])} since the last "
                             f"purchase, {c['overdue_ratio'][i]:.1f}\\u00d7 their usual gap",
        "inactive": lambda i: "no interaction for "
                              f"{_fmt_days(c['days_since_last_interaction'][i])}",
        "new_customer": lambda i: f"signed up {_fmt_days(c['tenure_days'][i])} ago",
        "renewal_due": lambda i: "the subscription renews in "
                                 f"{_fmt_days(c['sub_days_to_renewal'][i])}",
    }
    n = len(c["clv"])
    out = {}
    for name in SIGNALS:
        col = np.full(n, None, dtype=object)
        for i in np.flatnonzero(np.asarray(sig[name], dtype=bool)).tolist():
            col[i] = write[name](i)
        out[name] = col
    return out


def evidence(columns: Mapping[str, np.ndarray],
             sig: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Readable facts behind each active signal (signal name → object array of text, None
    where the signal is off), from the batch's :data:`EVIDENCE_COLUMNS`. The text is ASCII and
    needs no JSON escaping ("×" is written ``\\u00d7``), so reasons are assembled as JSON
    directly. :func:`~churnguard.model.policy.signals` keeps a signal off where its facts are
    missing; a missing value given anyway reads as unknown ("an unknown number of days"),
    never as an error."""
    n = len(np.asarray(columns["clv"]))
    if n <= ROW_BY_ROW:
        return _row_facts(columns, sig)
    out = {}
    for name, (rows, texts) in zip(SIGNALS, _facts(columns, sig), strict=True):
        col = np.full(n, None, dtype=object)
        col[rows] = texts.to_pylist()
        out[name] = col
    return out


# ---------------------------------------------------------------------------------------------
# Recommended actions as JSON


@dataclass
class Recommendations:
    """The recommended actions of a batch: row ``i`` owns the pairs ``offsets[i]:offsets[i +
    1]`` (at least one: the catalog's no_action when nothing pays), best first, each an action
    index; ``text[i]`` is row ``i``'s list of actions (:func:`_action_out` dicts with their
    reasons) as compact JSON text, what ``json.dumps`` with ``separators=(",", ":")`` writes,
    in an Arrow string array (the batch job writes it as it is; :attr:`json` as Python
    strings)."""

    offsets: np.ndarray
    action: np.ndarray
    texts: pa.Array | list[str]

    def first(self) -> np.ndarray:
        """The recommended (best) action index of each row."""
        return self.action[self.offsets[:-1]]

    @property
    def text(self) -> pa.Array:
        """Each row's JSON text as an Arrow string array."""
        return self.texts if isinstance(self.texts, pa.Array) else text.strings(self.texts)

    @functools.cached_property
    def json(self) -> list[str]:
        """Each row's JSON text as a Python string."""
        out: list[str] = (self.texts.to_pylist() if isinstance(self.texts, pa.Array)
                          else self.texts)
        return out


def _recommend(a: Assessment, policy: Policy) -> Recommendations:
    """Every row's recommended actions with their JSON text (see
    :meth:`~churnguard.model.policy.Assessment.recommendations`), assembled a column at a
    time: each part of an action's text (its catalog fields, the stake, the facts quoted, the
    expected value) is formatted for every pair at once (:mod:`~churnguard.model.policy.text`)
    and the parts are concatenated by Arrow."""
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

    heads, whys, costs, own = _templates(policy)
    bits = np.zeros(n, dtype=np.int64)
    for b, s in enumerate(SIGNALS):
        bits |= np.asarray(a.signals[s], dtype=np.int64) << b

    def quoted(j: int, mask: int) -> list[int]:
        """The facts quoted for action ``j``: its own signals first, then the others; at most
        three (two for no_action)."""
        active = [b for b in range(len(SIGNALS)) if mask >> b & 1]
        if j == none_j:
            return active[:2]
        mine = [b for b in own[j] if mask >> b & 1]
        return [*mine, *(b for b in active if b not in own[j])][:3]

    if n <= ROW_BY_ROW:
        return Recommendations(offsets=offsets, action=action, texts=_row_texts(
            a, (heads, whys, costs, own), offsets, rows, action, value, bits, quoted, none_j))

    # Every fact of the batch in one array; where[b, i]: the place of signal b's fact of row i.
    facts = _facts(a.columns, a.signals)
    where = np.full((len(SIGNALS), n), -1, dtype=np.int64)
    start = 0
    for b, (on, _) in enumerate(facts):
        where[b, on] = start + np.arange(len(on))
        start += len(on)
    all_facts = pa.concat_arrays([t.cast(pa.string()) for _, t in facts])

    # The facts an action quotes depend only on the action and the row's signals: chosen
    # once per combination the batch holds.
    keys, combo = np.unique(action * (1 << len(SIGNALS)) + bits[rows], return_inverse=True)
    chosen = np.full((len(keys), 3), -1, dtype=np.int64)
    for k, key in enumerate(keys.tolist()):
        sel = quoted(key >> len(SIGNALS), key & ((1 << len(SIGNALS)) - 1))
        chosen[k, :len(sel)] = sel
    quotes = []
    for slot in range(3):
        b = chosen[combo.reshape(-1), slot]
        at = np.where(b >= 0, where[np.maximum(b, 0), rows], -1)
        quotes.append(all_facts.take(pa.array(at, mask=at < 0)))
    detail = pc.binary_join_element_wise("", *quotes, "; ", null_handling="skip")

    p = np.asarray(a.columns["churn_probability"], dtype=np.float64)
    clv = np.asarray(a.columns["clv"], dtype=np.float64)
    tiers = pa.array(a.risk_tier.tolist(), pa.string())  # RISK_TIERS: plain ASCII
    stake = text.join("churn risk ", text.percent(p), " (", tiers, ") with ",
                      text.fixed(clv, 2, grouped=True), " expected spend at stake")
    at_action = pa.array(action)
    paying = text.join(" Expected value ", text.fixed(value, 2, grouped=True, plus=True),
                       " for a cost of ", text.strings(costs).take(at_action), ".")
    pairs = text.join(
        text.strings(heads).take(at_action), text.rounded(value, 4), ',"reason":"',
        text.strings(whys).take(at_action), ": ", stake.take(pa.array(rows)), detail, ".",
        pc.if_else(pa.array(action == none_j), None, paying), '"}')
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pairs)
    return Recommendations(offsets=offsets, action=action,
                           texts=text.join("[", pc.binary_join(lists, ","), "]"))


def _row_texts(a: Assessment, templates: _Templates, offsets: np.ndarray, rows: np.ndarray,
               action: np.ndarray, value: np.ndarray, bits: np.ndarray,
               quoted: Callable[[int, int], list[int]], none_j: int) -> list[str]:
    """The JSON text of a few rows (:data:`ROW_BY_ROW`), one f-string per action."""
    heads, whys, costs, _ = templates
    fact_cols = [_row_facts(a.columns, a.signals)[s] for s in SIGNALS]
    p = a.columns["churn_probability"].tolist()
    clv = a.columns["clv"].tolist()
    tiers = a.risk_tier.tolist()
    stake = [f"churn risk {p[i]:.0%} ({tiers[i]}) with {clv[i]:,.2f} expected spend at stake"
             for i in range(len(p))]
    mask = bits.tolist()
    pairs: list[str] = []
    for i, j, v in zip(rows.tolist(), action.tolist(), value.tolist(), strict=True):
        sel = quoted(j, mask[i])
        detail = "; " + "; ".join([fact_cols[b][i] for b in sel]) if sel else ""
        if j == none_j:
            pairs.append(f'{heads[j]}{v!r},"reason":"{whys[j]}: {stake[i]}{detail}."}}')
        else:
            pairs.append(f'{heads[j]}{round(v, 4)!r},"reason":"{whys[j]}: {stake[i]}{detail}. '
                         f'Expected value {v:+,.2f} for a cost of {costs[j]}."}}')
    return ["[" + ",".join(pairs[s:e]) + "]" for s, e in itertools.pairwise(offsets.tolist())]


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

