"""API keys: ``X-API-Key`` checked in constant time against every configured key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from churnguard.serving.errors import ApiError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="One of the keys in CHURNGUARD_API_KEYS.")


def key_matches(given: str, keys: tuple[bytes, ...]) -> bool:
    """Whether ``given`` equals one of ``keys``; compares with every key (no early exit)."""
    raw = given.encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(raw, key)
    return ok


async def require_api_key(
    request: Request, key: Annotated[str | None, Security(api_key_header)] = None
) -> None:
    keys: tuple[bytes, ...] = request.app.state.api_keys
    if not keys:
        return
    if not key:
        raise ApiError(401, "missing API key: send it in the X-API-Key header",
                       headers={"WWW-Authenticate": "APIKey"})
    if not key_matches(key, keys):
        raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})
