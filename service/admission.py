"""Admission control: at most ``limit`` requests in flight, the rest refused at once with 503 + Retry-After.

The batch queue bounds only the tensors waiting for a run; this bounds everything else a request holds while
the server works on it (its body, the decoded image, its answer), so memory stays bounded however many
clients send at once. It is a pure ASGI middleware in front of FastAPI's routing, and a refusal is a
pre-encoded answer: under overload the cheapest possible answer is what keeps the server answering at all.

Only POST requests count (inference; ``/v2/repository/index``): health, readiness, metrics and metadata are
always answered, so probes and scrapers see an overloaded server as live.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ShedLog

# The route label ``service.metrics`` gives a refused request (it never reaches the router).
SHED_ROUTE = "admission"


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
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        adm = self.admission
        if adm.in_flight >= adm.limit:
            message = f"server overloaded: {adm.in_flight} requests in flight; retry later"
            self.log.refused(message)
            scope["stn.route"] = SHED_ROUTE
            body = json.dumps({"error": message}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        adm.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            adm.in_flight -= 1
