"""Dynamic batching: concurrent requests for one model gathered into one onnxruntime run.

One batcher per model: a bounded queue of requests (each ``n`` images), one asyncio task that collects a
batch (up to ``max_batch_size`` images, waiting at most ``max_queue_delay_us`` after the first request for
more to arrive), and one dedicated inference thread that concatenates and runs it, so the event loop never
blocks on inference. While a batch runs, newcomers queue up and form the next batch: under load, batches
grow by themselves even with no delay.

The delay is an upper bound, not a fixed wait: the batcher keeps an average of the gaps between arrivals and
stops waiting as soon as the next request is not expected before the delay runs out, or when the server
holds no request that could still join (so a lone client never pays the delay, while a burst still fills
the batch).

A full queue raises ``Overloaded`` at once (503 + Retry-After); a request past its deadline raises
``DeadlineExceeded`` and is dropped from the queue if it has not run yet. ``stop()`` drains: everything
queued still runs before the thread goes away.

Per-request work on the event loop is kept to a future and a timer: the deadline is a ``call_later`` on the
request's own future (``asyncio.wait_for`` would add a second future and an extra loop pass per request), and
the batcher sleeps on a bare future rather than ``wait_for(Event.wait())``, which creates a task per wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from service.errors import DeadlineExceeded, ModelNotReady, Overloaded
from service.runtime import ModelRuntime

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


# Gaps between arrivals: an exponentially weighted mean (weight of the newest gap), each gap capped so that one
# idle minute does not take a long stream of arrivals to forget.
GAP_WEIGHT = 0.25
GAP_CAP_S = 1.0


def _renice(nice: int) -> None:
    """Lower this thread's CPU priority by ``nice`` (Linux: niceness is per thread, and threads created
    from it inherit it). On two cores the event loop, not onnxruntime, bounds the throughput of small
    images; at the same priority onnxruntime's threads preempted it while a batch ran. Measured under wrk
    at concurrency 64: about 10% more requests a second with nice 10 (docs/benchmarks.md)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # a sandbox that forbids it: run at the server's priority
        log.warning("could not lower the inference thread's priority (nice %d): %s", nice, exc)


def _expire(fut: asyncio.Future[Outputs], name: str, timeout_s: float) -> None:
    if not fut.done():
        fut.set_exception(DeadlineExceeded(f"model {name}: no answer within {timeout_s:g} s"))


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class BatchObserver(Protocol):
    def queue_wait(self, model: str, seconds: float) -> None: ...
    def batch(self, model: str, size: int, seconds: float) -> None: ...


class CpuObserver(Protocol):
    """Optional (looked up on the observer once): the inference thread's CPU seconds per batch.

    A request of n rows in a batch of R rows is charged n/R of the batch's CPU; the counters are per model,
    so the charges of one batch add up to its CPU, which is reported once per batch (no per-request work)."""

    def inference_cpu(self, model: str, cpu_s: float) -> None: ...


@dataclass(eq=False)
class _Request:
    x: np.ndarray  # (n, 1, H, W) float32
    future: asyncio.Future[Outputs]
    enqueued: float  # time.perf_counter() when queued


