"""Admission control, in-process: past ``max_concurrent_requests`` a POST is refused at once (503, JSON,
``Retry-After``) before its body is read; GETs (health, readiness, metrics, metadata) are never refused; a
full batch queue refuses before the body is read too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.admission import Admission
from service.app import create_app
from tests.utils.metrics import metric

from .rel_cases import digit, encode
from .rel_support import make_settings, wait_ready
from .rel_tally import record

GOOD = encode(Image.fromarray(digit(42)), "PNG")
PNG = {"content-type": "image/png"}


@pytest.fixture
def limited(rel_repo: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(rel_repo, default_model="toy_affine", max_concurrent_requests=4))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def test_past_the_limit_posts_are_refused_and_gets_are_not(limited: TestClient) -> None:
    admission: Admission = limited.app.state.admission  # type: ignore[attr-defined]
    admission.in_flight = admission.limit  # as if 4 requests were being worked on

    def body_never_read() -> Iterator[bytes]:
        raise AssertionError("the body of a refused request was read")
        yield b""

    for url in ("/v1/predict", "/v1/models/toy_affine/rectify", "/v2/models/toy_affine/infer"):
        r = limited.post(url, content=body_never_read(), headers=PNG)
        record("admission", r.status_code, url, allowed_5xx=(503,))
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert r.json() == {"error": "server overloaded: 4 requests in flight; retry later"}
    for url in ("/v2/health/live", "/v2/health/ready", "/metrics", "/v1/models", "/v2/models/toy_affine"):
        assert limited.get(url).status_code == 200, url
    text = limited.get("/metrics").text
    assert metric(text, "stn_requests_in_flight") == 4
    assert metric(text, "stn_requests_total", route="admission", status="503") == 3
    admission.in_flight = 0
    assert limited.post("/v1/predict", content=GOOD, headers=PNG).status_code == 200
    assert metric(limited.get("/metrics").text, "stn_requests_in_flight") == 0


def test_a_full_batch_queue_refuses_before_the_body_is_read(limited: TestClient) -> None:
    dp = limited.app.state.dataplane  # type: ignore[attr-defined]
    batcher = dp.get("toy_affine").batcher
    real_depth = batcher.depth
    batcher.depth = lambda: dp.settings.max_queue_size  # type: ignore[method-assign]
    try:

        def body_never_read() -> Iterator[bytes]:
            raise AssertionError("the body of a refused request was read")
            yield b""

        for url in ("/v1/predict", "/v1/predict/batch", "/v1/rectify", "/v2/models/toy_affine/infer"):
            r = limited.post(url, content=body_never_read(), headers=PNG)
            record("admission", r.status_code, url, allowed_5xx=(503,))
            assert r.status_code == 503 and r.headers["retry-after"] == "1", (url, r.text)
            assert "queued" in r.json()["error"]
    finally:
        batcher.depth = real_depth  # type: ignore[method-assign]
    assert limited.post("/v1/predict", content=GOOD, headers=PNG).status_code == 200


def test_in_flight_returns_to_zero_after_errors(limited: TestClient) -> None:
    """Every way a request can end (200, 4xx, a client error mid-body) gives its slot back."""
    for body, headers in [(GOOD, PNG), (b"junk", PNG), (GOOD, {"content-type": "text/plain"}), (b"", PNG)]:
        limited.post("/v1/predict", content=body, headers=headers)
    limited.post("/v1/models/nope/predict", content=GOOD, headers=PNG)
    limited.post("/v2/models/toy_affine/infer", content=b"{", headers={"content-type": "application/json"})
    assert limited.app.state.admission.in_flight == 0  # type: ignore[attr-defined]
