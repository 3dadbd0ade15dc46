"""Fixtures of the service tests: model repositories, apps, and real distorted MNIST digits.

Two kinds of model:
- the bundled, trained models in ``service/model_repository`` (``stn_rts``, ``stn_tc``), preferred wherever
  a test needs a model that classifies correctly; tests that need them skip with a reason when absent;
- small toy models exported here with torch (tests only; the service never imports torch): untrained
  classifiers behind a transformer whose localisation net is frozen to a KNOWN transform (zero weights,
  the transform in the bias), so the geometry can be checked against numbers worked out by hand.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# tests/conftest.py puts tests/ on sys.path (pytest's prepend import mode), where this folder would shadow
# the real ``service`` package as a namespace package: the repository root must come first.
ROOT = Path(__file__).resolve().parents[2]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
if "service" in sys.modules and getattr(sys.modules["service"], "__file__", None) is None:
    del sys.modules["service"]

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import service  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

# The tests choose their own settings: STN_* variables of the shell running them must not leak in (into the
# apps built here, nor into the stn-serve processes started with this environment).
for _field in Settings.model_fields:
    os.environ.pop(f"STN_{_field.upper()}", None)

# STN_TEST_MODEL_REPOSITORY points the "bundled" tests at another repository with trained models.
BUNDLED = Path(
    os.environ.get("STN_TEST_MODEL_REPOSITORY")
    or Path(service.__file__).resolve().parent / "model_repository"
)
TRAINED = ("stn_rts", "stn_tc")

# Toy transforms (output grid -> input sample point, normalised coordinates).
ANGLE = math.radians(30.0)
TOY_THETA = np.array(
    [
        [0.7 * math.cos(ANGLE), -0.7 * math.sin(ANGLE), 0.1],
        [0.7 * math.sin(ANGLE), 0.7 * math.cos(ANGLE), -0.05],
    ]
)
TOY_HOMOGRAPHY = np.array([[0.8, 0.1, 0.05], [-0.05, 0.75, 0.0], [0.1, -0.15, 1.0]])


def bundled_has(name: str) -> bool:
    return (BUNDLED / name / "1" / "model.onnx").is_file()


def export_toy(path: Path, transform: str, params: np.ndarray | None, seed: int = 0) -> None:
    """A toy ST-CNN exported to ``path`` with the contract's metadata (torch + onnx: tests only)."""
    import onnx
    import torch

    from model.nets import build_model

    torch.manual_seed(seed)
    model = build_model({"transform": transform}).eval()
    if params is not None:
        with torch.no_grad():
            model.stn.loc.fc.weight.zero_()
            model.stn.loc.fc.bias.copy_(torch.as_tensor(params, dtype=torch.float32))
    names = list(model.output_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, 1, 42, 42)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["image"],
        output_names=names,
        dynamic_axes={"image": {0: "N"}, **{n: {0: "N"} for n in names}},
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    meta = {
        "stn.labels": json.dumps([str(i) for i in range(10)]),
        "stn.input_size": "42,42",
        "stn.output_size": "28,28",
        "stn.mean": "0.1307",
        "stn.std": "0.3081",
        "stn.polarity": "white_on_black",
        "stn.transform": transform,
        "stn.param_output": names[1],
        "stn.dataset": "toy",
        "stn.test_error": "",
        "stn.version": f"toy:{transform}",
    }
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))


@pytest.fixture(scope="session")
def toy_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """toy_affine (fixed TOY_THETA), toy_projective (fixed TOY_HOMOGRAPHY), toy_tps (identity)."""
    root = tmp_path_factory.mktemp("toy_repo")
    export_toy(root / "toy_affine" / "1" / "model.onnx", "affine", TOY_THETA.reshape(-1))
    export_toy(root / "toy_projective" / "1" / "model.onnx", "projective", TOY_HOMOGRAPHY.reshape(-1)[:8])
    export_toy(root / "toy_tps" / "1" / "model.onnx", "tps", None)
    return root


@pytest.fixture(scope="session")
def repo(toy_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy models plus the bundled trained ones when they exist (linked in, not copied)."""
    root = tmp_path_factory.mktemp("repo")
    for d in toy_repo.iterdir():
        (root / d.name).symlink_to(d)
    for name in TRAINED:
        if bundled_has(name):
            (root / name).symlink_to(BUNDLED / name)
    return root


@pytest.fixture(scope="session")
def bundled_repo() -> Path:
    if not bundled_has("stn_rts"):
        pytest.skip("the trained model service/model_repository/stn_rts is not exported yet")
    return BUNDLED


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


@pytest.fixture(scope="session")
def client(repo: Path) -> Iterator[TestClient]:
    """One app over ``repo`` for the whole session (default model: stn_rts if bundled, else toy_affine)."""
    default = "stn_rts" if bundled_has("stn_rts") else "toy_affine"
    app = create_app(make_settings(repo, default_model=default))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST test digits distorted by the RTS test distortion: uint8 (N, 42, 42), white on black."""
    try:
        from model.data import load_mnist
        from model.distort import test_set
    except ImportError as exc:  # pragma: no cover - model/ is part of the repository
        pytest.skip(f"model.data / model.distort unavailable: {exc}")
    try:
        data = load_mnist()
    except Exception as exc:
        pytest.skip(f"MNIST not available: {exc}")
    data = {**data, "test_images": data["test_images"][:200], "test_labels": data["test_labels"][:200]}
    x, y = test_set("rts", data)
    arr = np.clip(x[:, 0].numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return arr, y.numpy()
