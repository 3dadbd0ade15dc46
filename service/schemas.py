"""Pydantic request and response models: the JSON the routes speak (and what /openapi.json documents)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    error: str = Field(description="what went wrong, for a person to read")


# ---- v1 -------------------------------------------------------------------------------------------------


class TopK(BaseModel):
    label: str
    probability: float


class DigitRead(BaseModel):
    position: int = Field(description="the digit's place in the number, 0 = leftmost; also the index of the "
                          "transformer whose crop it was read from (/v1/rectify?index=)")
    label: str = Field(description="the digit")
    probability: float = Field(description="its probability, given that the position holds a digit")
    theta: list[list[float]] | None = Field(
        description="2x3 affine theta of the transformer that read it (output grid -> upload, normalised); "
        "null for a model without transformers"
    )
    region: list[list[float]] | None = Field(
        description="corners [x, y] in the upload's pixels of the window that transformer sampled (as "
        "Prediction.region); null for a model without transformers"
    )
    rectified: str | None = Field(None, description="with ?rectified=true: that crop as a base64 PNG")


class Prediction(BaseModel):
    model: str = Field(description="model name")
    version: str = Field(description="model version (repository directory)")
    label: str = Field(description="most probable class (a sequence model: the number read, as text)")
    probability: float = Field(description="its softmax probability (a sequence model: the whole number's)")
    top_k: list[TopK] = Field(
        description="the k most probable classes, best first (?top_k=); a sequence model: numbers"
    )
    transform: str = Field(description="transform family of the spatial transformer")
    theta: list[list[float]] | None = Field(
        None, description="2x3 affine theta (output grid -> input sample point, normalised coordinates)"
    )
    homography: list[list[float]] | None = Field(
        default=None, description="3x3 homography (projective models)"
    )
    control_points: list[list[float]] | None = Field(
        default=None, description="TPS control points (tps models)"
    )
    region: list[list[float]] | None = Field(
        description="corners [x, y] in the upload's pixels (edge coordinates) of the quadrilateral the "
        "transformer sampled: top-left, top-right, bottom-right, bottom-left (for tps the images of the "
        "crop's corners: its sides are curved)"
    )
    image_size: list[int] = Field(description="the upload's [width, height] after EXIF orientation")
    inverted: bool = Field(description="whether the upload was inverted to match the model's polarity")
    rectified: str | None = Field(
        None,
        description="with ?rectified=true: the model's rectified input as a base64 PNG, in the "
        "upload's polarity (a sequence model: every transformer's crop, side by side, left to right)",
    )
    text: str | None = Field(
        None, description="sequence models: the digits read, left to right (empty if none); else null"
    )
    digits: list[DigitRead] | None = Field(
        None, description="sequence models: each digit read, left to right; else null"
    )
    zoom_window: list[float] | None = Field(
        None,
        description="a sequence model read twice (?zoom=true and the model's stn.zoom_fill): the square "
        "window [x0, y0, x1, y1] in the upload's pixels that its second reading saw; else null",
    )


class BatchItem(BaseModel):
    index: int = Field(description="position of the file in the request")
    filename: str | None = None
    status: int = Field(description="HTTP status this file alone would have got")
    prediction: Prediction | None = None
    error: str | None = None


class BatchResponse(BaseModel):
    model: str
    results: list[BatchItem]


class ModelInfo(BaseModel):
    name: str
    version: str
    ready: bool
    error: str | None = None
    input_size: list[int] | None = Field(default=None, description="[H, W] of the model input")
    output_size: list[int] | None = Field(default=None, description="[h, w] of the rectified output")
    labels: list[str] | None = None
    transform: str | None = None
    polarity: str | None = None
    dataset: str | None = None
    test_error: float | None = Field(default=None, description="on its fixed test set (per digit for a "
                                     "sequence model)")
    kind: str | None = Field(default=None, description="digit (one class per image) or sequence (a number)")
    max_digits: int | None = Field(default=None, description="the most digits a sequence model reads")
    zoom_fill: float | None = Field(
        default=None,
        description="a sequence model read twice (stn.zoom_fill, docs/service.md): the digits' extent as a share "
        "of the second reading's window; null: read once",
    )
    providers: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]


# ---- v2 (Open Inference Protocol) --------------------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str = ""