class DynamicBatcher:
    """Batches requests for one ``ModelRuntime``; ``infer(x)`` is the only call a route makes."""

    def __init__(
        self,
        runtime: ModelRuntime,
        *,
        max_batch_size: int = 32,
        max_queue_delay_us: int = 0,
        max_queue_size: int = 256,
        observer: BatchObserver | None = None,
        thread_nice: int = 0,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_us < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1, max_queue_delay_us >= 0")
        self.runtime = runtime
        self.name = runtime.name
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self.observer = observer
        self._cpu_observer = cast(CpuObserver, observer) if hasattr(observer, "inference_cpu") else None
        # Requests the server holds (arrival to answer), those not queued yet included: see _more_coming.
        self.in_flight = in_flight
        self._queue: deque[_Request] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the batcher's sleep, resolved by _wake()
        self._closing = False
        # Mean gap between arrivals (exponentially weighted, seconds); starts "long" so nothing waits at first.
        self._gap_s = GAP_CAP_S
        self._last_arrival: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"infer-{self.name}", initializer=_renice, initargs=(thread_nice,)
        )

    def depth(self) -> int:
        """Requests waiting (not yet in a batch)."""
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new requests, run what is queued, then release the thread."""
        self._closing = True
        self._wake()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def run_sync(self, x: np.ndarray) -> Outputs:
        """Run ``x`` on the inference thread without batching (warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.runtime.predict, x)

    async def load(self) -> None:
        """Load the model on the inference thread: onnxruntime's own threads, created with the session,
        inherit that thread's niceness."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.runtime.load)

    def refuse_if_full(self) -> None:
        """``Overloaded`` (503 + Retry-After) when the queue holds ``max_queue_size`` requests."""
        depth = self.depth()
        if depth >= self.max_queue_size:
            raise Overloaded(
                f"model {self.name} is overloaded: {depth} requests queued; retry later",
                headers={"Retry-After": "1"},
            )

    async def infer(self, x: np.ndarray, timeout_s: float) -> Outputs:
        """Queue ``x`` ``(n, 1, H, W)``; wait at most ``timeout_s`` seconds for its ``n`` rows of outputs."""
        if self._closing:
            raise ModelNotReady(f"model {self.name} is shutting down", headers={"Retry-After": "1"})
        self.refuse_if_full()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outputs] = loop.create_future()
        now = time.perf_counter()
        if self._last_arrival is not None:
            self._gap_s += GAP_WEIGHT * (min(now - self._last_arrival, GAP_CAP_S) - self._gap_s)
        self._last_arrival = now
        self._queue.append(_Request(x, fut, now))
        self._wake()
        # An expired future is skipped by _collect (dropped unrun) and by _execute (answer discarded).
        timer = loop.call_later(timeout_s, _expire, fut, self.name, timeout_s)
        try:
            return await fut
        finally:
            timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None:
            _release(self._waiter)

    async def _sleep(self, timeout_s: float | None) -> None:
        """Until ``_wake()`` (a new request, or stop) or ``timeout_s`` seconds, whichever comes first."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _release, waiter) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _collect(self) -> list[_Request]:
        """Wait for a first request, then gather more until the batch is full, the delay has passed, or the
        next arrival is not expected before the delay runs out."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            if self._closing:
                return []
            await self._sleep(None)
        batch: list[_Request] = []
        rows = 0
        deadline = loop.time() + self.max_queue_delay_s
        while True:
            while self._queue:
                nxt = self._queue[0]
                if nxt.future.done():  # timed out or cancelled while queued
                    self._queue.popleft()
                    continue
                n = nxt.x.shape[0]
                if batch and rows + n > self.max_batch_size:
                    return batch
                self._queue.popleft()
                batch.append(nxt)
                rows += n
                if rows >= self.max_batch_size:
                    return batch
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing or self._gap_s > remaining or not self._more_coming(batch):
                return batch
            await self._sleep(remaining)
            if not self._queue:  # the delay ran out with nothing new
                return batch

    def _more_coming(self, batch: list[_Request]) -> bool:
        """Whether a request the server already holds may still join the batch: one being read or decoded
        (held, not yet queued). Without one, waiting can only add latency: a lone client's next request
        comes after this answer. The count is the server's (every model, every POST route), so it errs on
        the side of waiting; without a count, the gap estimate alone decides."""
        if self.in_flight is None:
            return True
        return self.in_flight() > len(batch) + len(self._queue)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                if self._closing and not self._queue:
                    return
                continue
            await self._execute(batch)

    def _run(self, xs: list[np.ndarray]) -> tuple[Outputs, float, float]:
        # On the inference thread: concatenation and the run both stay off the event loop. The thread's CPU
        # (thread_time) covers both; onnxruntime's intra-op pool threads, when it has them, are not seen.
        c0 = time.thread_time()
        x = xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)
        t0 = time.perf_counter()
        out = self.runtime.predict(x)
        t1 = time.perf_counter()
        return out, t1 - t0, time.thread_time() - c0

    async def _execute(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        run = loop.run_in_executor(self._executor, self._run, [r.x for r in batch])
        if self.observer:  # bookkeeping while the batch runs, not before it starts
            for r in batch:
                self.observer.queue_wait(self.name, start - r.enqueued)
        try:
            outputs, seconds, cpu_s = await run
        except Exception as exc:  # a failed run fails its requests, never the batcher
            log.exception("inference failed for model %s (batch of %d requests)", self.name, len(batch))
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        rows = sum(r.x.shape[0] for r in batch)
        if self.observer:
            self.observer.batch(self.name, rows, seconds)
        if self._cpu_observer is not None:  # the sum of the requests' row shares: see CpuObserver
            self._cpu_observer.inference_cpu(self.name, cpu_s)
        offset = 0
        for r in batch:
            n = r.x.shape[0]
            if not r.future.done():
                r.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
            offset += n
