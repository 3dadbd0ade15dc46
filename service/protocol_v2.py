"""Open Inference Protocol v2 (KServe / Triton REST) bodies: JSON tensors and the binary-data extension.

Binary extension: the request header ``Inference-Header-Content-Length: N`` says the first ``N`` bytes of
the body are the JSON request; each input whose ``parameters.binary_data_size`` is set takes that many
bytes, in input order, from the rest. An output is answered in binary when its ``parameters.binary_data``
is true, or, if it does not say, when the request's ``parameters.binary_data_output`` is; the answer then
carries ``Inference-Header-Content-Length`` likewise. Tensors are little-endian, row-major.
"""

from __future__ import annotations

import json
import math

import numpy as np
from pydantic import ValidationError

from service.errors import InvalidInput
from service.repository import ModelSpec
from service.schemas import InferenceRequest, RequestInput

HEADER = "Inference-Header-Content-Length"


MAX_DIMS = 8


def _shape_size(inp: RequestInput) -> int:
    if len(inp.shape) > MAX_DIMS:  # also keeps an absurd shape out of the error messages below
        raise InvalidInput(f"input {inp.name!r}: shape has {len(inp.shape)} dimensions, at most {MAX_DIMS}")
    if any(not isinstance(d, int) or d < 0 for d in inp.shape):
        raise InvalidInput(f"input {inp.name!r}: shape must be non-negative integers, got {inp.shape}")
    return math.prod(inp.shape)


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[np.ndarray]]:
    """The request and one float32 array per input (same order). Only FP32 inputs are accepted."""
    if not body:
        raise InvalidInput("empty body: send an inference request")
    if header_length is None:
        json_part, binary = body, memoryview(b"")
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER} must be an integer, got {header_length[:40]!r}") from None
        if n < 0 or n > len(body):
            raise InvalidInput(f"{HEADER} is {n} but the body has {len(body)} bytes")
        json_part, binary = body[:n], memoryview(body)[n:]
    try:
        req = InferenceRequest.model_validate_json(json_part)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(
            f"invalid inference request: {where}: {first.get('msg')}".replace(": :", ":")
        ) from None

    arrays: list[np.ndarray] = []
    offset = 0
    for inp in req.inputs:
        if inp.datatype != "FP32":
            raise InvalidInput(f"input {inp.name!r}: datatype {inp.datatype} is not supported; expected FP32")
        size = _shape_size(inp)
        bsize = (inp.parameters or {}).get("binary_data_size")
        if bsize is not None:
            if not isinstance(bsize, int) or isinstance(bsize, bool) or bsize < 0:
                raise InvalidInput(f"input {inp.name!r}: binary_data_size must be a non-negative integer")
            if bsize != size * 4:
                raise InvalidInput(
                    f"input {inp.name!r}: binary_data_size {bsize} does not match shape "
                    f"{inp.shape} of FP32 ({size * 4} bytes)"
                )
            if offset + bsize > len(binary):
                raise InvalidInput(
                    f"input {inp.name!r}: binary data ends after {len(binary) - offset} of {bsize} bytes"
                )
            arr = np.frombuffer(binary, dtype="<f4", count=size, offset=offset).reshape(inp.shape)
            if not arr.flags.aligned:  # the JSON header's length puts the tensor at any byte offset
                arr = arr.copy()
            offset += bsize
        else:
            if inp.data is None:
                raise InvalidInput(f"input {inp.name!r}: no 'data' and no binary_data_size")
            try:
                arr = np.asarray(inp.data, dtype=np.float32)
            except (ValueError, TypeError, OverflowError):  # OverflowError: an integer past float range
                raise InvalidInput(f"input {inp.name!r}: data must be numbers (FP32)") from None
            if arr.size != size:
                raise InvalidInput(f"input {inp.name!r}: {arr.size} values for shape {inp.shape} ({size})")
            arr = arr.reshape(inp.shape)
        arrays.append(arr)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    return req, arrays


def check_input(spec: ModelSpec, input_name: str, x: np.ndarray) -> None:
    """A v2 input tensor is the model's: its name, shape ``[N, 1, H, W]`` (N >= 1) and finite values."""
    if input_name != spec.input_name:
        raise InvalidInput(f"unknown input {input_name!r}; model {spec.name!r} takes {spec.input_name!r}")
    h, w = spec.input_size
    if x.ndim != 4 or x.shape[1:] != (1, h, w) or x.shape[0] < 1:
        raise InvalidInput(f"input {input_name!r} must have shape [N, 1, {h}, {w}] with N >= 1, got {list(x.shape)}")
    # NaN or infinity (JSON null becomes NaN) would come back as NaN, which JSON cannot carry.
    if not np.isfinite(x).all():
        raise InvalidInput(f"input {input_name!r} holds NaN or infinite values")


def wants_binary(req: InferenceRequest) -> dict[str, bool]:
    """Output name -> answer in binary, for the outputs the request names (empty: it names none)."""
    default = bool((req.parameters or {}).get("binary_data_output", False))
    return {o.name: bool((o.parameters or {}).get("binary_data", default)) for o in req.outputs or []}


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray]],
    binary: dict[str, bool],
    binary_default: bool,
) -> tuple[bytes, dict[str, str], str]:
    """(body, headers, media type) of an inference response."""
    entries = []
    blobs: list[bytes] = []
    for name, arr in outputs:
        entry: dict[str, object] = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary.get(name, binary_default):
            blob = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.ravel().tolist()
        entries.append(entry)
    header: dict[str, object] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = entries
    js = json.dumps(header, separators=(",", ":")).encode()
    if blobs:
        return js + b"".join(blobs), {HEADER: str(len(js))}, "application/octet-stream"
    return js, {}, "application/json"
