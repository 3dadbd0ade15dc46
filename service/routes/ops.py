"""Operations: Prometheus metrics and the demo page."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import FileResponse, Response

from service.metrics import Metrics
from service.routes.deps import Routes
from service.settings import PACKAGE_DIR

INDEX = PACKAGE_DIR / "static" / "index.html"  # (the path is the settings module's: routes open no files)

routes = Routes(tags=["ops"])


@routes.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {Metrics.content_type: {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        }
    },
)
async def prometheus(request: Request) -> Response:
    metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=metrics.content_type)


@routes.get(
    "/",
    summary="Demo page",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "HTML"}},
)
async def index(request: Request) -> FileResponse:
    return FileResponse(INDEX, media_type="text/html")
