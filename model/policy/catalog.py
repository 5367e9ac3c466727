"""The action catalog and the policy built from it: what actions exist, whom each may target,
and the cut points that turn scores into tiers and stages.

A catalog is a YAML document (churnguard's default is the package data file
``churnguard/model/actions.yaml``, whose comments describe every key); :meth:`Policy.from_dict`
also reads the ``policy`` of a registered bundle's ``bundle.json``, which is what
:meth:`Policy.to_dict` wrote at training time. Because the policy travels inside the bundle, the
API, the batch job and Spark all recommend the same actions with the same cut points (README,
"Scoring API").

Each action carries a ``cost`` (expected cost per customer contacted, in the currency of the
transactions) and an ``effect``: the expected *relative* reduction of the customer's churn
probability if the action is taken (0.2 turns a 40 % risk into 32 %). The catalog's effects are
priors; training replaces them with measured uplift where campaign logs have randomised
hold-outs (:meth:`Policy.with_effects`, README "Action effects from campaign logs").

The types are frozen pydantic models: a policy is immutable and hashable (the reason texts are
compiled once per policy, with the policy as cache key). Validation failures are raised as
:class:`PolicyError`, whose message names the source, the table entry and the field, e.g.
``default catalog (actions.yaml): actions[2] (care_email): effect (relative churn reduction)
must be in [0, 1], got 1.5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

#: Lifecycle stages, in the order :func:`~churnguard.model.policy.lifecycle_stage` explains them.
STAGES = ("new", "active", "loyal", "declining", "at_risk", "lapsed",
          # contractual models (a subscription business)
          "onboarding", "at_renewal_risk", "cancelled")
#: Value tiers, from the lowest CLV band to the highest.
VALUE_TIERS = ("low", "medium", "high", "top")
#: Risk tiers, split by :attr:`Policy.risk_tiers`.
RISK_TIERS = ("low", "medium", "high")
#: Boolean customer signals an action may require (at least one of its ``signals``).
SIGNALS = ("complaints", "support_friction", "purchase_decline", "interaction_decline",
           "overdue", "inactive", "new_customer", "renewal_due")
#: The catalog entry recommended when no action pays for its cost (added if a catalog lacks it).
NO_ACTION = "no_action"
#: Version of the :meth:`Policy.to_dict` layout stored in ``bundle.json`` (key ``format``).
#: 2: the lifecycle stages of ``bench/lifecycle.py`` (:data:`RETIRED_LIFECYCLE`).
POLICY_FORMAT = 2


class PolicyError(ValueError):
    """A catalog or policy that cannot be used, with what is wrong and where."""


def _text(value: Any) -> Any:
    """Catalog text: YAML may read a name such as ``2024`` or ``yes`` as a number or a bool."""
    return str(value) if isinstance(value, int | float) else value


def _no_names(value: Any) -> Any:
    return () if value is None else value


def _settings(value: Any) -> Any:
    """An empty ``lifecycle:`` (None) means the default settings."""
    return value or {}


Text = Annotated[str, BeforeValidator(_text)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Names = Annotated[tuple[str, ...], BeforeValidator(_no_names)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Action(BaseModel):
    """One retention action of the catalog, with its eligibility rules (all must hold)."""

    model_config = _FROZEN

    id: str
    name: Text
    channel: Text = ""
    #: Expected cost per customer contacted.
    cost: Finite = Field(ge=0)
    #: Expected relative reduction of the churn probability.
    effect: Finite = Field(ge=0, le=1)
    #: Why the action suits the customer: the opening of every reason it is recommended with.
    why: Text = ""
    #: [min, max] churn probability.
    risk: tuple[Finite, Finite] = (0.0, 1.0)
    #: Least CLV (expected spend) at stake.
    min_clv: float = 0.0
    stages: Names = ()
    value_tiers: Names = ()
    #: At least one of these signals must be on (none listed: no signal needed).
    signals: Names = ()
    #: Where ``effect`` comes from: "catalog prior" or the campaign-log estimate.
    effect_source: Text = "catalog prior"
    #: Only for models of this churn label (None: any), e.g. a renewal offer for contractual
    #: models (:attr:`Policy.label`).
    label: Literal["noncontractual", "contractual"] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _identifier(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
            raise ValueError(f"id must be a non-empty identifier, got {value!r}")
        return value

    @field_validator("risk")
    @classmethod
    def _risk_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1] <= 1:
            raise ValueError(f"risk must be [min, max] within [0, 1], got {list(value)}")
        return value

    @field_validator("stages", "value_tiers", "signals")
    @classmethod
    def _known_names(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        allowed = _ALLOWED[str(info.field_name)]
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"{info.field_name}: unknown {', '.join(bad)}; "
                             f"allowed: {', '.join(allowed)}")
        return value


_ALLOWED = {"stages": STAGES, "value_tiers": VALUE_TIERS, "signals": SIGNALS}

_NO_ACTION = Action(id=NO_ACTION, name="No action", channel="none", cost=0.0, effect=0.0,
                    why="No retention action is expected to pay for its cost")


class Lifecycle(BaseModel):
    """Thresholds of the lifecycle stages and of the signals (see ``actions.yaml`` and
    :func:`~churnguard.model.policy.lifecycle_stage`). The defaults were chosen on the demo
    data's ground truth (``bench/lifecycle.py``, tuned on one seed and reported on another)."""

    model_config = _FROZEN

    new_days: float = 90.0
    loyal_days: float = 365.0
    loyal_min_purchase_days: float = 6.0
    #: Lapsed: no purchase and no interaction for this many days (never: the whole tenure).
    lapsed_quiet_days: float = 45.0
    #: Lapsed: no purchase for this many times the usual gap (and at least 60 days).
    lapsed_overdue_ratio: float = 4.0
    #: Declining: interactions in the last 30 (or 90) days at most this share of the usual
    #: number at the customer's own rate over the year before ...
    declining_interaction_ratio: float = 0.4
    #: ... for customers who usually interact at least this often in 30 days (3 × in 90).
    declining_min_interactions: float = 5.0
    #: The purchase_decline signal: purchase trend at most this (not a stage rule).
    declining_purchase_trend: float = 0.6
    #: The overdue signal: this many times the usual gap since the last purchase (not a stage
    #: rule).
    declining_overdue_ratio: float = 1.5
    #: Contractual stages: onboarding for this many days after the first subscription ...
    onboarding_days: float = 90.0
    #: ... and the renewal_due signal (at_renewal_risk stage) within this many days of the
    #: current term's end.
    renewal_window_days: float = 60.0


