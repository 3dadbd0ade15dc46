"""Schemathesis hooks: what the service's OpenAPI document cannot say, told to the generator.

``SCHEMATHESIS_HOOKS=tests.utils.st_hooks schemathesis run URL/openapi.json --checks all`` (run from the
repository root; ``tests/service/test_schemathesis_cli.py`` does it in CI, without a token and with one).

JSON Schema describes a body's shape, not two rules this service lives by, so without help a
"schema-valid" request can be one no server could accept:

- **an image part is an image**: ``format: binary`` with a content type ``image/png`` admits any bytes.
  ``media_type`` strategies here draw real images (random size, mode and pixels) for every image type the
  schema names, raw bodies and multipart parts alike;
- **a v2 tensor fills its shape and is the model's input**: the data's length is the product of the shape,
  and the input's name and dimensions are the model's (``GET /v2/models/{name}``). For a positive
  (schema-conforming) case at a served model, ``before_call`` makes the generated input consistent: the
  model's input name, a batch of 1-2 at the model's size, that many numbers, in JSON or in the binary-data
  extension, and the outputs it asks for renamed to the model's; the rest of the generated request
  (``id``, ``parameters``, the outputs' ``parameters``) stays as drawn.

- **a crop index is the model's**: ``?index=`` of the rectify routes is bounded per model (its number of
  crops), the schema only for all at once; a positive case's index is taken modulo the model's crops.

Negative cases are sent as generated: every schema violation must still be refused.

The batch routes' parts are an array of files, which the schema leaves without a content type (see
``service.routes.deps.image_body``), so a positive case's parts are arbitrary bytes; ``before_call``
replaces each with an image (bytes for bytes, in place: the case stays as valid as it was).
"""

from __future__ import annotations

import io
import json
import math
import struct
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.parameters import ParameterLocation
from schemathesis.transport.serialization import Binary

from service.routes.deps import IMAGE_TYPES

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/bmp": "BMP",
           "image/gif": "GIF", "image/tiff": "TIFF"}
HEADER = "Inference-Header-Content-Length"


def _image(fmt: str, w: int, h: int, mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    img = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def images(media_type: str) -> st.SearchStrategy[bytes]:
    fmt = FORMATS[media_type]
    return st.builds(_image, st.just(fmt), st.integers(1, 96), st.integers(1, 96), st.sampled_from(["L", "RGB"]),
                     st.integers(0, 2**32 - 1))


assert set(FORMATS) == set(IMAGE_TYPES), "every image type the schema names needs a strategy here"
for _media_type in IMAGE_TYPES:
    schemathesis.openapi.media_type(_media_type, images(_media_type))


_metadata: dict[tuple[str, str], dict[str, Any] | None] = {}


def model_metadata(base_url: str, name: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """A served model's v2 metadata, or None (not served: the 404 needs no help)."""
    key = (base_url, name)
    if key not in _metadata:
        req = urllib.request.Request(f"{base_url}/v2/models/{urllib.request.quote(name, safe='')}",
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                _metadata[key] = json.loads(r.read())
        except (urllib.error.HTTPError, ValueError):
            _metadata[key] = None
    return _metadata[key]


def _default_model(base_url: str, headers: dict[str, str]) -> str | None:
    req = urllib.request.Request(f"{base_url}/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return str(json.loads(r.read())["default_model"])
    except (urllib.error.HTTPError, ValueError, KeyError):
        return None


def _crop_index(case: schemathesis.Case, base_url: str, auth: dict[str, str]) -> None:
    """``?index=`` picks one of the model's crops: the schema bounds it for every model at once (0..15), the
    model has ``T`` (``rectified`` is ``[N, T, 1, h, w]`` for a sequence model, one crop otherwise). A positive
    case's index is taken modulo ``T``: still an integer in the schema's range."""
    query = case.query
    raw = query.get("index") if isinstance(query, dict) else None
    if isinstance(raw, str) and raw.isdigit():  # the coverage phase sends some values as strings
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool):
        return
    params = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    name = str(params["name"]) if "name" in params else _default_model(base_url, auth)
    model = model_metadata(base_url, name, auth) if name else None
    if model is None:
        return
    shape = next(o["shape"] for o in model["outputs"] if o["name"] == "rectified")
    crops = int(shape[1]) if len(shape) == 5 else 1
    query["index"] = raw % crops
    assert case._meta is not None
    case._meta.update_validated_hash(ParameterLocation.QUERY, case._hash_container(query))


def _swap(case: schemathesis.Case, part: Binary, data: bytes) -> None:
    """Replace a generated file's bytes. Schemathesis re-validates a body that changed after generation (by
    its hash) and counts any body holding a file as schema-violating; bytes for bytes leave the body as valid
    as it was drawn, so its hash is brought up to date instead."""
    part.data = data
    assert case._meta is not None
    case._meta.update_validated_hash(ParameterLocation.BODY, case._hash_container(case.body))


@schemathesis.hook
def before_call(ctx: Any, case: schemathesis.Case, **kwargs: Any) -> None:
    # ``_meta``, not ``meta``: reading ``meta`` re-validates a changed case, and schemathesis cannot validate a
    # body holding a file, so it would relabel a positive image case as negative.
    meta = case._meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if case.path.endswith("/batch"):
        parts = case.body.get("image") if isinstance(case.body, dict) else None
        for i, part in enumerate(parts if isinstance(parts, list) else []):
            if isinstance(part, Binary):
                _swap(case, part, _image("PNG", 8 + i, 8, "L", i))
        return
    base_url = (case.operation.base_url or "").rstrip("/")
    auth = {k: v for k, v in (case.headers or {}).items() if k.lower() == "authorization"}
    if case.path.endswith("/rectify"):
        _crop_index(case, base_url, auth)
        return
    if not case.path.endswith("/infer"):
        return
    if not isinstance(case.path_parameters, dict) or "name" not in case.path_parameters:
        return
    model = model_metadata(base_url, str(case.path_parameters["name"]), auth)
    if model is None:
        return
    spec = model["inputs"][0]
    seed = int.from_bytes(case.id.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng(seed)
    shape = [int(rng.integers(1, 3)) if d < 0 else d for d in spec["shape"]]
    data = rng.random(math.prod(shape), dtype=np.float32)
    if case.media_type == "application/octet-stream":
        head = {"inputs": [{"name": spec["name"], "shape": shape, "datatype": "FP32",
                            "parameters": {"binary_data_size": data.nbytes}}]}
        js = json.dumps(head).encode()
        if not isinstance(case.body, Binary):
            return
        _swap(case, case.body, js + struct.pack(f"<{data.size}f", *data))
        case.headers = {**(case.headers or {}), HEADER: str(len(js))}
        return
    body = dict(case.body) if isinstance(case.body, dict) else {}
    if isinstance(body.get("outputs"), list):  # the outputs asked for, renamed to ones the model has
        names = [o["name"] for o in model["outputs"]]
        body["outputs"] = [{**o, "name": names[i % len(names)]} if isinstance(o, dict) else o
                           for i, o in enumerate(body["outputs"])]
    body = {**body, "inputs": [{"name": spec["name"], "shape": shape, "datatype": "FP32",
                                "data": [round(float(v), 4) for v in data]}]}
    case.body = body
    if case.headers and HEADER in case.headers:  # a JSON body: no binary-data header
        case.headers = {k: v for k, v in case.headers.items() if k != HEADER}
