"""The optional bearer token (``STN_API_TOKEN``): a pure ASGI middleware, installed only when a token is set.

Default deny: every path needs ``Authorization: Bearer <token>`` except the ``OPEN_PATHS`` (health,
server metadata, metrics, the demo page and the API documentation), so a route added later is protected
without anyone remembering to. The token is compared in constant time. A refusal is a 401 answered
before routing, the body unread. ``service.app`` marks every other operation of the OpenAPI
schema with the ``HTTPBearer`` scheme from the same ``is_open``.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import send_error

OPEN_PATHS = frozenset(
    {
        "/",
        "/metrics",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
SCHEME_NAME = "HTTPBearer"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "STN_API_TOKEN, when the server sets one",
}
# The route label ``service.metrics`` gives a refused request (it never reaches the router).
AUTH_ROUTE = "unauthorized"


def is_open(path: str) -> bool:
    return path in OPEN_PATHS


def bearer_credentials(authorization: bytes | None) -> bytes:
    """The credentials of an ``Authorization: Bearer <credentials>`` header (scheme in any case), else b""."""
    if not authorization:
        return b""
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return b""
    return credentials.strip()


class TokenMiddleware:
    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in; leave it unset instead")
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
                break
        if hmac.compare_digest(bearer_credentials(authorization), self.token):
            await self.app(scope, receive, send)
            return
        scope["stn.route"] = AUTH_ROUTE
        await send_error(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
