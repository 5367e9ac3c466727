"""Pure ASGI middleware: request ids, the request-size limit, metrics and the access log.

The access log holds method, route template, status, latency and request id: never bodies or
query values, so no customer data beyond ids (which appear only in URL paths) reaches the log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churnguard.serving.errors import error_body
from churnguard.serving.metrics import Metrics

log = logging.getLogger("churnguard.serving.access")
_RID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class _TooLarge(Exception):
    pass


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int,
                 templates: dict[int, str]) -> None:
        self.app = app
        self.templates = templates  # id(route object) -> full path template
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = ""
        length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                v = value.decode("latin-1")
                if _RID.match(v):
                    rid = v
            elif name == b"content-length":
                length = value
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await self._too_large(send_wrapper, rid)
            else:
                seen = 0

                async def receive_wrapper() -> Message:
                    nonlocal seen
                    message = await receive()
                    if message["type"] == "http.request":
                        seen += len(message.get("body", b""))
                        if seen > self.max_body:
                            raise _TooLarge
                    return message

                try:
                    await self.app(scope, receive_wrapper, send_wrapper)
                except _TooLarge:
                    if started:
                        raise
                    await self._too_large(send_wrapper, rid)
        finally:
            route: Any = scope.get("route")
            path = self.templates.get(id(route), "unmatched") if route is not None else (
                "unmatched")
            elapsed = time.perf_counter() - start
            method = scope["method"]
            self.metrics.http_request(path, method, status, elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s %d %.1fms rid=%s", method, path, status, elapsed * 1000, rid)

    async def _too_large(self, send: Send, rid: str) -> None:
        body = error_body(413, f"request body larger than {self.max_body:,} bytes", rid)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
