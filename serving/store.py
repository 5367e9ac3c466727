"""Online feature lookup: the latest materialised feature snapshot, by customer id.

``churnguard features build --out <data_dir>/features.parquet`` (or ``CHURNGUARD_FEATURE_
SNAPSHOT``) writes the snapshot. :class:`MemoryStore` loads it into each API process;
:class:`RedisStore` copies it once into Redis (``CHURNGUARD_ONLINE_STORE=redis://…``) so that
several instances share one store. Both return raw feature values that go through the bundle's
own encoder, so a looked-up customer scores exactly like the same row sent inline.

Redis layout (``prefix`` default ``churnguard:``): ``<prefix>snap:<fingerprint>:<customer_id>``
→ the row as JSON; ``<prefix>current`` → JSON about the live snapshot. A new snapshot is written
under its own fingerprint and published by one ``SET`` of ``current``, so readers never see a
half-written snapshot; the old keys expire an hour later.
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

    @property
    def info(self) -> SnapshotInfo | None: ...

    @property
    def problem(self) -> str | None: ...

    def refresh(self) -> bool: ...

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


class MemoryStore:
    """The snapshot in this process: an id → row index plus the rows encoded once per model."""

    kind = "memory"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key: tuple[int, int] | None = None
        self._frame: pd.DataFrame | None = None
        self._index: dict[str, int] = {}
        self._info: SnapshotInfo | None = None
        self._problem: str | None = None
        self._encoded: tuple[ScoringBundle, np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def info(self) -> SnapshotInfo | None:
        return self._info

    @property
    def problem(self) -> str | None:
        return self._problem

    def refresh(self) -> bool:
        """(Re)load the snapshot if the file changed; True when a new one was loaded."""
        key = _file_key(self.path)
        if key is None:
            if self._frame is None:
                self._problem = (f"no feature snapshot at {self.path}: customer-id lookups "
                                 "answer 404 (run churnguard features build --out "
                                 f"{self.path})")
            return False
        if key == self._key:
            return False
        try:
            frame = read_snapshot(self.path)
        except Exception as exc:  # a half-copied or foreign file: keep the old snapshot
            self._problem = f"cannot read feature snapshot {self.path}: {exc}"
            log.error("%s", self._problem)
            return False
        index = {cid: i for i, cid in enumerate(frame["customer_id"].tolist())}
        info = SnapshotInfo(str(self.path), len(frame), _as_of(frame), f"{key[0]}-{key[1]}")
        with self._lock:
            self._frame, self._index, self._info, self._key = frame, index, info, key
            self._encoded = None
            self._problem = None
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
    OLD_TTL = 3600

    def __init__(self, url: str, path: Path, prefix: str = "churnguard:") -> None:
        import redis
        import redis.asyncio as aredis

        self.url, self.path, self.prefix = url, Path(path), prefix
        self._sync = redis.Redis.from_url(url, socket_timeout=10)
        self._async = aredis.Redis.from_url(url, socket_timeout=5)
        self._key: tuple[int, int] | None = None
        self._info: SnapshotInfo | None = None
        self._problem: str | None = None

    @property
    def info(self) -> SnapshotInfo | None:
        return self._info

    @property
    def problem(self) -> str | None:
        return self._problem

    def _current(self) -> SnapshotInfo | None:
        raw = self._sync.get(self.prefix + "current")
        if not raw:
            return None
        return SnapshotInfo(**orjson.loads(raw))

    def refresh(self) -> bool:
        """Publish the snapshot file to Redis if it is newer than the one there (one instance
        writes, guarded by a lock), then follow whatever Redis says is current."""
        try:
            return self._refresh()
        except StoreError as exc:
            self._problem = str(exc)
            log.error("%s", exc)
            return False
        except Exception as exc:  # redis.RedisError, OSError
            self._problem = f"online store {self._safe_url()} unavailable: {exc}"
            log.error("%s", self._problem)
            return False

    def _safe_url(self) -> str:
        return self.url.split("@")[-1] if "@" in self.url else self.url

    def _refresh(self) -> bool:
        key = _file_key(self.path)
        current = self._current()
        if key is not None and key != self._key:
            fp = snapshot_fingerprint(self.path)
            if current is None or current.fingerprint != fp:
                current = self._publish(fp) or self._current()
            self._key = key
        changed = current is not None and (
            self._info is None or current.fingerprint != self._info.fingerprint)
        self._info = current
        self._problem = None if current is not None else (
            f"no feature snapshot in {self._safe_url()} and none at {self.path}")
        return changed

    def _publish(self, fp: str) -> SnapshotInfo | None:
        lock = self._sync.set(f"{self.prefix}lock:{fp}", b"1", nx=True, ex=600)
        if not lock:
            for _ in range(120):  # another instance is writing this snapshot
                time.sleep(0.5)
                cur = self._current()
                if cur is not None and cur.fingerprint == fp:
                    return cur
            raise StoreError(f"timed out waiting for another instance to publish snapshot {fp}")
        frame = read_snapshot(self.path)
        info = SnapshotInfo(str(self.path), len(frame), _as_of(frame), fp)
        cols = [c for c in frame.columns if c not in ("customer_id", "as_of")]
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
        old = self._current()
        self._sync.set(self.prefix + "current", orjson.dumps(info.to_dict()))
        if old is not None and old.fingerprint != fp:
            pipe = self._sync.pipeline(transaction=False)
            for k in self._sync.scan_iter(f"{self.prefix}snap:{old.fingerprint}:*", count=1000):
                pipe.expire(k, self.OLD_TTL)
            pipe.execute()
        self._sync.delete(f"{self.prefix}lock:{fp}")
        log.info("feature snapshot %s published to %s: %d customers (fingerprint %s)",
                 self.path, self._safe_url(), len(frame), fp)
        return info

    async def matrix(self, ids: list[str], bundle: ScoringBundle) -> tuple[
            np.ndarray, list[int]]:
        info = self._info
        if info is None:
            return _no_rows(bundle), list(range(len(ids)))
        base = f"{self.prefix}snap:{info.fingerprint}:"
        try:
            raw = await self._async.mget([base + cid for cid in ids])
        except Exception as exc:  # redis.RedisError
            raise StoreError(f"online store {self._safe_url()} unavailable: {exc}") from None
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
