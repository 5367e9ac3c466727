"""The model being served: resolved from ``models:/<name>@<alias>``, loaded once, swapped
atomically when the alias moves.

A request takes ``holder.current`` once and uses that :class:`LoadedModel` to the end, so a swap
never touches a request in flight. A version that cannot be loaded is recorded (``last_error``,
``/readyz``, the log) and the previous one keeps serving; it is retried on every poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from churnguard.model.bundle import ScoringBundle
from churnguard.model.registry import load_bundle

log = logging.getLogger("churnguard.serving")


@dataclass(frozen=True)
class LoadedModel:
    bundle: ScoringBundle
    name: str
    alias: str
    version: str
    uri: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


Resolver = Callable[[], str | None]
Loader = Callable[[str], LoadedModel]


def tune_for_serving(bundle: ScoringBundle) -> ScoringBundle:
    """One XGBoost thread per prediction: requests are small, concurrency comes from workers."""
    return bundle.set_threads(1)


def mlflow_resolver(client: Any, name: str, alias: str) -> Resolver:
    def resolve() -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc):
                return None
            raise

    return resolve


def mlflow_loader(client: Any, name: str, alias: str) -> Loader:
    def load(version: str) -> LoadedModel:
        uri = f"models:/{name}/{version}"
        bundle, _ = load_bundle(uri)
        mv = client.get_model_version(name, version)
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = {k: float(v) for k, v in client.get_run(mv.run_id).data.metrics.items()
                           if k.startswith("test_")}
            except Exception:  # the run may live in another (unreachable) store
                metrics = {}
        bundle.policy_obj()  # parse (and validate) the policy now, not on the first request
        return LoadedModel(bundle=tune_for_serving(bundle), name=name, alias=alias,
                           version=version, uri=uri, run_id=mv.run_id, metrics=metrics)

    return load


class ModelHolder:
    def __init__(self, name: str, alias: str, resolve: Resolver, load: Loader,
                 on_change: Callable[[LoadedModel | None], None] | None = None,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.name, self.alias = name, alias
        self._resolve, self._load = resolve, load
        self._on_change, self._on_failure = on_change, on_failure
        self.current: LoadedModel | None = None
        self.last_error: dict[str, Any] | None = None
        self.alias_problem: str | None = None
        self._lock = threading.Lock()

    def check(self) -> bool:
        """Resolve the alias; load and swap in a new version. True when the model changed."""
        with self._lock:
            try:
                version = self._resolve()
            except Exception as exc:  # registry unreachable: keep serving what we have
                self.alias_problem = (f"cannot resolve models:/{self.name}@{self.alias}: "
                                      f"{type(exc).__name__}: {exc}")
                log.error("%s", self.alias_problem)
                return False
            self.alias_problem = None
            if version is None:
                if self.current is None:
                    self.alias_problem = (f"no model at models:/{self.name}@{self.alias} "
                                          "(train one, or promote a version)")
                return False
            current = self.current
            if current is not None and current.version == version:
                if self.last_error and self.last_error.get("version") != version:
                    self.last_error = None  # the alias moved back to the serving version
                return False
            first_try = self.last_error is None or self.last_error.get("version") != version
            try:
                loaded = self._load(version)
            except Exception as exc:
                self.last_error = {
                    "version": version, "error": f"{type(exc).__name__}: {exc}",
                    "at": datetime.now(UTC).isoformat(),
                    "serving": current.version if current else None}
                if self._on_failure and first_try:
                    self._on_failure()
                (log.error if first_try else log.debug)(
                    "cannot load %s v%s (%s); %s", self.name, version, self.last_error["error"],
                    f"still serving v{current.version}" if current else "no model to serve")
                return False
            self.current = loaded
            self.last_error = None
            log.info("serving %s v%s (was %s)", self.name, version,
                     f"v{current.version}" if current else "none")
            if self._on_change:
                self._on_change(loaded)
            return True
