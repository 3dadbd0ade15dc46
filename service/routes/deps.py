"""How every route is declared, and what the handlers share: the route table, the lean route class, the
JSON answers, and body reading with limits (the bearer token is ``service.auth``'s middleware).

One way to declare a route: ``Routes.get`` / ``Routes.post`` on a table (one per module, ``v1``, ``v2``,
``ops``), with the path, the ``response_model``, the error codes and, for the image and tensor routes, the
request body and the query parameters (``service.routes.params``). The handler is ``async def
handler(request, **path_params) -> Response``. FastAPI generates the OpenAPI operation from the declaration
(path parameters from the signature, the response model, ``openapi_extra`` built from the same ``Param``
objects the handler parses with); ``create_app`` puts every table on the app's own router, ahead of the
documentation routes.

The body limit is enforced while the stream is read: ``Content-Length`` is checked first when present,
and a body that grows past the limit is refused without being kept in memory.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from enum import Enum
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Receive, Scope, Send

from service.dataplane import DataPlane
from service.errors import InvalidInput, PayloadTooLarge
from service.preprocess import check_content_type
from service.routes.params import Param, documented
from service.schemas import ErrorResponse
from service.settings import Settings

# Route handlers take no FastAPI dependencies: its per-request dependency resolution costs more CPU than
# this service's model on small images (docs/service.md, "What a request costs").

# After refusing an oversized body, up to this much more is read and dropped so that the client, still
# sending, gets to read the 413 instead of a connection reset.
DRAIN_BYTES = 64 * 1024 * 1024


def state_of(request: Request) -> tuple[DataPlane, Settings]:
    """The data plane and settings of the app that serves ``request``."""
    state = request.app.state
    return state.dataplane, state.settings


def json_response(content: Any) -> Response:
    """Plain JSON values (the hand-shaped v1 answers, ``service.routes.answers``) encoded once."""
    return Response(orjson.dumps(content), media_type="application/json")


def model_response(model: BaseModel | Sequence[BaseModel]) -> Response:
    """A pydantic answer (validated when it was built) as JSON."""
    if isinstance(model, BaseModel):
        return Response(model.model_dump_json(), media_type="application/json")
    return json_response([m.model_dump(mode="json") for m in model])


class LeanRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is called as ``endpoint(request, **path_params)`` and returns a
    ``Response``: no dependency resolution, no body parsing, no response validation per request.

    Every route of the service uses it (FastAPI's own handler costs more CPU per request than this
    service's model). FastAPI still reads the endpoint's signature, ``response_model`` and ``openapi_extra`` for the
    OpenAPI schema, so the documentation is unchanged; what the route reads, it parses itself
    (``service.routes.params``, ``read_image``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # What FastAPI's request_response does, less the two AsyncExitStacks for dependencies with yield
            # (these routes have no dependencies) and the per-request exception wrapper: an exception goes
            # to the app's ExceptionMiddleware, which holds the same handlers (service.errors).
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handler


class Routes:
    """A table of ``LeanRoute`` routes, declared with ``get`` / ``post`` and added straight to the app's own
    router by ``add_to(app.router, settings)``: FastAPI (0.165) matches the routes of an
    ``include_router``-ed router through a per-request walk of the included routers (a sixth of the event
    loop's time on ``/v1/predict`` in a py-spy profile), a router's own routes with one regex each."""

    def __init__(self, tags: list[str | Enum]) -> None:
        self.tags = tags
        self.entries: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []

    def _route(
        self, method: str, path: str, kwargs: dict[str, Any]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            self.entries.append((method, path, endpoint, kwargs))
            return endpoint

        return register

    def get(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self._route("GET", path, kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self._route("POST", path, kwargs)

    def add_to(self, router: APIRouter, settings: Settings) -> None:
        """``openapi_extra`` may be a function of the settings: the schema states this server's limits."""
        for method, path, endpoint, kwargs in self.entries:
            extra = kwargs.get("openapi_extra")
            if callable(extra):
                kwargs = {**kwargs, "openapi_extra": extra(settings)}
            router.add_api_route(
                path, endpoint, methods=[method], tags=self.tags, route_class_override=LeanRoute, **kwargs
            )


def add_first(router: APIRouter, settings: Settings, *tables: Routes) -> None:
    """Add the tables' routes to ``router`` ahead of the routes it has: a request is matched against the
    routes in order, and FastAPI puts its documentation routes first."""
    n = len(router.routes)
    for table in tables:
        table.add_to(router, settings)
    added = router.routes[n:]
    del router.routes[n:]
    router.routes[:0] = added


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


async def _drain(request: Request, budget: int) -> None:
    try:
        async for chunk in request.stream():
            budget -= len(chunk)
            if budget <= 0:
                return
    except Exception:  # the client went away: nothing more to do
        return


async def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise InvalidInput(f"bad Content-Length {declared!r}") from None
        if n > limit:
            if n <= DRAIN_BYTES:
                await _drain(request, n)
            raise PayloadTooLarge(f"body is {n} bytes, over the limit of {limit}")


async def _over_limit(request: Request, limit: int) -> PayloadTooLarge:
    await _drain(request, DRAIN_BYTES)
    return PayloadTooLarge(f"body is over the limit of {limit} bytes")


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    await _check_declared(request, limit)
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise await _over_limit(request, limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (``_limited`` inlined: one async generator fewer per request)."""
    await _check_declared(request, limit)
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise await _over_limit(request, limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_files(request: Request, settings: Settings, max_files: int) -> list[tuple[str | None, bytes]]:
    """The ``image`` files of a multipart body, in order (other fields are ignored)."""
    parser = MultiPartParser(
        request.headers, _limited(request, settings.max_body_bytes), max_files=max_files, max_fields=100
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise InvalidInput(f"too many files: at most {max_files} per request") from None
        raise InvalidInput(f"bad multipart body: {exc.message}") from None
    files: list[tuple[str | None, bytes]] = []
    try:
        for key, value in form.multi_items():
            if key != "image":
                continue
            if not isinstance(value, UploadFile):
                raise InvalidInput("multipart field 'image' must be a file (give it a filename)")
            files.append((value.filename, await value.read()))
    finally:
        await form.close()
    return files


async def read_image(request: Request, settings: Settings) -> bytes:
    """One image: the raw body (an image content type) or the multipart file field ``image``."""
    if is_multipart(request):
        files = await read_files(request, settings, max_files=1)
        if not files:
            raise InvalidInput("multipart body has no file field 'image'")
        return files[0][1]
    check_content_type(request.headers.get("content-type"))
    return await read_body(request, settings.max_body_bytes)


IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif", "image/tiff")
_binary = {"schema": {"type": "string", "format": "binary"}}


def image_body(settings: Settings, multiple: bool = False, params: Sequence[Param[Any]] = ()) -> dict[str, Any]:
    """OpenAPI of the image routes: the request body (raw image or multipart ``image``, each part an image
    of one of ``IMAGE_TYPES``) and the query ``params`` the route reads itself."""
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    extra: dict[str, Any] = {"parameters": documented(params, settings)} if params else {}
    # A part is a file: it has a filename (what ``curl -F image=@digit.png`` and browsers send; a part without
    # one is a form field, its bytes read as text).
    disposition = {
        "description": "a file part: it has a filename",
        "schema": {"type": "string"},
        "example": 'form-data; name="image"; filename="digit.png"',
    }
    encoding: dict[str, Any] = {"image": {"headers": {"Content-Disposition": disposition}}}
    if not multiple:
        # (Not on the batch's array of parts: schemathesis 4.32 would draw a schema-violating array's items
        # from this content type too, and send a valid request as a negative one.)
        encoding["image"]["contentType"] = ", ".join(IMAGE_TYPES)
    if multiple:
        multipart = {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {
                        "type": "array",
                        "items": file_schema,
                        "minItems": 1,
                        "maxItems": settings.max_batch_files,
                        "description": "one part per image, in order, each an image of a type "
                        + ", ".join(IMAGE_TYPES),
                    }
                },
            },
            "encoding": encoding,
        }
        return {**extra, "requestBody": {"required": True, "content": {"multipart/form-data": multipart}}}
    multipart = {
        "schema": {"type": "object", "required": ["image"], "properties": {"image": file_schema}},
        "encoding": encoding,
    }
    content: dict[str, Any] = {t: _binary for t in IMAGE_TYPES}
    content["multipart/form-data"] = multipart
    return {**extra, "requestBody": {"required": True, "content": content}}
