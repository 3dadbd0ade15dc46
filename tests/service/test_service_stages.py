"""Server-side CPU by stage (``stn_stage_cpu_seconds_total{model, stage}``): every stage is counted, and a
batch's inference CPU is charged once, as the sum of its requests' row shares."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.batching import DynamicBatcher
from service.metrics import STAGES, Metrics
from tests.utils.payloads import multipart_files, pattern, png

PNG = {"Content-Type": "image/png"}
MODEL = "toy_affine"


def stage_values(client: TestClient, model: str = MODEL) -> dict[str, float]:
    metrics: Metrics = client.app.state.metrics  # type: ignore[attr-defined]
    get = metrics.registry.get_sample_value
    out = {s: get("stn_stage_cpu_seconds_total", {"model": model, "stage": s}) or 0.0 for s in STAGES}
    out["images"] = get("stn_stage_images_total", {"model": model}) or 0.0
    return out


def test_every_stage_counts_after_a_predict(client: TestClient) -> None:
    before = stage_values(client)
    r = client.post(f"/v1/models/{MODEL}/predict", content=png(pattern()), headers=PNG)
    assert r.status_code == 200, r.text
    after = stage_values(client)
    for stage in STAGES:
        assert after[stage] > before[stage], stage
    assert after["images"] - before["images"] == 1
    text = client.get("/metrics").text
    for stage in STAGES:
        assert f'stn_stage_cpu_seconds_total{{model="{MODEL}",stage="{stage}"}}' in text
    assert f'stn_stage_images_total{{model="{MODEL}"}}' in text


def test_stage_counters_are_cached_children() -> None:
    m = Metrics()
    assert m.stages("a") is m.stages("a")
    assert m.stages("a").decode is m.stages("a").decode and m.stages("a") is not m.stages("b")


def test_a_batch_request_is_charged_its_run_cpu_once(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """One multipart request of 3 files = one batcher request of 3 rows = one run: the inference counter
    grows by that run's CPU (measured here around the real onnxruntime call), not 3 times it."""
    runtime = client.app.state.dataplane.models[MODEL].runtime  # type: ignore[attr-defined]
    real = runtime.predict
    runs: list[tuple[int, float]] = []

    def measured(x: np.ndarray) -> dict[str, np.ndarray]:
        c0 = time.thread_time()
        out = real(x)
        runs.append((x.shape[0], time.thread_time() - c0))
        return out

    monkeypatch.setattr(runtime, "predict", measured)
    before = stage_values(client)
    files = [(f"d{i}.png", png(np.roll(pattern(), 3 * i, axis=1))) for i in range(3)]
    r = client.post(f"/v1/models/{MODEL}/predict/batch", files=multipart_files(files))
    assert r.status_code == 200, r.text
    assert [it["status"] for it in r.json()["results"]] == [200, 200, 200]
    after = stage_values(client)
    assert [n for n, _ in runs] == [3]
    charged = after["inference"] - before["inference"]
    assert runs[0][1] <= charged <= runs[0][1] + 0.005
    assert after["images"] - before["images"] == 3
    for stage in ("decode", "preprocess", "answer"):
        assert after[stage] > before[stage], stage


class BurningRuntime:
    """Burns ``per_row_s`` of this thread's CPU per row; the first run waits for ``gate`` (not CPU)."""

    name = "burn"

    def __init__(self, per_row_s: float) -> None:
        self.per_row_s = per_row_s
        self.gate = threading.Event()
        self.runs: list[tuple[int, float]] = []

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if not self.runs:
            self.gate.wait(10)
        c0 = time.thread_time()
        while time.thread_time() - c0 < self.per_row_s * x.shape[0]:
            pass
        self.runs.append((x.shape[0], time.thread_time() - c0))
        return {"echo": x.copy()}


def test_requests_of_one_batch_add_up_to_its_cpu() -> None:
    """Requests of 1, 2 and 3 rows run as one batch of 6 rows: the model's inference counter grows by the
    batch's CPU (their row shares 1/6, 2/6 and 3/6 summed), once."""
    rt, metrics = BurningRuntime(0.004), Metrics()

    def counted() -> float:
        return (
            metrics.registry.get_sample_value("stn_stage_cpu_seconds_total", {"model": "burn", "stage": "inference"})
            or 0.0
        )

    async def main() -> list[Any]:
        b = DynamicBatcher(rt, max_batch_size=8, max_queue_delay_us=0, observer=metrics)  # type: ignore[arg-type]
        b.start()
        first = asyncio.ensure_future(b.infer(np.zeros((1, 1, 2, 2), np.float32), 10.0))
        await asyncio.sleep(0)
        while b.depth():  # until the first batch is taken (it then waits for the gate)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(b.infer(np.full((n, 1, 2, 2), n, np.float32), 10.0)) for n in (1, 2, 3)]
        await asyncio.sleep(0.02)  # all three queued behind the running first batch
        rt.gate.set()
        outs = await asyncio.gather(first, *rest)
        await b.stop()
        return outs

    outs = asyncio.run(main())
    assert [o["echo"].shape[0] for o in outs] == [1, 1, 2, 3]
    assert [n for n, _ in rt.runs] == [1, 6]
    burnt = sum(cpu for _, cpu in rt.runs)
    assert rt.runs[1][1] >= 6 * 0.004
    assert burnt <= counted() <= burnt + 0.005
