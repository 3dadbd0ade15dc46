"""Against a real ``stn-serve`` process on a free loopback port: every route over the wire, a stock
``tritonclient.http`` client, bad input, batching under 32 concurrent clients, and SIGTERM draining."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.utils.metrics import metric
from tests.utils.payloads import multipart_files, pattern, png
from tests.utils.server import ROOT, ServerProcess, free_port, serve_args, stn_serve
from tests.utils.toys import BUNDLED, bundled_has, default_test_model

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = serve_args(repo, default_model=default_test_model(), max_batch_size=32, max_queue_delay_us=3000,
                      log_format="json")
    with stn_serve(tmp_path_factory.mktemp("proc"), *args) as s:
        yield s


def test_predict_rectify_and_batch_over_the_wire(server: ServerProcess) -> None:
    body = png(pattern())
    with httpx.Client(base_url=server.url, timeout=30) as c:
        p = c.post("/v1/models/toy_affine/predict?rectified=true", content=body, headers=PNG).json()
        assert p["model"] == "toy_affine" and p["rectified"]
        assert c.post(
            "/v1/models/toy_affine/predict", files={"image": ("a.png", body, "image/png")}
        ).json() == {**p, "rectified": None}
        res = c.post("/v1/models/toy_affine/predict/batch", files=multipart_files([("a", body), ("b", b"x")]))
        assert [x["status"] for x in res.json()["results"]] == [200, 400]
        r = c.post("/v1/models/toy_affine/rectify?size=256x256", content=body, headers=PNG)
        assert r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
        assert c.get("/").headers["content-type"].startswith("text/html")
        assert c.get("/openapi.json").json()["info"]["title"] == "stn-serve"


def test_real_digit_through_every_predict_route(
    server: ServerProcess, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    if not bundled_has("stn_rts"):
        pytest.skip("the trained model service/model_repository/stn_rts is not exported yet")
    sess = ort.InferenceSession(
        str(BUNDLED / "stn_rts" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    arr, y = digits
    logits = sess.run(
        ["logits"], {"image": ((arr[:32].astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None]}
    )[0]
    i = next(i for i in range(32) if logits[i].argmax() == y[i])
    label = str(int(y[i]))
    photo = png(Image.fromarray(255 - arr[i]).resize((500, 500), Image.Resampling.BICUBIC))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for body in (png(arr[i]), photo):
            assert c.post("/v1/predict", content=body, headers=PNG).json()["label"] == label
            assert c.post("/v1/models/stn_rts/predict", content=body, headers=PNG).json()["label"] == label
            assert (
                c.post("/v1/predict", files={"image": ("d.png", body, "image/png")}).json()["label"] == label
            )
            for url in ("/v1/predict/batch", "/v1/models/stn_rts/predict/batch"):
                res = c.post(url, files=multipart_files([("d.png", body)])).json()["results"]
                assert res[0]["prediction"]["label"] == label


def test_stock_tritonclient_binary_and_json(server: ServerProcess, repo: Path) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("toy_affine")
    md = client.get_model_metadata("toy_affine")
    assert md["inputs"][0]["shape"] == [-1, 1, 42, 42] and md["platform"] == "onnxruntime_onnx"
    x = np.random.default_rng(3).normal(0, 1, (4, 1, 42, 42)).astype(np.float32)
    sess = ort.InferenceSession(
        str(repo / "toy_affine" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    ref = dict(
        zip(
            ["logits", "theta", "rectified"],
            sess.run(["logits", "theta", "rectified"], {"image": x}),
            strict=True,
        )
    )
    for binary in (True, False):
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ref]
        for requested in (outs, None):  # named outputs, and none named (all, binary_data_output)
            result = client.infer("toy_affine", [inp], outputs=requested)
            for name, want in ref.items():
                np.testing.assert_allclose(result.as_numpy(name), want, atol=1e-5)
    client.close()


def test_tritonclient_sees_protocol_errors(server: ServerProcess) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    bad_shape = httpclient.InferInput("image", [1, 1, 28, 28], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException, match="shape") as exc:
        client.infer("toy_affine", [bad_shape])
    assert exc.value.status() == "400"
    bad_type = httpclient.InferInput("image", [1, 1, 42, 42], "INT32")
    bad_type.set_data_from_numpy(np.zeros((1, 1, 42, 42), np.int32))
    with pytest.raises(InferenceServerException, match="datatype"):
        client.infer("toy_affine", [bad_type])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    assert not client.is_model_ready("nope")
    client.close()


def test_bad_input_over_the_wire_then_good(server: ServerProcess) -> None:
    good = png(pattern())
    truncated = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)))[
        :5000
    ]
    huge = png(Image.new("L", (8200, 6200)))  # 51 Mpx, a small file
    with httpx.Client(base_url=server.url, timeout=60) as c:
        cases = [
            (c.post("/v1/predict", content=b"", headers=PNG), 400),
            (c.post("/v1/predict", content=b"plain text", headers={"content-type": "text/plain"}), 415),
            (c.post("/v1/predict", content=b"plain text", headers=PNG), 400),
            (c.post("/v1/predict", content=truncated, headers=PNG), 400),
            (c.post("/v1/predict", content=b"\0" * (20 * 1024 * 1024 + 1), headers=PNG), 413),
            (c.post("/v1/predict", content=huge, headers=PNG), 413),
            (c.post("/v1/models/nope/predict", content=good, headers=PNG), 404),
            (
                c.post("/v1/predict/batch", files=multipart_files([(f"{i}.png", good) for i in range(65)])),
                400,  # more parts than the schema's maxItems
            ),
            (
                c.post(
                    "/v2/models/toy_affine/infer",
                    json={"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
                ),
                400,
            ),
        ]
        for r, status in cases:
            assert r.status_code == status, r.text
            assert "error" in r.json()
            assert c.post("/v1/models/toy_affine/predict", content=good, headers=PNG).status_code == 200
    assert server.proc.poll() is None


def batch_counts(metrics: str, model: str) -> tuple[float, float]:
    """(batches of size 1, all batches) from the stn_batch_size histogram."""
    return metric(metrics, "stn_batch_size_bucket", model=model, le="1.0"), metric(
        metrics, "stn_batch_size_count", model=model)


def test_concurrent_requests_are_batched(server: ServerProcess) -> None:
    body = png(pattern())
    before = batch_counts(httpx.get(server.url + "/metrics").text, "toy_projective")
    barrier = threading.Barrier(32)

    def client(_: int) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            barrier.wait()
            return [
                c.post("/v1/models/toy_projective/predict", content=body, headers=PNG).status_code
                for _ in range(4)
            ]

    with ThreadPoolExecutor(32) as pool:
        statuses = [s for ss in pool.map(client, range(32)) for s in ss]
    assert statuses == [200] * 128
    ones, total = batch_counts(httpx.get(server.url + "/metrics").text, "toy_projective")
    runs, single = total - before[1], ones - before[0]
    assert runs < 128 and single < runs, f"{runs} runs for 128 requests, {single} of them single"
    text = httpx.get(server.url + "/metrics").text
    assert 'stn_requests_total{route="/v1/models/{name}/predict",status="200"}' in text
    assert "stn_queue_wait_seconds_count" in text and "stn_inference_seconds_count" in text


def test_json_logs(server: ServerProcess) -> None:
    lines = [ln for ln in server.logs().splitlines() if ln.startswith("{")]
    assert lines, server.logs()
    records = [json.loads(ln) for ln in lines]
    assert any("ready" in r["message"] for r in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])


def test_sigterm_drains_in_flight_requests(toy_repo: Path, tmp_path: Path) -> None:
    # A long queue delay holds eight requests in the batch queue when SIGTERM arrives: the batcher waits
    # because the server holds a ninth, whose body is still coming (sent in two halves, the second after
    # the signal). All nine are answered.
    with stn_serve(tmp_path, *serve_args(toy_repo, max_batch_size=64, max_queue_delay_us=1_500_000)) as s:
        body = png(pattern())
        results: list[int] = []

        def one(_: int) -> None:
            r = httpx.post(s.url + "/v1/models/toy_affine/predict", content=body, headers=PNG, timeout=30)
            results.append(r.status_code)

        signalled = threading.Event()
        slow_answer: list[bytes] = []

        def slow() -> None:
            host, port = s.url.removeprefix("http://").split(":")
            head = (
                f"POST /v1/models/toy_affine/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            with socket.create_connection((host, int(port)), timeout=30) as conn:
                half = len(body) // 2
                conn.sendall(head + body[:half])
                signalled.wait(timeout=30)
                time.sleep(0.2)
                conn.sendall(body[half:])
                while chunk := conn.recv(65536):
                    slow_answer.append(chunk)

        # The ninth first, and held by the server (mid-body) before the eight arrive: otherwise, on a busy
        # machine, the eight could all be queued with nothing else held, and run at once.
        threads = [threading.Thread(target=slow)]
        threads[0].start()
        deadline = time.monotonic() + 10
        while "stn_requests_in_flight 1.0" not in httpx.get(s.url + "/metrics").text:
            assert time.monotonic() < deadline, "the mid-body request never reached the server"
            time.sleep(0.02)
        threads += [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads[1:]:
            t.start()
        time.sleep(0.6)
        assert results == []  # all still in flight
        s.proc.send_signal(signal.SIGTERM)
        signalled.set()
        for t in threads:
            t.join(timeout=30)
        assert results == [200] * 8
        assert b"".join(slow_answer).startswith(b"HTTP/1.1 200 "), slow_answer
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit is "killed by SIGTERM".
        assert s.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "drained" in s.logs()


def test_stn_serve_without_arguments_serves_the_bundled_models(tmp_path: Path) -> None:
    if not (bundled_has("stn_rts") and bundled_has("stn_tc") and bundled_has("stn_photo")):
        pytest.skip("the trained models are not exported to service/model_repository yet")
    exe = Path(sys.executable).with_name("stn-serve")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "service.cli"]
    env = {"STN_PORT": str(free_port()), "STN_PROVIDER": "cpu"}
    if BUNDLED != ROOT / "service" / "model_repository":  # STN_TEST_MODEL_REPOSITORY stands in for it
        env["STN_MODEL_REPOSITORY"] = str(BUNDLED)
    with stn_serve(tmp_path, command=command, env=env) as s:
        models = httpx.get(s.url + "/v1/models").json()
        assert models["default_model"] == "stn_photo"
        assert {"stn_photo", "stn_rts", "stn_tc"} <= {m["name"] for m in models["models"]}


def test_several_workers_with_a_token(toy_repo: Path, tmp_path: Path) -> None:
    with stn_serve(tmp_path, *serve_args(toy_repo, workers=2, api_token="s3cret", default_model="toy_affine")) as s:
        # Each worker loads its own models: wait until every connection finds a ready one.
        deadline, streak = time.monotonic() + 60, 0
        while streak < 8 and time.monotonic() < deadline:
            streak = streak + 1 if httpx.get(s.url + "/v2/health/ready").status_code == 200 else 0
            time.sleep(0.05)
        body = png(pattern())
        assert httpx.post(s.url + "/v1/predict", content=body, headers=PNG).status_code == 401
        auth = {**PNG, "Authorization": "Bearer s3cret"}
        for _ in range(4):
            assert (
                httpx.post(s.url + "/v1/predict", content=body, headers=auth, timeout=30).status_code == 200
            )


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread niceness from Linux's /proc")
def test_inference_threads_run_at_lower_priority(toy_repo: Path, tmp_path: Path) -> None:
    """The batcher's thread and onnxruntime's intra-op threads (created with the session, on that thread)
    run at STN_INFERENCE_NICE above the event loop's niceness; the event loop keeps the server's."""
    args = ("--model-repository", str(toy_repo), "--provider", "cpu", "--default-model", "toy_affine")
    with stn_serve(tmp_path, *args, "--intra-op-threads", "2", "--inference-nice", "7") as s:
        nice = {}
        for task in Path(f"/proc/{s.proc.pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            nice[int(task.name)] = int(fields[16])  # field 19 of stat, counted after "(comm)"
        base = nice[s.proc.pid]  # the main thread: the event loop
        lowered = [t for t, n in nice.items() if n == min(base + 7, 19)]
        # Three toy models: per model one batcher thread and one onnxruntime pool thread (2 intra-op threads).
        assert len(lowered) >= 6, nice
        assert httpx.post(s.url + "/v1/predict", content=png(pattern()), headers=PNG).status_code == 200

