"""Turning API customers (ids or inline features) into the bundle's full scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from churnguard.model.encode import FeatureError
from churnguard.model.score import FullScores, score_matrix
from churnguard.serving.errors import ApiError
from churnguard.serving.metrics import Metrics
from churnguard.serving.model import LoadedModel
from churnguard.serving.predlog import ApiPredictionLog
from churnguard.serving.schemas import CustomerIn
from churnguard.serving.store import FeatureStore, StoreError

#: Batches at least this large are scored in a worker thread (XGBoost releases the GIL).
THREAD_ROWS = 64

Loc = list[str | int]


def check_batch(n: int, limit: int) -> None:
    if n > limit:
        raise ApiError(413, f"too many customers: {n:,} in one request, at most {limit:,}",
                       code="too_many_customers")


@dataclass
class Rows:
    """The encoded feature rows of a request's customers that could be found, in request
    order: row ``k`` of ``X`` is customer ``positions[k]``; ``unknown`` are the positions of ids
    the feature store does not hold; ``warnings`` the score warnings of each position."""

    X: np.ndarray
    positions: list[int]
    unknown: list[int] = field(default_factory=list)
    warnings: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


async def customer_rows(customers: list[CustomerIn], model: LoadedModel, store: FeatureStore,
                        field: str = "customers") -> Rows:
    """Inline features through the bundle's encoder (422 naming the field on a bad value);
    ids from the feature store (which uses the same encoder); unknown ids reported in
    :attr:`Rows.unknown`, not raised."""
    enc = model.bundle.encoder()
    X = np.empty((len(customers), len(enc.names)), dtype=np.float64)
    found = np.ones(len(customers), dtype=bool)
    warnings: dict[int, list[dict[str, Any]]] = {}
    look: list[int] = []
    for i, c in enumerate(customers):
        if c.features is None:
            look.append(i)
            continue
        unseen: list[list[tuple[str, str]]] = []
        try:
            X[i] = enc.encode_records([c.features], unseen=unseen)[0]
        except FeatureError as exc:
            loc: Loc = ["body", field, i, "features"]
            if exc.field:
                loc.append(exc.field)
            raise ApiError(422, f"{'.'.join(map(str, loc))}: {exc.message}", details=[
                {"loc": loc, "message": exc.message, "type": "feature_error"}]) from None
        if unseen[0]:
            warnings[i] = [{"feature": name, "value": value, "type": "unseen_category",
                            "message": f"{name} = {value!r} was not seen in training: scored "
                            "as missing"} for name, value in unseen[0]]
    unknown: list[int] = []
    if look:
        rows, got, missing = await _lookup([customers[i].customer_id for i in look], model,
                                           store)
        X[[look[k] for k in got]] = rows
        unknown = [look[m] for m in missing]
        found[unknown] = False
    return Rows(X=X[found], positions=np.flatnonzero(found).tolist(), unknown=unknown,
                warnings=warnings)


async def _lookup(ids: list[str], model: LoadedModel,
                  store: FeatureStore) -> tuple[np.ndarray, list[int], list[int]]:
    """The encoded rows of the ``ids`` the store holds with their positions in ``ids``, and
    the positions of those it does not hold. (The store answers all or nothing, so the known
    ones are asked for again; a snapshot swapped in between only moves more ids to unknown.)"""
    todo = list(range(len(ids)))
    missing: list[int] = []
    while todo:
        try:
            X, miss = await store.matrix([ids[k] for k in todo], model.bundle)
        except StoreError as exc:
            raise ApiError(503, str(exc), code="feature_store_unavailable") from None
        if not miss:
            return X, todo, sorted(missing)
        gone = set(miss)
        missing += [todo[m] for m in miss]
        todo = [k for n, k in enumerate(todo) if n not in gone]
    return np.empty((0, len(model.bundle.feature_names))), [], sorted(missing)


def unknown_reason(store: FeatureStore) -> str:
    snap = store.info
    return (f"not in the feature snapshot as of {snap.as_of}" if snap is not None
            else "not in the feature snapshot (none loaded)")


def customer_errors(customers: list[CustomerIn], unknown: list[int],
                    store: FeatureStore) -> list[dict[str, Any]]:
    """The ``errors`` of a response: one per unknown customer, in request order."""
    reason = unknown_reason(store)
    return [{"index": i, "customer_id": customers[i].customer_id, "code": "unknown_customer",
             "reason": reason} for i in sorted(unknown)]


def unknown_error(ids: list[str], locs: list[Loc], store: FeatureStore) -> ApiError:
    """404 for unknown customer ids (``locs``: the field path of each)."""
    shown = ", ".join(repr(i) for i in ids[:10])
    more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
    return ApiError(404, f"unknown customer(s) {shown}{more}: {unknown_reason(store)}; send "
                    "inline features to score customers the snapshot does not hold",
                    code="unknown_customer",
                    details=[{"loc": loc, "message": "unknown customer",
                              "type": "unknown_customer"} for loc in locs[:100]])


async def score(X: np.ndarray, model: LoadedModel, *, drivers: bool = True) -> FullScores:
    """:func:`~churnguard.model.score.score_matrix` of the request's rows; large batches in a
    worker thread so the event loop keeps serving."""
    if len(X) >= THREAD_ROWS:
        return await run_in_threadpool(score_matrix, model.bundle, X, drivers=drivers)
    return score_matrix(model.bundle, X, drivers=drivers)


def records(full: FullScores, ids: list[str], model: LoadedModel, metrics: Metrics,
            warnings: list[list[dict[str, Any]]] | None = None,
            prediction_log: ApiPredictionLog | None = None) -> list[dict[str, Any]]:
    """The API's score of each row of ``full`` (README, "Scoring API"), queued for the
    ``prediction_log`` too. Bodies for :func:`~churnguard.serving.errors.dumps`: the actions
    are ``orjson.Fragment`` JSON text (:meth:`FullScores.rows`)."""
    at = datetime.now(UTC)
    now = at.isoformat().replace("+00:00", "Z")
    version = model.version
    b = model.bundle
    tail = {"horizon_days": b.horizon_days, "clv_horizon_days": b.clv_horizon_days,
            "model_version": version, "scored_at": now}
    out = [{"customer_id": cid, **row,
            "warnings": warnings[i] if warnings is not None else [], **tail}
           for i, (cid, row) in enumerate(zip(ids, full.rows(), strict=True))]
    a = full.assessment
    tiers = a.risk_tier.tolist()
    metrics.scored(full.churn_probability, tiers, version)
    if prediction_log is not None:
        prediction_log.submit(ids, version, full.churn_probability, full.clv, tiers,
                              full.top_actions(), value_tier=a.value_tier.tolist(),
                              lifecycle_stage=a.lifecycle_stage.tolist(), scored_at=at)
    return out