#: Lifecycle settings of policy format 1 whose stage rules are gone (lapsed by purchase
#: recency alone; declining by interaction_trend): a format-1 policy (a bundle saved before)
#: loads with the current defaults in their place.
RETIRED_LIFECYCLE = ("lapsed_days", "declining_interaction_trend")


class Policy(BaseModel):
    """The action catalog plus the cut points that turn scores into tiers and stages."""

    # Keys other than the fields (such as the "format" that to_dict writes) are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")

    #: The catalog's actions, always including no_action.
    actions: tuple[Action, ...]
    #: Churn-probability cut points: low < risk_tiers[0] <= medium < risk_tiers[1] <= high.
    risk_tiers: tuple[Finite, Finite] = (0.3, 0.6)
    #: Quantiles of the training CLV predictions that become :attr:`value_cuts`.
    value_quantiles: tuple[Finite, Finite, Finite] = (0.5, 0.8, 0.95)
    #: CLV cut points between the value tiers, fixed at training time (None: not fitted).
    value_cuts: tuple[Finite, Finite, Finite] | None = None
    lifecycle: Annotated[Lifecycle, BeforeValidator(_settings)] = Field(
        default_factory=Lifecycle)
    #: How many churn drivers a score lists.
    top_drivers: StrictInt = Field(default=5, ge=0, le=50)
    #: Where the policy was read from, for error messages and ``/v1/model``.
    source: str = "default catalog"
    #: The churn label of the model the policy serves (set at training): contractual models
    #: get the contractual lifecycle stages (:func:`~churnguard.model.policy.lifecycle_stage`).
    label: Literal["noncontractual", "contractual"] = "noncontractual"

    @field_validator("risk_tiers", "value_quantiles")
    @classmethod
    def _increasing_inside_unit(cls, value: tuple[float, ...],
                                info: ValidationInfo) -> tuple[float, ...]:
        if list(value) != sorted(set(value)) or value[0] <= 0.0 or value[-1] >= 1.0:
            raise ValueError(f"{info.field_name} must increase strictly inside (0, 1), "
                             f"got {list(value)}")
        return value

    @field_validator("actions")
    @classmethod
    def _unique_with_no_action(cls, actions: tuple[Action, ...]) -> tuple[Action, ...]:
        # Checked here rather than with min_length, which pydantic would also report (as "0
        # items") when some action is invalid.
        if not actions:
            raise ValueError("'actions' must be a non-empty list, got []")
        ids = [a.id for a in actions]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate action id(s) {', '.join(dup)}")
        return actions if NO_ACTION in ids else (*actions, _NO_ACTION)

    # -- construction / persistence ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (tuples for lists), as stored in ``bundle.json``."""
        out = self.model_dump()
        out["format"] = POLICY_FORMAT
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "policy") -> Policy:
        """Parse and validate a policy (the bundle's ``policy`` or a catalog YAML document). A
        bundle's policy of format 1 loads with today's stage rules: its
        :data:`RETIRED_LIFECYCLE` settings are dropped (the defaults replace them); in a
        catalog, they are unknown keys."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: expected a mapping, got {type(data).__name__}")
        data = {**data, "source": str(data.get("source", source))}
        life = data.get("lifecycle")
        if data.get("format") == 1 and isinstance(life, Mapping):
            data["lifecycle"] = {k: v for k, v in life.items() if k not in RETIRED_LIFECYCLE}
        return _validate(cls, data, source)

    def fit_value_tiers(self, clv: np.ndarray) -> Policy:
        """This policy with the value-tier CLV cut points set to quantiles of ``clv`` (the
        predicted CLV of the training population; called once, at training time)."""
        values = np.asarray(clv, dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise PolicyError("cannot fix value tiers: no finite CLV predictions")
        q = np.quantile(values, self.value_quantiles)
        return _replace(self, self.source, value_cuts=(float(q[0]), float(q[1]), float(q[2])))

    def with_effects(self, effects: Mapping[str, float], source: str) -> Policy:
        """This policy with some actions' effects replaced (e.g. by campaign-log estimates)."""
        acts = tuple(_replace(a, f"{self.source}: action {a.id} (effect from {source})",
                              effect=float(effects[a.id]), effect_source=source)
                     if a.id in effects else a for a in self.actions)
        return _replace(self, self.source, actions=acts)

    @property
    def costs(self) -> np.ndarray:
        return np.array([a.cost for a in self.actions], dtype=float)

    @property
    def effects(self) -> np.ndarray:
        return np.array([a.effect for a in self.actions], dtype=float)


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
# pydantic errors → PolicyError


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Mapping[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_explain(exc, data, source)) from None


