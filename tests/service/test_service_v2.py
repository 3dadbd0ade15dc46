"""Open Inference Protocol v2 through TestClient: metadata, health, JSON and binary tensors, errors.

(The stock tritonclient runs against a real process in test_service_process.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

HEADER = "Inference-Header-Content-Length"


def reference(repo: Path, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"image": x}), strict=True))


def batch(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 1, 42, 42)).astype(np.float32)


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "stn-serve" and "binary_tensor_data" in meta["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata(client: TestClient) -> None:
    md = client.get("/v2/models/toy_affine").json()
    assert md["name"] == "toy_affine" and md["versions"] == ["1"] and md["platform"] == "onnxruntime_onnx"
    assert md["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 42, 42]}]
    assert {o["name"]: o["shape"] for o in md["outputs"]} == {
        "logits": [-1, 10],
        "theta": [-1, 2, 3],
        "rectified": [-1, 1, 28, 28],
    }
    assert client.get("/v2/models/toy_affine/versions/1").json() == md
    assert client.get("/v2/models/toy_affine/ready").json() == {"ready": True}
    assert client.get("/v2/models/toy_affine/versions/1/ready").status_code == 200
    cfg = client.get("/v2/models/toy_affine/config").json()
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["input"][0]["dims"] == [1, 42, 42]
    index = client.post("/v2/repository/index").json()
    assert {"name": "toy_affine", "version": "1", "state": "READY", "reason": ""} in index


def test_json_infer_equals_onnxruntime(client: TestClient, repo: Path) -> None:
    x = batch()
    req = {
        "id": "r1",
        "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
    }
    r = client.post("/v2/models/toy_affine/infer", json=req)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["model_name"] == "toy_affine" and body["model_version"] == "1" and body["id"] == "r1"
    ref = reference(repo, "toy_affine", x)
    assert [o["name"] for o in body["outputs"]] == ["logits", "theta", "rectified"]
    for o in body["outputs"]:
        assert o["datatype"] == "FP32" and o["shape"] == list(ref[o["name"]].shape)
        np.testing.assert_allclose(
            np.array(o["data"], np.float32).reshape(o["shape"]), ref[o["name"]], atol=1e-5
        )


def test_nested_json_data_and_requested_outputs(client: TestClient, repo: Path) -> None:
    x = batch(1)
    req = {
        "inputs": [{"name": "image", "shape": [1, 1, 42, 42], "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "theta"}],
    }
    body = client.post("/v2/models/toy_affine/infer", json=req).json()
    assert [o["name"] for o in body["outputs"]] == ["theta"]
    np.testing.assert_allclose(
        np.array(body["outputs"][0]["data"]).reshape(1, 2, 3),
        reference(repo, "toy_affine", x)["theta"],
        atol=1e-6,
    )


def binary_request(
    x: np.ndarray,
    outputs: list[dict] | None = None,
    binary_output: bool = True,
) -> tuple[bytes, dict[str, str]]:
    req: dict = {
        "inputs": [
            {
                "name": "image",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ]
    }
    if outputs is not None:
        req["outputs"] = outputs
    else:
        req["parameters"] = {"binary_data_output": binary_output}
    js = json.dumps(req).encode()
    return js + x.tobytes(), {HEADER: str(len(js)), "content-type": "application/octet-stream"}


def parse_binary(content: bytes, header_length: int) -> dict[str, np.ndarray]:
    header = json.loads(content[:header_length])
    out, offset = {}, header_length
    for o in header["outputs"]:
        if "data" in o:
            out[o["name"]] = np.array(o["data"], np.float32).reshape(o["shape"])
        else:
            n = o["parameters"]["binary_data_size"]
            out[o["name"]] = np.frombuffer(content[offset : offset + n], "<f4").reshape(o["shape"])
            offset += n
    assert offset == len(content)
    return out


def test_binary_infer_both_ways_equals_onnxruntime(client: TestClient, repo: Path) -> None:
    x = batch(5, seed=1)
    body, headers = binary_request(x)
    r = client.post("/v2/models/toy_projective/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    got = parse_binary(r.content, int(r.headers[HEADER]))
    ref = reference(repo, "toy_projective", x)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)


def test_binary_input_json_output_mix(client: TestClient, repo: Path) -> None:
    x = batch(2, seed=2)
    body, headers = binary_request(
        x,
        outputs=[
            {"name": "logits", "parameters": {"binary_data": False}},
            {"name": "rectified", "parameters": {"binary_data": True}},
        ],
    )
    r = client.post("/v2/models/toy_affine/infer", content=body, headers=headers)
    got = parse_binary(r.content, int(r.headers[HEADER]))
    ref = reference(repo, "toy_affine", x)
    np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-5)
    np.testing.assert_allclose(got["rectified"], ref["rectified"], atol=1e-5)


def check(r, status: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert fragment.lower() in r.json()["error"].lower()


def tensor(shape: list[int], datatype: str = "FP32", name: str = "image") -> dict:
    n = int(np.prod(shape))
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": [0.0] * n}]}


@pytest.mark.parametrize(
    "req,fragment",
    [
        (tensor([1, 1, 28, 28]), "shape"),
        (tensor([1, 42, 42]), "shape"),
        (tensor([0, 1, 42, 42]), "N >= 1"),
        (tensor([1, 3, 42, 42]), "shape"),
        (tensor([1, 1, 42, 42], "INT32"), "datatype"),
        (tensor([1, 1, 42, 42], "FP16"), "datatype"),
        (tensor([1, 1, 42, 42], name="x"), "unknown input"),
        (
            {"inputs": [{"name": "image", "shape": [1, 1, 42, 42], "datatype": "FP32", "data": [1.0, 2.0]}]},
            "values",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": ["a", "b", "c", "d"]}
                ]
            },
            "numbers",
        ),
        ({"inputs": [{"name": "image", "shape": [1, 1, 42, 42], "datatype": "FP32"}]}, "no 'data'"),
        ({"inputs": []}, "inputs"),
        ({"nothing": 1}, "inputs"),
        ({**tensor([1, 1, 42, 42]), "outputs": [{"name": "nope"}]}, "unknown output"),
    ],
)
def test_bad_infer_requests(client: TestClient, req: dict, fragment: str) -> None:
    check(client.post("/v2/models/toy_affine/infer", json=req), 400, fragment)


def test_bad_binary_requests(client: TestClient) -> None:
    x = batch(1)
    body, headers = binary_request(x)
    url = "/v2/models/toy_affine/infer"
    check(client.post(url, content=body[:-4], headers=headers), 400, "binary data ends")
    check(client.post(url, content=body + b"1234", headers=headers), 400, "belong to no input")
    check(client.post(url, content=body, headers={**headers, HEADER: "abc"}), 400, "integer")
    check(client.post(url, content=body, headers={**headers, HEADER: str(len(body) + 1)}), 400, HEADER)
    check(client.post(url, content=body, headers={**headers, HEADER: "5"}), 400, "invalid inference request")
    check(client.post(url, content=b"", headers=headers), 400, "empty")
    check(client.post(url, content=b"not json"), 400, "invalid inference request")
    assert client.post(url, content=body, headers=headers).status_code == 200


def test_unknown_model_and_version(client: TestClient) -> None:
    check(client.get("/v2/models/nope"), 404, "unknown model")
    check(client.get("/v2/models/nope/ready"), 404, "unknown model")
    check(client.post("/v2/models/nope/infer", json=tensor([1, 1, 42, 42])), 404, "unknown model")
    check(client.get("/v2/models/toy_affine/versions/7"), 404, "version")
    check(client.post("/v2/models/toy_affine/versions/7/infer", json=tensor([1, 1, 42, 42])), 404, "version")
