"""POST /v1/campaigns/plan: at most one action per customer, total EV maximised in a budget."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from churnguard.model.policy import NO_ACTION, plan_campaign
from churnguard.serving import scoring
from churnguard.serving.deps import ModelDep, SettingsDep, StoreDep
from churnguard.serving.errors import ApiError, json_response, request_id
from churnguard.serving.schemas import PlanRequest, PlanResponse

router = APIRouter(tags=["campaigns"])


@router.post("/campaigns/plan", response_model=PlanResponse,
             summary="Budget-constrained retention campaign plan")
async def plan(body: PlanRequest, request: Request, model: ModelDep, store: StoreDep,
               settings: SettingsDep) -> Response:
    """Scores the customers, then assigns at most one eligible action per customer so that the
    total expected value (p_churn × effect × CLV − cost) is as large as possible with total cost
    within ``budget``: exact dynamic programming when the budget table is small, else a greedy
    on the LP relaxation with its optimality gap reported. Each customer is planned once (a
    repeated id is listed under ``duplicates``); an id the feature snapshot does not hold is
    listed under ``errors`` and not planned (with ``strict``: 404)."""
    customers = body.customers
    scoring.check_batch(len(customers), settings.max_plan_customers)
    policy = model.bundle.policy_obj()
    ids_all = [a.id for a in policy.actions]
    allowed = np.ones(len(ids_all), dtype=bool)
    if body.actions is not None:
        bad = [(k, a) for k, a in enumerate(body.actions) if a not in ids_all]
        if bad:
            raise ApiError(422, f"unknown action id(s) {', '.join(a for _, a in bad)}; the "
                           f"catalog has {', '.join(ids_all)}",
                           details=[{"loc": ["body", "actions", k], "message": "unknown action",
                                     "type": "unknown_action"} for k, _ in bad])
        allowed = np.isin(ids_all, body.actions)
    first: dict[str, int] = {}
    duplicates: list[dict[str, Any]] = []
    for i, c in enumerate(customers):
        j = first.setdefault(c.customer_id, i)
        if j != i:
            duplicates.append({"index": i, "customer_id": c.customer_id, "first_index": j})
    repeated = {d["index"] for d in duplicates}
    rows = await scoring.customer_rows(customers, model, store)
    unknown = [i for i in rows.unknown if i not in repeated]
    if unknown and body.strict:
        raise scoring.unknown_error([customers[i].customer_id for i in unknown],
                                    [["body", "customers", i, "customer_id"] for i in unknown],
                                    store)
    keep = [k for k, i in enumerate(rows.positions) if i not in repeated]
    planned = [rows.positions[k] for k in keep]
    X = rows.X[keep]
    assignments: list[dict[str, Any]] = []
    untargeted: list[str] = []
    spend = retained = value = gap = 0.0
    roi: float | None = None
    method = "unconstrained"
    if planned:
        full = await scoring.score(X, model, drivers=False)
        ev = np.where(allowed[None, :], full.assessment.ev, -np.inf)
        result = await run_in_threadpool(plan_campaign, ev, policy.costs, body.budget)
        for r, i in enumerate(planned):
            cid = customers[i].customer_id
            j = int(result.choice[r])
            if j < 0 or policy.actions[j].id == NO_ACTION:
                untargeted.append(cid)
                continue
            a = policy.actions[j]
            reason = next((x["reason"] for x in full.actions(r) if x["action_id"] == a.id),
                          a.why)
            assignments.append({"customer_id": cid, "action_id": a.id, "name": a.name,
                                "channel": a.channel, "cost": float(a.cost),
                                "expected_value": round(float(ev[r, j]), 4),
                                "churn_probability": float(full.churn_probability[r]),
                                "clv": float(full.clv[r]), "reason": reason})
        plog = request.app.state.prediction_log
        if plog is not None:
            chosen = [policy.actions[int(j)].id if j >= 0 and policy.actions[int(j)].id
                      != NO_ACTION else None for j in result.choice]
            plog.submit([customers[i].customer_id for i in planned], model.version,
                        full.churn_probability, full.clv, list(full.assessment.risk_tier),
                        chosen, value_tier=list(full.assessment.value_tier),
                        lifecycle_stage=list(full.assessment.lifecycle_stage), channel="plan")
        # float(): the planner's sums may be numpy scalars (json_response would cope; the
        # rounding below should not depend on it).
        spend, retained = float(result.spend), float(result.retained_value)
        value, gap, method = float(result.expected_value), float(result.optimality_gap), \
            result.method
        roi = None if result.roi is None else float(result.roi)
    return json_response({
        "request_id": request_id(request), "model_version": model.version,
        "budget": body.budget, "spend": round(spend, 4),
        "expected_retained_value": round(retained, 4), "expected_value": round(value, 4),
        "roi": None if roi is None else round(roi, 6),
        "method": method, "optimality_gap": round(gap, 4),
        "assignments": assignments, "untargeted": untargeted,
        "errors": scoring.customer_errors(customers, unknown, store),
        "duplicates": duplicates})
