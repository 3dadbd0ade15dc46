"""service.batching.DynamicBatcher on a fake runtime: batching, overload, deadlines, drain on stop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import numpy as np
import pytest

from service.batching import DynamicBatcher
from service.errors import DeadlineExceeded, ModelNotReady, Overloaded


class FakeRuntime:
    """Echoes its input (so each request can check it got its own rows) and records batch sizes."""

    name = "fake"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("boom")
        time.sleep(self.delay)
        self.batches.append(x.shape[0])
        return {"echo": x.copy(), "sum": x.reshape(x.shape[0], -1).sum(1)}


class Recorder:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []

    def queue_wait(self, model: str, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self, model: str, size: int, seconds: float) -> None:
        self.sizes.append(size)


def rows(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, 1, 2, 2), float(i), np.float32)


async def until_running(b: DynamicBatcher) -> None:
    """Until the batcher has taken everything queued (the fake runtime is then running it)."""
    await asyncio.sleep(0)
    while b.depth():
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.01)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_are_batched_and_answered_in_their_own_rows() -> None:
    rt, rec = FakeRuntime(delay=0.01), Recorder()

    async def main() -> list[dict[str, np.ndarray]]:
        b = DynamicBatcher(rt, max_batch_size=8, max_queue_delay_us=5000, observer=rec)  # type: ignore[arg-type]
        b.start()
        outs = await asyncio.gather(*(b.infer(rows(i), 5.0) for i in range(20)))
        await b.stop()
        return outs

    outs = run(main())
    for i, out in enumerate(outs):
        assert out["echo"].shape == (1, 1, 2, 2) and (out["echo"] == i).all() and out["sum"][0] == 4 * i
    assert sum(rt.batches) == 20 and max(rt.batches) == 8 and len(rt.batches) <= 4
    assert rec.sizes == rt.batches and len(rec.waits) == 20
    assert rt.threads == {t for t in rt.threads if t.startswith("infer-fake")}  # one dedicated thread


def test_multi_row_requests_are_not_split() -> None:
    rt = FakeRuntime()

    async def main() -> list[dict[str, np.ndarray]]:
        b = DynamicBatcher(rt, max_batch_size=4, max_queue_delay_us=20000)  # type: ignore[arg-type]
        b.start()
        outs = await asyncio.gather(
            b.infer(rows(1, 3), 5.0), b.infer(rows(2, 3), 5.0), b.infer(rows(3, 6), 5.0)
        )
        await b.stop()
        return outs

    outs = run(main())
    assert [o["echo"].shape[0] for o in outs] == [3, 3, 6]
    assert all((o["echo"] == i + 1).all() for i, o in enumerate(outs))
    assert rt.batches == [3, 3, 6]  # 3 + 3 > 4, and a request over the maximum runs alone


def test_no_delay_still_batches_under_load() -> None:
    rt = FakeRuntime(delay=0.02)

    async def main() -> None:
        b = DynamicBatcher(rt, max_batch_size=16, max_queue_delay_us=0)  # type: ignore[arg-type]
        b.start()
        await asyncio.gather(*(b.infer(rows(i), 5.0) for i in range(17)))
        await b.stop()

    run(main())
    assert rt.batches[0] >= 1 and max(rt.batches) > 1


def test_a_full_queue_is_refused_at_once() -> None:
    rt = FakeRuntime(delay=0.2)

    async def main() -> list[Any]:
        b = DynamicBatcher(rt, max_batch_size=1, max_queue_delay_us=0, max_queue_size=2)  # type: ignore[arg-type]
        b.start()
        first = asyncio.ensure_future(b.infer(rows(0), 5.0))
        await until_running(b)
        t0 = time.perf_counter()
        rest = await asyncio.gather(*(b.infer(rows(i), 5.0) for i in range(1, 5)), return_exceptions=True)
        elapsed = time.perf_counter() - t0
        await first
        await b.stop()
        return [*rest, elapsed]

    *results, elapsed = run(main())
    over = [r for r in results if isinstance(r, Overloaded)]
    assert len(over) == 2 and over[0].headers == {"Retry-After": "1"} and "overloaded" in over[0].message
    assert sum(isinstance(r, dict) for r in results) == 2


def test_deadline_exceeded_and_the_expired_request_is_dropped() -> None:
    rt = FakeRuntime(delay=0.3)

    async def main() -> Any:
        b = DynamicBatcher(rt, max_batch_size=1, max_queue_delay_us=0)  # type: ignore[arg-type]
        b.start()
        first = asyncio.ensure_future(b.infer(rows(0), 5.0))
        await until_running(b)
        with pytest.raises(DeadlineExceeded, match="no answer within"):
            await b.infer(rows(1), 0.05)
        await first
        await b.stop()

    run(main())
    assert rt.batches == [1]  # the expired request never ran


def test_a_failing_run_fails_its_requests_not_the_batcher() -> None:
    rt = FakeRuntime(fail=True)

    async def main() -> None:
        b = DynamicBatcher(rt, max_batch_size=4, max_queue_delay_us=0)  # type: ignore[arg-type]
        b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.infer(rows(0), 5.0)
        rt.fail = False
        assert (await b.infer(rows(7), 5.0))["echo"][0, 0, 0, 0] == 7
        await b.stop()

    run(main())


def test_stop_drains_queued_requests_then_refuses() -> None:
    rt = FakeRuntime(delay=0.05)

    async def main() -> None:
        b = DynamicBatcher(rt, max_batch_size=2, max_queue_delay_us=0)  # type: ignore[arg-type]
        b.start()
        pending = [asyncio.ensure_future(b.infer(rows(i), 5.0)) for i in range(6)]
        await asyncio.sleep(0.01)
        await b.stop()
        outs = await asyncio.gather(*pending)  # all answered, none failed
        assert [int(o["echo"][0, 0, 0, 0]) for o in outs] == list(range(6))
        with pytest.raises(ModelNotReady, match="shutting down"):
            await b.infer(rows(0), 1.0)

    run(main())
    assert sum(rt.batches) == 6


@pytest.mark.parametrize("kw", [{"max_batch_size": 0}, {"max_queue_size": 0}, {"max_queue_delay_us": -1}])
def test_bad_batcher_settings(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        DynamicBatcher(FakeRuntime(), **kw)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread niceness is a POSIX call")
def test_the_inference_thread_is_reniced() -> None:
    """``thread_nice`` lowers the priority of the batcher's own thread, where the model also loads."""
    seen: list[int] = []

    class Probe:
        name = "probe"

        def load(self) -> None:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    async def go() -> None:
        b = DynamicBatcher(Probe(), thread_nice=3)  # type: ignore[arg-type]
        await b.load()
        await b.stop()

    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    asyncio.run(go())
    assert seen == [min(here + 3, 19)]


def test_no_wait_when_the_server_holds_no_other_request() -> None:
    """With a long delay and arrivals that look frequent, a batch still starts at once when the server holds
    nothing else that could join it (``in_flight``); when it does hold more, the batcher waits for it."""
    rt = FakeRuntime()

    async def one(held: int) -> tuple[float, list[int]]:
        b = DynamicBatcher(rt, max_batch_size=8, max_queue_delay_us=300_000, in_flight=lambda: held)  # type: ignore[arg-type]
        b.start()
        b._gap_s = 1e-4  # as if requests were arriving every 0.1 ms
        rt.batches.clear()
        t0 = time.perf_counter()
        first = asyncio.ensure_future(b.infer(rows(0), 5.0))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(b.infer(rows(1), 5.0))
        await asyncio.gather(first, second)
        elapsed = time.perf_counter() - t0
        await b.stop()
        return elapsed, list(rt.batches)

    alone, alone_batches = run(one(held=1))
    assert alone_batches == [1, 1]  # the first ran without waiting for the second
    waited, waited_batches = run(one(held=2))
    assert waited_batches == [2]  # the second was expected (held, not queued) and joined
    assert alone < 0.25 and waited >= 0.1
