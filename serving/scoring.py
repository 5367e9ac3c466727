"""Turning API customers (ids or inline features) into the bundle's full scores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from churnguard.model.encode import FeatureError
from churnguard.model.score import FullScores, score_matrix
from churnguard.serving.errors import ApiError
from churnguard.serving.metrics import Metrics
from churnguard.serving.model import LoadedModel
from churnguard.serving.schemas import CustomerIn
from churnguard.serving.store import FeatureStore, StoreError

#: Batches at least this large are scored in a worker thread (XGBoost releases the GIL).
THREAD_ROWS = 64


def check_batch(n: int, limit: int) -> None:
    if n > limit:
        raise ApiError(413, f"too many customers: {n:,} in one request, at most {limit:,}",
                       code="too_many_customers")


async def features_matrix(customers: list[CustomerIn], model: LoadedModel,
                          store: FeatureStore, field: str = "customers") -> np.ndarray:
    """The encoded feature rows, in request order: inline features through the bundle's
    encoder, ids from the feature store (which uses the same encoder)."""
    bundle = model.bundle
    inline = [i for i, c in enumerate(customers) if c.features is not None]
    if not inline:
        return await _lookup([c.customer_id for c in customers], model, store, field,
                             list(range(len(customers))))
    enc = bundle.encoder()
    X = np.empty((len(customers), len(enc.names)), dtype=np.float32)
    for i in inline:
        feats = customers[i].features
        assert feats is not None
        try:
            X[i] = enc.encode_records([feats])[0]
        except FeatureError as exc:
            loc: list[str | int] = ["body", field, i, "features"]
            if exc.field:
                loc.append(exc.field)
            raise ApiError(422, f"{'.'.join(map(str, loc))}: {exc.message}", details=[
                {"loc": loc, "message": exc.message, "type": "feature_error"}]) from None
    look = [i for i, c in enumerate(customers) if c.features is None]
    if look:
        X[look] = await _lookup([customers[i].customer_id for i in look], model, store, field,
                                look)
    return X


async def _lookup(ids: list[str], model: LoadedModel, store: FeatureStore, field: str,
                  positions: list[int]) -> np.ndarray:
    try:
        X, missing = await store.matrix(ids, model.bundle)
    except StoreError as exc:
        raise ApiError(503, str(exc), code="feature_store_unavailable") from None
    if missing:
        shown = ", ".join(repr(ids[m]) for m in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        snap = store.info
        where = (f"the feature snapshot as of {snap.as_of}" if snap is not None
                 else "the feature snapshot (none loaded)")
        raise ApiError(404, f"unknown customer(s) {shown}{more}: not in {where}; send inline "
                       "features to score customers the snapshot does not hold",
                       code="unknown_customer",
                       details=[{"loc": ["body", field, positions[m], "customer_id"],
                                 "message": "unknown customer", "type": "unknown_customer"}
                                for m in missing[:100]])
    return X


async def score(X: np.ndarray, model: LoadedModel, *, drivers: bool = True) -> FullScores:
    """:func:`~churnguard.model.score.score_matrix` of the request's rows; large batches in a
    worker thread so the event loop keeps serving."""
    if len(X) >= THREAD_ROWS:
        return await run_in_threadpool(score_matrix, model.bundle, X, drivers=drivers)
    return score_matrix(model.bundle, X, drivers=drivers)


def records(full: FullScores, ids: list[str], model: LoadedModel,
            metrics: Metrics) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    version = model.version
    out = [{"customer_id": cid, **full.row(i), "model_version": version, "scored_at": now}
           for i, cid in enumerate(ids)]
    metrics.scored(full.churn_probability, [r["risk_tier"] for r in out])
    return out
