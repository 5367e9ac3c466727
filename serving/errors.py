"""One JSON encoder for every response body, and one error shape for every failure:
``{"error": {status, code, message, request_id, details}}`` (details: field paths for 422).
Nothing from the request body is echoed in an error."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("churnguard.serving")

_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
          405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
          422: "validation_error", 500: "internal_error", 503: "unavailable"}


def dumps(body: Any) -> bytes:
    """The bytes of a JSON response body. Numbers computed with numpy (``numpy.float64`` from
    a planner, ``numpy.int64`` from an index, arrays) become plain JSON numbers and lists, so a
    response never fails to serialise because of where a number came from."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """A JSON response through :func:`dumps` (the routers build their bodies as plain dicts
    and skip FastAPI's response-model serialisation, which costs more than scoring)."""
    return Response(dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None,
                 details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details or []
        self.headers = headers


def error_body(status: int, message: str, request_id: str, *, code: str | None = None,
               details: list[dict[str, Any]] | None = None) -> bytes:
    return dumps({"error": {"status": status, "code": code or _CODES.get(status, "error"),
                            "message": message, "request_id": request_id,
                            "details": details or []}})


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(request: Request, status: int, message: str, *, code: str | None = None,
                   details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(status, message, request_id(request), code=code,
                               details=details),
                    status_code=status, media_type="application/json", headers=headers)


def _loc(loc: Any) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in loc]


def _unreadable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not read a JSON body it answers 400 for (bytes that are not UTF-8,
    an integer literal longer than Python converts), or None for any other 400."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 (byte {cause.start})"
    return "the body is not JSON that can be read (a number literal too long?)"


def install(app: FastAPI) -> None:
    """The exception handlers. Unexpected exceptions are answered 500 (and logged with the
    request id) by :class:`~churnguard.serving.middleware.ServiceMiddleware`."""
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(request, exc.status, exc.message, code=exc.code,
                              details=exc.details, headers=exc.headers)

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details: list[dict[str, Any]] = [
            {"loc": _loc(e.get("loc", ())), "message": str(e.get("msg", "invalid")),
             "type": str(e.get("type", "value_error"))} for e in exc.errors()]
        n = len(details)
        first = details[0] if details else None
        where = ".".join(str(p) for p in first["loc"]) if first else "request"
        msg = f"{n} invalid field{'s' if n != 1 else ''}; first: {where}: " + (
            first["message"] if first else "invalid")
        return error_response(request, 422, msg, details=details)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        unreadable = _unreadable_body(exc)
        if unreadable is not None:  # the same answer as malformed JSON
            return error_response(request, 422, f"invalid JSON body: {unreadable}", details=[
                {"loc": ["body"], "message": unreadable, "type": "json_invalid"}])
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "")
        return error_response(request, exc.status_code, message,
                              headers=getattr(exc, "headers", None))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
