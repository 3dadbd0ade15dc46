"""Fixtures of the reliability tests: a small model repository and an app with small limits; at the end of
the run, the tally of hostile cases tried and of the 5xx answers seen (which must be 0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app

from .rel_support import SMALL_LIMITS, TOY_THETA, export_toy, make_settings, wait_ready
from .rel_tally import SERVER_ERRORS, STATUSES, TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    tr = terminalreporter
    tr.section("reliability: hostile cases tried")
    for kind, n in sorted(TALLY.items()):
        tr.write_line(f"{kind:44s} {n:6d}")
    tr.write_line(f"{'total':44s} {sum(TALLY.values()):6d}")
    tr.write_line("answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(STATUSES.items())))
    tr.write_line(f"{'5xx answers seen (503 shedding aside)':44s} {len(SERVER_ERRORS):6d}")
    for line in SERVER_ERRORS[:20]:
        tr.write_line(f"  {line}")


@pytest.fixture(scope="session")
def rel_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy affine model (``toy_affine``: the transform fixed, exported with torch) and a TPS one, so that
    every route has a model to run, a TPS overlay and crop at any size included."""
    root = tmp_path_factory.mktemp("rel_repo")
    export_toy(root / "toy_affine" / "1" / "model.onnx", "affine", TOY_THETA.reshape(-1))
    export_toy(root / "toy_tps" / "1" / "model.onnx", "tps", None)
    return root


@pytest.fixture(scope="module")
def app_client(rel_repo: Path) -> Iterator[TestClient]:
    """An in-process app over ``rel_repo`` with small limits; server errors come back as 500 answers."""
    app = create_app(make_settings(rel_repo, default_model="toy_affine", **SMALL_LIMITS))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c
