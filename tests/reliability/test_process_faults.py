"""Faults and load against real ``stn-serve`` processes on free loopback ports.

- Start-up: a missing or corrupt model file (or repository) stops the process before it binds its port,
  with one error line, no traceback, exit status 1; one bad model among several is reported not ready
  while the others serve.
- SIGTERM under load: every request sent before the signal is answered 200; the process drains and exits.
- Clients that disconnect mid-request (mid-body, after the body, before any byte) cost nothing lasting:
  no 5xx, no traceback, in-flight count and queue back to 0, file descriptors and memory back where they were.
- Overload: bursts far past the limits get 503 + ``Retry-After`` at once, every request gets an answer,
  memory stays flat over repeated bursts, and the next requests succeed at once.
- Malformed HTTP (smuggling attempts, huge headers, a body declaring 10 GB): a 4xx at once, never a 5xx.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.runtime import cuda_available
from tests.utils import server as svc
from tests.utils.metrics import metric, server_errors

from .rel_cases import digit, encode
from .rel_proc import open_fds, raw_request, rss_kib, status_of
from .rel_tally import record

ROOT = svc.ROOT
GOOD = encode(Image.fromarray(digit(42)), "PNG")
PNG = {"content-type": "image/png"}
SERVE = [sys.executable, "-m", "service.cli"]
BASE_ARGS = ("--provider", "cpu", "--intra-op-threads", "1")


def predict_head(path: str, length: int, content_type: str = "image/png") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {length}"
    return head.encode()


# ---- start-up faults ------------------------------------------------------------------------------------


def _model(repo: Path, name: str, content: bytes | Path | None) -> None:
    d = repo / name / "1"
    d.mkdir(parents=True)
    if isinstance(content, Path):
        (d / "model.onnx").symlink_to(content)
    elif content is not None:
        (d / "model.onnx").write_bytes(content)


def _start_fails(args: list[str], timeout: float = 90) -> tuple[int, str, float]:
    t0 = time.monotonic()
    p = subprocess.run(SERVE + args, cwd=ROOT, capture_output=True, timeout=timeout, env=_env())
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace"), time.monotonic() - t0


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


FAULTS = {
    "missing repository": (lambda tmp, good: tmp / "nowhere", "does not exist"),
    "empty repository": (lambda tmp, good: tmp, "holds no"),
    "version folder without model.onnx": (lambda tmp, good: (_model(tmp, "m", None), tmp)[1], "no model in"),
    "empty model file": (lambda tmp, good: (_model(tmp, "m", b""), tmp)[1], "no model in"),
    "truncated model file": (lambda tmp, good: (_model(tmp, "m", good.read_bytes()[:4000]), tmp)[1], "protobuf"),
    "random bytes as model": (lambda tmp, good: (_model(tmp, "m", bytes(range(256)) * 64), tmp)[1], "no model in"),
    "dangling symlink": (lambda tmp, good: (_model(tmp, "m", tmp / "gone.onnx"), tmp)[1], "no model in"),
    "an image as model": (lambda tmp, good: (_model(tmp, "m", GOOD), tmp)[1], "no model in"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_startup_fault_is_one_clear_error_and_exit_1(fault: str, tmp_path: Path, rel_repo: Path) -> None:
    make, fragment = FAULTS[fault]
    repo = make(tmp_path, rel_repo / "toy_affine" / "1" / "model.onnx")
    port = svc.free_port()
    code, out, seconds = _start_fails(["--model-repository", str(repo), "--port", str(port), *BASE_ARGS])
    record("start-up faults", None, fault)
    assert code == 1, f"{fault}: exit {code}\n{out}"
    errors = [ln for ln in out.splitlines() if " ERROR " in ln or ln.startswith("ERROR")]
    assert len(errors) == 1, out
    assert "cannot start" in errors[0] and fragment.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in out and "Uvicorn running" not in out, out
    assert seconds < 60


def test_cuda_provider_without_a_gpu_is_one_clear_error(tmp_path: Path, rel_repo: Path) -> None:
    ok, _ = cuda_available()
    if ok:
        pytest.skip("this machine has a working CUDA provider")
    code, out, _ = _start_fails(
        ["--model-repository", str(rel_repo), "--port", str(svc.free_port()), "--provider", "cuda"]
    )
    assert code == 1 and "provider cuda requested" in out and "Traceback" not in out, out


def test_invalid_setting_is_exit_2(tmp_path: Path, rel_repo: Path) -> None:
    code, out, _ = _start_fails(["--model-repository", str(rel_repo), "--max-queue-size", "0"])
    assert code == 2 and "max_queue_size" in out, out


def test_one_bad_model_among_several(tmp_path: Path, rel_repo: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "toy_affine").symlink_to(rel_repo / "toy_affine")
    _model(repo, "broken", b"not onnx at all")
    _model(repo, "missing", None)
    with _serving_unready(tmp_path, repo) as s:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.post("/v1/models/toy_affine/predict", content=GOOD, headers=PNG).status_code == 200
            assert c.post("/v1/predict", content=GOOD, headers=PNG).status_code == 200
            for name in ("broken", "missing"):
                r = c.post(f"/v1/models/{name}/predict", content=GOOD, headers=PNG)
                assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                assert f"model '{name}' is not ready" in r.json()["error"]
                assert c.get(f"/v2/models/{name}/ready").status_code == 503
            models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
            assert models["toy_affine"]["ready"] and not models["broken"]["ready"] and not models["missing"]["ready"]
            assert "protobuf" in models["broken"]["error"].lower()
            ready = c.get("/v2/health/ready")
            assert ready.status_code == 503 and "broken" in ready.text and "missing" in ready.text
            # Clients learn which model is bad, not where the server keeps its files.
            assert str(repo) not in ready.text and str(repo) not in c.get("/v1/models").text
        logs = s.logs()
        assert str(repo / "broken") in logs and "Traceback" not in logs


def _all_loaded_or_failed(server: svc.ServerProcess) -> bool:
    try:
        models = httpx.get(server.url + "/v1/models", timeout=2).json()["models"]
    except (httpx.TransportError, KeyError, json.JSONDecodeError):
        return False
    return all(m["ready"] or m["error"] for m in models)


def _serving_unready(tmp_path: Path, repo: Path) -> AbstractContextManager[svc.ServerProcess]:
    """``stn-serve`` waited for until every model has loaded or failed (a bad model keeps it unready)."""
    return svc.stn_serve(tmp_path, "--model-repository", str(repo), "--default-model", "toy_affine", *BASE_ARGS,
                         ready=_all_loaded_or_failed)


# ---- SIGTERM under load -----------------------------------------------------------------------------------


def test_sigterm_under_load_answers_everything_sent_before_it(tmp_path: Path, rel_repo: Path) -> None:
    # A 200 ms batch delay keeps a batch's worth of requests in flight at any moment.
    args = ("--model-repository", str(rel_repo), "--default-model", "toy_affine", *BASE_ARGS)
    with svc.stn_serve(tmp_path, *args, "--max-batch-size", "64", "--max-queue-delay-us", "200000") as s:
        stop = threading.Event()
        outcomes: list[tuple[float, str]] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/v1/predict", content=GOOD, headers=PNG)
                        what = str(r.status_code)
                    except httpx.HTTPError as exc:
                        what = type(exc).__name__
                    with lock:
                        outcomes.append((time.monotonic(), what))

        workers = [threading.Thread(target=client) for _ in range(16)]
        for t in workers:
            t.start()
        deadline = time.monotonic() + 60
        while len(outcomes) < 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()  # no request is sent after the signal
        t_signal = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        for t in workers:
            t.join(timeout=60)
        code = s.proc.wait(timeout=60)
        for _, what in outcomes:
            record("SIGTERM under load", int(what) if what.isdigit() else 599, what)
        counts = Counter(what for _, what in outcomes)
        assert counts == Counter({"200": len(outcomes)}), counts
        after = sum(1 for t, _ in outcomes if t > t_signal)
        assert after >= 8, f"only {after} requests were in flight at SIGTERM"
        with pytest.raises(httpx.ConnectError):
            httpx.post(s.url + "/v1/predict", content=GOOD, headers=PNG, timeout=5)
        assert code in (0, -signal.SIGTERM)
        assert "drained" in s.logs() and "Traceback" not in s.logs()


# ---- clients that go away --------------------------------------------------------------------------------


def test_disconnecting_clients_cost_nothing_lasting(tmp_path: Path, rel_repo: Path) -> None:
    args = ("--model-repository", str(rel_repo), "--default-model", "toy_affine", *BASE_ARGS)
    with svc.stn_serve(tmp_path, *args, "--max-queue-delay-us", "100000") as s:
        pid = s.proc.pid
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for _ in range(30):  # warm up: allocator, thread pools
                assert c.post("/v1/predict", content=GOOD, headers=PNG).status_code == 200
        time.sleep(0.5)
        fds0, rss0 = open_fds(pid), rss_kib(pid)
        url = "/v1/predict"
        ways = {
            "mid-body": lambda: raw_request(s.url, predict_head(url, 50_000), GOOD[:1000], read=False),
            "after the body, before the answer": lambda: raw_request(
                s.url, predict_head(url, len(GOOD)), GOOD, read=False
            ),
            "after the headers": lambda: raw_request(s.url, predict_head(url, len(GOOD)), read=False),
            "slowly, mid-body": lambda: raw_request(
                s.url, predict_head(url, 50_000), GOOD[:500], read=False, close_after_s=0.2
            ),
            "mid-multipart": lambda: raw_request(
                s.url,
                predict_head(url, 90_000, "multipart/form-data; boundary=b"),
                b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + GOOD[:800],
                read=False,
            ),
            "v2 mid-body": lambda: raw_request(
                s.url,
                b"POST /v2/models/toy_affine/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 9000",
                b'{"inputs": [',
                read=False,
            ),
        }
        with ThreadPoolExecutor(8) as pool:
            for _ in range(3):
                list(pool.map(lambda f: f(), [way for way in ways.values() for _ in range(10)]))
        for way in ways:
            for _ in range(30):
                record("client disconnects", 499, way)
        time.sleep(1.5)  # the abandoned requests finish (or are dropped) server-side
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for _ in range(10):
                assert c.post("/v1/predict", content=GOOD, headers=PNG).status_code == 200
            text = c.get("/metrics").text
        assert server_errors(text) == 0, [ln for ln in text.splitlines() if 'status="5' in ln]
        assert metric(text, "stn_requests_in_flight") == 0
        assert metric(text, "stn_queue_depth") == 0
        assert metric(text, "stn_requests_total", status="499") >= 100
        fds1, rss1 = open_fds(pid), rss_kib(pid)
        assert fds1 <= fds0 + 2, (fds0, fds1)
        assert rss1 - rss0 < 20 * 1024, f"RSS {rss0} -> {rss1} KiB"
        logs = s.logs()
        assert "Traceback" not in logs and "unhandled" not in logs, logs[-3000:]


PROTOCOL_CASES: dict[str, tuple[bytes, bytes]] = {
    "garbage request line": (b"HELLO THERE", b""),
    "HTTP/0.9": (b"GET /", b""),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM", b""),
    "no Host": (b"GET /v2/health/live HTTP/1.1", b""),
    "NUL in the path": (b"GET /v2/health/\x00live HTTP/1.1\r\nHost: x", b""),
    "5 MB header": (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5_000_000, b""),
    "5000 headers": (
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(b"X-%d: y" % i for i in range(5000)),
        b"",
    ),
    "100 kB path": (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x", b""),
    "unknown method": (b"FOO /v1/predict HTTP/1.1\r\nHost: x", b""),
    "negative Content-Length": (predict_head("/v1/predict", -5), b"abcd"),
    "two Content-Lengths": (predict_head("/v1/predict", 4) + b"\r\nContent-Length: 5", b"abcd"),
    "Content-Length and chunked (smuggling)": (
        predict_head("/v1/predict", 4) + b"\r\nTransfer-Encoding: chunked",
        b"zz\r\nabcd\r\n0\r\n\r\n",
    ),
    "bad chunk size": (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked",
        b"zz\r\nabcd\r\n",
    ),
    "10 GB declared body": (predict_head("/v1/predict", 10 * 1024**3), b"\x89PNG" + b"\0" * 1000),
}


# Well-formed if odd: an answer (any but 5xx) is right. httptools (llhttp) reads a bare "GET /" as an
# HTTP/0.9 request and answers it (h11 refuses it with 400); either is harmless.
VALID_BUT_ODD = {"5000 headers", "5 MB header", "HTTP/0.9"}


def test_protocol_level_hostile_requests(tmp_path: Path, rel_repo: Path) -> None:
    """Malformed HTTP, smuggling attempts, huge headers and a 10 GB declared body: a 4xx (or a closed
    connection) at once, never a 5xx, and the server keeps serving."""
    args = ("--model-repository", str(rel_repo), "--default-model", "toy_affine", *BASE_ARGS)
    with svc.stn_serve(tmp_path, *args) as s:
        pid = s.proc.pid
        rss0 = rss_kib(pid)
        for name, (head, body) in PROTOCOL_CASES.items():
            t0 = time.monotonic()
            out = raw_request(s.url, head, body, timeout=10)
            status = status_of(out)
            record("protocol-level requests", status or None, name)
            assert status < 500, f"{name}: {out[:200]!r}"  # 0: closed without an answer
            if name not in VALID_BUT_ODD:
                assert status == 0 or 400 <= status < 500, f"{name}: {out[:200]!r}"
            assert time.monotonic() - t0 < 5, name
            if name == "10 GB declared body":
                assert status == 413 and b"over the limit" in out, out[:300]
            assert httpx.post(s.url + "/v1/predict", content=GOOD, headers=PNG, timeout=30).status_code == 200, name
        assert rss_kib(pid) - rss0 < 30 * 1024, "the 5 MB header stayed in memory"
        assert "Traceback" not in s.logs()


# ---- overload ---------------------------------------------------------------------------------------------


def test_overload_sheds_with_503_and_recovers_at_once(tmp_path: Path, rel_repo: Path) -> None:
    # Tight limits (8 requests in flight, 4 queued) and a 50 ms batch delay: a burst of 64 is 8x too many.
    args = ("--model-repository", str(rel_repo), "--default-model", "toy_affine", *BASE_ARGS)
    limits = ("--max-concurrent-requests", "8", "--max-queue-size", "4", "--max-batch-size", "4")
    with svc.stn_serve(tmp_path, *args, *limits, "--max-queue-delay-us", "50000") as s:
        pid = s.proc.pid

        def burst(n: int = 64) -> Counter[str]:
            barrier = threading.Barrier(n)

            def one(_: int) -> str:
                with httpx.Client(base_url=s.url, timeout=30) as c:
                    barrier.wait()
                    try:
                        r = c.post("/v1/predict", content=GOOD, headers=PNG)
                    except httpx.HTTPError as exc:
                        return type(exc).__name__
                    record("overload bursts", r.status_code, allowed_5xx=(503,))
                    if r.status_code == 503:
                        assert r.headers.get("retry-after") == "1", r.headers
                        assert "overloaded" in r.json()["error"], r.text
                    return str(r.status_code)

            with ThreadPoolExecutor(n) as pool:
                return Counter(pool.map(one, range(n)))

        first = burst()
        time.sleep(0.5)
        rss0 = rss_kib(pid)
        totals: Counter[str] = Counter(first)
        for _ in range(6):
            totals += burst()
        rss1 = rss_kib(pid)
        assert set(totals) <= {"200", "503"}, totals  # every request answered: nothing lost
        assert totals["503"] > 0 and totals["200"] > 0, totals
        # Recovery: the very next requests are served, promptly.
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for _ in range(5):
                t0 = time.monotonic()
                assert c.post("/v1/predict", content=GOOD, headers=PNG).status_code == 200
                assert time.monotonic() - t0 < 2.0
            text = c.get("/metrics").text
        assert metric(text, "stn_requests_in_flight") == 0 and metric(text, "stn_queue_depth") == 0
        assert server_errors(text) == 0
        assert rss1 <= rss0 * 1.10 + 2048, f"RSS {rss0} -> {rss1} KiB over 6 bursts"
        logs = s.logs()
        assert "Traceback" not in logs
        # One summary line per 10 s and source (admission, batch queue), not one per refusal.
        assert logs.count("shedding load") <= 6 < totals["503"], (logs.count("shedding load"), totals)


def test_stn_serve_script_is_what_the_tests_run() -> None:
    """The console script is a thin front over ``service.cli:main`` (what ``-m service.cli`` runs)."""
    exe = Path(sys.executable).with_name("stn-serve")
    if not exe.exists() or shutil.which(str(exe)) is None:
        pytest.skip("stn-serve is not installed in this environment")
    assert "service.cli" in exe.read_text(errors="replace")
