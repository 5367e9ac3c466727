"""The campaign planner: at most one action per customer, maximising total expected value
under a budget.

Given the EV matrix of an :class:`~churnguard.model.policy.Assessment` (EV = p_churn × effect ×
CLV − cost per customer and action, −inf where not eligible) and the actions' costs,
:func:`plan_campaign` solves the multiple-choice knapsack: each customer gets at most one of
their positive-EV actions, the total cost stays within the budget, and the total EV is as large
as possible. ``POST /v1/campaigns/plan`` serves it (README, "Scoring API").

When every customer's best action fits the budget together, that is the plan
("unconstrained"). Otherwise it is solved exactly by dynamic programming over the budget in
cost units when that table is small ("exact"), else by the greedy on the LP relaxation's
incremental efficiencies (Sinha & Zoltners 1979, "The multiple-choice knapsack problem",
Operations Research 27(3)), whose LP bound gives a certified optimality gap of at most the EV of
one increment ("greedy").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


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
