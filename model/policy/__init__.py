"""The retention action policy: which action, if any, each scored customer should get, and why.

Four parts, each a module, read in this order:

- :mod:`~churnguard.model.policy.catalog` — the action catalog (``actions.yaml``) and the
  :class:`Policy` built from it: actions with cost, effect and eligibility rules, plus the cut
  points of the risk tiers, value tiers and lifecycle stages. Validated with pydantic; a bad
  catalog is a :class:`PolicyError` naming the entry and the field. The policy travels inside
  the registered bundle (``bundle.json`` → ``policy``, :meth:`Policy.to_dict`), so the API, the
  batch job and Spark recommend the same actions.
- :mod:`~churnguard.model.policy.assessment` — what the policy concludes about a batch of scored
  customers (:func:`assess`): risk tier, value tier, signals, lifecycle stage, eligibility and
  the expected value ``EV = p_churn × effect × CLV − cost`` of every action.
- :mod:`~churnguard.model.policy.reasons` — the explanations: the churn drivers of a score
  (:func:`top_drivers`), the facts behind each signal, and the recommended actions (EV > 0,
  best first, else no_action) with a readable reason each, as JSON text
  (:class:`Recommendations`).
- :mod:`~churnguard.model.policy.planner` — the campaign planner (:func:`plan_campaign`): at
  most one action per customer, maximising total EV under a budget.

Everything other code uses is importable from this package.
"""

from churnguard.model.policy.assessment import (
    Assessment,
    Frame,
    assess,
    eligibility,
    evidence_columns,
    expected_values,
    interaction_decline,
    lifecycle_stage,
    risk_tier,
    signals,
    usual_interactions,
    value_tier,
)
from churnguard.model.policy.catalog import (
    NO_ACTION,
    POLICY_FORMAT,
    RETIRED_LIFECYCLE,
    RISK_TIERS,
    SIGNALS,
    STAGES,
    VALUE_TIERS,
    Action,
    Lifecycle,
    Policy,
    PolicyError,
    load_catalog,
)
from churnguard.model.policy.planner import DP_CELLS, Plan, plan_campaign
from churnguard.model.policy.reasons import (
    EVIDENCE_COLUMNS,
    Drivers,
    Recommendations,
    evidence,
    rank_drivers,
    top_drivers,
)

__all__ = [
    "DP_CELLS",
    "EVIDENCE_COLUMNS",
    "NO_ACTION",
    "POLICY_FORMAT",
    "RETIRED_LIFECYCLE",
    "RISK_TIERS",
    "SIGNALS",
    "STAGES",
    "VALUE_TIERS",
    "Action",
    "Assessment",
    "Drivers",
    "Frame",
    "Lifecycle",
    "Plan",
    "Policy",
    "PolicyError",
    "Recommendations",
    "assess",
    "eligibility",
    "evidence",
    "evidence_columns",
    "expected_values",
    "interaction_decline",
    "lifecycle_stage",
    "load_catalog",
    "plan_campaign",
    "rank_drivers",
    "risk_tier",
    "signals",
    "top_drivers",
    "usual_interactions",
    "value_tier",
]
