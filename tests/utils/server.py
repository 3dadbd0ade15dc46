"""Server processes for the tests and the benchmarks: one way to start one, wait for it, and stop it.

``ServerProcess`` runs a command in its own process group with its output in a log file; ``stn_serve``
(a context manager) starts ``stn-serve`` on a free loopback port and waits until it is ready (by default
``/v2/health/ready`` answers 200), and always stops it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STN_SERVE = [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


class ServerProcess:
    """``cmd`` in its own process group, stdout and stderr in ``log``; ``url`` where it serves, if known."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = ROOT,
                 url: str | None = None) -> None:
        self.cmd, self.log, self.url = cmd, log, url or ""
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-n:])

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = 120.0) -> None:
        """Until ``ready()``; raises with the log's tail when the process exits first or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[-1]}: exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_http(self, path: str = "/v2/health/ready", timeout_s: float = 120.0) -> None:
        """Until ``GET url + path`` answers 200."""
        self.wait_until(lambda: http_status(self.url + path) == 200, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM to the process group, then SIGKILL past ``timeout_s``; the exit status."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.proc.wait()


def serve_args(repository: Path, **flags: object) -> list[str]:
    """``stn-serve`` arguments for the tests: ``repository``, the CPU provider and one intra-op thread unless
    ``flags`` say otherwise, then every flag (``max_batch_size=32`` -> ``--max-batch-size 32``)."""
    merged: dict[str, object] = {"model_repository": repository, "provider": "cpu", "intra_op_threads": 1, **flags}
    args: list[str] = []
    for name, value in merged.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def start_stn_serve(args: list[str], log: Path, env: dict[str, str] | None = None,
                    command: list[str] | None = None, cwd: Path | None = ROOT) -> ServerProcess:
    """``stn-serve`` (``command``, default ``python -m service.cli``) with ``args`` on a free port (or
    ``STN_PORT`` when ``env`` sets it); one intra-op OpenMP thread unless ``env`` says otherwise."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = (command or STN_SERVE) + list(args)
    if env is not None and "STN_PORT" in env:
        port = int(env["STN_PORT"])
    else:
        port = free_port()
        cmd += ["--port", str(port)]
    return ServerProcess(cmd, log, full_env, cwd, url=f"http://127.0.0.1:{port}")


@contextmanager
def stn_serve(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    timeout: float = 90.0,
    ready: Callable[[ServerProcess], bool] | None = None,
) -> Iterator[ServerProcess]:
    """Start stn-serve, wait until ``ready(server)`` (default: /v2/health/ready answers 200), always stop it."""
    server = start_stn_serve(list(args), tmp_path / f"stn-serve-{time.monotonic_ns()}.log", env, command)
    try:
        if ready is None:
            server.wait_http(timeout_s=timeout)
        else:
            server.wait_until(lambda: ready(server), timeout)
        yield server
    finally:
        server.stop()
