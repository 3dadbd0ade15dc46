"""Sequence models (several digits, one transformer per position) through the v1 and v2 routes, on the toy
sequence model whose three windows are fixed (``TOY_SEQ_WINDOWS``): the answer's shape and schema, each
digit's region, the crops (side by side, one by ``?index=``, at a size, the overlay), the model list, v2
infer, and the reading itself (the k most probable numbers, exact)."""

from __future__ import annotations

import base64
import io
import itertools
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.repository import ModelEntry, parse_spec
from service.schemas import Prediction
from service.sequence import Reading
from tests.utils.payloads import decode_png, png
from tests.utils.toys import TOY_SEQ_WINDOWS

PNG = {"content-type": "image/png"}
MODEL = "toy_seq"


def canvas(side: int = 100, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.zeros((side, side), np.uint8)
    for x0 in (0.2, 0.5, 0.8):  # three bright blobs where the windows look
        cx, cy = int(x0 * side), int(rng.uniform(0.3, 0.7) * side)
        arr[cy - side // 8: cy + side // 8, cx - side // 12: cx + side // 12] = 255
    return png(arr)


def window_region(theta: np.ndarray, w: int, h: int) -> list[list[float]]:
    """Corners in pixels of an axis-aligned window [[sx, 0, x], [0, sy, y]]: TL, TR, BR, BL."""
    (sx, _, x), (_, sy, y) = theta
    xs = [(x - sx + 1) * w / 2, (x + sx + 1) * w / 2]
    ys = [(y - sy + 1) * h / 2, (y + sy + 1) * h / 2]
    return [[xs[0], ys[0]], [xs[1], ys[0]], [xs[1], ys[1]], [xs[0], ys[1]]]


def post(client: TestClient, route: str, body: bytes, query: str = "") -> httpx.Response:
    return client.post(f"/v1/models/{MODEL}/{route}{query}", content=body, headers=PNG)


@pytest.mark.parametrize("side", [100, 300])
def test_sequence_answer_has_the_number_and_each_digits_region(client: TestClient, side: int) -> None:
    r = post(client, "predict", canvas(side), "?top_k=4&rectified=true")
    assert r.status_code == 200, r.text
    p = r.json()
    Prediction.model_validate(p)  # the documented schema
    assert p["text"] == p["label"] and len(p["digits"]) == len(p["text"]) <= 3
    assert "".join(d["label"] for d in p["digits"]) == p["text"]
    assert p["top_k"][0] == {"label": p["text"], "probability": p["probability"]}
    probs = [t["probability"] for t in p["top_k"]]
    assert probs == sorted(probs, reverse=True) and len(p["top_k"]) == 4
    # P(number) = P(length) x the digits' own: at most their product.
    assert 0 < p["probability"] <= math.prod(d["probability"] for d in p["digits"]) + 1e-12
    assert p["theta"] is None and p["region"] is None and p["image_size"] == [side, side]
    for d in p["digits"]:
        want = TOY_SEQ_WINDOWS[d["position"]]
        np.testing.assert_allclose(d["theta"], want, atol=1e-6)
        np.testing.assert_allclose(d["region"], window_region(want, side, side), atol=1e-3)
        assert decode_png(base64.b64decode(d["rectified"])).shape == (28, 28)
    strip = decode_png(base64.b64decode(p["rectified"]))
    assert strip.shape == (28, 3 * 28)  # every transformer's crop, digits read or not


def test_v2_infer_returns_every_output_of_a_sequence_model(client: TestClient) -> None:
    meta = client.get(f"/v2/models/{MODEL}").json()
    shapes = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert shapes == {"length_logits": [-1, 4], "digit_logits": [-1, 3, 11], "theta": [-1, 3, 2, 3],
                      "rectified": [-1, 3, 1, 28, 28]}
    body = {"inputs": [{"name": "image", "shape": [2, 1, 100, 100], "datatype": "FP32",
                        "data": [0.0] * 20_000}]}
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert {k: v["shape"] for k, v in outs.items()} == {"length_logits": [2, 4], "digit_logits": [2, 3, 11],
                                                        "theta": [2, 3, 2, 3], "rectified": [2, 3, 1, 28, 28]}
    theta = np.array(outs["theta"]["data"]).reshape(2, 3, 2, 3)
    np.testing.assert_allclose(theta[1], TOY_SEQ_WINDOWS, atol=1e-6)


def test_rectify_gives_the_crops_side_by_side_or_one_by_index(client: TestClient) -> None:
    body = canvas(100)
    r = post(client, "rectify", body)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    strip = decode_png(r.content)
    assert strip.shape == (28, 84)
    for i in range(3):
        one = post(client, "rectify", body, f"?index={i}")
        assert one.status_code == 200, one.text
        np.testing.assert_array_equal(decode_png(one.content), strip[:, 28 * i: 28 * (i + 1)])
    # Window 1 reads the canvas' middle third: its blob is there, bright.
    assert decode_png(post(client, "rectify", body, "?index=1").content).max() == 255
    sized = post(client, "rectify", body, "?size=40x60&index=2")
    assert decode_png(sized.content).shape == (60, 40)
    assert decode_png(post(client, "rectify", body, "?size=40x60").content).shape == (60, 120)
    overlay = post(client, "rectify", body, "?overlay=true")
    assert overlay.status_code == 200 and Image.open(io.BytesIO(overlay.content)).mode == "RGB"


def test_a_crop_index_past_the_models_crops_is_a_clear_422(client: TestClient) -> None:
    r = post(client, "rectify", canvas(100), "?index=3")
    assert r.status_code == 422 and "has 3 crops: index must be 0..2, got 3" in r.json()["error"]
    r = client.post("/v1/models/toy_affine/rectify?index=1", content=canvas(42), headers=PNG)
    assert r.status_code == 422 and "has 1 crop: index must be 0, got 1" in r.json()["error"]
    assert client.post("/v1/models/toy_affine/rectify?index=0", content=canvas(42), headers=PNG).status_code == 200
    r = post(client, "rectify", canvas(100), "?index=-1")
    assert r.status_code == 400 and "index" in r.json()["error"]


def test_the_model_list_says_which_models_read_numbers(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models[MODEL]["kind"] == "sequence" and models[MODEL]["max_digits"] == 3
    assert models["toy_affine"]["kind"] == "digit" and models["toy_affine"]["max_digits"] is None


def test_top_k_numbers_are_exact() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        length = rng.dirichlet(np.ones(4)).tolist()
        digits = [rng.dirichlet(np.ones(10) * 0.3).tolist() for _ in range(3)]
        reading = Reading(length, digits)
        brute = sorted(((length[n] * math.prod(digits[i][c] for i, c in enumerate(seq)), list(seq))
                        for n in range(4) for seq in itertools.product(range(10), repeat=n)),
                       key=lambda t: -t[0])
        got = reading.top_k(7)
        np.testing.assert_allclose([q for _, q in got], [q for q, _ in brute[:7]], rtol=1e-12)
        classes, _, p = reading.best()
        assert (classes, p) == (got[0][0], pytest.approx(got[0][1], rel=1e-12))


def test_a_sequence_model_without_its_outputs_fails_to_load() -> None:
    entry = ModelEntry("bad", "1", Path("bad/1/model.onnx"))
    meta = {"stn.kind": "sequence", "stn.input_size": "100,100"}
    outs = {"length_logits": ["N", 4], "theta": ["N", 3, 2, 3], "rectified": ["N", 3, 1, 28, 28]}
    with pytest.raises(ValueError, match="a sequence model's outputs must include"):
        parse_spec(entry, meta, "image", ["N", 1, 100, 100], outs)
    outs = {**outs, "digit_logits": ["N", 3, 11], "length_logits": ["N", 5]}
    with pytest.raises(ValueError, match=r"length_logits must be \[N, 4\]"):
        parse_spec(entry, meta, "image", ["N", 1, 100, 100], outs)
    with pytest.raises(ValueError, match="stn.kind must be digit or sequence"):
        parse_spec(entry, {**meta, "stn.kind": "word"}, "image", ["N", 1, 100, 100], outs)
    spec = parse_spec(entry, meta, "image", ["N", 1, 100, 100], {**outs, "length_logits": ["N", 4]})
    assert spec.is_sequence and spec.max_len == 3 and spec.transformers == 3 and spec.labels == list("0123456789")
