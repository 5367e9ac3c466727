"""Prometheus metrics of the API (each app its own registry, so several apps can coexist).

With ``--workers N`` the workers share one port, so a scrape reaches one of them at random:
``churnguard serve`` then runs prometheus_client's multiprocess mode (values in memory-mapped
files under ``PROMETHEUS_MULTIPROC_DIR``, a fresh temporary directory unless set) and
``/metrics`` reports the sum over all workers (gauges per worker, with a ``pid`` label).
"""

from __future__ import annotations

import collections
import math
import os
import threading
from collections.abc import Mapping
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

from churnguard.serving.live_drift import ScoreWindow, reference_entry

#: prometheus_client's switch to multiprocess mode (read when prometheus_client is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROB_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    """The API's metrics. ``live_window`` / ``live_min_rows``: the live score drift window
    (serving/live_drift.py; CHURNGUARD_MONITOR_LIVE_WINDOW / _MIN_ROWS)."""

    def __init__(self, live_window: int = 10_000, live_min_rows: int = 500) -> None:
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
        self.score_psi = Gauge(
            "churnguard_score_psi", "PSI of the churn probabilities of the last "
            "CHURNGUARD_MONITOR_LIVE_WINDOW customers scored against the served model's "
            "reference profile (absent until CHURNGUARD_MONITOR_LIVE_MIN_ROWS of them, or "
            "without a reference profile).", ["model_version"], registry=r,
            multiprocess_mode="liveall")
        self.score_psi_rows = Gauge(
            "churnguard_score_psi_window_rows", "Scores of the served model in the live score "
            "PSI window.", registry=r, multiprocess_mode="liveall")
        self.live = ScoreWindow(live_window, live_min_rows)
        self._live_lock = threading.Lock()
        self._psi_version: str | None = None
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

    def scored(self, churn_probability: np.ndarray, risk_tiers: Any,
               model_version: str | None = None) -> None:
        """Count a batch of scores: customers, risk tiers and the churn-probability histogram
        (one increment per bucket instead of one ``observe`` per customer), and add them to
        the live score window of ``model_version``."""
        n = len(churn_probability)
        if n == 0:
            return
        if self.live.add(churn_probability, model_version) and self.multiprocess:
            # A scrape reads the workers' files: each worker keeps its own gauges current.
            self.refresh_live()
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

    def serve_reference(self, version: str | None, metadata: Mapping[str, Any] | None) -> None:
        """A new served model (or none): an empty live score window for ``version`` with the
        reference entry of its bundle ``metadata``."""
        self.live.reset(reference_entry(metadata) if metadata is not None else None, version)
        self.refresh_live()

    def refresh_live(self) -> None:
        """Set the live score gauges from the window: ``churnguard_score_psi`` of the served
        version, absent while there is no PSI (with --workers, where a series cannot be
        removed, a previous version's series reads NaN instead)."""
        with self._live_lock:
            version, rows, psi = self.live.state()
            self.score_psi_rows.set(rows)
            shown = self._psi_version
            if shown is not None and (psi is None or shown != version):
                if self.multiprocess:
                    self.score_psi.labels(shown).set(math.nan)
                else:
                    self.score_psi.remove(shown)
                self._psi_version = None
            if psi is not None and version is not None:
                self.score_psi.labels(version).set(psi)
                self._psi_version = version

    def render(self) -> bytes:
        self.refresh_live()
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
