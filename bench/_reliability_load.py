"""The load side of ``bench/reliability.py``: payloads, a ``stn-serve`` process, what ``/proc`` and ``/metrics``
say about it, and an asyncio HTTP/1.1 load generator over raw loopback sockets (closed and open loop) that reads
and classifies every answer."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench._load import proc_cpu_s
from tests.utils.server import ServerProcess, start_stn_serve

ROOT = Path(__file__).resolve().parents[1]

# ---- payloads ---------------------------------------------------------------------------------------------


def digit_pngs(n: int, workdir: Path) -> list[bytes]:
    """Real distorted MNIST test digits as PNG (``bench/_digits.py``, in its own process: torch), or, without
    MNIST, synthetic strokes."""
    out = workdir / "digits"
    proc = subprocess.run(
        [sys.executable, "-m", "bench._digits", "--n", str(n), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    paths = sorted(out.glob("digit_*.png"))
    if proc.returncode == 0 and paths:
        return [p.read_bytes() for p in paths]
    print(f"(no MNIST digits: {proc.stderr.strip()[-200:]}; using synthetic strokes)")
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(n):
        img = np.zeros((42, 42), np.uint8)
        y0, x0 = rng.integers(8, 30, 2)
        img[y0 : y0 + 12, x0 : x0 + 3] = 255
        pngs.append(encode_png(img))
    return pngs


def encode_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def multipart(files: list[tuple[str, bytes]], boundary: str = "stnbench") -> tuple[bytes, str]:
    parts = b""
    for name, data in files:
        parts += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Kind:
    """One kind of request of the mix: the raw requests to cycle through, and the statuses it may get."""

    name: str
    requests: list[bytes]
    expect: tuple[int, ...]
    weight: float


def request_mix(pngs: list[bytes], model: str) -> list[Kind]:
    png = {"Content-Type": "image/png"}
    predict = [http_request("POST", "/v1/predict", p, png) for p in pngs]
    batches = []
    for i in range(0, len(pngs) - 3, 4):
        body, ctype = multipart([(f"{i + k}.png", pngs[i + k]) for k in range(4)])
        batches.append(http_request("POST", "/v1/predict/batch", body, {"Content-Type": ctype}))
    rectify = [http_request("POST", "/v1/rectify?size=64x64", p, png) for p in pngs[:16]]
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1, 1, 42, 42], "datatype": "FP32", "parameters": {"binary_data_size": 7056}}
            ]
        }
    ).encode()
    rng = np.random.default_rng(1)
    infer = []
    for _ in range(8):
        x = rng.normal(0, 1, (1, 1, 42, 42)).astype("<f4").tobytes()
        infer.append(
            http_request(
                "POST",
                f"/v2/models/{model}/infer",
                header + x,
                {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
            )
        )
    bad = [
        http_request("POST", "/v1/predict", pngs[0][: len(pngs[0]) // 2], png),  # truncated: 400
        http_request("POST", "/v1/predict", b"not an image", png),  # 400
        http_request("POST", "/v1/predict", pngs[0], {"Content-Type": "text/plain"}),  # 415
        http_request("POST", "/v1/models/nope/predict", pngs[0], png),  # 404
        http_request("POST", f"/v2/models/{model}/infer", b'{"inputs": []}', {"Content-Type": "application/json"}),
        http_request("POST", "/v1/predict", zlib_bomb(), png),  # 413
    ]
    return [
        Kind("v1 predict", predict, (200,), 0.80),
        Kind("v1 batch of 4", batches, (200,), 0.05),
        Kind("v1 rectify 64x64", rectify, (200,), 0.05),
        Kind("v2 infer (binary)", infer, (200,), 0.05),
        Kind("bad request", bad, (400, 404, 413, 415), 0.05),
    ]


def zlib_bomb() -> bytes:
    """A PNG declaring 50,000 x 50,000 pixels with a little deflate data (Pillow refuses it unread: 413)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 400_000, 9))


# ---- the server -------------------------------------------------------------------------------------------


def start_server(args: list[str], log: Path, pythonpath: str = "") -> ServerProcess:
    """``stn-serve`` with ``args`` in its own process, ready (``tests.utils.server``); ``stop()`` sends SIGTERM,
    waits and gives the exit status."""
    server = start_stn_serve(args, log, {"PYTHONPATH": pythonpath} if pythonpath else None)
    server.wait_http(timeout_s=120)
    return server


