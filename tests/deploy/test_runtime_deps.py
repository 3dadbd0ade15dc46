"""The image's runtime, built for real without Docker: what the Dockerfile installs, installed the same way
into a fresh virtual environment, serves the bundled models and answers a predict request.

Mirrors the Dockerfile's builder stage step by step: the build context as .dockerignore leaves it, then
``pip install --requirement requirements/serve.txt`` (onnxruntime-gpu with its CUDA/cuDNN wheels, no
torch), a wheel of the project built from that context with ``--no-deps``, and ``pip check``. The server
then runs from the venv's own ``stn-serve``, outside the repository, on the CPU (no GPU here); the CUDA
libraries are checked by resolving the CUDA provider's shared-library dependencies with ``ldd`` on the
image's LD_LIBRARY_PATH.

Slow (a 2.5 GB install; about a minute from pip's cache, longer on a cold one) and still run in CI.
Pip's own cache and the machine's pip configuration are used as they are, so a warm machine installs
offline-ish; only a failure to reach the package index skips, anything else fails.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.deploy import HEALTHCHECK, LIVE, READY, ROOT, build_context, parse_dockerfile

pytestmark = pytest.mark.slow

MODEL_FILES = sorted((ROOT / "service" / "model_repository").glob("*/1/model.onnx"))
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 180
# pip's words for "the index could not be reached" (as opposed to a resolution or build failure).
OFFLINE = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|ProxyError")


def _pip(venv: Path, *args: str) -> None:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env=_clean_env(),
    )
    if proc.returncode != 0:
        out = proc.stdout[-4000:] + proc.stderr[-4000:]
        if OFFLINE.search(out) and "No matching distribution" not in out:
            pytest.skip(f"package index unreachable and the pip cache does not hold the pinned set:\n{out}")
        pytest.fail(f"pip {' '.join(args)} failed:\n{out}")


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the dev venv or the repository on any path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env = {k: v for k, v in env.items() if not k.startswith("STN_")}
    dev_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != dev_bin)
    env["OMP_NUM_THREADS"] = "1"
    return env | extra


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not (ROOT / "service" / "cli.py").exists():
        pytest.skip("service/cli.py (the stn-serve entry point) does not exist yet")
    if not MODEL_FILES:
        pytest.skip("no bundled model yet: service/model_repository/*/1/model.onnx (run `make export`)")
    base = tmp_path_factory.mktemp("runtime")
    try:
        # The build context Docker would get.
        context = base / "context"
        for rel in build_context():
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, context / rel)
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        # The Dockerfile's builder, minus --no-cache-dir: here pip's cache is what keeps this quick.
        _pip(venv, "install", "--requirement", str(context / "requirements" / "serve.txt"))
        _pip(venv, "wheel", "--no-deps", "--wheel-dir", str(base / "dist"), str(context))
        wheels = sorted((base / "dist").glob("stn_serve-*.whl"))
        assert len(wheels) == 1, wheels
        _pip(venv, "install", "--no-deps", str(wheels[0]))
        _pip(venv, "check")
        yield venv
    finally:
        shutil.rmtree(base, ignore_errors=True)  # 2.5 GB: do not leave it for pytest's keep-3 rotation


def _site_packages(venv: Path) -> Path:
    found = list((venv / "lib").glob("python3.*/site-packages"))
    assert len(found) == 1
    return found[0]


def _py(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv.parent,
        env=_clean_env(),
    )


def test_no_torch_and_no_onnx_in_the_runtime(runtime_venv: Path) -> None:
    for module in ("torch", "onnx", "model", "export"):
        proc = _py(runtime_venv, f"import {module}")
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, f"{module} importable"
    proc = _py(runtime_venv, "import onnxruntime as ort; print(ort.get_available_providers())")
    assert proc.returncode == 0, proc.stderr
    assert "CUDAExecutionProvider" in proc.stdout, "the GPU build of onnxruntime"


def test_wheel_carries_the_bundled_model_repository(runtime_venv: Path) -> None:
    installed = _site_packages(runtime_venv) / "service" / "model_repository"
    for src in MODEL_FILES:
        model_dir = src.parents[1]
        for name in ("config.pbtxt", "1/model.onnx"):
            dst = installed / model_dir.name / name
            assert dst.is_file(), f"{dst} missing: package data of the wheel"
            assert dst.read_bytes() == (model_dir / name).read_bytes()


def test_cuda_provider_libraries_resolve_on_the_images_library_path(runtime_venv: Path) -> None:
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd on this machine")
    site = _site_packages(runtime_venv)
    dirs = []
    for d in parse_dockerfile()[-1].env()["LD_LIBRARY_PATH"].split(":"):
        m = re.match(r"/opt/venv/lib/python3\.\d+/site-packages/(.+)$", d)
        assert m, f"LD_LIBRARY_PATH entry outside the venv's site-packages: {d}"
        assert (site / m.group(1)).is_dir(), f"{d}: no such folder once the wheels are installed"
        dirs.append(str(site / m.group(1)))
    provider = site / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so"
    proc = subprocess.run(
        [ldd, str(provider)], capture_output=True, text=True, env=_clean_env(LD_LIBRARY_PATH=":".join(dirs))
    )
    missing = sorted(set(re.findall(r"^\s*(\S+) => not found", proc.stdout, re.M)))
    # libcuda.so.1 is the driver's: the NVIDIA container toolkit mounts it when the container gets a GPU.
    assert missing == ["libcuda.so.1"], proc.stdout


def test_runtime_venv_size(runtime_venv: Path) -> None:
    total = sum(p.stat().st_size for p in runtime_venv.rglob("*") if p.is_file() and not p.is_symlink())
    nvidia = sum(p.stat().st_size for p in (_site_packages(runtime_venv) / "nvidia").rglob("*") if p.is_file())
    print(f"\nruntime venv: {total / 2**30:.2f} GiB, of which nvidia CUDA/cuDNN wheels {nvidia / 2**30:.2f} GiB")
    # A torch that slipped in would add several GiB; the CUDA/cuDNN wheels are most of the budget.
    assert total < 3.5 * 2**30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def server(runtime_venv: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = _free_port()
    log = runtime_venv.parent / "server.log"
    env = _clean_env(STN_PROVIDER="cpu", STN_INTRA_OP_THREADS="1", STN_LOG_FORMAT="json")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(runtime_venv / "bin" / "stn-serve"), "--port", str(port)],
            cwd=runtime_venv.parent,  # not the repository: the installed package must be what runs
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"stn-serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if _get(url + READY, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _digit_png() -> bytes:
    from PIL import Image, ImageDraw  # the dev venv's Pillow, only to make the request

    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).line([(14, 5), (14, 23)], fill=255, width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_serves_the_bundled_model_and_predicts(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    url, _, log = server
    req = urllib.request.Request(
        url + "/v1/predict", data=_digit_png(), headers={"Content-Type": "image/png"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        body = json.loads(r.read())
    assert isinstance(body["label"], str) and body["label"], body
    assert 0.0 <= body["probability"] <= 1.0
    assert body["model"], body


def test_health_metrics_and_v2_routes_answer(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    url, _, _ = server
    assert _get(url + LIVE)[0] == 200
    assert _get(url + READY)[0] == 200
    status, metrics = _get(url + "/metrics")
    assert status == 200 and b"stn_requests" in metrics
    status, models = _get(url + "/v2/models/stn_rts")
    assert status == 200, models


def test_image_healthcheck_passes_against_the_server(
    server: tuple[str, subprocess.Popen[bytes], Path], runtime_venv: Path
) -> None:
    url, _, _ = server
    port = url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [str(runtime_venv / "bin" / "python"), str(HEALTHCHECK)],
        env=_clean_env(STN_PORT=port),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sigterm_stops_the_server_cleanly(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    # Last in this module: docker stop and Kubernetes send SIGTERM; the server drains and exits by itself.
    _, proc, log = server
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 40 s after SIGTERM:\n{log.read_text()[-4000:]}")
    # uvicorn re-raises the signal once it has shut down, so a clean stop may also read as killed by SIGTERM
    # (exit status 143 in Docker); its lifespan's "shutdown complete" line tells the two apart.
    text = log.read_text()
    assert code in (0, -signal.SIGTERM), text[-4000:]
    assert "Application shutdown complete" in text, text[-4000:]
