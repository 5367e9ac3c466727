"""Pure ASGI middleware: request ids, the request-size limit, HEAD, the last-resort 500,
metrics and the access log.

The access log (logger ``churnguard.serving.access``, level INFO) has one line per request:
request id, method, route template, status and duration; never bodies or query values, so no
customer data beyond ids (which appear only in URL paths) reaches the log.
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
errors_log = logging.getLogger("churnguard.serving")
_RID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class ServiceMiddleware:
    """Around every HTTP request:

    - a request id (``X-Request-ID`` if the client sent a usable one), in the response header
      of the same name and in ``scope["state"]["request_id"]``;
    - the body limit: 413 for a ``Content-Length`` above ``max_body``; a body without one
      (chunked) is read here, up to ``max_body``, before the app sees it, so that a chunked
      body over the limit is a 413 too;
    - ``HEAD`` answered like ``GET`` without the body;
    - an exception that escaped the app's handlers: logged with the request id, answered
      500 in the error shape (with the request id header);
    - the request metrics and one access-log line.
    """

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
        method = scope["method"]
        head = method == "HEAD"
        inner = {**scope, "method": "GET"} if head else scope
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            if length is not None:
                if not length.isdigit() or int(length) > self.max_body:
                    await self._too_large(send_wrapper, rid)
                else:  # the server delivers no more than Content-Length bytes
                    await self.app(inner, receive, send_wrapper)
            else:
                body = await self._read_body(receive)
                if body is None:
                    await self._too_large(send_wrapper, rid)
                else:
                    await self.app(inner, _replay(body, receive), send_wrapper)
        except Exception:
            errors_log.exception("unhandled error in %s %s (request_id=%s)", method,
                                 self._route(inner), rid)
            if started:
                raise  # the response is under way: the server ends the connection
            body_500 = error_body(500, "internal error; see the service log with the "
                                  "request id", rid)
            await send_wrapper({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body_500)).encode())]})
            await send_wrapper({"type": "http.response.body", "body": body_500})
        finally:
            path = self._route(inner)
            elapsed = time.perf_counter() - start
            self.metrics.http_request(path, method, status, elapsed)
            log.info("request_id=%s method=%s route=%s status=%d duration_ms=%.1f", rid, method,
                     path, status, elapsed * 1000)

    def _route(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        return self.templates.get(id(route), "unmatched") if route is not None else "unmatched"

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request as one ``http.request`` message with all of the body (or the
        ``http.disconnect`` if the client left before sending it), or None past
        ``max_body``."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return [message]
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def _too_large(self, send: Send, rid: str) -> None:
        body = error_body(413, f"request body larger than {self.max_body:,} bytes", rid)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
