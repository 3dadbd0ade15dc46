"""Shared fixtures: the MNIST folder (../shared/data/mnist or $STN_DATA_DIR), loaded once per session.

The tests choose their own settings: the STN_* variables of the shell running them must not leak in (into
the apps built here, nor into the stn-serve processes started with this environment).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from service.settings import Settings

for _field in Settings.model_fields:
    os.environ.pop(f"STN_{_field.upper()}", None)


@pytest.fixture(scope="session")
def mnist() -> dict[str, Any]:
    from model.data import load_mnist

    return load_mnist()
