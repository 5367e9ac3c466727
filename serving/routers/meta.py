"""GET /v1/model, /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from churnguard.features.definitions import feature_catalog
from churnguard.serving.deps import HolderDep, MetricsDep, ModelDep, StoreDep
from churnguard.serving.model import LoadedModel, ModelHolder, Problem
from churnguard.serving.monitor_state import VerdictReader
from churnguard.serving.schemas import Health, ModelInfo, Readiness
from churnguard.serving.store import FeatureStore

log = logging.getLogger("churnguard.serving")

router = APIRouter(tags=["model"])
ops = APIRouter(tags=["operations"])

#: Significant digits of the floats in the model info (effects, costs, cuts, metrics).
INFO_DIGITS = 6


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to :data:`INFO_DIGITS` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{INFO_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def service_state(holder: ModelHolder, store: FeatureStore) -> tuple[bool, str, list[Problem]]:
    """(ready, status, problems): ready once a model is loaded and the feature store's first
    load has finished; ``degraded`` while anything in ``problems``."""
    problems = holder.problems()
    if not store.started:
        problems.append(Problem("snapshot_loading", "the feature snapshot is still loading"))
    problems.extend(store.problems)
    ready = holder.current is not None and store.started
    return ready, "not_ready" if not ready else ("degraded" if problems else "ok"), problems


def monitoring(request: Request, model: LoadedModel) -> dict[str, Any] | None:
    """The last monitoring verdict (serving/monitor_state.py) with ``for_served_model``; None
    when there is none. Never raises: a problem with the file is logged, and reads as none."""
    reader: VerdictReader | None = getattr(request.app.state, "verdicts", None)
    if reader is None:
        return None
    try:
        verdict = reader.get()
    except Exception:
        log.exception("cannot read the last monitoring verdict")
        return None
    if verdict is None:
        return None
    return {**verdict, "for_served_model": verdict.get("model_version") == model.version}


@router.get("/model", response_model=ModelInfo, summary="The model being served")
async def model_info(model: ModelDep, holder: HolderDep, store: StoreDep,
                     request: Request) -> Response:
    """Version, training data window, test metrics, features, the action policy, the
    service's status with the details of every problem (paths, URLs, errors) and the last
    `churnguard monitor` verdict."""
    b = model.bundle
    meta = b.metadata
    policy = b.policy_obj()
    ready, status, problems = service_state(holder, store)
    body = {
        "name": model.name, "alias": model.alias, "version": model.version, "uri": model.uri,
        "run_id": model.run_id, "loaded_at": model.loaded_at.isoformat(),
        "trained_at": meta.get("trained_at"), "as_of": meta.get("as_of"),
        "horizon_days": b.horizon_days, "clv_horizon_days": b.clv_horizon_days,
        # Bundles trained before the label was recorded are non-contractual.
        "churn_label": {"kind": meta.get("label", "noncontractual"),
                        "grace_days": int(meta.get("grace_days", 0))},
        "training_window": {"churn": meta.get("churn_plan"), "clv": meta.get("clv_plan")},
        "metrics": _rounded(model.metrics),
        "feature_set_version": meta.get("feature_set_version"),
        "spec_fingerprint": meta.get("spec_fingerprint"),
        "policy": _rounded({
            "source": policy.source, "risk_tiers": list(policy.risk_tiers),
            "value_cuts": list(policy.value_cuts) if policy.value_cuts else None,
            "actions": [{"action_id": a.id, "name": a.name, "channel": a.channel,
                         "cost": a.cost, "effect": a.effect,
                         "effect_source": a.effect_source} for a in policy.actions]}),
        "features": feature_catalog(b.spec),
        "feature_snapshot": store.info.to_dict() if store.info else None,
        "reload_error": holder.last_error,
        "status": {"ready": ready, "status": status, "store": store.kind,
                   "problems": [p.to_dict() for p in problems]},
        "monitoring": _rounded(monitoring(request, model)),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@ops.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@ops.get("/readyz", response_model=Readiness, summary="Readiness",
         responses={503: {"model": Readiness, "description": "Not ready: no model loaded "
                          "yet, or the feature snapshot still loading"}})
async def readyz(holder: HolderDep, store: StoreDep) -> Response:
    """Ready when a model is loaded (and the feature store has finished its first load).
    ``degraded``: still serving, but something is wrong: a newer champion failed to load, the
    registry or the online store does not answer, the feature snapshot is missing or does not
    fit the model. Each problem is ``code: message``, without paths, URLs or error text (those
    are in the log and, with the API key, in ``GET /v1/model`` under ``status``)."""
    ready, status, problems = service_state(holder, store)
    current = holder.current
    body = {"ready": ready, "status": status,
            "model_version": current.version if current else None,
            "problems": [p.public() for p in problems]}
    return Response(orjson.dumps(body), status_code=200 if ready else 503,
                    media_type="application/json")


@ops.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
