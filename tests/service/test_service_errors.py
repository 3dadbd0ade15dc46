"""Bad input gets its status and a JSON error, and the next good request still succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.utils.app import make_settings, wait_ready
from tests.utils.payloads import encode, multipart_files, pattern, png

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def small_limits(toy_repo: Path) -> Iterator[TestClient]:
    """Limits small enough to test cheaply: 200 kB bodies, 1 Mpx images, 3 files per batch."""
    app = create_app(
        make_settings(
            toy_repo,
            default_model="toy_affine",
            max_body_bytes=200_000,
            max_image_pixels=1_000_000,
            max_batch_files=3,
        )
    )
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def good(client: TestClient) -> None:
    r = client.post("/v1/predict", content=png(pattern()), headers=PNG)
    assert r.status_code == 200, r.text


def check(r, status: int, fragment: str = "") -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert fragment.lower() in body["error"].lower()


def truncated_png() -> bytes:
    data = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "body,headers,status,fragment",
    [
        (b"", PNG, 400, "empty"),
        (b"hello, world", PNG, 400, "not a decodable image"),
        (b"hello, world", {"content-type": "text/plain"}, 415, "content type"),
        (b"{}", {"content-type": "application/json"}, 415, "content type"),
        (b"GIF89a\x01\x00", {"content-type": "image/gif"}, 400, "image"),
    ],
)
def test_bad_bodies(small_limits: TestClient, body: bytes, headers: dict, status: int, fragment: str) -> None:
    check(small_limits.post("/v1/predict", content=body, headers=headers), status, fragment)
    good(small_limits)


def test_truncated_image(small_limits: TestClient) -> None:
    check(small_limits.post("/v1/predict", content=truncated_png(), headers=PNG), 400, "truncated")
    good(small_limits)


def test_body_over_the_byte_limit(small_limits: TestClient) -> None:
    check(small_limits.post("/v1/predict", content=b"\0" * 200_001, headers=PNG), 413, "limit")
    good(small_limits)


def test_body_over_the_limit_without_content_length(small_limits: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b"\0" * 10_000

    check(small_limits.post("/v1/predict", content=chunks(), headers=PNG), 413, "limit")
    good(small_limits)


def test_multipart_over_the_byte_limit(small_limits: TestClient) -> None:
    r = small_limits.post("/v1/predict", files={"image": ("big.png", b"\0" * 300_000, "image/png")})
    check(r, 413, "limit")
    good(small_limits)


def test_image_over_the_pixel_limit(small_limits: TestClient) -> None:
    body = png(Image.new("L", (1001, 1000)))  # small file, 1.001 Mpx
    check(small_limits.post("/v1/predict", content=body, headers=PNG), 413, "pixels")
    check(small_limits.post("/v1/rectify?size=64x64", content=body, headers=PNG), 413, "pixels")
    good(small_limits)


def test_decompression_bomb_guard_is_an_error(small_limits: TestClient) -> None:
    body = encode(Image.new("1", (15000, 13000)), "PNG")  # 195 Mpx: Pillow's own guard fires first
    check(small_limits.post("/v1/predict", content=body, headers=PNG), 413)
    good(small_limits)


def test_unknown_model(small_limits: TestClient) -> None:
    for url in ("/v1/models/nope/predict", "/v1/models/nope/rectify", "/v1/models/nope/predict/batch"):
        check(small_limits.post(url, content=png(pattern()), headers=PNG), 404, "unknown model")
    good(small_limits)


def test_too_many_files_in_a_batch(small_limits: TestClient) -> None:
    files = multipart_files([(f"{i}.png", png(pattern())) for i in range(4)])
    check(small_limits.post("/v1/predict/batch", files=files), 400, "too many files")
    ok = small_limits.post("/v1/predict/batch", files=files[:3])
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_batch_needs_multipart_with_image_files(small_limits: TestClient) -> None:
    check(small_limits.post("/v1/predict/batch", content=png(pattern()), headers=PNG), 400, "multipart")
    check(
        small_limits.post("/v1/predict/batch", files={"other": ("a.png", png(pattern()), "image/png")}),
        400,
        "'image'",
    )
    good(small_limits)


def test_multipart_without_image_field(small_limits: TestClient) -> None:
    check(
        small_limits.post("/v1/predict", files={"file": ("a.png", png(pattern()), "image/png")}),
        400,
        "'image'",
    )
    check(
        small_limits.post(
            "/v1/predict", data={"image": "not a file"}, files={"x": ("a", b"1", "text/plain")}
        ),
        400,
        "file",
    )
    good(small_limits)


@pytest.mark.parametrize(
    "query,fragment",
    [
        ("?top_k=0", "top_k"),
        ("?top_k=abc", "top_k"),
        ("?invert=maybe", "invert"),
        ("?rectified=perhaps", "rectified"),
    ],
)
def test_bad_query_parameters(small_limits: TestClient, query: str, fragment: str) -> None:
    check(small_limits.post(f"/v1/predict{query}", content=png(pattern()), headers=PNG), 400, fragment)
    good(small_limits)


@pytest.mark.parametrize("size", ["0x10", "10x", "abc", "5000x5000", "-3x4"])
def test_bad_rectify_size(small_limits: TestClient, size: str) -> None:
    check(small_limits.post(f"/v1/rectify?size={size}", content=png(pattern()), headers=PNG), 400, "size")
    good(small_limits)


def test_unknown_path_and_method(small_limits: TestClient) -> None:
    check(small_limits.get("/v1/nothing"), 404)
    check(small_limits.get("/v1/predict"), 405)
    good(small_limits)


def test_errors_are_counted_by_route_template(small_limits: TestClient) -> None:
    small_limits.post("/v1/models/nope/predict", content=png(pattern()), headers=PNG)
    text = small_limits.get("/metrics").text
    assert 'stn_requests_total{route="/v1/models/{name}/predict",status="404"}' in text
    assert "/v1/models/nope" not in text