def _replace(obj: M, source: str, **changes: Any) -> M:
    """A validated copy of ``obj`` with some fields changed (``source`` names it in errors)."""
    return _validate(type(obj), {**dict(obj), **changes}, source)


#: What a field must hold, for the errors pydantic reports in its own words (failed checks of
#: our own validators carry their own message).
_MUST = {
    "actions": "'actions' must be a non-empty list",
    "name": "name must be a text",
    "channel": "channel must be a text",
    "why": "why must be a text",
    "effect_source": "effect_source must be a text",
    "cost": "cost must be a finite number >= 0",
    "effect": "effect (relative churn reduction) must be in [0, 1]",
    "risk": "risk must be [min, max] within [0, 1]",
    "min_clv": "min_clv must be a number",
    "stages": f"stages must be a list of names from {', '.join(STAGES)}",
    "value_tiers": f"value_tiers must be a list of names from {', '.join(VALUE_TIERS)}",
    "signals": f"signals must be a list of names from {', '.join(SIGNALS)}",
    "risk_tiers": "risk_tiers must be a list of 2 numbers increasing strictly inside (0, 1)",
    "value_quantiles": "value_quantiles must be a list of 3 numbers increasing strictly inside "
                       "(0, 1)",
    "value_cuts": "value_cuts must be a list of 3 finite numbers, or null",
    "lifecycle": "lifecycle must be a mapping of settings",
    "top_drivers": "top_drivers must be an integer in 0..50",
    "source": "source must be a text",
    **{k: f"{k} must be a number" for k in Lifecycle.model_fields},
}
#: The keys of each kind of catalog entry, listed when an entry has unknown ones.
_KNOWN = {"actions": sorted(Action.model_fields), "lifecycle": sorted(Lifecycle.model_fields)}


