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

import numpy as np

from service.errors import ServiceError
from service.model import Result
from service.preprocess import png_bytes, rectified_to_pixels
from service.repository import ModelSpec


def prediction(top_k: int, rectified: bool) -> Callable[[ModelSpec, Result], dict[str, Any]]:
    """The ``Prediction`` answer of ``?top_k=`` and ``?rectified=``, as a function of (spec, result)."""

    def shape(spec: ModelSpec, r: Result) -> dict[str, Any]:
        if r.reading is not None:
            return _sequence(spec, r, top_k, rectified)
        p = r.probabilities
        k = max(1, min(top_k, len(p)))
        order = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:k]  # stable: ties keep class order
        labels = spec.labels
        rect = _png64(rectified_to_pixels(r.rectified, spec, r.inverted)) if rectified else None
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
            "text": None,
            "digits": None,
            "zoom_window": None,
        }

    return shape


def _png64(pixels: np.ndarray) -> str:
    return base64.b64encode(png_bytes(pixels)).decode("ascii")


def _sequence(spec: ModelSpec, r: Result, top_k: int, rectified: bool) -> dict[str, Any]:
    """A sequence model's ``Prediction``: the number as ``label`` and ``text``, one ``DigitRead`` per digit."""
    assert r.reading is not None and r.windows is not None
    labels = spec.labels
    classes, probs, p_number = r.reading.best()
    text = "".join(labels[c] for c in classes)
    per_digit = len(r.windows) == spec.max_len  # one transformer per position, else no regions to give
    crops = rectified_to_pixels(r.rectified, spec, r.inverted) if rectified else None  # (T, h, w)
    digits = []
    for i, (c, p) in enumerate(zip(classes, probs, strict=True)):
        theta, region = r.windows[i] if per_digit else (None, None)
        digits.append({"position": i, "label": labels[c], "probability": p, "theta": theta, "region": region,
                       "rectified": _png64(crops[i]) if crops is not None and per_digit else None})
    best = r.reading.top_k(max(1, top_k))
    return {
        "model": spec.name,
        "version": spec.version,
        "label": text,
        "probability": p_number,
        "top_k": [{"label": "".join(labels[c] for c in seq), "probability": q} for seq, q in best],
        "transform": spec.transform,
        "theta": None,
        "homography": None,
        "control_points": None,
        "region": None,
        "image_size": list(r.image_size),
        "inverted": r.inverted,
        "rectified": _png64(np.concatenate(list(crops), axis=1)) if crops is not None else None,
        "text": text,
        "digits": digits,
        "zoom_window": r.zoom_window,
    }


def batch_item(index: int, filename: str | None, answer: dict[str, Any] | ServiceError) -> dict[str, Any]:
    """A ``BatchItem``: the file's prediction, or its own error."""
    if isinstance(answer, ServiceError):
        return {"index": index, "filename": filename, "status": answer.status_code, "prediction": None,
                "error": answer.message}
    return {"index": index, "filename": filename, "status": 200, "prediction": answer, "error": None}
