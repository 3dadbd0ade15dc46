"""The service's ``/metrics`` read through ``prometheus_client``'s own parser (never by hand)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


def fetch(base_url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(base_url + "/metrics", timeout=timeout) as r:
        text: str = r.read().decode()
    return text


def samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, as (name, labels, value)."""
    return [(s.name, dict(s.labels), float(s.value)) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when there are none)."""
    return sum(v for n, lab, v in samples(text) if n == name and all(lab.get(k) == w for k, w in labels.items()))


def server_errors(text: str) -> float:
    """Answers the metrics count with a 5xx status, a 503 of readiness while loading (and any 503) aside."""
    return sum(v for n, lab, v in samples(text) if n == "stn_requests_total" and lab.get("status", "").startswith("5")
               and lab.get("status") != "503" and lab.get("route") != "/v2/health/ready")


def histogram(text: str, name: str, **labels: str) -> dict[str, object]:
    """``{"sum", "count", "buckets": {le: cumulative count}}`` of one histogram series."""
    out: dict[str, object] = {"sum": 0.0, "count": 0.0, "buckets": {}}
    buckets: dict[str, float] = {}
    for n, lab, v in samples(text):
        if not all(lab.get(k) == w for k, w in labels.items()):
            continue
        if n == name + "_sum":
            out["sum"] = v
        elif n == name + "_count":
            out["count"] = v
        elif n == name + "_bucket":
            buckets[lab["le"]] = v
    out["buckets"] = buckets
    return out
