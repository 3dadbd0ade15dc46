"""docs/deploy.md (the README's deployment section) names only settings and files that exist."""

from __future__ import annotations

import re

from tests.utils.deploy import ROOT, settings_env_names

DOC = ROOT / "docs" / "deploy.md"


def test_every_stn_variable_in_the_docs_is_a_setting() -> None:
    named = set(re.findall(r"\bSTN_[A-Z_]+[A-Z]\b", DOC.read_text()))
    assert named, "the deployment docs describe configuration through STN_ variables"
    unknown = named - settings_env_names()
    assert not unknown, f"docs/deploy.md names settings the service does not have: {sorted(unknown)}"


def test_every_repository_path_in_the_docs_exists() -> None:
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:deploy|requirements|tests/deploy|service)/[\w./-]+?)`", text))
    paths |= {p for p in ("Dockerfile", "compose.yaml", ".dockerignore") if p in text}
    assert "deploy/k8s/hpa-queue-depth.yaml" in paths
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists() and "model_repository" not in p)
    assert not missing, f"docs/deploy.md refers to files that do not exist: {missing}"


def test_documents_gpu_cpu_and_triton_commands() -> None:
    text = DOC.read_text()
    assert "docker run --gpus all -p 8000:8000 stn-serve" in text
    assert "docker run -p 8000:8000 stn-serve" in text
    assert "tritonserver --model-repository=/models" in text
    for route in ("/v2/health/live", "/v2/health/ready", "/metrics", "/v2/models/{name}/infer"):
        assert route in text


def test_every_setting_is_in_the_service_docs_settings_table() -> None:
    """A new setting (a field of service.settings.Settings) is documented with its variable and its flag."""
    rows = [ln for ln in (ROOT / "docs" / "service.md").read_text().splitlines() if ln.startswith("| `STN_")]
    row = re.compile(r"\| `(STN_\w+)` \| `(--[\w-]+)(?: / --no-[\w-]+)?`")
    documented = {m.group(1): m.group(2) for ln in rows if (m := row.match(ln))}
    for env in settings_env_names():
        assert env in documented, f"docs/service.md's settings table has no row for {env}"
        assert documented[env] == "--" + env.removeprefix("STN_").lower().replace("_", "-"), env
