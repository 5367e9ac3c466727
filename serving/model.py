"""The model being served: resolved from ``models:/<name>@<alias>``, loaded once, swapped
atomically when the alias moves.

A request takes ``holder.current`` once and uses that :class:`LoadedModel` to the end, so a swap
never touches a request in flight. A version that cannot be loaded (not a churnguard bundle, or
failing its self-check, :func:`churnguard.model.registry.load_bundle`) is recorded
(``last_error``, ``/readyz``, the log) and the previous one keeps serving; it is retried on
every poll. The holder never talks to the registry when it is built: the first check runs in
the API's poller, so the service opens its port even when the registry is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from churnguard.model.bundle import BundleError, ScoringBundle
from churnguard.model.registry import load_bundle

log = logging.getLogger("churnguard.serving")


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Problem:
    """Something that keeps the service from being fully ready.

    ``code`` and ``message`` are public (the unauthenticated ``/readyz``): they name no path,
    URL or credential and quote no exception. ``detail`` is for operators only (the log and
    ``GET /v1/model``, behind the API key).
    """

    code: str
    message: str
    detail: str = ""
    since: str = field(default_factory=_now, compare=False)

    def public(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail,
                "since": self.since}


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
ClientFactory = Callable[[], Any]


def tune_for_serving(bundle: ScoringBundle) -> ScoringBundle:
    """One XGBoost thread per prediction: requests are small, concurrency comes from workers."""
    return bundle.set_threads(1)


def mlflow_client(tracking: Any) -> ClientFactory:
    """The MLflow client of ``tracking`` (a :class:`~churnguard.model.registry.Tracking`),
    created, with mlflow imported and activated, on first use, i.e. in the poller's thread.

    Registry calls are bounded by MLflow's own HTTP settings (``MLFLOW_HTTP_REQUEST_TIMEOUT``,
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``), which
    ``churnguard serve`` defaults to a few seconds instead of MLflow's minutes."""
    lock = threading.Lock()
    made: list[Any] = []

    def get() -> Any:
        with lock:
            if not made:
                tracking.activate()
                made.append(tracking.client())
            return made[0]

    return get


def mlflow_resolver(client: ClientFactory, name: str, alias: str) -> Resolver:
    def resolve() -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(client().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc):
                return None
            raise

    return resolve


def mlflow_loader(client: ClientFactory, name: str, alias: str) -> Loader:
    def load(version: str) -> LoadedModel:
        uri = f"models:/{name}/{version}"
        bundle, _ = load_bundle(uri)  # the bundle's plain files, self-checked; nothing unpickled
        mv = client().get_model_version(name, version)
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = {k: float(v) for k, v in client().get_run(mv.run_id).data.metrics
                           .items() if k.startswith("test_")}
            except Exception:  # the run may live in another (unreachable) store
                metrics = {}
        bundle.policy_obj()  # parse (and validate) the policy now, not on the first request
        return LoadedModel(bundle=tune_for_serving(bundle), name=name, alias=alias,
                           version=version, uri=uri, run_id=mv.run_id, metrics=metrics)

    return load


def load_failure_reason(exc: BaseException) -> str:
    """Why a version could not be loaded, in words fit for the public ``/readyz``."""
    if isinstance(exc, BundleError):
        return exc.reason
    return "the registry or its artifact store could not be read"


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class ModelHolder:
    """The served model of ``models:/<name>@<alias>`` and what went wrong getting it.

    ``local``: the registry is a local file (the embedded store), so the API may wait for the
    first :meth:`check` before it opens its port; with a remote registry it never waits."""

    def __init__(self, name: str, alias: str, resolve: Resolver, load: Loader,
                 on_change: Callable[[LoadedModel | None], None] | None = None,
                 on_failure: Callable[[], None] | None = None, *, local: bool = False) -> None:
        self.name, self.alias = name, alias
        self.local = local
        self._resolve, self._load = resolve, load
        self._on_change, self._on_failure = on_change, on_failure
        self.current: LoadedModel | None = None
        self.last_error: dict[str, Any] | None = None
        self.alias_problem: Problem | None = None
        #: True once the first check has finished (whatever its outcome).
        self.checked = False
        self._lock = threading.Lock()

    def problems(self) -> list[Problem]:
        """What keeps the model side from being ready, for ``/readyz``."""
        out: list[Problem] = []
        if not self.checked and self.current is None:
            out.append(Problem("model_loading", f"looking up {self.name}@{self.alias} in the "
                               "model registry; scoring answers 503 until a model loads"))
        if self.alias_problem is not None:
            out.append(self.alias_problem)
        e = self.last_error
        if e is not None:
            serving = f"serving v{e['serving']}" if e.get("serving") else "no model to serve"
            out.append(Problem("model_load_failed", f"champion v{e['version']} could not be "
                               f"loaded ({e['reason']}); {serving}", detail=e["error"],
                               since=e["at"]))
        return out

    def check(self) -> bool:
        """Resolve the alias; load and swap in a new version. True when the model changed."""
        with self._lock:
            try:
                return self._check()
            finally:
                self.checked = True

    def _check(self) -> bool:
        try:
            version = self._resolve()
        except Exception as exc:  # registry unreachable: keep serving what we have
            problem = Problem(
                "registry_unavailable", f"cannot resolve {self.name}@{self.alias}: the model "
                "registry did not answer or refused the request; " + (
                    f"serving v{self.current.version}" if self.current else
                    "scoring answers 503 until a model loads"), detail=_detail(exc))
            if self.alias_problem is None or self.alias_problem.code != problem.code:
                log.error("cannot resolve models:/%s@%s: %s", self.name, self.alias,
                          problem.detail)
                self.alias_problem = problem
            else:
                log.debug("registry still unavailable: %s", problem.detail)
            return False
        if self.alias_problem is not None and self.alias_problem.code == "registry_unavailable":
            log.info("model registry answers again")
        self.alias_problem = None
        if version is None:
            if self.current is None:
                self.alias_problem = Problem(
                    "no_model_registered", f"no version of {self.name} has the alias "
                    f"{self.alias} (train one, or promote a version); scoring answers 503")
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
                "version": version, "error": _detail(exc), "reason": load_failure_reason(exc),
                "at": _now(), "serving": current.version if current else None}
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
