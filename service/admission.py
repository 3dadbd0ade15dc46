"""Admission control: at most ``limit`` requests in flight, the rest refused at once with 503 + Retry-After.

The batch queue bounds only the tensors waiting for a run; this bounds everything else a request holds while
the server works on it (its body, the decoded image, its answer), so memory stays bounded however many
clients send at once. It is a pure ASGI middleware in front of FastAPI's routing, and a refusal is sent
straight from it (``service.errors.send_error``): under overload the cheapest possible answer is what
keeps the server answering at all.

Only POST requests count (inference; ``/v2/repository/index``): health, readiness, metrics and metadata are
always answered, so probes and scrapers see an overloaded server as live.

The same middleware refuses an HTTP/1.1 request without a ``Host`` header with 400, as RFC 9112 (3.2)
requires of a server: uvicorn's httptools parser (the fast one, used when installed) lets it through,
h11 refused it itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ShedLog, send_error

# The route labels ``service.metrics`` gives a refused request (it never reaches the router).
SHED_ROUTE = "admission"
BAD_REQUEST_ROUTE = "bad_request"


class Admission:
    """The count of admitted requests not yet answered (read by the ``stn_requests_in_flight`` gauge)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.in_flight = 0

    def count(self) -> int:
        return self.in_flight


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, admission: Admission, shed: ShedLog) -> None:
        self.app = app
        self.admission = admission
        self.log = shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["http_version"] == "1.1" and not any(k == b"host" for k, _ in scope["headers"]):
            scope["stn.route"] = BAD_REQUEST_ROUTE
            await send_error(send, 400, "HTTP/1.1 request without a Host header")
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        adm = self.admission
        if adm.in_flight >= adm.limit:
            message = f"server overloaded: {adm.in_flight} requests in flight; retry later"
            self.log.refused(message)
            scope["stn.route"] = SHED_ROUTE
            await send_error(send, 503, message, [(b"retry-after", b"1")])
            return
        adm.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            adm.in_flight -= 1
