"""Prometheus metrics of the API (each app its own registry, so several apps can coexist).

With ``--workers N`` the workers share one port, so a scrape reaches one of them at random:
``churnguard serve`` then runs prometheus_client's multiprocess mode (values in memory-mapped
files under ``PROMETHEUS_MULTIPROC_DIR``, a fresh temporary directory unless set) and
``/metrics`` reports the sum over all workers (gauges per worker, with a ``pid`` label).
"""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: prometheus_client's switch to multiprocess mode (read when prometheus_client is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROB_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry
        self.requests = Counter("churnguard_http_requests_total", "HTTP requests by route, "
                                "method and status.", ["route", "method", "status"], registry=r)
        self.latency = Histogram("churnguard_http_request_duration_seconds", "Request latency "
                                 "by route and method.", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.model_info = Gauge("churnguard_model_info", "The model version being served "
                                "(value 1).", ["name", "version"], registry=r,
                                multiprocess_mode="liveall")
        self.model_loaded = Gauge("churnguard_model_loaded", "1 when a model is loaded.",
                                  registry=r, multiprocess_mode="liveall")
        self.reload_failures = Counter("churnguard_model_reload_failures_total", "New model "
                                       "versions that could not be loaded.", registry=r)
        self.scores = Counter("churnguard_scores_total", "Customers scored.", registry=r)
        self.churn = Histogram("churnguard_churn_probability", "Distribution of churn "
                               "probabilities served.", buckets=PROB_BUCKETS, registry=r)
        self.risk_tier = Counter("churnguard_risk_tier_total", "Scores by risk tier.",
                                 ["tier"], registry=r)
        self.snapshot_rows = Gauge("churnguard_feature_snapshot_rows", "Customers in the "
                                   "feature snapshot.", registry=r,
                                   multiprocess_mode="liveall")
        self.prediction_log_rows = Counter(
            "churnguard_prediction_log_rows_total", "Scored rows written to the prediction "
            "log.", registry=r)
        self.prediction_log_dropped = Counter(
            "churnguard_prediction_log_dropped_rows_total", "Scored rows the prediction log "
            "dropped (queue full or write failed); the responses were not affected.",
            registry=r)
        # Label children looked up once: ``labels()`` validates and locks on every call.
        self._risk_tier: dict[str, Any] = {}
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._model_labels: tuple[str, str] | None = None

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request and observe its latency."""
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)),
                        self.latency.labels(route, method))
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def scored(self, churn_probability: np.ndarray, risk_tiers: Any) -> None:
        """Count a batch of scores: customers, risk tiers and the churn-probability histogram
        (one increment per bucket instead of one ``observe`` per customer)."""
        n = len(churn_probability)
        if n == 0:
            return
        self.scores.inc(n)
        for tier, count in collections.Counter(str(t) for t in risk_tiers).items():
            child = self._risk_tier.get(tier)
            if child is None:
                child = self._risk_tier[tier] = self.risk_tier.labels(tier)
            child.inc(count)
        observe_many(self.churn, np.asarray(churn_probability, dtype=float))

    def set_model(self, name: str, version: str | None) -> None:
        old = self._model_labels
        if old is not None and old != (name, version):
            if self.multiprocess:
                # Series cannot be removed from the multiprocess files (prometheus_client warns
                # on clear()/remove() there): the old version's series reads 0 instead.
                self.model_info.labels(*old).set(0)
            else:
                self.model_info.remove(*old)
        self._model_labels = (name, version) if version is not None else None
        if version is not None:
            self.model_info.labels(name=name, version=version).set(1)
        self.model_loaded.set(1 if version is not None else 0)

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def observe_many(hist: Histogram, values: np.ndarray) -> None:
    """``hist.observe(v)`` for every ``v`` of ``values``, with one increment per bucket: the same
    bucket counts (a value goes to the first bucket whose upper bound is >= it) and sum."""
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 4:
        for v in values.tolist():
            hist.observe(v)
        return
    ok = ~np.isnan(values)  # NaN is in no bucket (observe's ``amount <= bound`` is never true)
    idx = np.searchsorted(np.asarray(bounds, dtype=float), values[ok], side="left")
    counts = np.bincount(idx, minlength=len(bounds))
    total.inc(float(values.sum()))
    for i, c in enumerate(counts.tolist()):
        if c:
            buckets[i].inc(c)
