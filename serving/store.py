"""Online feature lookup: the latest materialised feature snapshot, by customer id.

``churnguard features build --out <data_dir>/features.parquet`` (or ``CHURNGUARD_FEATURE_
SNAPSHOT``) writes the snapshot. :class:`MemoryStore` loads it into each API process;
:class:`RedisStore` copies it once into Redis (``CHURNGUARD_ONLINE_STORE=redis://…``) so that
several instances share one store. Both return raw feature values that go through the bundle's
own encoder, so a looked-up customer scores exactly like the same row sent inline.

A new snapshot replaces the served one only when it fits the model being served (its encoder
reads every feature column): one that does not is reported (``problems``, ``/readyz``, the log)
and the last good snapshot keeps serving. When the model changes (:meth:`use_model`) the served
snapshot and a rejected newer one are checked again.

Redis layout (``prefix`` default ``churnguard:``): ``<prefix>snap:<fingerprint>:<customer_id>``
→ the row as JSON; ``<prefix>meta:<fingerprint>`` → its columns and row count, written after
the rows; ``<prefix>current`` → JSON about the live snapshot. A new snapshot is written under
its own fingerprint and published by one ``SET`` of ``current``, so readers never see a
half-written snapshot; the old keys expire an hour later. When ``current`` or the snapshot it
names is gone (Redis restarted empty, ``FLUSHALL``, eviction), an instance that has the
snapshot file publishes it again. Every Redis call has short socket timeouts and one retry, so
a Redis that is down or hung shows in ``/readyz`` within seconds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import pandas as pd

from churnguard.model.bundle import ScoringBundle
from churnguard.model.encode import FeatureError
from churnguard.serving.model import Problem

log = logging.getLogger("churnguard.serving")


class StoreError(RuntimeError):
    """The feature store cannot answer (no snapshot, Redis down, snapshot/model mismatch)."""


@dataclass
class SnapshotInfo:
    path: str
    rows: int
    as_of: str | None
    fingerprint: str
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "as_of": self.as_of,
                "fingerprint": self.fingerprint, "loaded_at": self.loaded_at}


class FeatureStore(Protocol):
    kind: str
    #: Whether the store reads only local files (the API may wait for its first refresh
    #: before it opens its port; a network store is first refreshed in the background).
    local: bool

    @property
    def info(self) -> SnapshotInfo | None: ...

    @property
    def problems(self) -> list[Problem]: ...

    @property
    def started(self) -> bool:
        """True once the first :meth:`refresh` has finished (whatever its outcome)."""
        ...

    def refresh(self) -> bool: ...

    def use_model(self, bundle: ScoringBundle | None, version: str | None) -> None: ...

    async def matrix(self, ids: list[str], bundle: ScoringBundle) -> tuple[
        np.ndarray, list[int]]: ...

    async def close(self) -> None: ...


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def read_snapshot(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype={"customer_id": str})
    else:
        frame = pd.read_parquet(path)
    if "customer_id" not in frame.columns:
        raise StoreError(f"feature snapshot {path} has no customer_id column")
    frame["customer_id"] = frame["customer_id"].astype(str)
    dup = frame["customer_id"].duplicated()
    if dup.any():
        raise StoreError(f"feature snapshot {path} has {int(dup.sum())} duplicate customer ids "
                         f"(e.g. {frame.loc[dup, 'customer_id'].iloc[0]})")
    return frame


def _as_of(frame: pd.DataFrame) -> str | None:
    if "as_of" in frame.columns and len(frame):
        return str(pd.Timestamp(frame["as_of"].max()).date())
    return None


def _no_rows(bundle: ScoringBundle) -> np.ndarray:
    return np.empty((0, len(bundle.feature_names)), dtype=np.float32)


def _model_label(version: str | None) -> str:
    return f"model v{version}" if version else "the model being served"


def _snapshot_label(as_of: str | None) -> str:
    return f"feature snapshot as of {as_of}" if as_of else "feature snapshot"


def _missing_columns(columns: set[str], bundle: ScoringBundle) -> list[str]:
    return [n for n in bundle.feature_names if n not in columns]


LOADING = "the feature snapshot is still loading (see /readyz)"


class MemoryStore:
    """The snapshot in this process: an id → row index plus the rows encoded once per model."""

    kind = "memory"
    local = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key: tuple[int, int] | None = None
        self._frame: pd.DataFrame | None = None
        self._index: dict[str, int] = {}
        self._info: SnapshotInfo | None = None
        #: Problems by slot: "file" (the snapshot file: missing, unreadable, not fitting the
        #: model) and "served" (the snapshot being served does not fit a new model).
        self._problems: dict[str, Problem] = {}
        self._encoded: tuple[ScoringBundle, np.ndarray] | None = None
        self._model: ScoringBundle | None = None
        self._version: str | None = None
        #: (file key, model) of the last snapshot file refused, so it is read again only when
        #: the file or the model changes.
        self._rejected: tuple[tuple[int, int], int] | None = None
        self._started = False
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    @property
    def info(self) -> SnapshotInfo | None:
        return self._info

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems.values())

    @property
    def started(self) -> bool:
        return self._started

    def refresh(self) -> bool:
        """(Re)load the snapshot if the file changed and fits the model; True when a new one
        was loaded."""
        with self._refresh_lock:
            try:
                return self._refresh()
            finally:
                self._started = True

    def use_model(self, bundle: ScoringBundle | None, version: str | None) -> None:
        """The model now served: encode the snapshot for it (off the request path), report
        when it does not fit, and try a snapshot file refused for the previous model."""
        with self._refresh_lock:
            self._model, self._version = bundle, version
            self._problems.pop("served", None)
            frame = self._frame
            misfit: str | None = None
            if bundle is not None and frame is not None:
                try:
                    X = bundle.encode(frame)
                except ValueError as exc:
                    misfit = str(exc)
                else:
                    with self._lock:
                        self._encoded = (bundle, X)
            if self._refresh() or misfit is None:
                return
            info = self._info
            self._problems["served"] = Problem(
                "snapshot_mismatch", f"the {_snapshot_label(info.as_of if info else None)} "
                f"does not fit {_model_label(version)}: customer-id lookups answer 503 until a "
                "snapshot for it is built", detail=f"{self.path}: {misfit}")
            log.error("the feature snapshot %s does not fit %s: %s", self.path,
                      _model_label(version), misfit)

    def _refresh(self) -> bool:
        key = _file_key(self.path)
        if key is None:
            if self._frame is None:
                self._problems["file"] = Problem(
                    "snapshot_missing", "no feature snapshot: customer-id lookups answer 404 "
                    "until one is built (churnguard features build)",
                    detail=f"no file at {self.path} (run churnguard features build --out "
                    f"{self.path})")
            return False
        if key == self._key:
            return False
        model, version = self._model, self._version
        if self._rejected == (key, id(model)):
            return False
        keep = ("still serving the previous one" if self._frame is not None
                else "customer-id lookups answer 404")
        try:
            frame = read_snapshot(self.path)
        except Exception as exc:  # a half-copied or foreign file: keep the old snapshot
            self._rejected = (key, id(model))
            self._problems["file"] = Problem(
                "snapshot_unreadable", f"the new feature snapshot cannot be read; {keep}",
                detail=f"{self.path}: {exc}")
            log.error("cannot read feature snapshot %s: %s; %s", self.path, exc, keep)
            return False
        X: np.ndarray | None = None
        if model is not None:
            try:
                X = model.encode(frame)
            except ValueError as exc:
                self._rejected = (key, id(model))
                self._problems["file"] = Problem(
                    "snapshot_mismatch", f"the new {_snapshot_label(_as_of(frame))} does "
                    f"not fit {_model_label(version)}; {keep}",
                    detail=f"{self.path}: {exc}")
                log.error("feature snapshot %s (as of %s) does not fit %s: %s; %s", self.path,
                          _as_of(frame), _model_label(version), exc, keep)
                return False
        index = {cid: i for i, cid in enumerate(frame["customer_id"].tolist())}
        info = SnapshotInfo(str(self.path), len(frame), _as_of(frame), f"{key[0]}-{key[1]}")
        with self._lock:
            self._frame, self._index, self._info, self._key = frame, index, info, key
            self._encoded = (model, X) if model is not None and X is not None else None
        self._problems.clear()
        self._rejected = None
        log.info("feature snapshot %s loaded: %d customers as of %s", self.path, len(frame),
                 info.as_of)
        return True

    def _matrix_for(self, bundle: ScoringBundle) -> np.ndarray:
        enc = self._encoded
        if enc is not None and enc[0] is bundle:
            return enc[1]
        with self._lock:
            frame = self._frame
            assert frame is not None
            try:
                X = bundle.encode(frame)
            except ValueError as exc:
                raise StoreError(f"the feature snapshot does not fit the model: {exc}") from None
            self._encoded = (bundle, X)
            return X

    async def matrix(self, ids: list[str], bundle: ScoringBundle) -> tuple[
            np.ndarray, list[int]]:
        """Encoded rows of ``ids`` (in order) and the positions of ids not in the snapshot."""
        if not self._started:
            raise StoreError(LOADING)
        if self._frame is None:
            return _no_rows(bundle), list(range(len(ids)))
        index = self._index
        X = self._matrix_for(bundle)
        rows = [index.get(cid, -1) for cid in ids]
        missing = [i for i, r in enumerate(rows) if r < 0]
        if missing:
            return _no_rows(bundle), missing
        return X[rows], []

    async def close(self) -> None:
        return None


def snapshot_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


class RedisStore:
    """The snapshot in Redis, shared by every API instance pointed at the same URL."""

    kind = "redis"
    local = False
    OLD_TTL = 3600
    #: Socket timeouts (seconds): the poller's calls (publishing, following ``current``), and a
    #: request's lookup. One retry, no backoff: a Redis that is down or hung answers in seconds.
    SYNC_TIMEOUT, SYNC_CONNECT_TIMEOUT = 5.0, 2.0
    LOOKUP_TIMEOUT, LOOKUP_CONNECT_TIMEOUT = 2.0, 1.0

    def __init__(self, url: str, path: Path, prefix: str = "churnguard:") -> None:
        import redis
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url, self.path, self.prefix = url, Path(path), prefix
        self._sync = redis.Redis.from_url(url, socket_timeout=self.SYNC_TIMEOUT,
                                          socket_connect_timeout=self.SYNC_CONNECT_TIMEOUT,
                                          retry=Retry(NoBackoff(), 1))
        self._async = aredis.Redis.from_url(url, socket_timeout=self.LOOKUP_TIMEOUT,
                                            socket_connect_timeout=self.LOOKUP_CONNECT_TIMEOUT,
                                            retry=AsyncRetry(NoBackoff(), 1))
        self._key: tuple[int, int] | None = None
        self._file_fp: str | None = None
        self._info: SnapshotInfo | None = None
        self._columns: set[str] | None = None
        #: Problems by slot: "unavailable" (Redis does not answer), "empty" (nothing usable
        #: published), "file" (the snapshot file could not be published), "published" (the
        #: snapshot another instance published does not fit this model), "served" (the
        #: snapshot being served does not fit a new model), "lookup" (a request's lookup
        #: failed; cleared by the next one that works).
        self._problems: dict[str, Problem] = {}
        self._model: ScoringBundle | None = None
        self._version: str | None = None
        self._rejected: tuple[str, int] | None = None  # (fingerprint, model) refused
        self._model_changed = False
        self._started = False
        self._refresh_lock = threading.Lock()

    @property
    def info(self) -> SnapshotInfo | None:
        return self._info

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems.values())

    @property
    def started(self) -> bool:
        return self._started

    def _safe_url(self) -> str:
        return self.url.split("@")[-1] if "@" in self.url else self.url

    def _unavailable(self, exc: BaseException) -> Problem:
        return Problem("store_unavailable", "the online feature store (Redis) does not answer: "
                       "customer-id lookups answer 503",
                       detail=f"online store {self._safe_url()} unavailable: "
                       f"{type(exc).__name__}: {exc}")

    def refresh(self) -> bool:
        """Publish the snapshot file to Redis if it is newer than the one there, or if Redis
        lost the published one (one instance writes, guarded by a lock); then follow whatever
        Redis says is current, if it fits the model. True when the served snapshot changed."""
        with self._refresh_lock:
            try:
                if self._model_changed:
                    return self._recheck()
                return self._refresh_reporting()
            finally:
                self._started = True

    def use_model(self, bundle: ScoringBundle | None, version: str | None) -> None:
        """The model now served. The snapshots are checked against it at once if no refresh
        is running, else by the next refresh: a slow Redis never holds up a model swap."""
        self._model, self._version = bundle, version
        self._model_changed = True
        if self._refresh_lock.acquire(blocking=False):
            try:
                self._recheck()
            finally:
                self._refresh_lock.release()

    def _recheck(self) -> bool:
        """Check the served snapshot, and a snapshot file refused before, against the model."""
        self._model_changed = False
        bundle, version = self._model, self._version
        self._problems.pop("served", None)
        self._problems.pop("published", None)
        if self._rejected is not None:  # the file refused for the old model: try it again
            self._rejected, self._key = None, None
        if self._refresh_reporting():
            return True
        cols, info = self._columns, self._info
        if bundle is None or cols is None or info is None:
            return False
        missing = _missing_columns(cols, bundle)
        if missing:
            self._problems["served"] = Problem(
                "snapshot_mismatch", f"the {_snapshot_label(info.as_of)} does not fit "
                f"{_model_label(version)}: customer-id lookups answer 503 until a snapshot "
                "for it is published", detail=f"snapshot {info.fingerprint} lacks "
                f"{len(missing)} feature column(s): {', '.join(missing[:8])}")
            log.error("the feature snapshot in Redis (%s) does not fit %s: %s",
                      info.fingerprint, _model_label(version), self._problems["served"].detail)
        return False

    def _refresh_reporting(self) -> bool:
        try:
            changed = self._refresh()
        except StoreError as exc:
            self._problems["file"] = Problem(
                "snapshot_publish_failed", "the new feature snapshot could not be published; "
                + ("still serving the previous one" if self._info else
                   "customer-id lookups answer 404"), detail=str(exc))
            log.error("%s", exc)
            return False
        except Exception as exc:  # redis.RedisError, OSError
            problem = self._unavailable(exc)
            if "unavailable" not in self._problems:
                log.error("%s", problem.detail)
            self._problems["unavailable"] = problem
            return False
        return changed

    def _answers(self) -> None:
        """Redis answered: clear "unavailable" at once, not at the end of a refresh, since a
        republish after a restart serves lookups before it finishes."""
        if self._problems.pop("unavailable", None) is not None:
            log.info("online store %s answers again", self._safe_url())

    def _current(self) -> SnapshotInfo | None:
        raw = self._sync.get(self.prefix + "current")
        if not raw:
            return None
        return SnapshotInfo(**orjson.loads(raw))

    def _published_columns(self, fp: str) -> set[str] | None:
        """The columns of published snapshot ``fp``; None when its keys are gone (flushed,
        evicted) or it was published by a churnguard that wrote no metadata."""
        raw = self._sync.get(f"{self.prefix}meta:{fp}")
        if not raw:
            return None
        return set(orjson.loads(raw)["columns"])

    def _refresh(self) -> bool:
        key = _file_key(self.path)
        current = self._current()
        self._answers()
        cols = self._published_columns(current.fingerprint) if current is not None else None
        if current is not None and cols is None:
            log.warning("the feature snapshot %s named current in %s is gone (Redis restarted "
                        "or flushed?)", current.fingerprint, self._safe_url())
            current = None
        if key is not None and (key != self._key or current is None):
            file_changed = key != self._key
            fp = (self._file_fp if not file_changed and self._file_fp
                  else snapshot_fingerprint(self.path))
            self._key, self._file_fp = key, fp
            if ((current is None or (file_changed and current.fingerprint != fp))
                    and self._rejected != (fp, id(self._model))):
                published = self._publish(fp)
                if published is not None:
                    current, cols = published
        if current is None or cols is None:
            self._info, self._columns = None, None
            self._problems["empty"] = Problem(
                "snapshot_missing", "no feature snapshot in the online store: customer-id "
                "lookups answer 404 until one is published (churnguard features build)",
                detail=f"no feature snapshot in {self._safe_url()} and "
                + (f"none published from {self.path}" if key is not None
                   else f"none at {self.path}"))
            return False
        self._problems.pop("empty", None)
        info = self._info
        if info is not None and current.fingerprint == info.fingerprint:
            return False
        if self._model is not None:
            missing = _missing_columns(cols, self._model)
            if missing:
                keep = ("still serving the previous one" if info is not None
                        else "customer-id lookups answer 503")
                problem = Problem(
                    "snapshot_mismatch", f"the {_snapshot_label(current.as_of)} published "
                    f"in the online store does not fit {_model_label(self._version)}; {keep}",
                    detail=f"snapshot {current.fingerprint} lacks {len(missing)} feature "
                    f"column(s): {', '.join(missing[:8])}")
                if self._problems.get("published") != problem:
                    log.error("%s (%s)", problem.message, problem.detail)
                self._problems["published"] = problem
                if info is not None and self._published_columns(info.fingerprint) is not None:
                    return False
        else:
            self._problems.pop("published", None)
        self._info, self._columns = current, cols
        self._problems.pop("served", None)
        if self._model is None or not _missing_columns(cols, self._model):
            self._problems.pop("published", None)
        return True

    def _publish(self, fp: str) -> tuple[SnapshotInfo, set[str]] | None:
        """Write the snapshot file to Redis under ``fp`` and make it current; None (with the
        problem recorded) when it does not fit the model being served."""
        try:
            frame = read_snapshot(self.path)
        except Exception as exc:  # a half-copied or foreign file
            raise StoreError(f"cannot read feature snapshot {self.path}: {exc}") from None
        model = self._model
        if model is not None:
            try:
                model.encode(frame)
            except ValueError as exc:
                self._rejected = (fp, id(model))
                keep = ("still serving the previous one" if self._info is not None
                        else "customer-id lookups answer 404")
                self._problems["file"] = Problem(
                    "snapshot_mismatch", f"the new {_snapshot_label(_as_of(frame))} does "
                    f"not fit {_model_label(self._version)} and was not published; {keep}",
                    detail=f"{self.path}: {exc}")
                log.error("feature snapshot %s (as of %s) does not fit %s, not published: %s",
                          self.path, _as_of(frame), _model_label(self._version), exc)
                return None
        self._problems.pop("file", None)
        lock = self._sync.set(f"{self.prefix}lock:{fp}", b"1", nx=True, ex=600)
        cols = [c for c in frame.columns if c not in ("customer_id", "as_of")]
        if not lock:
            for _ in range(120):  # another instance is writing this snapshot
                time.sleep(0.5)
                cur = self._current()
                if cur is not None and cur.fingerprint == fp:
                    return cur, set(cols)
            raise StoreError(f"timed out waiting for another instance to publish snapshot {fp}")
        info = SnapshotInfo(str(self.path), len(frame), _as_of(frame), fp)
        ids = frame["customer_id"].tolist()
        values = frame[cols].astype(object).to_numpy()
        base = f"{self.prefix}snap:{fp}:"
        pipe = self._sync.pipeline(transaction=False)
        for n, (cid, row) in enumerate(zip(ids, values, strict=True)):
            rec = {c: _clean(v) for c, v in zip(cols, row, strict=True)}
            pipe.set(base + cid, orjson.dumps(rec))
            if n % 2000 == 1999:
                pipe.execute()
        pipe.execute()
        self._sync.set(f"{self.prefix}meta:{fp}",
                       orjson.dumps({"columns": cols, "rows": len(frame)}))
        old = self._current()
        self._sync.set(self.prefix + "current", orjson.dumps(info.to_dict()))
        if old is not None and old.fingerprint != fp:
            pipe = self._sync.pipeline(transaction=False)
            for k in self._sync.scan_iter(f"{self.prefix}snap:{old.fingerprint}:*", count=1000):
                pipe.expire(k, self.OLD_TTL)
            pipe.expire(f"{self.prefix}meta:{old.fingerprint}", self.OLD_TTL)
            pipe.execute()
        self._sync.delete(f"{self.prefix}lock:{fp}")
        log.info("feature snapshot %s published to %s: %d customers (fingerprint %s)",
                 self.path, self._safe_url(), len(frame), fp)
        return info, set(cols)

    async def matrix(self, ids: list[str], bundle: ScoringBundle) -> tuple[
            np.ndarray, list[int]]:
        if not self._started:
            raise StoreError(LOADING)
        info = self._info
        if info is None:
            if "unavailable" in self._problems:
                raise StoreError(f"online store {self._safe_url()} unavailable")
            return _no_rows(bundle), list(range(len(ids)))
        base = f"{self.prefix}snap:{info.fingerprint}:"
        try:
            raw = await self._async.mget([base + cid for cid in ids])
        except Exception as exc:  # redis.RedisError, OSError
            self._problems["lookup"] = self._unavailable(exc)
            log.error("feature lookup failed: %s", self._problems["lookup"].detail)
            raise StoreError(f"online store {self._safe_url()} unavailable: {exc}") from None
        self._problems.pop("lookup", None)
        self._answers()
        missing = [i for i, r in enumerate(raw) if r is None]
        if missing:
            return _no_rows(bundle), missing
        try:
            return bundle.encoder().encode_records([orjson.loads(r or b"{}") for r in raw]), []
        except FeatureError as exc:
            raise StoreError(f"the feature snapshot does not fit the model: {exc}") from None

    async def close(self) -> None:
        await self._async.aclose()
        self._sync.close()


def open_store(online_store: str, path: Path, prefix: str = "churnguard:") -> FeatureStore:
    if online_store == "memory":
        return MemoryStore(path)
    return RedisStore(online_store, path, prefix)
