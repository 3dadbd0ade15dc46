"""compose.yaml: the GPU reservation, the health check, the drain budget, the CPU profile."""

from __future__ import annotations

from typing import Any

import pytest

from tests.utils.deploy import COMPOSE, duration_s, load_yaml_docs, parse_dockerfile, settings_env_names


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    docs = load_yaml_docs(COMPOSE)
    assert len(docs) == 1
    return docs[0]["services"]


def test_gpu_service_reserves_an_nvidia_gpu(services: dict[str, Any]) -> None:
    gpu = services["stn"]
    assert "profiles" not in gpu, "the GPU service is the one `docker compose up` starts"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count") for d in devices)
    assert gpu["environment"]["STN_PROVIDER"] == "cuda"


def test_cpu_service_is_an_opt_in_profile_without_a_gpu(services: dict[str, Any]) -> None:
    cpu = services["stn-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert cpu["environment"]["STN_PROVIDER"] == "cpu"


@pytest.mark.parametrize("name", ["stn", "stn-cpu"])
def test_health_check_is_the_images(services: dict[str, Any], name: str) -> None:
    hc = services[name]["healthcheck"]
    image_hc = parse_dockerfile()[-1].last("HEALTHCHECK")
    assert image_hc is not None
    assert hc["test"] == ["CMD", *image_hc.exec_form()]  # type: ignore[misc]
    assert duration_s(hc["start_period"]) >= 60, "room for loading and warming the models"
    assert hc["retries"] >= 1


@pytest.mark.parametrize("name", ["stn", "stn-cpu"])
def test_stop_grace_covers_the_drain(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    drain = float(svc["environment"]["STN_GRACEFUL_TIMEOUT_S"])
    assert duration_s(svc["stop_grace_period"]) > drain


@pytest.mark.parametrize("name", ["stn", "stn-cpu"])
def test_builds_this_image_and_publishes_its_port(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    assert svc["build"] == "."
    env = svc["environment"]
    assert svc["ports"] == [f"{env['STN_PORT']}:{env['STN_PORT']}"]
    assert env["STN_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", ["stn", "stn-cpu"])
def test_environment_names_are_service_settings(services: dict[str, Any], name: str) -> None:
    unknown = set(services[name]["environment"]) - settings_env_names()
    assert not unknown, f"not settings of the service (silently ignored): {sorted(unknown)}"
