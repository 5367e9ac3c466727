"""API keys: ``X-API-Key`` checked in constant time against every configured key.

The keys (``CHURNGUARD_API_KEYS``) are ``SecretStr`` in the settings; the app keeps only their
SHA-256 digests (:func:`key_digests`), and a given key is compared by digest, so the
comparison takes the same time whatever its length or content."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from churnguard.serving.errors import ApiError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="One of the keys in CHURNGUARD_API_KEYS.")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def key_digests(keys: Iterable[SecretStr]) -> tuple[bytes, ...]:
    """What the app keeps of the configured keys (``app.state.api_keys``)."""
    return tuple(_digest(k.get_secret_value().encode()) for k in keys)


def key_matches(given: str, digests: tuple[bytes, ...]) -> bool:
    """Whether ``given`` is one of the keys of ``digests``; compares with every key (no early
    exit), digest against digest (equal lengths)."""
    raw = _digest(given.encode("utf-8", "surrogateescape"))
    ok = False
    for d in digests:
        ok |= hmac.compare_digest(raw, d)
    return ok


async def require_api_key(
    request: Request, key: Annotated[str | None, Security(api_key_header)] = None
) -> None:
    digests: tuple[bytes, ...] = request.app.state.api_keys
    if not digests:
        return
    if not key:
        raise ApiError(401, "missing API key: send it in the X-API-Key header",
                       headers={"WWW-Authenticate": "APIKey"})
    if not key_matches(key, digests):
        raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})
