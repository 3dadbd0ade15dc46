"""Fixtures of the reliability tests: a small model repository, an app with small limits, and a tally of
the hostile cases tried (printed at the end of the run, with the 5xx seen, which must be 0).

The model-exporting and server-process helpers live with the service tests (``tests/service/conftest.py``,
``tests/service/svc_helpers.py``); they are loaded here by path, under their own names, so that this folder's
``conftest`` does not shadow theirs.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
SERVICE_TESTS = HERE.parent / "service"


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The service tests' conftest puts the repository root first on sys.path (so ``service`` is the package, not
# tests/service) and clears STN_* variables of the calling shell.
svc_conftest = _load("svc_conftest", SERVICE_TESTS / "conftest.py")
svc_helpers = _load("svc_helpers", SERVICE_TESTS / "svc_helpers.py")

from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402

make_settings = svc_conftest.make_settings
wait_ready = svc_conftest.wait_ready

# ---- the tally --------------------------------------------------------------------------------------------

# kind of case -> how many were sent; "5xx" counts server errors seen anywhere (must stay 0).
TALLY: Counter[str] = Counter()
SERVER_ERRORS: list[str] = []


def record(kind: str, status: int, what: str = "") -> None:
    TALLY[kind] += 1
    if status >= 500:
        SERVER_ERRORS.append(f"{kind}: {status} {what}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    tr = terminalreporter
    tr.section("reliability: hostile cases tried")
    for kind, n in sorted(TALLY.items()):
        tr.write_line(f"{kind:44s} {n:6d}")
    tr.write_line(f"{'total':44s} {sum(TALLY.values()):6d}")
    tr.write_line(f"{'5xx answers seen':44s} {len(SERVER_ERRORS):6d}")
    for line in SERVER_ERRORS[:20]:
        tr.write_line(f"  {line}")


# ---- models and apps --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rel_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One toy affine model (``toy_affine``, the transform fixed, exported with torch) and a TPS one, so that
    every route has a model to run, including the 422 of a TPS overlay."""
    root = tmp_path_factory.mktemp("rel_repo")
    svc_conftest.export_toy(root / "toy_affine" / "1" / "model.onnx", "affine", svc_conftest.TOY_THETA.reshape(-1))
    svc_conftest.export_toy(root / "toy_tps" / "1" / "model.onnx", "tps", None)
    return root


# Limits small enough that the hostile cases meet them cheaply.
SMALL_LIMITS = {
    "max_body_bytes": 300_000,
    "max_image_pixels": 2_000_000,
    "max_batch_files": 4,
    "max_rectify_side": 512,
}


@pytest.fixture(scope="module")
def app_client(rel_repo: Path) -> Iterator[TestClient]:
    """An in-process app over ``rel_repo`` with small limits; server errors come back as 500 answers."""
    app = create_app(make_settings(rel_repo, default_model="toy_affine", **SMALL_LIMITS))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c
