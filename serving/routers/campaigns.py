"""POST /v1/campaigns/plan: at most one action per customer, total EV maximised in a budget."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from churnguard.model.policy import NO_ACTION, plan_campaign
from churnguard.serving import scoring
from churnguard.serving.deps import ModelDep, SettingsDep, StoreDep
from churnguard.serving.errors import ApiError, request_id
from churnguard.serving.schemas import PlanRequest, PlanResponse

router = APIRouter(tags=["campaigns"])


@router.post("/campaigns/plan", response_model=PlanResponse,
             summary="Budget-constrained retention campaign plan")
async def plan(body: PlanRequest, request: Request, model: ModelDep, store: StoreDep,
               settings: SettingsDep) -> Response:
    """Scores the customers, then assigns at most one eligible action per customer so that the
    total expected value (p_churn × effect × CLV − cost) is as large as possible with total cost
    within ``budget``: exact dynamic programming when the budget table is small, else a greedy
    on the LP relaxation with its optimality gap reported."""
    scoring.check_batch(len(body.customers), settings.max_plan_customers)
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
    X = await scoring.features_matrix(body.customers, model, store)
    full = await scoring.score(X, model, drivers=False)
    ev = np.where(allowed[None, :], full.assessment.ev, -np.inf)
    result = await run_in_threadpool(plan_campaign, ev, policy.costs, body.budget)
    assignments, untargeted = [], []
    for i, c in enumerate(body.customers):
        j = int(result.choice[i])
        if j < 0 or policy.actions[j].id == NO_ACTION:
            untargeted.append(c.customer_id)
            continue
        a = policy.actions[j]
        reason = next((r["reason"] for r in full.actions(i) if r["action_id"] == a.id), a.why)
        assignments.append({"customer_id": c.customer_id, "action_id": a.id, "name": a.name,
                            "channel": a.channel, "cost": a.cost,
                            "expected_value": round(float(ev[i, j]), 4),
                            "churn_probability": float(full.churn_probability[i]),
                            "clv": float(full.clv[i]), "reason": reason})
    return Response(orjson.dumps({
        "request_id": request_id(request), "model_version": model.version,
        "budget": body.budget, "spend": round(result.spend, 4),
        "expected_retained_value": round(result.retained_value, 4),
        "expected_value": round(result.expected_value, 4),
        "roi": None if result.roi is None else round(result.roi, 6),
        "method": result.method, "optimality_gap": round(result.optimality_gap, 4),
        "assignments": assignments, "untargeted": untargeted}),
        media_type="application/json")
