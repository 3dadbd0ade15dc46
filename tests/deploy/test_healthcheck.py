"""deploy/healthcheck.py, the image's HEALTHCHECK: exit 0 on 200 from /v2/health/ready, 1 otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.utils.deploy import HEALTHCHECK, READY


class _Handler(BaseHTTPRequestHandler):
    status = 200
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("H", (_Handler,), {"status": 200, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield httpd.server_address[1], handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STN_")} | env
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=full, capture_output=True, text=True, timeout=30)


def test_ready_is_healthy(server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    proc = _run({"STN_PORT": str(port)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert handler.seen == [READY]


def test_loading_is_unhealthy(server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    handler.status = 503
    proc = _run({"STN_PORT": str(port)})
    assert proc.returncode == 1
    assert "503" in proc.stdout


def test_nothing_listening_is_unhealthy() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run({"STN_PORT": str(port)})
    assert proc.returncode == 1


def test_url_override(server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    proc = _run({"STN_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/custom"})
    assert proc.returncode == 0
    assert handler.seen == ["/custom"]
