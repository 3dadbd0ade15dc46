"""The inference routes' hand-parsed query parameters (service.routes.params) and hand-built answers: the
same values and errors FastAPI's own parameter handling would give, and answers that are valid instances
of the documented response schemas."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import QueryParams

from service.errors import InvalidInput
from service.routes.params import INVERT, OVERLAY, RECTIFIED, SIZE, TOP_K
from service.schemas import BatchResponse, Prediction
from service.settings import Settings
from tests.utils.payloads import multipart_files, pattern, png

PNG = {"content-type": "image/png"}


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("True", True), ("1", True), ("yes", True), ("on", True), ("t", True), ("Y", True)]
    + [("false", False), ("0", False), ("no", False), ("off", False), ("F", False), ("n", False)],
)
def test_booleans_as_pydantic_reads_them(raw: str, value: bool) -> None:
    assert RECTIFIED.get(QueryParams({"rectified": raw})) is value
    assert OVERLAY.get(QueryParams({"overlay": raw})) is value


@pytest.mark.parametrize(
    ("param", "raw", "fragment"),
    [
        (TOP_K, "0", "between 1 and 1000"),
        (TOP_K, "1001", "between 1 and 1000"),
        (TOP_K, "2.5", "must be an integer"),
        (TOP_K, "", "must be an integer"),
        (RECTIFIED, "perhaps", "true or false"),
        (INVERT, "maybe", "auto, true, false"),
        (INVERT, "AUTO", "auto, true, false"),
    ],
)
def test_bad_values_name_the_parameter(param, raw: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as err:
        param.get(QueryParams({param.name: raw}))
    assert err.value.status_code == 400
    assert f"{param.name}: " in err.value.message and fragment in err.value.message


def test_defaults_bounds_and_the_last_of_repeated_values() -> None:
    empty = QueryParams("")
    settings = Settings()
    assert (TOP_K.get(empty), RECTIFIED.get(empty), INVERT.get(empty), SIZE.get(empty, settings)) == (
        5, False, "auto", None)
    assert TOP_K.get(QueryParams("top_k=1")) == 1 and TOP_K.get(QueryParams("top_k=1000")) == 1000
    assert TOP_K.get(QueryParams("top_k=3&top_k=7")) == 7  # as Starlette (and FastAPI) read a repeat
    assert SIZE.get(QueryParams("size=256x128"), settings) == (256, 128)
    assert SIZE.get(QueryParams("size=64"), settings) == (64, 64)
    with pytest.raises(TypeError, match="bounded by a setting"):
        SIZE.get(QueryParams("size=64"))


SIZES = ["1", "9", "10", "256x128", "256X128", "4095x4096", "4096", "4097", "5000x1", "1x4097", "0", "0x5", "0256",
         " 256", "256 ", "256x", "x256", "256x128x2", "-1", "+5", "2.5", "٣", "25６", "", "a", "9" * 40]


@pytest.mark.parametrize("max_side", [4096, 100, 1])
def test_size_accepted_exactly_where_the_documented_pattern_matches(max_side: int) -> None:
    """The schema's pattern (what a generated client or schemathesis believes) and the parser agree on
    every string, at any bound."""
    settings = Settings(max_rectify_side=max_side)
    pattern = re.compile(SIZE.openapi(settings)["schema"]["pattern"])
    for raw in SIZES + [str(max_side), str(max_side + 1), f"{max_side}x{max_side}", f"1x{max_side + 1}"]:
        try:
            SIZE.get(QueryParams({"size": raw}), settings)
            accepted = True
        except InvalidInput as exc:
            assert exc.status_code == 400 and "size: " in exc.message
            accepted = False
        assert accepted == bool(pattern.search(raw)), (raw, max_side)


def test_documented_parameters_match_what_is_parsed(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/predict"]["post"]["parameters"]}
    assert set(params) == {"top_k", "rectified", "invert", "zoom"}
    assert params["zoom"]["schema"] == {"type": "boolean", "default": True}
    assert params["top_k"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}
    assert params["invert"]["schema"]["enum"] == ["auto", "true", "false"]
    named = spec["paths"]["/v1/models/{name}/rectify"]["post"]["parameters"]
    assert [p["name"] for p in named] == ["name", "size", "overlay", "invert", "index", "zoom"]
    assert named[0]["in"] == "path" and named[0]["required"] is True


@pytest.mark.parametrize("model", ["toy_affine", "toy_projective", "toy_tps", "toy_seq"])
def test_predict_answer_is_exactly_the_schema(client: TestClient, model: str) -> None:
    r = client.post(f"/v1/models/{model}/predict?rectified=true&top_k=3", content=png(pattern()), headers=PNG)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert Prediction.model_validate(body).model_dump(mode="json") == body


def test_batch_answer_is_exactly_the_schema(client: TestClient) -> None:
    files = multipart_files([("a.png", png(pattern())), ("bad.png", b"not an image")])
    r = client.post("/v1/models/toy_affine/predict/batch", files=files)
    assert r.status_code == 200
    body = r.json()
    assert BatchResponse.model_validate(body).model_dump(mode="json") == body
    assert [i["status"] for i in body["results"]] == [200, 400]
