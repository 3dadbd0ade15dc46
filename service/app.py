"""``create_app(settings)``: the FastAPI application, its lifespan (load + warm every model, drain on exit),
error handlers, metrics, CORS and routes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from service import __version__
from service.admission import Admission, AdmissionMiddleware
from service.auth import SCHEME_NAME, SECURITY_SCHEME, TokenMiddleware, is_open
from service.dataplane import DataPlane
from service.errors import ShedLog, install_handlers
from service.logs import configure_logging
from service.metrics import Metrics, MetricsMiddleware
from service.preflight import Loaded
from service.routes import ops, v1, v2
from service.routes.deps import add_first
from service.schemas import InferenceRequest
from service.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Spatial transformer network (ST-CNN) inference on onnxruntime.

* **v1**: POST an image (raw body or multipart field `image`) to get the class, the transform `theta`,
  the attended `region` in the upload's pixels and, on request, the rectified crop.
* **v2**: the Open Inference Protocol (KServe / Triton REST), JSON and binary tensors.
* `GET /metrics` (Prometheus) and `GET /` (demo page).
"""


async def _freeze_gc_when_loaded(dataplane: DataPlane) -> None:
    """Once every model is loaded: collect, then move every object alive (modules, sessions, schemas, the
    models' metadata) to the garbage collector's permanent generation (``gc.freeze``).

    A full (generation 2) collection then walks only what requests allocated. Measured under wrk at
    concurrency 64: full collections took 28-36 ms each (collecting nothing), about four a second, and each
    one stalled the inference thread waiting for the GIL: p99 latency 50 ms against a p50 of 15 ms. With
    the start-up objects frozen they take about 1 ms, and p99 is 18 ms (docs/benchmarks.md)."""
    try:
        await dataplane.wait_loaded()
    except asyncio.CancelledError:
        raise
    except Exception:  # a failed load is logged by the data plane; freezing is still right
        pass
    gc.collect()
    gc.freeze()
    log.debug("start-up objects frozen: %d", gc.get_freeze_count())


def create_app(
    settings: Settings | None = None, *, freeze_gc: bool = False, preloaded: Loaded | None = None
) -> FastAPI:
    """The app; ``freeze_gc`` (the server process's, not a test's: frozen objects are never collected)
    freezes the start-up heap once the models are loaded (``_freeze_gc_when_loaded``); ``preloaded``: the
    sessions ``service.preflight`` loaded (and the errors of the models it could not), used as they are."""
    settings = settings or Settings()
    metrics = Metrics()
    admission = Admission(settings.max_concurrent_requests)
    dataplane = DataPlane(settings, metrics, in_flight=admission.count, preloaded=preloaded)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        freezer = asyncio.create_task(_freeze_gc_when_loaded(dataplane)) if freeze_gc else None
        try:
            yield
        finally:
            if freezer is not None:
                freezer.cancel()
            await dataplane.stop()

    otel = settings.opentelemetry  # off: FastAPI looks up the global providers on every request otherwise
    app = FastAPI(
        title="stn-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.state.settings = settings
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    app.state.admission = admission
    metrics.track_in_flight(admission.count)
    shed = ShedLog()  # one summary line for refusals at admission and at a full batch queue alike
    install_handlers(app, shed)
    # Innermost of the middlewares: a refusal still gets CORS headers and is counted by the metrics.
    app.add_middleware(AdmissionMiddleware, admission=admission, shed=shed)
    if settings.token is not None:  # outside admission: a request without the token holds no slot
        app.add_middleware(TokenMiddleware, token=settings.token)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Inference-Header-Content-Length"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    # Every route on the app's own router, ahead of the documentation routes (service.routes.deps.Routes).
    add_first(app.router, settings, v1.routes, v2.health, v2.routes, ops.routes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            req = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(req.pop("$defs", {}))
            components["InferenceRequest"] = req
            _validation_errors_are_400(schema)
            if settings.token is not None:
                _mark_security(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _validation_errors_are_400(schema: dict[str, Any]) -> None:
    """FastAPI documents its validation errors as 422 ``HTTPValidationError``; this service answers them
    400 ``{"error": ...}`` (``service.errors``), and says so."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for item in schema.get("paths", {}).values():
        for op in item.values():
            responses = op.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
                responses.setdefault("400", {"description": "Bad Request", "content": error})
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _mark_security(schema: dict[str, Any]) -> None:
    """On a server with a token, every operation ``service.auth`` guards carries the bearer scheme (a server
    without one declares none: it asks for no credentials, and a client generated from its schema sends
    none)."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME_NAME] = SECURITY_SCHEME
    for path, item in schema.get("paths", {}).items():
        if not is_open(path):
            for op in item.values():
                op["security"] = [{SCHEME_NAME: []}]


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several workers): settings from the environment only."""
    settings = Settings()
    configure_logging(
        settings.log_format, settings.log_level, settings.access_log
    )  # each worker process sets up its own
    return create_app(settings, freeze_gc=True)
