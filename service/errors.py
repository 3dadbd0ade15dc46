"""Domain errors, raised anywhere below the routes and mapped to HTTP in one place (``install_handlers``).

Every error answer is JSON ``{"error": "<message>"}`` (the Open Inference Protocol's error shape), including
FastAPI's own validation errors and unknown paths, and an unexpected exception is logged and answered 500
without its internals.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Send

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the domain errors: a message for the client and the HTTP status it maps to."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class InvalidInput(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401


class ModelNotFound(ServiceError):
    status_code = 404


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Unprocessable(ServiceError):
    """The request is well formed but this model cannot do it (e.g. rectify at a size for a TPS model)."""

    status_code = 422


class ModelNotReady(ServiceError):
    status_code = 503


class Overloaded(ServiceError):
    status_code = 503


class DeadlineExceeded(ServiceError):
    status_code = 504


# nginx's "client closed request": what the metrics count when a client goes away before its answer.
CLIENT_CLOSED_REQUEST = 499


async def send_error(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """The same ``{"error": ...}`` answer as ``error_response``, sent by a pure ASGI middleware that refuses a
    request before routing (``service.admission``, ``service.auth``)."""
    body = json.dumps({"error": message}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


class ShedLog:
    """Requests refused for overload, logged as one line per ``every_s`` seconds rather than one per request
    (a log line per refusal would cost the CPU that shedding is meant to save)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.count = 0
        self.last = -every_s

    def refused(self, message: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            log.warning("shedding load: %d request(s) refused with 503 (latest: %s)", self.count, message)
            self.count, self.last = 0, now


def install_handlers(app: FastAPI, shed: ShedLog) -> None:
    """Map every error to ``{"error": ...}`` with its status code; overload refusals go to ``shed``."""

    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        if isinstance(exc, Overloaded):  # thousands a second under overload: one summary line at most
            shed.refused(exc.message)
        elif exc.status_code >= 500 and not isinstance(exc, ModelNotReady):  # readiness polls are routine
            log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return error_response(exc.status_code, exc.message, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, _validation_message(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def on_disconnect(request: Request, exc: Exception) -> JSONResponse:
        # The client closed the connection while its body was being read: routine, nobody to answer.
        log.debug("%s %s: the client went away before sending its whole body", request.method, request.url.path)
        return error_response(CLIENT_CLOSED_REQUEST, "client closed the request")

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
