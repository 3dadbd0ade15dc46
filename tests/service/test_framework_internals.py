"""What the service relies on inside FastAPI and Starlette, beyond their documented API: these tests fail
when that behaviour changes, so that moving the pinned ranges in ``pyproject.toml`` (``fastapi``,
``starlette``) is a decision, not an accident.

- ``service.routes.deps.LeanRoute`` replaces ``APIRoute.app`` after ``APIRoute.__init__`` and overrides
  ``get_route_handler``: FastAPI must still build the OpenAPI operation from the route's declaration
  (path parameters from the signature, ``response_model``, ``responses``, ``openapi_extra``) and never
  validate or serialise what the endpoint returns;
- ``add_first`` reorders ``router.routes``: Starlette must match routes in list order;
- ``read_files`` drives ``starlette.formparsers.MultiPartParser`` directly (headers, a chunk stream,
  ``max_files``, ``max_fields``) and reads the "Too many files" message of its exception;
- ``create_app`` passes ``telemetry=`` to ``FastAPI`` (its native OpenTelemetry switch).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from service.routes.deps import LeanRoute, Routes, add_first
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class Answer(BaseModel):
    value: int


def lean_app() -> tuple[FastAPI, list[object]]:
    calls: list[object] = []
    table = Routes(tags=["t"])

    @table.post("/items/{name}", response_model=Answer, responses={418: {"description": "teapot"}},
                openapi_extra={"parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}]})
    async def item(request: Request, name: str) -> Response:
        calls.append((type(request), name, dict(request.query_params)))
        return Response(b'{"not": "an Answer"}', media_type="application/json")  # never validated

    app = FastAPI()

    @app.get("/plain")
    async def plain() -> dict[str, int]:
        return {"value": 1}

    add_first(app.router, Settings(), table)
    return app, calls


def test_lean_route_calls_the_endpoint_with_the_request_and_path_params_only() -> None:
    app, calls = lean_app()
    assert isinstance(app.router.routes[0], LeanRoute), "add_first must put the inference routes first"
    with TestClient(app) as c:
        r = c.post("/items/abc?q=1", content=b"body")
        assert r.status_code == 200 and r.json() == {"not": "an Answer"}
        assert c.get("/plain").json() == {"value": 1}
    assert calls == [(Request, "abc", {"q": "1"})]


def test_openapi_is_generated_from_a_lean_route_declaration() -> None:
    app, _ = lean_app()
    op = app.openapi()["paths"]["/items/{name}"]["post"]
    assert [p["name"] for p in op["parameters"]] == ["name", "q"] and op["parameters"][0]["in"] == "path"
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Answer"}
    assert op["responses"]["418"]["description"] == "teapot" and op["tags"] == ["t"]


def test_routes_match_in_list_order() -> None:
    router = APIRouter()

    @router.get("/x/{anything}")
    async def general(anything: str) -> dict[str, str]:
        return {"route": "general"}

    @router.get("/x/special")
    async def special() -> dict[str, str]:
        return {"route": "special"}

    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as c:
        assert c.get("/x/special").json() == {"route": "general"}  # the first match wins


def test_multipart_parser_as_read_files_drives_it() -> None:
    boundary = "b0undary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + b"PNGDATA" + b"\r\n"
        for i in range(3)
    ) + f"--{boundary}--\r\n".encode()
    headers = Headers({"content-type": f"multipart/form-data; boundary={boundary}"})

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(parts), 5):
            yield parts[i : i + 5]

    async def parse(max_files: int) -> list[tuple[str, bytes]]:
        form = await MultiPartParser(headers, stream(), max_files=max_files, max_fields=100).parse()
        try:
            return [(v.filename, await v.read()) for _, v in form.multi_items()]  # type: ignore[union-attr]
        finally:
            await form.close()

    assert asyncio.run(parse(3)) == [(f"{i}.png", b"PNGDATA") for i in range(3)]
    with pytest.raises(MultiPartException) as exc:
        asyncio.run(parse(2))
    assert exc.value.message.startswith("Too many files")


def test_fastapi_takes_the_telemetry_switch() -> None:
    FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


def test_installed_versions_are_in_the_pinned_ranges() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for package in ("fastapi", "starlette"):
        m = re.search(rf'"{package}>=([\d.]+),<([\d.]+)"', text)
        assert m, f"pyproject.toml pins {package} with a lower and an upper bound"
        low, high = (tuple(int(x) for x in v.split(".")) for v in m.groups())
        have = tuple(int(x) for x in version(package).split(".")[:3])
        assert low <= have < high, f"{package} {version(package)} outside >={m.group(1)},<{m.group(2)}"
