"""The app around the routes: auth, CORS, OpenAPI, metrics, readiness, settings, import hygiene."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings
from tests.utils.app import make_settings, wait_ready
from tests.utils.payloads import pattern, png
from tests.utils.server import ROOT

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def secured(toy_repo: Path) -> Iterator[TestClient]:
    app = create_app(
        make_settings(
            toy_repo, default_model="toy_affine", api_token="s3cret", cors_origins="http://demo.example"
        )
    )
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def test_token_is_required_on_inference_and_model_routes(secured: TestClient) -> None:
    body = png(pattern())
    calls = [
        ("post", "/v1/predict"),
        ("post", "/v1/rectify"),
        ("post", "/v1/models/toy_affine/predict"),
        ("get", "/v1/models"),
        ("get", "/v2/models/toy_affine"),
        ("get", "/v2/models/toy_affine/ready"),
        ("post", "/v2/models/toy_affine/infer"),
    ]
    for method, url in calls:
        kw = {"content": body, "headers": PNG} if method == "post" else {}
        r = getattr(secured, method)(url, **kw)
        assert r.status_code == 401, url
        assert r.headers["www-authenticate"] == "Bearer" and "token" in r.json()["error"]
        wrong = getattr(secured, method)(url, **{**kw, "headers": {**PNG, "Authorization": "Bearer nope"}})
        assert wrong.status_code == 401
    ok = secured.post("/v1/predict", content=body, headers={**PNG, "Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_health_metrics_docs_and_page_stay_open(secured: TestClient) -> None:
    for url in ("/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/", "/docs", "/openapi.json"):
        assert secured.get(url).status_code == 200, url


def test_cors_origins(secured: TestClient) -> None:
    r = secured.options(
        "/v1/predict", headers={"Origin": "http://demo.example", "Access-Control-Request-Method": "POST"}
    )
    assert r.headers["access-control-allow-origin"] == "http://demo.example"
    r = secured.get("/v2/health/live", headers={"Origin": "http://other.example"})
    assert "access-control-allow-origin" not in r.headers


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/predict",
        "/v1/models/{name}/predict",
        "/v1/predict/batch",
        "/v1/models/{name}/predict/batch",
        "/v1/rectify",
        "/v1/models/{name}/rectify",
        "/v1/models",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/metrics",
        "/",
    }
    assert expected <= set(paths)
    for path, ops in paths.items():
        for method, op in ops.items():
            assert "200" in op["responses"] and op["responses"]["200"].get("content"), (method, path)
            if method == "post" and path != "/v2/repository/index":
                assert op["requestBody"]["content"], (method, path)
    predict = paths["/v1/predict"]["post"]
    assert {"image/png", "image/jpeg", "multipart/form-data"} <= set(predict["requestBody"]["content"])
    assert "Prediction" in str(predict["responses"]["200"]) and "ErrorResponse" in str(
        predict["responses"]["413"]
    )
    infer = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert infer["$ref"].endswith("/InferenceRequest") and "RequestInput" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_metrics_exposition(client: TestClient) -> None:
    client.post("/v1/models/toy_affine/predict", content=png(pattern()), headers=PNG)
    text = client.get("/metrics").text
    for name in (
        "stn_requests_total",
        "stn_request_latency_seconds_bucket",
        "stn_queue_wait_seconds_bucket",
        "stn_batch_size_bucket",
        "stn_inference_seconds_bucket",
        "stn_models_loaded",
    ):
        assert name in text, name
    assert 'stn_requests_total{route="/v1/models/{name}/predict",status="200"}' in text
    assert 'stn_queue_depth{model="toy_affine"} 0.0' in text
    assert f"stn_models_loaded {len(client.get('/v1/models').json()['models'])}.0" in text


def test_not_ready_until_loaded_then_ready(toy_repo: Path) -> None:
    app = create_app(make_settings(toy_repo, default_model="toy_affine"))
    with TestClient(app) as c:
        first = c.get("/v2/health/ready")
        assert first.status_code in (200, 503)  # the load runs in the background; 503 while it does
        if first.status_code == 503:
            assert "loading" in first.json()["error"]
            r = c.post("/v1/predict", content=png(pattern()), headers=PNG)
            assert r.status_code in (200, 503)
        wait_ready(c)
        assert c.get("/v2/health/live").status_code == 200


def test_a_broken_model_is_reported_not_fatal(tmp_path: Path, toy_repo: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    (tmp_path / "toy_affine").symlink_to(toy_repo / "toy_affine")
    app = create_app(make_settings(tmp_path))
    with TestClient(app) as c:
        c.portal.call(app.state.dataplane.wait_loaded)  # type: ignore[union-attr]
        r = c.get("/v2/health/ready")
        assert r.status_code == 503 and "broken" in r.json()["error"]
        assert c.get("/v2/models/broken/ready").status_code == 503
        # The default falls back to the first model alphabetically: "broken" is not ready, so ask by name.
        assert c.post("/v1/models/toy_affine/predict", content=png(pattern()), headers=PNG).status_code == 200


def test_start_fails_without_models(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="holds no"):
        with TestClient(create_app(make_settings(tmp_path))):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with TestClient(create_app(make_settings(tmp_path / "missing"))):
            pass


def test_provider_cuda_refuses_without_a_gpu(toy_repo: Path) -> None:
    from service.runtime import cuda_available

    if cuda_available()[0]:
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(RuntimeError, match="provider cuda"):
        with TestClient(create_app(make_settings(toy_repo, provider="cuda"))):
            pass


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STN_MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("STN_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("STN_CORS_ORIGINS", "http://a, http://b")
    monkeypatch.setenv("STN_API_TOKEN", "tok3n-xyz")
    s = Settings()
    assert s.model_repository == tmp_path.resolve() and s.max_batch_size == 4
    assert s.cors_origins == ["http://a", "http://b"] and s.token == "tok3n-xyz" and "tok3n" not in repr(s)
    monkeypatch.setenv("STN_CORS_ORIGINS", '["http://c"]')
    assert Settings().cors_origins == ["http://c"]
    assert Settings(max_batch_size=9).max_batch_size == 9  # init arguments (CLI flags) win


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_batch_size", 0),
        ("provider", "tpu"),
        ("port", 70000),
        ("log_format", "xml"),
        ("max_queue_delay_us", -1),
    ],
)
def test_bad_settings_fail_at_start(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_defaults() -> None:
    s = Settings()
    assert s.model_repository == (ROOT / "service" / "model_repository").resolve()
    assert (s.host, s.port, s.default_model, s.provider) == ("127.0.0.1", 8000, "stn_photo", "auto")
    assert s.max_body_bytes == 20 * 1024 * 1024 and s.max_image_pixels == 50_000_000


def test_the_service_never_imports_torch_onnx_model_or_export() -> None:
    code = (
        "import sys, service.app, service.cli; "
        "bad = [m for m in ('torch', 'onnx', 'model', 'export') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from service.server import settings_to_env

    s = Settings(
        model_repository=tmp_path,
        api_token="abc",
        cors_origins=["http://x"],
        warmup=False,
        max_batch_size=3,
        log_format="json",
    )
    for k, v in settings_to_env(s).items():
        monkeypatch.setenv(k, v)
    t = Settings()
    assert t.token == "abc"
    assert t.model_dump(exclude={"api_token"}) == s.model_dump(exclude={"api_token"})


def test_json_log_lines() -> None:
    import json
    import logging

    from service.logs import JsonFormatter

    record = logging.LogRecord("service.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    out = json.loads(JsonFormatter().format(record))
    assert out["level"] == "warning" and out["logger"] == "service.x" and out["message"] == "hello world"
    assert out["time"].endswith("Z")


def test_cli_refuses_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    assert main(["--max-batch-size", "0"]) == 2
    assert "max_batch_size" in capsys.readouterr().err
    assert main(["--provider", "tpu"]) == 2
    assert "'auto', 'cuda' or 'cpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "STN_MAX_QUEUE_DELAY_US" in out and "--no-warmup" in out


def test_cli_flags_are_the_settings_and_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field of Settings is a flag (kebab-case, booleans as --x/--no-x); a flag beats STN_*."""
    from service.cli import build_parser, parse_settings

    monkeypatch.setenv("STN_PORT", "7001")
    monkeypatch.setenv("STN_WARMUP", "true")
    s = parse_settings(["--port", "7002", "--no-warmup", "--cors-origins", "http://a,http://b", "--api-token", "t"])
    assert (s.port, s.warmup, s.cors_origins, s.token) == (7002, False, ["http://a", "http://b"], "t")
    assert parse_settings([]).port == 7001
    help_text = build_parser().format_help()
    for name in Settings.model_fields:
        assert f"STN_{name.upper()}" in help_text


