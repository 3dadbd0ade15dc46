"""v1: the image API. Predict (one image or a batch of files), rectify, and the model list.

Each route has a per-model form (``/v1/models/{name}/...``) and a default-model twin (``/v1/...``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.preprocess import Invert
from service.routes.deps import (
    DataPlaneDep,
    SettingsDep,
    error_responses,
    image_body,
    is_multipart,
    read_files,
    read_image,
    require_token,
)
from service.schemas import BatchResponse, ModelInfo, ModelList, Prediction

router = APIRouter(tags=["v1"], dependencies=[Depends(require_token)])

TopKQ = Annotated[int, Query(ge=1, le=1000, description="how many classes in top_k")]
RectifiedQ = Annotated[bool, Query(description="include the rectified input as a base64 PNG")]
InvertQ = Annotated[Invert, Query(description="polarity: auto (border vs whole), true, false")]
SizeQ = Annotated[
    str | None,
    Query(
        description="WxH (or N for NxN): sample the crop at this size from the original upload",
        examples=["256x256"],
    ),
]
OverlayQ = Annotated[bool, Query(description="return the upload with the sampled quadrilateral drawn")]

PREDICT_ERRORS = error_responses(400, 401, 404, 413, 415, 503, 504)
_SIZE = re.compile(r"^\s*(\d{1,6})(?:\s*[xX]\s*(\d{1,6}))?\s*$", re.ASCII)  # ASCII: no other digits


def parse_size(text: str | None, max_side: int) -> tuple[int, int] | None:
    """``"WxH"`` or ``"N"`` -> (w, h)."""
    if text is None or text == "":
        return None
    m = _SIZE.match(text)
    if not m:
        raise InvalidInput(f"size must be WxH (e.g. 256x256), got {text!r}")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if not (1 <= w <= max_side and 1 <= h <= max_side):
        raise InvalidInput(f"size sides must be between 1 and {max_side}, got {w}x{h}")
    return w, h


async def _predict(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    name: str | None,
    top_k: int,
    rectified: bool,
    invert: Invert,
) -> Prediction:
    dp.admit(name)  # 404 / 503 (not ready, queue full) before reading a body
    data = await read_image(request, settings)
    return await dp.predict(name, data, top_k=top_k, invert=invert, rectified=rectified)


@router.post(
    "/v1/models/{name}/predict",
    response_model=Prediction,
    responses=PREDICT_ERRORS,
    openapi_extra=image_body(),
    summary="Classify one image with a named model",
)
async def predict_model(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    name: str,
    top_k: TopKQ = 5,
    rectified: RectifiedQ = False,
    invert: InvertQ = "auto",
) -> Prediction:
    return await _predict(request, dp, settings, name, top_k, rectified, invert)


@router.post(
    "/v1/predict",
    response_model=Prediction,
    responses=PREDICT_ERRORS,
    openapi_extra=image_body(),
    summary="Classify one image with the default model",
)
async def predict_default(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    top_k: TopKQ = 5,
    rectified: RectifiedQ = False,
    invert: InvertQ = "auto",
) -> Prediction:
    return await _predict(request, dp, settings, None, top_k, rectified, invert)


async def _batch(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    name: str | None,
    top_k: int,
    rectified: bool,
    invert: Invert,
) -> BatchResponse:
    handle = dp.admit(name)
    if not is_multipart(request):
        raise InvalidInput("a batch is multipart/form-data with one file field 'image' per image")
    files = await read_files(request, settings, max_files=settings.max_batch_files)
    if not files:
        raise InvalidInput("multipart body has no file field 'image'")
    items = await dp.predict_batch(name, files, top_k=top_k, invert=invert, rectified=rectified)
    return BatchResponse(model=handle.name, results=items)


@router.post(
    "/v1/models/{name}/predict/batch",
    response_model=BatchResponse,
    responses=PREDICT_ERRORS,
    openapi_extra=image_body(multiple=True),
    summary="Classify several images (multipart) with a model",
)
async def predict_batch_model(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    name: str,
    top_k: TopKQ = 5,
    rectified: RectifiedQ = False,
    invert: InvertQ = "auto",
) -> BatchResponse:
    return await _batch(request, dp, settings, name, top_k, rectified, invert)


@router.post(
    "/v1/predict/batch",
    response_model=BatchResponse,
    responses=PREDICT_ERRORS,
    openapi_extra=image_body(multiple=True),
    summary="Classify several images with the default model",
)
async def predict_batch_default(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    top_k: TopKQ = 5,
    rectified: RectifiedQ = False,
    invert: InvertQ = "auto",
) -> BatchResponse:
    return await _batch(request, dp, settings, None, top_k, rectified, invert)


PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "PNG image",
    }
}
RECTIFY_RESPONSES = {**PNG_RESPONSE, **error_responses(400, 401, 404, 413, 415, 422, 503, 504)}


async def _rectify(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    name: str | None,
    size: str | None,
    overlay: bool,
    invert: Invert,
) -> Response:
    dp.admit(name)
    wh = parse_size(size, settings.max_rectify_side)
    data = await read_image(request, settings)
    png = await dp.rectify(name, data, size=wh, overlay=overlay, invert=invert)
    return Response(png, media_type="image/png")


@router.post(
    "/v1/models/{name}/rectify",
    response_class=Response,
    responses=RECTIFY_RESPONSES,
    openapi_extra=image_body(),
    summary="The rectified crop (or the overlay) as PNG, named model",
)
async def rectify_model(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    name: str,
    size: SizeQ = None,
    overlay: OverlayQ = False,
    invert: InvertQ = "auto",
) -> Response:
    return await _rectify(request, dp, settings, name, size, overlay, invert)


@router.post(
    "/v1/rectify",
    response_class=Response,
    responses=RECTIFY_RESPONSES,
    openapi_extra=image_body(),
    summary="The rectified crop (or the overlay) as PNG, default model",
)
async def rectify_default(
    request: Request,
    dp: DataPlaneDep,
    settings: SettingsDep,
    size: SizeQ = None,
    overlay: OverlayQ = False,
    invert: InvertQ = "auto",
) -> Response:
    return await _rectify(request, dp, settings, None, size, overlay, invert)


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=error_responses(401),
    summary="The served models and what their metadata say",
)
async def list_models(dp: DataPlaneDep) -> ModelList:
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
                }
            )
        infos.append(info)
    return ModelList(default_model=dp.default_model, models=infos)
