"""The wire shape of the v1 answers: a ``service.model.Result`` as the JSON of ``Prediction`` and
``BatchItem`` (``service.schemas``), built as plain values in the schemas' field order.

The routes encode these dicts directly: building and re-validating a pydantic model per answer costs more
than the model's own inference on this service's small images; tests check every answer against the
schemas (``tests/service/test_service_params.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from service.errors import ServiceError
from service.model import Result
from service.preprocess import png_bytes, rectified_to_pixels
from service.repository import ModelSpec


def prediction(top_k: int, rectified: bool) -> Callable[[ModelSpec, Result], dict[str, Any]]:
    """The ``Prediction`` answer of ``?top_k=`` and ``?rectified=``, as a function of (spec, result)."""

    def shape(spec: ModelSpec, r: Result) -> dict[str, Any]:
        p = r.probabilities
        k = max(1, min(top_k, len(p)))
        order = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:k]  # stable: ties keep class order
        labels = spec.labels
        rect = None
        if rectified:
            pixels = rectified_to_pixels(r.rectified, spec, r.inverted)
            rect = base64.b64encode(png_bytes(pixels)).decode("ascii")
        out = spec.param_output
        return {
            "model": spec.name,
            "version": spec.version,
            "label": labels[order[0]],
            "probability": p[order[0]],
            "top_k": [{"label": labels[i], "probability": p[i]} for i in order],
            "transform": spec.transform,
            "theta": r.params if out == "theta" else None,
            "homography": r.params if out == "homography" else None,
            "control_points": r.params if out == "control_points" else None,
            "region": r.region,
            "image_size": list(r.image_size),
            "inverted": r.inverted,
            "rectified": rect,
        }

    return shape


def batch_item(index: int, filename: str | None, answer: dict[str, Any] | ServiceError) -> dict[str, Any]:
    """A ``BatchItem``: the file's prediction, or its own error."""
    if isinstance(answer, ServiceError):
        return {"index": index, "filename": filename, "status": answer.status_code, "prediction": None,
                "error": answer.message}
    return {"index": index, "filename": filename, "status": 200, "prediction": answer, "error": None}
