"""Prometheus metrics on a per-app registry (so several apps in one process, as in tests, do not collide).

Requests are counted by route TEMPLATE (``/v1/models/{name}/predict``), never the raw path, so the label
set stays bounded; unmatched paths count as ``unmatched``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
INFER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "preprocess", "inference", "answer")

STAGE_HELP = (
    "server CPU seconds by model and stage, from time.thread_time() deltas in the thread that ran the stage: "
    "decode (service.preprocess.decode) and preprocess (prepare) on every v1 route, inline on the event loop "
    "or on a worker thread; inference: the batcher thread's CPU for a batch (concatenation + onnxruntime run; "
    "each request is charged its rows' share, so a batch adds its whole CPU once), v2 tensors included; "
    "answer: building the v1 predict / batch answer (not its JSON encoding, nor rectify's PNG). onnxruntime's "
    "own intra-op threads are NOT seen: exact for inference only with STN_INTRA_OP_THREADS=1 (the run then "
    "executes on the batcher thread); with more, inference is the calling thread's share only"
)


class StageCpu:
    """A model's stage counters (cached children: nothing is allocated per request)."""

    __slots__ = ("decode", "preprocess", "inference", "answer", "images")

    def __init__(self, counter: Counter, images: Counter, model: str) -> None:
        self.decode = counter.labels(model, "decode")
        self.preprocess = counter.labels(model, "preprocess")
        self.inference = counter.labels(model, "inference")
        self.answer = counter.labels(model, "answer")
        self.images = images.labels(model)


class Metrics:
    """The service's metrics; also the batchers' ``BatchObserver``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "stn_requests", "HTTP requests by route template and status code", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "stn_request_latency_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait_s = Histogram(
            "stn_queue_wait_seconds",
            "time a request waited in the batch queue",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "stn_batch_size", "images per onnxruntime run", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_s = Histogram(
            "stn_inference_seconds",
            "onnxruntime run time per batch",
            ["model"],
            buckets=INFER_BUCKETS,
            registry=r,
        )
        self.queue_depth_g = Gauge(
            "stn_queue_depth", "requests waiting in the batch queue", ["model"], registry=r
        )
        self.models_loaded = Gauge("stn_models_loaded", "models loaded and warmed", registry=r)
        self.in_flight_g = Gauge(
            "stn_requests_in_flight", "inference requests admitted and not yet answered", registry=r
        )

        self.stage_cpu_s = Counter("stn_stage_cpu_seconds", STAGE_HELP, ["model", "stage"], registry=r)
        self.stage_images = Counter(
            "stn_stage_images",
            "images decoded and prepared by the v1 routes, by model (divide the decode, preprocess and answer "
            "stages by it; inference by stn_batch_size_sum, which counts v2 tensors too)",
            ["model"],
            registry=r,
        )
        self._stages: dict[str, StageCpu] = {}

        # Labelled children by label values: ``labels()`` costs a lock and a tuple per call, per request.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def request(self, route: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def stages(self, model: str) -> StageCpu:
        """``model``'s stage counters, created once."""
        st = self._stages.get(model)
        if st is None:
            st = self._stages[model] = StageCpu(self.stage_cpu_s, self.stage_images, model)
        return st

    # BatchObserver
    def queue_wait(self, model: str, seconds: float) -> None:
        self._child(self.queue_wait_s, model).observe(seconds)

    def batch(self, model: str, size: int, seconds: float) -> None:
        self._child(self.batch_size, model).observe(size)
        self._child(self.inference_s, model).observe(seconds)

    def inference_cpu(self, model: str, cpu_s: float) -> None:
        """The inference thread's CPU seconds for one batch (the sum of its requests' row shares)."""
        self.stages(model).inference.inc(cpu_s)

    def track_queue(self, model: str, depth: Callable[[], int]) -> None:
        """``stn_queue_depth{model}`` reads the queue's length at scrape time."""
        self.queue_depth_g.labels(model).set_function(depth)

    def track_in_flight(self, count: Callable[[], int]) -> None:
        self.in_flight_g.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy): counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            # A request refused before routing (service.admission) carries its own label.
            template = getattr(route, "path", None) or scope.get("stn.route") or "unmatched"
            self.metrics.request(template, status[0], time.perf_counter() - start)
