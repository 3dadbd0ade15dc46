"""Property-based fuzz of every route, generated from the service's own OpenAPI schema (schemathesis).

For each operation of ``/openapi.json`` schemathesis generates requests, valid and invalid (path and query
parameters, headers, the raw-image, multipart and JSON bodies the schema describes), and sends them to the
app in-process. Each answer must be no 5xx, have a documented status code and content type, and match its
documented schema; every error is JSON ``{"error": ...}``. The cases per operation are bounded
(``MAX_EXAMPLES``, plus schemathesis's explicit examples and coverage cases); the total is printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app

from .rel_support import SMALL_LIMITS, make_settings
from .rel_tally import record

MAX_EXAMPLES = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(rel_repo: Path) -> Iterator[schemathesis.schemas.BaseSchema]:
    app = create_app(make_settings(rel_repo, default_model="toy_affine", **SMALL_LIMITS))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with asgi.get_client(app) as client:  # the app's lifespan runs (once) on schemathesis's event loop
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "models not ready after 60 s"
            time.sleep(0.05)
    yield schema
    asgi.shutdown_lifespans()  # drain the batchers, stop their threads


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_route(case: schemathesis.Case) -> None:
    check(case, "schemathesis (OpenAPI)")
    # Generated model names are almost never served ones (404 before any work): send the same case again at
    # a model that exists, so that the generated parameters and bodies reach the handlers.
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "name": "toy_affine"}
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
        check(case, "schemathesis (OpenAPI), served model")


def check(case: schemathesis.Case, kind: str) -> None:
    response = case.call()
    record(kind, response.status_code, f"{case.method} {case.formatted_path}")
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body


@pytest.fixture(autouse=True)
def _nodeid_compat(request: pytest.FixtureRequest) -> None:
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
