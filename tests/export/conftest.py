"""Fixtures for the export tests: small freshly initialised checkpoints and a slice of the real test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.nets import build_model

# Small enough to export and verify in about a second, with every layer type of the real models.
SMALL = {"loc_channels": [4, 8], "loc_hidden": 16, "cls_channels": [4, 8, 16], "cls_hidden": 32}
DATA = {"dataset": "mnist-rts", "labels": [str(i) for i in range(10)], "mean": 0.1307, "std": 0.3081,
        "polarity": "white_on_black", "input_size": [42, 42], "checksums": {}}
N_REAL_SLICE = 300

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # torch 2.13's exporter trips over its own deprecation while it traces (raised from copyreg).
    for item in items:
        if "tests/export/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings(
                "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"))


def small_model(transform: str = "affine", arch: str = "stcnn", seed: int = 0) -> tuple[torch.nn.Module,
                                                                                         dict[str, Any]]:
    """A fresh model whose transformer is NOT the identity: a fresh localisation net starts at exactly the
    identity (zero last layer), which would leave the sampler's arithmetic untested."""
    torch.manual_seed(seed)
    config = {**SMALL, "transform": transform, "arch": arch}
    model = build_model(config)
    if arch == "stcnn":
        with torch.no_grad():
            model.stn.loc.fc.weight.normal_(0.0, 0.2)
    return model.eval(), config


@pytest.fixture(name="small_model", scope="session")
def small_model_fixture():
    return small_model


@pytest.fixture(name="data_meta", scope="session")
def data_meta_fixture() -> dict[str, Any]:
    return dict(DATA)


@pytest.fixture
def make_checkpoint(tmp_path: Path):
    def make(transform: str = "affine", *, card: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, arch: str = "stcnn") -> Path:
        model, config = small_model(transform, arch)
        path = tmp_path / "run" / "best.ckpt"
        save_checkpoint(path, model, config, DATA, metrics or {"test_error": None, "val_error": None},
                        card=card)
        return path

    return make


@pytest.fixture(scope="session")
def rts_slice(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """The first images of the fixed mnist-rts test set, normalised; skips where MNIST is not on disk."""
    from model.data import DataError
    from model.distort import test_set

    try:
        data = request.getfixturevalue("mnist")  # tests/conftest.py, loaded once per session
    except (DataError, OSError) as exc:
        pytest.skip(f"MNIST is not available here ({exc}); set STN_DATA_DIR")
    x, y = test_set("rts", data)
    return (x[:N_REAL_SLICE] - DATA["mean"]) / DATA["std"], y[:N_REAL_SLICE]
