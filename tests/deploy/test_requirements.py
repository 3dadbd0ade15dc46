"""requirements/serve.txt, the image's pinned runtime set, against pyproject.toml's [project].dependencies.

pyproject.toml says what serving needs; serve.txt pins one resolution of it for the image. They must agree:
every dependency pinned to a version its specifier admits, every line pinned, and no training-side package.
"""

from __future__ import annotations

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.utils.deploy import REQUIREMENTS, ROOT

# Training and export only: the image must hold none of them.
FORBIDDEN = {"torch", "torchvision", "onnx", "onnxscript", "onnxconverter-common", "onnxruntime"}


def _pins() -> dict[str, Requirement]:
    pins: dict[str, Requirement] = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in pins, f"{req.name} pinned twice"
        pins[name] = req
    return pins


def _dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


def _pinned_version(req: Requirement) -> str:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not pinned with =="
    return specs[0].version


def test_every_line_is_pinned() -> None:
    for req in _pins().values():
        _pinned_version(req)
        assert req.marker is None, f"{req}: one platform, no markers"


@pytest.mark.parametrize("dep", _dependencies(), ids=lambda r: r.name)
def test_pins_satisfy_the_project_dependencies(dep: Requirement) -> None:
    pins = _pins()
    name = canonicalize_name(dep.name)
    assert name in pins, f"{dep.name} is a dependency of the project but not pinned in serve.txt"
    version = _pinned_version(pins[name])
    assert dep.specifier.contains(version, prereleases=True), f"{dep.name}=={version} is outside {dep.specifier}"


def test_no_training_or_cpu_only_packages() -> None:
    present = set(_pins()) & FORBIDDEN
    # onnxruntime (CPU) beside onnxruntime-gpu would shadow it: both install the module `onnxruntime`.
    assert not present, f"not for the serving image: {sorted(present)}"


def test_onnxruntime_gpu_brings_cuda_and_cudnn_wheels() -> None:
    pins = _pins()
    ort = pins["onnxruntime-gpu"]
    assert {"cuda", "cudnn"} <= ort.extras
    assert any(n.startswith("nvidia-cudnn") for n in pins), "the cudnn extra's wheel is pinned too"
    assert "nvidia-cublas" in pins and "nvidia-cuda-runtime" in pins
