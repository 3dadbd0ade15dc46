"""v1: the image API. Predict (one image or a batch of files), rectify, and the model list.

Each route has a per-model form (``/v1/models/{name}/...``) and a default-model twin (``/v1/...``).

Every route is declared on the ``routes`` table (``service.routes.deps.Routes``): the handlers take the
``Request`` alone, read their query through ``service.routes.params`` and answer pre-encoded JSON
(``response_model`` documents it; FastAPI does not re-validate a returned ``Response``), the answer shaped
by ``service.routes.answers``. FastAPI's per-request dependency resolution and response validation cost
more CPU than the model's own inference on this service's small images.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.routes.answers import batch_item, prediction
from service.routes.deps import (
    Routes,
    error_responses,
    image_body,
    is_multipart,
    json_response,
    model_response,
    read_files,
    read_image,
    state_of,
)
from service.routes.params import (
    INDEX,
    INVERT,
    OVERLAY,
    PREDICT_PARAMS,
    RECTIFIED,
    RECTIFY_PARAMS,
    SIZE,
    TOP_K,
    ZOOM,
    query_of,
)
from service.schemas import BatchResponse, ModelInfo, ModelList, Prediction

routes = Routes(tags=["v1"])

PREDICT_ERRORS = error_responses(400, 401, 404, 413, 415, 503, 504)


def _predict_doc(summary: str, multiple: bool = False) -> dict[str, Any]:
    return {
        "response_model": BatchResponse if multiple else Prediction,
        "responses": PREDICT_ERRORS,
        "openapi_extra": lambda settings: image_body(settings, multiple, PREDICT_PARAMS),
        "summary": summary,
    }


async def _predict(request: Request, name: str | None) -> Response:
    query = query_of(request)
    top_k, rectified, invert, zoom = TOP_K.get(query), RECTIFIED.get(query), INVERT.get(query), ZOOM.get(query)
    dp, settings = state_of(request)
    dp.admit(name)  # 404 / 503 (not ready, queue full) before reading a body
    data = await read_image(request, settings)
    return json_response(await dp.predict(name, data, prediction(top_k, rectified), invert=invert, zoom=zoom))


@routes.post("/v1/models/{name}/predict", **_predict_doc("Classify one image with a named model"))
async def predict_model(request: Request, name: str) -> Response:
    return await _predict(request, name)


@routes.post("/v1/predict", **_predict_doc("Classify one image with the default model"))
async def predict_default(request: Request) -> Response:
    return await _predict(request, None)


async def _batch(request: Request, name: str | None) -> Response:
    query = query_of(request)
    top_k, rectified, invert, zoom = TOP_K.get(query), RECTIFIED.get(query), INVERT.get(query), ZOOM.get(query)
    dp, settings = state_of(request)
    handle = dp.admit(name)
    if not is_multipart(request):
        raise InvalidInput("a batch is multipart/form-data with one file field 'image' per image")
    files = await read_files(request, settings, max_files=settings.max_batch_files)
    if not files:
        raise InvalidInput("multipart body has no file field 'image'")
    answers = await dp.predict_batch(
        name, [d for _, d in files], prediction(top_k, rectified), invert=invert, zoom=zoom
    )
    items = [batch_item(i, f, a) for i, ((f, _), a) in enumerate(zip(files, answers, strict=True))]
    return json_response({"model": handle.name, "results": items})


@routes.post(
    "/v1/models/{name}/predict/batch", **_predict_doc("Classify several images (multipart) with a model", True)
)
async def predict_batch_model(request: Request, name: str) -> Response:
    return await _batch(request, name)


@routes.post("/v1/predict/batch", **_predict_doc("Classify several images with the default model", True))
async def predict_batch_default(request: Request) -> Response:
    return await _batch(request, None)


PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "PNG image",
    }
}
RECTIFY_RESPONSES = {**PNG_RESPONSE, **error_responses(400, 401, 404, 413, 415, 422, 503, 504)}


def _rectify_doc(summary: str) -> dict[str, Any]:
    return {
        "response_class": Response,
        "responses": RECTIFY_RESPONSES,
        "openapi_extra": lambda settings: image_body(settings, False, RECTIFY_PARAMS),
        "summary": summary,
    }


async def _rectify(request: Request, name: str | None) -> Response:
    query = query_of(request)
    dp, settings = state_of(request)
    wh, overlay, invert, index = SIZE.get(query, settings), OVERLAY.get(query), INVERT.get(query), INDEX.get(query)
    zoom = ZOOM.get(query)
    dp.admit(name)
    data = await read_image(request, settings)
    png = await dp.rectify(name, data, size=wh, overlay=overlay, invert=invert, index=index, zoom=zoom)
    return Response(png, media_type="image/png")


@routes.post("/v1/models/{name}/rectify", **_rectify_doc("The rectified crop (or the overlay) as PNG, named model"))
async def rectify_model(request: Request, name: str) -> Response:
    return await _rectify(request, name)


@routes.post("/v1/rectify", **_rectify_doc("The rectified crop (or the overlay) as PNG, default model"))
async def rectify_default(request: Request) -> Response:
    return await _rectify(request, None)


@routes.get(
    "/v1/models",
    response_model=ModelList,
    responses=error_responses(401),
    summary="The served models and what their metadata say",
)
async def list_models(request: Request) -> Response:
    dp, _ = state_of(request)
    infos = []
    for name, handle in dp.models.items():
        rt = handle.runtime
        info = ModelInfo(
            name=name, version=rt.entry.version, ready=rt.ready, error=rt.error, providers=rt.providers
        )
        if rt.loaded:
            spec = rt.spec
            info = info.model_copy(
                update={
                    "input_size": list(spec.input_size),
                    "output_size": list(spec.output_size),
                    "labels": spec.labels,
                    "transform": spec.transform,
                    "polarity": spec.polarity,
                    "dataset": spec.dataset,
                    "test_error": spec.test_error,
                    "kind": spec.kind,
                    "max_digits": spec.max_len if spec.is_sequence else None,
                    "zoom_fill": spec.zoom_fill,
                }
            )
        infos.append(info)
    return model_response(ModelList(default_model=dp.default_model, models=infos))