def fetch(port: int, method: str, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One blocking request on a new connection (readiness, metrics)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(http_request(method, path, headers={"Connection": "close"}))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_counts(pid: int) -> dict[str, int]:
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def gauge(metrics: str, name: str) -> float | None:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else None


def status_counts(metrics: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for m in re.finditer(r'^stn_requests_total\{route="[^"]*",status="(\d+)"\} (\S+)$', metrics, re.M):
        out[m.group(1)] += int(float(m.group(2)))
    return out


# ---- the load generator -----------------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection; ``send`` writes a request and reads one whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed = False
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bool]:
        """(status, has Retry-After)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        m = re.search(rb"\r\ncontent-length: *(\d+)", lower)
        if m:
            await self.reader.readexactly(int(m.group(1)))
        else:  # no length: the body runs to the close
            await self.reader.read()
            self.closed = True
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, b"\r\nretry-after:" in lower

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


@dataclass
class Outcome:
    kind: str
    scheduled: float  # when it was due (open loop) or sent (closed loop), seconds since the start
    latency: float  # seconds; -1 when no answer
    status: int  # 0: no answer (an error)
    retry_after: bool = False
    error: str = ""


@dataclass
class Sampler:
    """Samples the server every ``every_s``: RSS, CPU, fds, threads and its in-flight and queue gauges."""

    pid: int
    port: int
    every_s: float = 1.0
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            row: dict[str, Any] = {
                "t": round(time.monotonic() - t0, 2),
                "rss_kib": rss_kib(self.pid),
                "cpu_s": proc_cpu_s(self.pid),
            }
            row.update(proc_counts(self.pid))
            try:
                _, _, body = await asyncio.wait_for(loop.run_in_executor(None, fetch, self.port, "GET", "/metrics"), 3)
                text = body.decode()
                row["in_flight"] = gauge(text, "stn_requests_in_flight")
                row["queue_depth"] = gauge(text, "stn_queue_depth")
            except (OSError, TimeoutError, ValueError):
                row["in_flight"] = row["queue_depth"] = None
            self.samples.append(row)
            try:
                await asyncio.wait_for(stop.wait(), self.every_s)
            except TimeoutError:
                pass


def pick(kinds: list[Kind], rng: random.Random) -> tuple[Kind, bytes]:
    kind = rng.choices(kinds, weights=[k.weight for k in kinds])[0]
    return kind, kind.requests[rng.randrange(len(kind.requests))]


async def closed_loop(
    port: int,
    kinds: list[Kind],
    concurrency: int,
    *,
    total: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
) -> tuple[list[Outcome], float]:
    """``concurrency`` clients, each sending its next request when answered, for ``total`` requests or
    ``seconds``. Returns the outcomes and the wall time."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    t0 = time.monotonic()
    sent = 0

    async def client() -> None:
        nonlocal sent
        conn: Conn | None = None
        while True:
            if total is not None and sent >= total:
                break
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            sent += 1
            kind, raw = pick(kinds, rng)
            start = time.monotonic()
            try:
                if conn is None or conn.closed:
                    conn = await Conn.open(port)
                status, retry = await asyncio.wait_for(conn.send(raw), 60)
                outcomes.append(Outcome(kind.name, start - t0, time.monotonic() - start, status, retry))
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                outcomes.append(Outcome(kind.name, start - t0, -1.0, 0, error=type(exc).__name__))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return outcomes, time.monotonic() - t0


async def open_loop(
    port: int, kinds: list[Kind], phases: list[tuple[str, float, float]], *, max_connections: int, seed: int = 0
) -> tuple[list[Outcome], dict[str, tuple[float, float]], int]:
    """Arrivals on a clock: ``phases`` of (name, rate req/s, seconds), back to back. Each arrival takes an idle
    keep-alive connection or opens a new one (up to ``max_connections``; past that it is counted as not sent).
    Returns the outcomes, each phase's (start, end) time and the number of arrivals not sent."""
    rng = random.Random(seed)
    idle: list[Conn] = []
    busy = 0
    not_sent = 0
    outcomes: list[Outcome] = []
    tasks: dict[asyncio.Task[None], tuple[str, float]] = {}
    t0 = time.monotonic()
    spans: dict[str, tuple[float, float]] = {}

    def take_idle() -> Conn | None:
        # The most recently used first; a connection idle for a while may be past the server's keep-alive
        # timeout (uvicorn: 5 s), and a request sent on it would meet a close it never asked for.
        while idle:
            c = idle.pop()
            if not c.closed and time.monotonic() - c.last_used < 2.0:
                return c
            c.close()
        return None

    async def one(kind: Kind, raw: bytes, due: float, conn: Conn | None) -> None:
        nonlocal busy
        try:
            if conn is None:
                conn = await Conn.open(port)
            status, retry = await asyncio.wait_for(conn.send(raw), 60)
            outcomes.append(Outcome(kind.name, due, time.monotonic() - t0 - due, status, retry))
            if not conn.closed:
                conn.last_used = time.monotonic()
                idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            outcomes.append(Outcome(kind.name, due, -1.0, 0, error=type(exc).__name__))
            if conn is not None:
                conn.close()
        finally:
            busy -= 1

    start = 0.0
    for name, rate, seconds in phases:
        n = int(rate * seconds)
        spans[name] = (start, start + seconds)
        for i in range(n):
            due = start + i / rate
            delay = t0 + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = take_idle()
            if conn is None and busy >= max_connections:
                not_sent += 1
                continue
            busy += 1
            kind, raw = pick(kinds, rng)
            task = asyncio.create_task(one(kind, raw, due, conn))
            tasks[task] = (kind.name, due)
            task.add_done_callback(lambda t: tasks.pop(t, None))
        start += seconds
    if tasks:
        await asyncio.wait(list(tasks), timeout=90)
    for task, (kind_name, due) in list(tasks.items()):  # no answer within 90 s of the last arrival
        task.cancel()
        outcomes.append(Outcome(kind_name, due, -1.0, 0, error="no answer"))
    for c in idle:
        c.close()
    return outcomes, spans, not_sent


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    a = np.asarray(values) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def tally(outcomes: list[Outcome], kinds: list[Kind]) -> dict[str, Any]:
    """Counts by status and kind; wrong answers (a status a kind must not get) and requests lost."""
    expect = {k.name: k.expect for k in kinds}
    by_status = Counter(o.status for o in outcomes)
    errors = Counter(o.error for o in outcomes if o.status == 0)
    wrong = Counter(
        f"{o.kind} -> {o.status}" for o in outcomes if o.status and o.status not in expect[o.kind] and o.status != 503
    )
    answered = sum(n for s, n in by_status.items() if s != 0)
    return {
        "sent": len(outcomes),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "server_errors_5xx": sum(n for s, n in by_status.items() if s >= 500 and s != 503),
        "shed_503": by_status.get(503, 0),
        "shed_503_without_retry_after": sum(1 for o in outcomes if o.status == 503 and not o.retry_after),
        "wrong_status": dict(wrong),
        "errors": dict(errors),
        "lost": len(outcomes) - answered,
    }
