"""GET /v1/model, /healthz, /readyz, /metrics."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import PlainTextResponse, Response

from churnguard.features.definitions import feature_catalog
from churnguard.serving.deps import HolderDep, MetricsDep, ModelDep, StoreDep
from churnguard.serving.schemas import Health, ModelInfo, Readiness

router = APIRouter(tags=["model"])
ops = APIRouter(tags=["operations"])


@router.get("/model", response_model=ModelInfo, summary="The model being served")
async def model_info(model: ModelDep, holder: HolderDep, store: StoreDep) -> Response:
    """Version, training data window, test metrics, features and the action policy."""
    b = model.bundle
    meta = b.metadata
    policy = b.policy_obj()
    body = {
        "name": model.name, "alias": model.alias, "version": model.version, "uri": model.uri,
        "run_id": model.run_id, "loaded_at": model.loaded_at.isoformat(),
        "trained_at": meta.get("trained_at"), "as_of": meta.get("as_of"),
        "horizon_days": b.horizon_days, "clv_horizon_days": b.clv_horizon_days,
        "training_window": {"churn": meta.get("churn_plan"), "clv": meta.get("clv_plan")},
        "metrics": model.metrics,
        "feature_set_version": meta.get("feature_set_version"),
        "spec_fingerprint": meta.get("spec_fingerprint"),
        "policy": {"source": policy.source, "risk_tiers": list(policy.risk_tiers),
                   "value_cuts": list(policy.value_cuts) if policy.value_cuts else None,
                   "actions": [{"action_id": a.id, "name": a.name, "channel": a.channel,
                                "cost": a.cost, "effect": a.effect,
                                "effect_source": a.effect_source} for a in policy.actions]},
        "features": feature_catalog(b.spec),
        "feature_snapshot": store.info.to_dict() if store.info else None,
        "reload_error": holder.last_error,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@ops.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@ops.get("/readyz", response_model=Readiness, summary="Readiness",
         responses={503: {"model": Readiness, "description": "No model loaded"}})
async def readyz(holder: HolderDep, store: StoreDep) -> Response:
    """Ready when a model is loaded. ``degraded``: still serving, but a newer champion failed
    to load, the registry is unreachable, or the feature snapshot is missing."""
    current = holder.current
    problems = []
    if holder.last_error:
        e = holder.last_error
        problems.append(f"champion v{e['version']} could not be loaded ({e['error']}); "
                        + (f"serving v{e['serving']}" if e.get("serving") else "no model"))
    if holder.alias_problem:
        problems.append(holder.alias_problem)
    if store.problem:
        problems.append(store.problem)
    status = "not_ready" if current is None else ("degraded" if problems else "ok")
    body = {"ready": current is not None, "status": status,
            "model_version": current.version if current else None, "problems": problems}
    return Response(orjson.dumps(body), status_code=200 if current else 503,
                    media_type="application/json")


@ops.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
