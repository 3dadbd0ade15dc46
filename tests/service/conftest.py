"""Fixtures of the service tests: model repositories, apps, and real distorted MNIST digits (the helpers
they use are ``tests.utils``': ``toys`` for the models, ``app`` for settings and readiness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.utils.app import make_settings, wait_ready
from tests.utils.toys import (
    BUNDLED,
    TOY_HOMOGRAPHY,
    TOY_THETA,
    TRAINED,
    bundled_has,
    default_test_model,
    export_toy,
    export_toy_sequence,
)


@pytest.fixture(scope="session")
def toy_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """toy_affine (fixed TOY_THETA), toy_projective (fixed TOY_HOMOGRAPHY), toy_tps (identity), toy_seq (a
    sequence model, its three windows fixed at TOY_SEQ_WINDOWS)."""
    root = tmp_path_factory.mktemp("toy_repo")
    export_toy(root / "toy_affine" / "1" / "model.onnx", "affine", TOY_THETA.reshape(-1))
    export_toy(root / "toy_projective" / "1" / "model.onnx", "projective", TOY_HOMOGRAPHY.reshape(-1)[:8])
    export_toy(root / "toy_tps" / "1" / "model.onnx", "tps", None)
    export_toy_sequence(root / "toy_seq" / "1" / "model.onnx")
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


@pytest.fixture(scope="session")
def client(repo: Path) -> Iterator[TestClient]:
    """One app over ``repo`` for the whole session (default model: stn_rts if bundled, else toy_affine)."""
    app = create_app(make_settings(repo, default_model=default_test_model()))
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
