"""v2: the Open Inference Protocol (KServe / Triton REST), enough for a stock ``tritonclient.http`` client.

Health and server metadata are open; model metadata, readiness, config and inference need the bearer
token when one is set (``service.auth``). Inference takes JSON tensors and the binary-data extension both
ways. Every route is declared on a ``service.routes.deps.Routes`` table, like v1's.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from service import __version__
from service.dataplane import DataPlane
from service.errors import InvalidInput, ModelNotReady
from service.protocol_v2 import HEADER, encode_infer_response, parse_infer_request, wants_binary
from service.routes.deps import Routes, error_responses, json_response, model_response, read_body, state_of
from service.schemas import (
    InferenceResponse,
    LiveResponse,
    ModelMetadata,
    ReadyResponse,
    RepositoryIndexEntry,
    ServerMetadata,
    TensorMetadata,
)

health = Routes(tags=["v2 health"])
routes = Routes(tags=["v2"])

PLATFORM = "onnxruntime_onnx"


@health.get("/v2", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    return model_response(ServerMetadata(name="stn-serve", version=__version__, extensions=["binary_tensor_data"]))


@health.get("/v2/health/live", response_model=LiveResponse, summary="Liveness: the process answers")
async def live(request: Request) -> Response:
    return model_response(LiveResponse(live=True))


@health.get(
    "/v2/health/ready",
    response_model=ReadyResponse,
    responses=error_responses(503),
    summary="Readiness: every model loaded and warmed",
)
async def ready(request: Request) -> Response:
    dp, _ = state_of(request)
    if not dp.ready:
        failed = [f"{n}: {h.runtime.error}" for n, h in dp.models.items() if h.runtime.error]
        raise ModelNotReady("not ready: " + ("; ".join(failed) if failed else "models are loading"))
    return model_response(ReadyResponse(ready=True))


def _metadata(dp: DataPlane, name: str, version: str | None) -> ModelMetadata:
    handle = dp.get(name, version)
    rt = handle.runtime
    if not rt.loaded:
        raise ModelNotReady(f"model {name!r} is not loaded yet", headers={"Retry-After": "1"})
    spec = rt.spec
    h, w = spec.input_size
    return ModelMetadata(
        name=name,
        versions=[rt.entry.version],
        platform=PLATFORM,
        inputs=[TensorMetadata(name=spec.input_name, datatype="FP32", shape=[-1, 1, h, w])],
        outputs=[
            TensorMetadata(name=o, datatype="FP32", shape=spec.output_shapes[o]) for o in spec.output_names
        ],
    )


MODEL_ERRORS = error_responses(401, 404, 503)


@routes.get(
    "/v2/models/{name}", response_model=ModelMetadata, responses=MODEL_ERRORS, summary="Model metadata"
)
async def model_metadata(request: Request, name: str) -> Response:
    return model_response(_metadata(state_of(request)[0], name, None))


@routes.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=MODEL_ERRORS,
    summary="Model metadata (one version)",
)
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return model_response(_metadata(state_of(request)[0], name, version))


def _ready(request: Request, name: str, version: str | None) -> Response:
    state_of(request)[0].get_ready(name, version)
    return model_response(ReadyResponse(ready=True))


@routes.get(
    "/v2/models/{name}/ready", response_model=ReadyResponse, responses=MODEL_ERRORS, summary="Model readiness"
)
async def model_ready(request: Request, name: str) -> Response:
    return _ready(request, name, None)


@routes.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=ReadyResponse,
    responses=MODEL_ERRORS,
    summary="Model readiness (one version)",
)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return _ready(request, name, version)


@routes.get(
    "/v2/models/{name}/config",
    response_model=dict[str, Any],
    responses=MODEL_ERRORS,
    summary="Triton-style model configuration",
)
async def model_config(request: Request, name: str) -> Response:
    dp, settings = state_of(request)
    md = _metadata(dp, name, None)

    def tensor(t: TensorMetadata) -> dict[str, Any]:
        return {"name": t.name, "data_type": "TYPE_FP32", "dims": t.shape[1:]}

    return json_response({
        "name": name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": settings.max_batch_size,
        "input": [tensor(t) for t in md.inputs],
        "output": [tensor(t) for t in md.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": settings.max_queue_delay_us},
        "parameters": {k: {"string_value": v} for k, v in dp.get(name).runtime.spec.metadata.items()},
    })


@routes.post(
    "/v2/repository/index",
    response_model=list[RepositoryIndexEntry],
    responses=error_responses(401),
    summary="Repository index",
)
async def repository_index(request: Request) -> Response:
    dp, _ = state_of(request)
    return model_response([
        RepositoryIndexEntry(
            name=n,
            version=h.runtime.entry.version,
            state="READY" if h.runtime.ready else ("UNAVAILABLE" if h.runtime.error else "LOADING"),
            reason=h.runtime.error or "",
        )
        for n, h in dp.models.items()
    ])


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            # The schema is added to components by service.app (FastAPI registers response models only).
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": (
                    f"binary-data extension: the JSON request (its length in {HEADER}), then the raw tensors"
                ),
            },
        },
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "content": {"application/octet-stream": {}},
        "description": f"JSON, or with binary outputs JSON + raw tensors ({HEADER} gives the JSON length)",
    },
    **error_responses(400, 401, 404, 413, 503, 504),
}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    dp, settings = state_of(request)
    dp.admit(name, version)  # 404 / 503 before reading the body
    body = await read_body(request, settings.max_body_bytes)
    req, arrays = parse_infer_request(body, request.headers.get(HEADER))
    if len(req.inputs) != 1:
        raise InvalidInput(f"model {name!r} takes one input, got {len(req.inputs)}")
    handle, out = await dp.infer_tensor(name, version, req.inputs[0].name, arrays[0])
    binary = wants_binary(req)
    names = [o.name for o in req.outputs] if req.outputs else handle.runtime.spec.output_names
    unknown = [n for n in names if n not in out]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; model {name!r} has {list(out)}")
    default_binary = bool((req.parameters or {}).get("binary_data_output", False))
    content, headers, media = encode_infer_response(
        name, handle.runtime.entry.version, req.id, [(n, out[n]) for n in names], binary, default_binary
    )
    return Response(content, media_type=media, headers=headers)


@routes.post(
    "/v2/models/{name}/infer",
    response_class=JSONResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
    summary="Inference (JSON tensors or binary-data extension)",
)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@routes.post(
    "/v2/models/{name}/versions/{version}/infer",
    response_class=JSONResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
    summary="Inference (one version)",
)
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)
