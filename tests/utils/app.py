"""In-process apps for the tests: settings over a repository, readiness."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.settings import Settings


def make_settings(repository: Path, **kw: object) -> Settings:
    defaults: dict[str, object] = {
        "model_repository": repository,
        "provider": "cpu",
        "intra_op_threads": 1,
        "max_batch_size": 8,
        "max_queue_delay_us": 2000,
    }
    defaults.update(kw)
    return Settings(**defaults)  # type: ignore[arg-type]


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout}s: {client.get('/v2/health/ready').json()}")
