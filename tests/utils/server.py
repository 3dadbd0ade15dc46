"""A real ``stn-serve`` process for the tests: started on a free loopback port, ready when
``/v2/health/ready`` answers 200, always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def stn_serve(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    timeout: float = 90.0,
) -> Iterator[Server]:
    """Start stn-serve on a free port, wait until /v2/health/ready, always stop it."""
    port = free_port()
    log = tmp_path / f"stn-serve-{port}.log"
    cmd = (command or [sys.executable, "-m", "service.cli"]) + list(args)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if env is None or "STN_PORT" not in env:
        cmd += ["--port", str(port)]
    else:
        port = int(env["STN_PORT"])
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"stn-serve exited with {proc.returncode}:\n{server.logs()}")
            try:
                if httpx.get(server.url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"stn-serve not ready after {timeout}s:\n{server.logs()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
