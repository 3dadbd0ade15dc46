"""Helpers of the real-process reliability tests (and of ``bench/reliability.py``'s checks): raw loopback
HTTP for requests that misbehave on purpose, and what ``/proc`` and ``/metrics`` say about a server."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


def raw_request(
    url: str,
    head: bytes,
    body: bytes = b"",
    *,
    read: bool = True,
    close_after_s: float = 0.0,
    timeout: float = 10.0,
) -> bytes:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` on a new connection;
    return what comes back until the server closes or ``timeout`` (or nothing, with ``read=False``, closing
    ``close_after_s`` seconds after sending)."""
    with socket.create_connection(host_port(url), timeout=timeout) as s:
        try:
            s.sendall(head + b"\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):  # the server answered and closed before the end
            try:
                return s.recv(65536)
            except OSError:
                return b""
        if not read:
            time.sleep(close_after_s)
            return b""
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            data = b"".join(chunks)
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?i)content-length:\s*(\d+)", data[:head_end])
                if m and len(data) >= head_end + 4 + int(m.group(1)):
                    break
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else 0
