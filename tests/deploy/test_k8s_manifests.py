"""Kubernetes manifests under deploy/: schema validation (kubernetes-validate, strict) and the contracts
between them (probes on the v2 health routes, GPU limit, drain timing, selectors, ports, settings names).

The KServe InferenceService is a custom resource that kubernetes-validate has no schema for: its KServe
fields are checked against kserve-inferenceservice-v1beta1.schema.json (beside this file), and the Pod
part of its predictor against the strict Kubernetes PodSpec schema.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
from kubernetes_validate import utils as kv_utils

from tests.utils.deploy import (
    K8S,
    KSERVE,
    LIVE,
    READY,
    container_env,
    load_yaml_docs,
    parse_dockerfile,
    settings_env_names,
)

# The oldest Kubernetes minor we claim (still in the providers' extended support) and the newest the
# installed kubernetes-validate ships schemas for.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
ISVC_SCHEMA = Path(__file__).with_name("kserve-inferenceservice-v1beta1.schema.json")
PRESTOP_MARGIN_S = 5  # terminationGracePeriodSeconds must exceed preStop + drain by at least this


def _docs(path: Path) -> list[dict[str, Any]]:
    return load_yaml_docs(path)


def _one(kind: str, path: Path | None = None) -> dict[str, Any]:
    found = [d for p in ([path] if path else MANIFESTS) for d in _docs(p) if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _one("Deployment", K8S / "deployment.yaml")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    docs = _docs(KSERVE / "inferenceservice.yaml")
    assert len(docs) == 1
    return docs[0]


# ---- schema validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    docs = _docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misspelt_field(deployment: dict[str, Any]) -> None:
    # Guards the guard: without strict mode an unknown field (a typo) would pass silently.
    bad = copy.deepcopy(deployment)
    c = bad["spec"]["template"]["spec"]["containers"][0]
    c["readinessProbes"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_the_core_manifests() -> None:
    kust = _docs(K8S / "kustomization.yaml")[0]
    listed = set(kust["resources"])
    assert listed == {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
    assert all((K8S / name).exists() for name in listed)
    # Two HPAs on one Deployment fight; the queue-depth one is an alternative, not an addition.
    assert "hpa-queue-depth.yaml" not in listed


def _k8s_schema_validator(name: str, version: str) -> jsonschema.protocols.Validator:
    """A strict validator for one of kubernetes-validate's schema files (e.g. ``podspec-v1``)."""
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv_utils.schema_contents(f"{folder}/{name}.json", version)
    defs = kv_utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = referencing.Resource.from_contents(defs) @ referencing.Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_inferenceservice_kserve_fields_match_the_schema(isvc: dict[str, Any]) -> None:
    schema = json.loads(ISVC_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(isvc)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_inferenceservice_pod_fields_are_a_valid_podspec(isvc: dict[str, Any], version: str) -> None:
    schema = json.loads(ISVC_SCHEMA.read_text())
    extension = set(schema["properties"]["spec"]["properties"]["predictor"]["properties"]) - {"containers"}
    pod = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in extension}
    errors = sorted(_k8s_schema_validator("podspec-v1", version).iter_errors(pod), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_isvc_schema_rejects_a_missing_protocol(isvc: dict[str, Any]) -> None:
    bad = copy.deepcopy(isvc)
    c = bad["spec"]["predictor"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "PROTOCOL"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(json.loads(ISVC_SCHEMA.read_text())).validate(bad)


# ---- the Deployment's contract with the service ----------------------------------------------------------


def _probe_path(probe: dict[str, Any]) -> str:
    return probe["httpGet"]["path"]


def test_probes_use_the_v2_health_routes(container: dict[str, Any]) -> None:
    assert _probe_path(container["readinessProbe"]) == READY
    assert _probe_path(container["livenessProbe"]) == LIVE
    # Warm-up: the startup probe waits for ready, and gives loading at least a minute.
    startup = container["startupProbe"]
    assert _probe_path(startup) == READY
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_probe_ports_name_the_container_port(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for key in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[key]["httpGet"]["port"] in ports


def test_requests_one_gpu(container: dict[str, Any]) -> None:
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container_env(container)["STN_PROVIDER"] == "cuda"
    assert container_env(container)["STN_WORKERS"] == "1", "one process per GPU; scale with replicas"


def test_termination_grace_covers_prestop_and_drain(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    cmd = container["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "sleep"
    prestop = float(cmd[1])
    assert prestop >= 3, "endpoints need a few seconds to drop the pod before SIGTERM"
    drain = float(container_env(container)["STN_GRACEFUL_TIMEOUT_S"])
    assert grace >= prestop + drain + PRESTOP_MARGIN_S


def test_rolling_update_keeps_capacity(deployment: dict[str, Any]) -> None:
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_image_and_security_match_the_dockerfile(container: dict[str, Any], deployment: dict[str, Any]) -> None:
    runtime = parse_dockerfile()[-1]
    user = runtime.last("USER")
    assert user is not None
    pod_sc = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert str(pod_sc["runAsUser"]) == user.args.split(":")[0]
    assert container["ports"][0]["containerPort"] == int(runtime.env()["STN_PORT"])
    assert "command" not in container and "args" not in container, "the image's entry point, unchanged"


def test_environment_names_are_service_settings(container: dict[str, Any], isvc: dict[str, Any]) -> None:
    known = settings_env_names()
    for env in (container_env(container), container_env(isvc["spec"]["predictor"]["containers"][0])):
        stn = {k for k in env if k.startswith("STN_")}
        assert stn <= known, f"not settings of the service (silently ignored): {sorted(stn - known)}"


def test_service_selects_the_pods_and_targets_the_port(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    svc = _one("Service", K8S / "service.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in names for p in svc["spec"]["ports"])


@pytest.mark.parametrize("name", ["hpa.yaml", "hpa-queue-depth.yaml"])
def test_hpa_scales_the_deployment(deployment: dict[str, Any], name: str) -> None:
    hpa = _one("HorizontalPodAutoscaler", K8S / name)
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_cpu_hpa_has_cpu_requests_to_measure_against(container: dict[str, Any]) -> None:
    hpa = _one("HorizontalPodAutoscaler", K8S / "hpa.yaml")
    metric = hpa["spec"]["metrics"][0]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in container["resources"]["requests"], "utilisation is relative to requests.cpu"


def test_queue_depth_hpa_uses_a_metric_the_service_exports() -> None:
    hpa = _one("HorizontalPodAutoscaler", K8S / "hpa-queue-depth.yaml")
    name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    metrics_src = (K8S.parents[1] / "service" / "metrics.py").read_text()
    assert f'"{name}"' in metrics_src


def test_pdb_selects_the_pods(deployment: dict[str, Any]) -> None:
    pdb = _one("PodDisruptionBudget", K8S / "pdb.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# ---- the InferenceService's contract -----------------------------------------------------------------------


def test_inferenceservice_serves_the_same_image_on_v2(isvc: dict[str, Any], container: dict[str, Any]) -> None:
    c = isvc["spec"]["predictor"]["containers"][0]
    assert c["image"] == container["image"]
    assert container_env(c)["PROTOCOL"] == "v2"
    assert c["ports"][0]["containerPort"] == 8000
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _probe_path(c["readinessProbe"]) == READY
    assert _probe_path(c["livenessProbe"]) == LIVE
    # Knative allows one port and probes on that port only.
    assert c["readinessProbe"]["httpGet"]["port"] == c["ports"][0]["containerPort"]
    assert c["livenessProbe"]["httpGet"]["port"] == c["ports"][0]["containerPort"]
    assert "lifecycle" not in c, "Knative rejects lifecycle hooks"