def _explain(exc: ValidationError, data: Mapping[str, Any], source: str) -> str:
    """One line per problem, ``source: entry: what is wrong, got what``. The entry is the row
    of the catalog (``actions[2] (care_email)``, ``lifecycle``; none at the top level); the
    unknown keys of one entry share a line (with the known ones), as do its missing keys."""
    problems: dict[tuple[str, str], list[str]] = {}  # (entry, text or error type) → keys
    for err in exc.errors():
        loc = err["loc"]
        # how much of loc names the entry: ("actions", 2) or ("lifecycle",), else nothing
        if loc[:1] == ("actions",) and len(loc) > 1 and isinstance(loc[1], int):
            depth = 2
        elif loc[:1] == ("lifecycle",) and len(loc) > 1:
            depth = 1
        else:
            depth = 0
        entry = _entry(loc[:depth], data)
        field = str(loc[depth]) if len(loc) > depth else None
        kind = err["type"]
        if field is not None and kind in ("extra_forbidden", "missing") and len(loc) == depth + 1:
            problems.setdefault((entry, kind), []).append(field)
            continue
        if kind == "value_error":
            text = str(err.get("ctx", {}).get("error", err["msg"]))
        elif field is None:
            text = f"expected a mapping, got {type(err['input']).__name__}"
        else:
            rule = _MUST.get(field, f"{field}: {err['msg']}")
            text = f"{rule}, got {_raw(data, loc[:depth + 1])!r}"
        problems.setdefault((entry, text), [])
    lines = []
    for (entry, text), keys in problems.items():
        if text == "extra_forbidden":
            table = "actions" if entry.startswith("actions") else entry
            text = (f"unknown key(s) {', '.join(sorted(keys))}; "
                    f"known: {', '.join(_KNOWN[table])}")
        elif text == "missing":
            text = "missing " + ", ".join(repr(k) for k in keys)
        lines.append(": ".join(part for part in (source, entry, text) if part))
    return "\n".join(lines)


def _raw(data: Any, loc: tuple[int | str, ...]) -> Any:
    """The input value at ``loc`` (None where there is none)."""
    for key in loc:
        if isinstance(data, Mapping):
            data = data.get(key)
        elif isinstance(data, list | tuple) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            return None
    return data


def _entry(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``actions[2] (care_email)`` (the id when there is one), ``lifecycle``, or "" (top)."""
    if not loc:
        return ""
    if loc[0] == "actions":
        aid = _raw(data, (*loc, "id"))
        return f"actions[{loc[1]}]" + (f" ({aid})" if isinstance(aid, str) and aid else "")
    return str(loc[0])
