"""What the reliability tests share with the service tests: the toy-model export, settings and readiness
helpers (``tests/service/conftest.py``, loaded by path under its own module name); the server process is
``tests.utils.server``'s."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Loading the service tests' conftest also puts the repository root first on sys.path (so ``service`` is the
# package, not tests/service) and clears the STN_* variables of the calling shell.
svc_conftest = _load("svc_conftest", SERVICE_TESTS / "conftest.py")

make_settings = svc_conftest.make_settings
wait_ready = svc_conftest.wait_ready
export_toy = svc_conftest.export_toy
TOY_THETA = svc_conftest.TOY_THETA

# Limits small enough that the hostile cases meet them cheaply.
SMALL_LIMITS = {
    "max_body_bytes": 300_000,
    "max_image_pixels": 2_000_000,
    "max_batch_files": 4,
    "max_rectify_side": 512,
}