def test_the_server_freezes_its_start_up_heap_once_loaded(toy_repo: Path) -> None:
    """``freeze_gc`` (what stn-serve passes) moves the start-up objects out of the collector's reach once the
    models are loaded, so a full collection no longer stalls the inference thread; a plain app leaves the
    collector alone."""
    import gc

    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings(toy_repo, default_model="toy_affine"))) as c:
        wait_ready(c)
        assert gc.get_freeze_count() == 0
    try:
        with TestClient(create_app(make_settings(toy_repo, default_model="toy_affine"), freeze_gc=True)) as c:
            wait_ready(c)
            for _ in range(100):  # the freeze follows readiness on the event loop
                if gc.get_freeze_count() > 0:
                    break
                c.get("/v2/health/live")
            assert gc.get_freeze_count() > 10_000
            assert c.post("/v1/predict", content=png(pattern()), headers=PNG).status_code == 200
    finally:
        gc.unfreeze()


def test_serve_loads_each_model_once(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``stn-serve``'s start-up: the preflight's sessions are the ones the app serves (one load per model),
    and a model whose preflight load failed is reported with that error, not loaded again."""
    from service import runtime, server

    served = tmp_path / "repo"
    served.mkdir()
    for entry in repo.iterdir():
        (served / entry.name).symlink_to(entry.resolve())
    (served / "broken" / "1").mkdir(parents=True)
    (served / "broken" / "1" / "model.onnx").write_bytes(b"not onnx at all")
    loads: list[str] = []
    real_load = runtime.ModelRuntime.load

    def counting_load(self: runtime.ModelRuntime) -> None:
        loads.append(self.name)
        real_load(self)

    apps: list[Any] = []
    monkeypatch.setattr(runtime.ModelRuntime, "load", counting_load)
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.setattr(server, "configure_logging", lambda *a: None)
    assert server.serve(make_settings(served, default_model="toy_affine")) == 0
    (app,) = apps
    with TestClient(app) as c:
        c.portal.call(app.state.dataplane.wait_loaded)
        assert c.post("/v1/models/toy_affine/predict", content=png(pattern()), headers={"content-type": "image/png"}
                      ).status_code == 200
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
    assert not models["broken"]["ready"] and "protobuf" in models["broken"]["error"].lower()
    assert sorted(loads) == sorted(p.name for p in served.iterdir() if (p / "1" / "model.onnx").exists())
