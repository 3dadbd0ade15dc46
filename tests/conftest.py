"""Shared fixtures: the MNIST folder (../shared/data/mnist or $STN_DATA_DIR), loaded once per session."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def mnist() -> dict[str, Any]:
    from model.data import load_mnist

    return load_mnist()
