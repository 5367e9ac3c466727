"""Prometheus metrics of one API process (its own registry, so several apps can coexist).

With ``--workers N`` every worker keeps its own counters; scrape each, or run one worker per
container as usual.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROB_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("churnguard_http_requests_total", "HTTP requests by route, "
                                "method and status.", ["route", "method", "status"], registry=r)
        self.latency = Histogram("churnguard_http_request_duration_seconds", "Request latency "
                                 "by route and method.", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.model_info = Gauge("churnguard_model_info", "The model version being served "
                                "(value 1).", ["name", "version"], registry=r)
        self.model_loaded = Gauge("churnguard_model_loaded", "1 when a model is loaded.",
                                  registry=r)
        self.reload_failures = Counter("churnguard_model_reload_failures_total", "New model "
                                       "versions that could not be loaded.", registry=r)
        self.scores = Counter("churnguard_scores_total", "Customers scored.", registry=r)
        self.churn = Histogram("churnguard_churn_probability", "Distribution of churn "
                               "probabilities served.", buckets=PROB_BUCKETS, registry=r)
        self.risk_tier = Counter("churnguard_risk_tier_total", "Scores by risk tier.",
                                 ["tier"], registry=r)
        self.snapshot_rows = Gauge("churnguard_feature_snapshot_rows", "Customers in the "
                                   "feature snapshot.", registry=r)

    def set_model(self, name: str, version: str | None) -> None:
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(name=name, version=version).set(1)
        self.model_loaded.set(1 if version is not None else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
