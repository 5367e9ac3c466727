"""The retention action policy: lifecycle stage, value tier, risk tier, drivers, actions, plans.

Pure functions over *score frames*: any mapping from column name to equally long arrays (a
pandas DataFrame or a dict of numpy arrays) holding the feature columns plus
``churn_probability`` and ``clv``. The API, the batch job and Spark all call them through
:func:`churnguard.model.score.score_matrix`, and the :class:`Policy` travels
inside the registered bundle (``bundle.json`` → ``policy``), so every path recommends the same
actions (SPEC §5, §8).

Expected value of action *a* for customer *i* (SPEC §5)::

    EV(i, a) = p_churn(i) × effect(a) × CLV(i) − cost(a)

where ``effect`` is the relative reduction of the churn probability. Eligible actions with
EV > 0 are recommended, best first. :func:`plan_campaign` picks at most one action per customer
to maximise total EV under a budget: a multiple-choice knapsack, solved exactly by dynamic
programming over the budget in cost units when that table is small, else by the greedy on the
LP relaxation's incremental efficiencies (Sinha & Zoltners 1979, "The multiple-choice knapsack
problem", Operations Research 27(3)), whose LP bound gives a certified optimality gap (at most
the EV of one increment).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson

STAGES = ("new", "active", "loyal", "declining", "at_risk", "lapsed")
VALUE_TIERS = ("low", "medium", "high", "top")
RISK_TIERS = ("low", "medium", "high")
SIGNALS = ("complaints", "support_friction", "purchase_decline", "interaction_decline",
           "overdue", "inactive", "new_customer")
NO_ACTION = "no_action"
POLICY_FORMAT = 1


class PolicyError(ValueError):
    """A catalog or policy that cannot be used, with what is wrong and where."""


@dataclass(frozen=True)
class Action:
    """One retention action of the catalog, with its eligibility rules."""

    id: str
    name: str
    channel: str
    cost: float
    effect: float
    why: str = ""
    risk: tuple[float, float] = (0.0, 1.0)
    min_clv: float = 0.0
    stages: tuple[str, ...] = ()
    value_tiers: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    #: Where ``effect`` comes from: "catalog prior" or the campaign-log estimate.
    effect_source: str = "catalog prior"


@dataclass(frozen=True)
class Lifecycle:
    new_days: float = 90.0
    loyal_days: float = 365.0
    loyal_min_purchase_days: float = 6.0
    lapsed_days: float = 180.0
    lapsed_overdue_ratio: float = 4.0
    declining_purchase_trend: float = 0.6
    declining_interaction_trend: float = 0.5
    declining_overdue_ratio: float = 1.5


@dataclass(frozen=True)
class Policy:
    """The action catalog plus the cut points that turn scores into tiers and stages."""

    actions: tuple[Action, ...]
    risk_tiers: tuple[float, float] = (0.3, 0.6)
    value_quantiles: tuple[float, float, float] = (0.5, 0.8, 0.95)
    #: CLV cut points between the value tiers, fixed at training time (None: not fitted).
    value_cuts: tuple[float, float, float] | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    top_drivers: int = 5
    source: str = "default catalog"

    # -- construction / persistence ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = POLICY_FORMAT
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "policy") -> Policy:
        """Parse and validate a policy (the bundle's ``policy`` or a catalog YAML document)."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: expected a mapping, got {type(data).__name__}")
        raw_actions = data.get("actions")
        if not isinstance(raw_actions, list | tuple) or not raw_actions:
            raise PolicyError(f"{source}: 'actions' must be a non-empty list")
        actions = tuple(_action(a, f"{source}: actions[{i}]") for i, a in enumerate(raw_actions))
        ids = [a.id for a in actions]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise PolicyError(f"{source}: duplicate action id(s) {', '.join(dup)}")
        if NO_ACTION not in ids:
            actions = (*actions, Action(NO_ACTION, "No action", "none", 0.0, 0.0,
                                        "No retention action is expected to pay for its cost"))
        risk = _floats(data.get("risk_tiers", (0.3, 0.6)), 2, f"{source}: risk_tiers")
        quant = _floats(data.get("value_quantiles", (0.5, 0.8, 0.95)), 3,
                        f"{source}: value_quantiles")
        for name, pts in (("risk_tiers", risk), ("value_quantiles", quant)):
            if list(pts) != sorted(set(pts)) or pts[0] <= 0.0 or pts[-1] >= 1.0:
                raise PolicyError(f"{source}: {name} must increase strictly inside (0, 1), "
                                  f"got {list(pts)}")
        raw_cuts = data.get("value_cuts")
        cuts = _floats(raw_cuts, 3, f"{source}: value_cuts") if raw_cuts is not None else None
        life_raw = data.get("lifecycle") or {}
        if not isinstance(life_raw, Mapping):
            raise PolicyError(f"{source}: 'lifecycle' must be a mapping")
        known = set(Lifecycle.__dataclass_fields__)
        unknown = sorted(set(life_raw) - known)
        if unknown:
            raise PolicyError(f"{source}: unknown lifecycle setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        try:
            life = Lifecycle(**{k: float(v) for k, v in life_raw.items()})
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"{source}: lifecycle settings must be numbers ({exc})") from None
        top = data.get("top_drivers", 5)
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 50:
            raise PolicyError(f"{source}: top_drivers must be an integer in 0..50, got {top!r}")
        return cls(actions=actions, risk_tiers=(risk[0], risk[1]),
                   value_quantiles=(quant[0], quant[1], quant[2]),
                   value_cuts=None if cuts is None else (cuts[0], cuts[1], cuts[2]),
                   lifecycle=life, top_drivers=top,
                   source=str(data.get("source", source)))

    def fit_value_tiers(self, clv: np.ndarray) -> Policy:
        """This policy with the value-tier CLV cut points set to quantiles of ``clv`` (the
        predicted CLV of the training population; called once, at training time)."""
        values = np.asarray(clv, dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise PolicyError("cannot fix value tiers: no finite CLV predictions")
        q = np.quantile(values, self.value_quantiles)
        return replace(self, value_cuts=(float(q[0]), float(q[1]), float(q[2])))

    def with_effects(self, effects: Mapping[str, float], source: str) -> Policy:
        """This policy with some actions' effects replaced (e.g. by campaign-log estimates)."""
        acts = tuple(replace(a, effect=float(effects[a.id]), effect_source=source)
                     if a.id in effects else a for a in self.actions)
        return replace(self, actions=acts)

    @property
    def costs(self) -> np.ndarray:
        return np.array([a.cost for a in self.actions], dtype=float)

    @property
    def effects(self) -> np.ndarray:
        return np.array([a.effect for a in self.actions], dtype=float)


def _floats(value: Any, n: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise PolicyError(f"{where}: expected a list of {n} numbers, got {value!r}")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise PolicyError(f"{where}: expected numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise PolicyError(f"{where}: numbers must be finite, got {value!r}")
    return out


def _names(value: Any, allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: expected a list of names, got {value!r}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise PolicyError(f"{where}: unknown {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return tuple(value)


def _action(raw: Any, where: str) -> Action:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a mapping")
    known = set(Action.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    for key in ("id", "name", "cost", "effect"):
        if key not in raw:
            raise PolicyError(f"{where}: missing {key!r}")
    aid = raw["id"]
    if not isinstance(aid, str) or not aid or not aid.replace("_", "").isalnum():
        raise PolicyError(f"{where}: id must be a non-empty identifier, got {aid!r}")
    where = f"{where} ({aid})"
    try:
        cost, effect = float(raw["cost"]), float(raw["effect"])
        min_clv = float(raw.get("min_clv", 0.0))
    except (TypeError, ValueError):
        raise PolicyError(f"{where}: cost, effect and min_clv must be numbers") from None
    if not (math.isfinite(cost) and cost >= 0):
        raise PolicyError(f"{where}: cost must be >= 0, got {raw['cost']!r}")
    if not (math.isfinite(effect) and 0 <= effect <= 1):
        raise PolicyError(f"{where}: effect (relative churn reduction) must be in [0, 1], "
                          f"got {raw['effect']!r}")
    risk = _floats(raw.get("risk", (0.0, 1.0)), 2, f"{where}: risk")
    if not 0 <= risk[0] <= risk[1] <= 1:
        raise PolicyError(f"{where}: risk must be [min, max] within [0, 1], got {list(risk)}")
    return Action(
        id=aid, name=str(raw["name"]), channel=str(raw.get("channel", "")), cost=cost,
        effect=effect, why=str(raw.get("why", "")), risk=(risk[0], risk[1]), min_clv=min_clv,
        stages=_names(raw.get("stages"), STAGES, f"{where}: stages"),
        value_tiers=_names(raw.get("value_tiers"), VALUE_TIERS, f"{where}: value_tiers"),
        signals=_names(raw.get("signals"), SIGNALS, f"{where}: signals"),
        effect_source=str(raw.get("effect_source", "catalog prior")),
    )


def load_catalog(path: str | Path | None = None) -> Policy:
    """The action catalog at ``path`` (YAML), or churnguard's default ``actions.yaml``."""
    import yaml

    if path is None:
        text = resources.files("churnguard.model").joinpath("actions.yaml").read_text()
        where = "default catalog (actions.yaml)"
    else:
        p = Path(path)
        if not p.is_file():
            raise PolicyError(f"action catalog {p} does not exist")
        text, where = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{where}: not valid YAML ({exc})") from None
    return Policy.from_dict(data, source=where)


# ---------------------------------------------------------------------------------------------
# Tiers, stages, signals


Frame = Mapping[str, Any]


def _col(frame: Frame, name: str, n: int) -> np.ndarray:
    """A float column of the frame, or NaN when the frame has no such column."""
    if name in frame:
        return np.asarray(frame[name], dtype=float)
    return np.full(n, np.nan)


def _len(frame: Frame) -> int:
    return len(np.asarray(frame["churn_probability"]))


def risk_tier(p: np.ndarray, policy: Policy) -> np.ndarray:
    idx = np.searchsorted(np.asarray(policy.risk_tiers), np.asarray(p, dtype=float),
                          side="right")
    return np.asarray(RISK_TIERS, dtype=object)[idx]


def value_tier(clv: np.ndarray, policy: Policy) -> np.ndarray:
    """Value tier of each CLV; with no fitted cut points every customer is 'medium'."""
    clv = np.asarray(clv, dtype=float)
    if policy.value_cuts is None:
        return np.full(clv.shape, "medium", dtype=object)
    idx = np.searchsorted(np.asarray(policy.value_cuts), clv, side="right")
    return np.asarray(VALUE_TIERS, dtype=object)[idx]


def signals(frame: Frame, policy: Policy) -> dict[str, np.ndarray]:
    """Boolean customer signals used by eligibility rules, stages and reasons."""
    n = _len(frame)
    life = policy.lifecycle
    with np.errstate(invalid="ignore"):
        orders_365 = _col(frame, "orders_365d", n)
        events_90 = _col(frame, "events_90d", n)
        return {
            "complaints": _col(frame, "complaints_90d", n) >= 1,
            "support_friction": _col(frame, "tickets_90d", n) >= 2,
            "purchase_decline": (_col(frame, "purchase_trend", n)
                                 <= life.declining_purchase_trend) & (orders_365 >= 2),
            "interaction_decline": (_col(frame, "interaction_trend", n)
                                    <= life.declining_interaction_trend) & (events_90 >= 3),
            "overdue": _col(frame, "overdue_ratio", n) >= life.declining_overdue_ratio,
            "inactive": _col(frame, "days_since_last_interaction", n) >= 30,
            "new_customer": _col(frame, "tenure_days", n) < life.new_days,
        }


def lifecycle_stage(frame: Frame, policy: Policy,
                    sig: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Lifecycle stage per customer, first match wins: lapsed (no purchase for
    ``lapsed_days``, or ``lapsed_overdue_ratio`` × the usual gap and at least 60 days, or never
    bought in ``lapsed_days`` of tenure), new (tenure < ``new_days``), at_risk (high risk tier),
    declining (purchase or interaction frequency fell against the customer's own history, or
    overdue), loyal (long tenure and many purchase days), else active."""
    n = _len(frame)
    life = policy.lifecycle
    sig = sig if sig is not None else signals(frame, policy)
    with np.errstate(invalid="ignore"):
        recency = _col(frame, "days_since_last_purchase", n)
        tenure = _col(frame, "tenure_days", n)
        bought = np.nan_to_num(_col(frame, "purchase_days_total", n)) > 0
        overdue = _col(frame, "overdue_ratio", n)
        p = np.asarray(frame["churn_probability"], dtype=float)
        lapsed = (bought & ((recency >= life.lapsed_days)
                            | ((overdue >= life.lapsed_overdue_ratio) & (recency >= 60))))
        lapsed |= ~bought & (tenure >= life.lapsed_days)
        new = tenure < life.new_days
        at_risk = p >= policy.risk_tiers[1]
        declining = sig["purchase_decline"] | sig["interaction_decline"] | sig["overdue"]
        loyal = (tenure >= life.loyal_days) & (
            np.nan_to_num(_col(frame, "purchase_days_total", n)) >= life.loyal_min_purchase_days)
    return np.select([lapsed, new, at_risk, declining, loyal],
                     ["lapsed", "new", "at_risk", "declining", "loyal"], default="active"
                     ).astype(object)


# ---------------------------------------------------------------------------------------------
# Drivers and reasons


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


def _fmt_days(x: float) -> str:
    d = round(x)
    return f"{d} day{'s' if d != 1 else ''}"


#: Columns the readable reasons quote; converted to float arrays once per batch (assess).
EVIDENCE_COLUMNS = ("churn_probability", "clv", "complaints_90d", "tickets_90d",
                    "purchase_trend", "interaction_trend", "days_since_last_purchase",
                    "overdue_ratio", "days_since_last_interaction", "tenure_days")


def evidence_columns(frame: Frame) -> dict[str, np.ndarray]:
    """The float columns :func:`evidence` reads, each converted once for the whole batch."""
    n = _len(frame)
    return {name: _col(frame, name, n) for name in EVIDENCE_COLUMNS}


def evidence(columns: Mapping[str, np.ndarray],
             sig: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Readable facts behind each active signal (signal name → object array of text, None
    where the signal is off), from the batch's :func:`evidence_columns`. Only the rows where a
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
# Actions


def eligibility(frame: Frame, policy: Policy, stage: np.ndarray, tier: np.ndarray,
                sig: Mapping[str, np.ndarray]) -> np.ndarray:
    """n × len(actions) boolean matrix: which actions each customer may get (no_action: never
    as a recommendation; it is what remains when nothing else pays)."""
    n = _len(frame)
    p = np.asarray(frame["churn_probability"], dtype=float)
    clv = np.asarray(frame["clv"], dtype=float)
    out = np.zeros((n, len(policy.actions)), dtype=bool)
    for j, a in enumerate(policy.actions):
        if a.id == NO_ACTION:
            continue
        ok = (p >= a.risk[0]) & (p <= a.risk[1]) & (clv >= a.min_clv)
        if a.stages:
            ok &= _member(stage, a.stages)
        if a.value_tiers:
            ok &= _member(tier, a.value_tiers)
        if a.signals:
            ok &= np.logical_or.reduce([np.asarray(sig[s], dtype=bool) for s in a.signals])
        out[:, j] = ok
    return out


def _member(values: np.ndarray, allowed: tuple[str, ...]) -> np.ndarray:
    """``np.isin`` for an object array of short strings: a generator on the API's few rows,
    element-wise comparisons on a batch."""
    if len(values) <= 64:
        return np.fromiter((v in allowed for v in values), dtype=bool, count=len(values))
    return np.logical_or.reduce([values == v for v in allowed]) if allowed else np.zeros(
        len(values), dtype=bool)


def expected_values(frame: Frame, policy: Policy, eligible: np.ndarray) -> np.ndarray:
    """n × len(actions) EV = p × effect × CLV − cost, −inf where not eligible."""
    p = np.asarray(frame["churn_probability"], dtype=float)[:, None]
    clv = np.asarray(frame["clv"], dtype=float)[:, None]
    ev = p * policy.effects[None, :] * clv - policy.costs[None, :]
    return np.where(eligible, ev, -np.inf)


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


@dataclass
class Assessment:
    """The policy's view of a batch of scored customers (arrays aligned with the rows)."""

    risk_tier: np.ndarray
    value_tier: np.ndarray
    lifecycle_stage: np.ndarray
    signals: dict[str, np.ndarray]
    ev: np.ndarray  # n × actions, −inf where not eligible
    columns: dict[str, np.ndarray]  # evidence_columns of the frame, for the reasons
    _recs: Recommendations | None = field(default=None, init=False, repr=False)

    def recommendations(self, policy: Policy) -> Recommendations:
        """Every row's recommended actions: positive EV, best first, each with a reason a CRM
        user can read; the catalog's no_action (with its reason) when nothing pays. Computed
        once per batch, with the per-row work reduced to formatting text."""
        if self._recs is None:
            self._recs = _recommend(self, policy)
        return self._recs

    def actions(self, frame: Frame, policy: Policy, i: int) -> list[dict[str, Any]]:
        """Recommended actions of row ``i`` as dicts (see :meth:`recommendations`)."""
        out: list[dict[str, Any]] = orjson.loads(self.recommendations(policy).json[i])
        return out

    def actions_json(self, policy: Policy) -> list[str]:
        """Each row's :meth:`actions` as compact JSON text."""
        return self.recommendations(policy).json


def _recommend(a: Assessment, policy: Policy) -> Recommendations:
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


def assess(frame: Frame, policy: Policy) -> Assessment:
    """Tiers, stages, signals and the EV matrix of every row of a score frame."""
    sig = signals(frame, policy)
    stage = lifecycle_stage(frame, policy, sig)
    tier = value_tier(np.asarray(frame["clv"], dtype=float), policy)
    elig = eligibility(frame, policy, stage, tier, sig)
    return Assessment(risk_tier=risk_tier(np.asarray(frame["churn_probability"]), policy),
                      value_tier=tier, lifecycle_stage=stage, signals=sig,
                      ev=expected_values(frame, policy, elig),
                      columns=evidence_columns(frame))


# ---------------------------------------------------------------------------------------------
# Campaign planner


@dataclass(frozen=True)
class Plan:
    """At most one action per customer (index into the policy's actions, −1 = none)."""

    choice: np.ndarray
    spend: float
    expected_value: float  # net: sum of EV (retained value − cost) of the chosen actions
    retained_value: float  # gross: sum of p × effect × CLV of the chosen actions
    method: str  # "unconstrained", "exact" or "greedy"
    upper_bound: float  # no plan within the budget has a larger total EV

    @property
    def roi(self) -> float | None:
        """(retained value − spend) / spend; None when nothing is spent."""
        return self.expected_value / self.spend if self.spend > 0 else None

    @property
    def optimality_gap(self) -> float:
        return max(self.upper_bound - self.expected_value, 0.0)


#: Largest DP table (customers × budget units) solved exactly.
DP_CELLS = 20_000_000


def plan_campaign(ev: np.ndarray, costs: np.ndarray, budget: float, *,
                  max_cells: int = DP_CELLS) -> Plan:
    """Maximise total EV with at most one action per customer and total cost ≤ ``budget``.

    ``ev``: n × actions (−inf = not eligible), ``costs``: per action. Only positive-EV options
    are considered. When every customer's best option fits together, that is optimal
    ("unconstrained"). Otherwise, exact DP over the budget in units of the greatest common
    divisor of the costs in cents when customers × units ≤ ``max_cells`` ("exact"), else the
    greedy on LP-relaxation increments ("greedy"), whose ``upper_bound`` is the LP optimum.
    """
    ev = np.asarray(ev, dtype=float)
    costs = np.asarray(costs, dtype=float)
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite number >= 0, got {budget}")
    n = ev.shape[0]
    gross = ev + costs[None, :]
    choice = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return Plan(choice, 0.0, 0.0, 0.0, "unconstrained", 0.0)
    pos = np.where(np.isfinite(ev) & (ev > 0), ev, -np.inf)
    best = np.argmax(pos, axis=1)
    has = np.isfinite(pos[np.arange(n), best])
    if costs[best[has]].sum() <= budget + 1e-9:
        choice[has] = best[has]
        return _plan(choice, ev, gross, costs, "unconstrained", float(ev[has, best[has]].sum()))
    cents = np.round(costs * 100).astype(np.int64)
    unit = int(np.gcd.reduce(cents[cents > 0])) if (cents > 0).any() else 1
    units = cents // unit
    cap = math.floor(budget * 100 + 1e-6) // unit
    cand = np.flatnonzero(np.isfinite(pos).any(axis=1))
    if len(cand) * (cap + 1) <= max_cells:
        choice = _dp(pos, units, cap, cand, n)
        return _plan(choice, ev, gross, costs, "exact", None)
    choice, bound = _greedy(pos, costs, budget, cand, n)
    return _plan(choice, ev, gross, costs, "greedy", bound)


def _plan(choice: np.ndarray, ev: np.ndarray, gross: np.ndarray, costs: np.ndarray,
          method: str, bound: float | None) -> Plan:
    rows = np.flatnonzero(choice >= 0)
    total = float(ev[rows, choice[rows]].sum())
    return Plan(choice=choice, spend=float(costs[choice[rows]].sum()), expected_value=total,
                retained_value=float(gross[rows, choice[rows]].sum()), method=method,
                upper_bound=total if bound is None else max(bound, total))


def _dp(pos: np.ndarray, units: np.ndarray, cap: int, cand: np.ndarray, n: int) -> np.ndarray:
    dp = np.zeros(cap + 1)
    picks = np.full((len(cand), cap + 1), -1, dtype=np.int16)
    for r, i in enumerate(cand):
        new = dp.copy()
        for opt in np.flatnonzero(np.isfinite(pos[i])):
            a = int(opt)
            c = int(units[a])
            if c > cap:
                continue
            val = dp[: cap + 1 - c] + pos[i, a]
            better = val > new[c:] + 1e-12
            new[c:][better] = val[better]
            picks[r, c:][better] = a
        dp = new
    choice = np.full(n, -1, dtype=np.int64)
    b = cap
    for r in range(len(cand) - 1, -1, -1):
        pick = int(picks[r, b])
        if pick >= 0:
            choice[cand[r]] = pick
            b -= int(units[pick])
    return choice


def _greedy(pos: np.ndarray, costs: np.ndarray, budget: float, cand: np.ndarray,
            n: int) -> tuple[np.ndarray, float]:
    # Per customer: the upper convex hull of (cost, EV) from (0, 0) over positive options; its
    # segments are increments with decreasing efficiency. Taking increments by efficiency across
    # customers solves the LP relaxation (Sinha & Zoltners 1979).
    incs: list[tuple[float, float, float, int, int]] = []  # (-eff, dcost, dev, customer, action)
    for i in cand:
        opts = sorted(((costs[a], pos[i, a], int(a)) for a in np.flatnonzero(np.isfinite(pos[i]))),
                      key=lambda t: (t[0], -t[1]))
        hull: list[tuple[float, float, int]] = [(0.0, 0.0, -1)]
        for c, v, a in opts:
            if v <= hull[-1][1]:
                continue
            while len(hull) >= 2:
                (c1, v1, _), (c2, v2, _) = hull[-2], hull[-1]
                if (v2 - v1) * (c - c1) <= (v - v1) * (c2 - c1):
                    hull.pop()
                else:
                    break
            hull.append((c, v, a))
        for (c1, v1, _), (c2, v2, a2) in itertools.pairwise(hull):
            dc, dv = c2 - c1, v2 - v1
            incs.append((-(dv / dc) if dc > 0 else -math.inf, dc, dv, int(i), a2))
    incs.sort(key=lambda t: t[0])
    choice = np.full(n, -1, dtype=np.int64)
    left, total, bound, bounded = budget, 0.0, 0.0, False
    for _, dc, dv, i, a in incs:
        prev = choice[i]
        prev_cost = costs[prev] if prev >= 0 else 0.0
        if abs((prev_cost + dc) - costs[a]) > 1e-9:
            continue  # an earlier increment of this customer was skipped
        if dc <= left + 1e-9:
            choice[i] = a
            left -= dc
            total += dv
            if not bounded:
                bound += dv
        elif not bounded:
            bound += dv * (left / dc)
            bounded = True
    return choice, bound
