"""What the route handlers share: dependency aliases, the bearer-token check, and body reading with limits.

The body limit is enforced while the stream is read: ``Content-Length`` is checked first when present,
and a body that grows past the limit is refused without being kept in memory.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.dataplane import DataPlane
from service.errors import InvalidInput, PayloadTooLarge, Unauthorized
from service.preprocess import check_content_type
from service.schemas import ErrorResponse
from service.settings import Settings

# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a
# thread hop per dependency per request for what is an attribute lookup.

# After refusing an oversized body, up to this much more is read and dropped so that the client, still
# sending, gets to read the 413 instead of a connection reset.
DRAIN_BYTES = 64 * 1024 * 1024


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


SettingsDep = Annotated[Settings, Depends(get_settings)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]

_bearer = HTTPBearer(auto_error=False, description="STN_API_TOKEN, when the server sets one")


async def require_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request carries ``Authorization: Bearer <STN_API_TOKEN>`` (when a token is set)."""
    token = settings.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


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


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
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
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            await _drain(request, DRAIN_BYTES)
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in _limited(request, limit)])


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
            raise PayloadTooLarge(f"too many files: at most {max_files} per request") from None
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


def image_body(multiple: bool = False) -> dict[str, Any]:
    """OpenAPI request body of the image routes (raw image or multipart ``image``)."""
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    if multiple:
        multipart = {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {
                        "type": "array",
                        "items": file_schema,
                        "description": "one part per image, in order",
                    }
                },
            }
        }
        return {"requestBody": {"required": True, "content": {"multipart/form-data": multipart}}}
    multipart = {"schema": {"type": "object", "required": ["image"], "properties": {"image": file_schema}}}
    content: dict[str, Any] = {t: _binary for t in IMAGE_TYPES}
    content["multipart/form-data"] = multipart
    return {"requestBody": {"required": True, "content": content}}
