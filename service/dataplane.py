"""The data plane: the repository's served models (their lifecycle and lookup) and the operations the routes
call on them.

Routes stay thin: they read the body and parameters, call one method here, and shape the answer (the wire
shape is theirs: an operation takes an ``answer`` function from ``service.routes.answers`` and calls it
on each ``service.model.Result``, inside the per-model "answer" stage of the CPU counters). Nothing here
knows about HTTP beyond raising the domain errors of ``service.errors``; the image pipeline itself is the
model's (``service.model.ServedModel``), the v2 tensors' codec ``service.protocol_v2``'s.

Models load and warm in the background after start-up, so health and readiness answer at once (503 until
every model is ready); an inference request for a model that is not ready yet gets 503.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from service.batching import DynamicBatcher
from service.errors import ModelNotFound, ModelNotReady, ServiceError, Unprocessable
from service.geometry import border_points, draw_overlay, rectify_image, to_upload
from service.metrics import Metrics
from service.model import GEOMETRIC, Result, ServedModel
from service.preprocess import Decoded, Invert, Prepared, border_median, png_bytes, rectified_to_pixels, to_gray
from service.protocol_v2 import check_input
from service.repository import ModelSpec, choose_default, scan_repository
from service.runtime import ModelRuntime, cuda_available
from service.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Answer = Callable[[ModelSpec, Result], T]

# Bodies larger than this are decoded on a worker thread (Pillow releases the GIL while decoding); small
# ones inline, where a thread hop would cost more than the decode.
INLINE_DECODE_BYTES = 64 * 1024
# A second pass's windows (``service.zoom``) are cut on a worker thread from decoded images above this size.
INLINE_WINDOW_PIXELS = 1 << 20


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        in_flight: Callable[[], int] | None = None,
        preloaded: Mapping[str, ModelRuntime | Exception] | None = None,
    ) -> None:
        self.settings = settings
        # Sessions loaded before start-up (service.preflight), and the load errors of the models that failed;
        # each entry is taken when its model is set up (a session) or loaded (an error).
        self._preloaded = dict(preloaded or {})
        self.metrics = metrics
        self.in_flight = in_flight  # requests the server holds (service.admission), for the batchers
        self.models: dict[str, ServedModel] = {}
        self.default_model = settings.default_model
        self._load_task: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the models (fails at once on a missing repository or an impossible provider), start the
        batchers, and load + warm the models in the background."""
        s = self.settings
        if s.provider == "cuda":
            ok, reason = cuda_available()
            if not ok:
                raise RuntimeError(f"provider cuda requested but {reason}")
        entries = scan_repository(s.model_repository)
        if not entries:
            raise RuntimeError(f"model repository {s.model_repository} holds no <name>/<version>/model.onnx")
        self.default_model = choose_default(entries, s.default_model)
        for name, entry in entries.items():
            pre = self._preloaded.get(name)
            if isinstance(pre, ModelRuntime) and pre.entry == entry:
                runtime = pre
                del self._preloaded[name]
            else:
                runtime = ModelRuntime(entry, s.provider, s.intra_op_threads, s.cuda_device_id)
            batcher = DynamicBatcher(
                runtime,
                max_batch_size=s.max_batch_size,
                max_queue_delay_us=s.max_queue_delay_us,
                max_queue_size=s.max_queue_size,
                observer=self.metrics,
                thread_nice=s.inference_nice,
                in_flight=self.in_flight,
            )
            batcher.start()
            self.metrics.track_queue(name, batcher.depth)
            self.models[name] = ServedModel(runtime, batcher, self.metrics, s.max_image_pixels)
        log.info(
            "model repository %s: %s (default %s)", s.model_repository, ", ".join(entries), self.default_model
        )
        self._load_task = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def _load_all(self) -> None:
        for handle in self.models.values():
            rt = handle.runtime
            try:
                failed = self._preloaded.pop(rt.name, None)
                if isinstance(failed, Exception):  # the preflight's load failed: that error, not a second try
                    raise failed
                if not rt.loaded:
                    await handle.batcher.load()  # on the inference thread (its niceness, see DynamicBatcher)
                if self.settings.warmup:
                    h, w = rt.spec.input_size
                    for n in sorted({1, self.settings.max_batch_size}):
                        await handle.batcher.run_sync(np.zeros((n, 1, h, w), dtype=np.float32))
                rt.mark_ready()
                self.metrics.models_loaded.inc()
            except Exception as exc:  # one bad model must not take the others down
                # Clients see this (readiness is open): the repository's path stays in the server's log.
                rt.error = f"{type(exc).__name__}: {exc}".replace(f"{self.settings.model_repository}{os.sep}", "")
                log.error("model %s (%s) failed to load: %s", rt.name, rt.entry.path, rt.error)
        if self.ready:
            log.info("all %d models loaded and warmed: ready", len(self.models))

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def stop(self) -> None:
        """Drain: every queued request still runs, then the inference threads stop."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        await asyncio.gather(*(h.batcher.stop() for h in self.models.values()))
        self.metrics.models_loaded.set(0)
        log.info("stopped: batch queues drained")

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(h.runtime.ready for h in self.models.values())

    # ---- lookup -------------------------------------------------------------------------------------

    def get(self, name: str | None, version: str | None = None) -> ServedModel:
        name = name or self.default_model
        handle = self.models.get(name)
        if handle is None:
            known = ", ".join(self.models) or "none"
            raise ModelNotFound(f"unknown model {name!r}; this server has: {known}")
        if version is not None and version != handle.runtime.entry.version:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} (serving {handle.runtime.entry.version})"
            )
        return handle

    def get_ready(self, name: str | None, version: str | None = None) -> ServedModel:
        handle = self.get(name, version)
        if not handle.runtime.ready:
            why = f": {handle.runtime.error}" if handle.runtime.error else " yet (loading)"
            raise ModelNotReady(f"model {handle.name!r} is not ready{why}", headers={"Retry-After": "1"})
        return handle

    def admit(self, name: str | None, version: str | None = None) -> ServedModel:
        """``get_ready``, and 503 at once when the model's batch queue is full: the routes call this before
        they read a body, so a request that would be refused anyway costs no body read and no decode (the
        batcher checks again when the request is queued)."""
        handle = self.get_ready(name, version)
        handle.batcher.refuse_if_full()
        return handle

    # ---- v1 operations ------------------------------------------------------------------------------

    async def _cpu(self, big: bool, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args) if big else fn(*args)

    def _answers(self, model: ServedModel, outs: list[dict[str, np.ndarray]], preps: list[Prepared],
                 answer: Answer[T]) -> list[T]:
        c0 = time.thread_time()
        spec = model.spec
        answers = [answer(spec, model.postprocess(o, p)) for o, p in zip(outs, preps, strict=True)]
        self.metrics.stages(spec.name).answer.inc(time.thread_time() - c0)
        return answers

    async def _second_pass(
        self, model: ServedModel, decoded: list[Decoded], preps: list[Prepared], outs: list[dict[str, np.ndarray]]
    ) -> tuple[list[Prepared], list[dict[str, np.ndarray]]]:
        """A sequence model's second reading of each image, from a window on its number (``service.zoom``):
        the windows' inputs go to the batcher as one request; -> each image's ``Prepared`` and outputs (the
        two readings combined; the first alone where it gave no window)."""
        big = sum(d.image.size[0] * d.image.size[1] for d in decoded) > INLINE_WINDOW_PIXELS

        def inputs() -> list[tuple[Prepared, tuple[float, float, float]] | None]:
            return [model.zoom_input(d, p, o) for d, p, o in zip(decoded, preps, outs, strict=True)]

        second = await self._cpu(big, inputs)
        todo = [(i, s) for i, s in enumerate(second) if s is not None]
        preps, outs = list(preps), list(outs)
        if todo:
            out = await model.predict(np.stack([p.x for _, (p, _) in todo]), self.settings.request_timeout_s)
            for row, (i, (prep, win)) in enumerate(todo):
                outs[i] = model.zoomed(outs[i], {k: v[row] for k, v in out.items()}, preps[i], win)
                preps[i] = prep
        return preps, outs

    async def predict(
        self, name: str | None, data: bytes, answer: Answer[T], *, invert: Invert = "auto", zoom: bool = True
    ) -> T:
        model = self.get_ready(name)
        decoded, prep = await self._cpu(len(data) > INLINE_DECODE_BYTES, model.preprocess, data, invert)
        out = await model.predict(prep.x[None], self.settings.request_timeout_s)
        outs, preps = [{k: v[0] for k, v in out.items()}], [prep]
        if model.zooms(zoom):
            preps, outs = await self._second_pass(model, [decoded], preps, outs)
        return self._answers(model, outs, preps, answer)[0]

    async def predict_batch(
        self,
        name: str | None,
        files: list[bytes],
        answer: Answer[T],
        *,
        invert: Invert = "auto",
        zoom: bool = True,
    ) -> list[T | ServiceError]:
        """One answer per file, in order, or the error of a file that failed (the others still run).

        The good files go to the batcher as one request (one queue slot, one run; a sequence model read
        twice, ``service.zoom``: two)."""
        model = self.get_ready(name)

        def prepare_one(data: bytes) -> tuple[Decoded, Prepared] | ServiceError:
            try:
                return model.preprocess(data, invert)
            except ServiceError as exc:
                return exc

        if sum(len(d) for d in files) > INLINE_DECODE_BYTES:  # decode in parallel, off the event loop
            results = await asyncio.gather(*(asyncio.to_thread(prepare_one, d) for d in files))
        else:
            results = [prepare_one(d) for d in files]
        good = [(i, r) for i, r in enumerate(results) if not isinstance(r, ServiceError)]
        answers: dict[int, T] = {}
        if good:
            x = np.stack([p.x for _, (_, p) in good])  # (n, 1, H, W)
            out = await model.predict(x, self.settings.request_timeout_s)
            outs = [{k: v[row] for k, v in out.items()} for row in range(len(good))]
            preps = [p for _, (_, p) in good]
            if model.zooms(zoom):
                preps, outs = await self._second_pass(model, [d for _, (d, _) in good], preps, outs)
            shaped = self._answers(model, outs, preps, answer)
            answers = {i: a for (i, _), a in zip(good, shaped, strict=True)}
        items: list[T | ServiceError] = [
            r if isinstance(r, ServiceError) else answers[i] for i, r in enumerate(results)
        ]
        return items

    async def rectify(
        self,
        name: str | None,
        data: bytes,
        *,
        size: tuple[int, int] | None = None,
        overlay: bool = False,
        invert: Invert = "auto",
        index: int | None = None,
        zoom: bool = True,
    ) -> bytes:
        """PNG: the rectified crop (``size`` (w, h) samples the ORIGINAL upload; none gives the model's own
        ``rectified`` output) or, with ``overlay``, the upload with the sampled quadrilateral drawn.

        A sequence model has one crop per transformer: all of them side by side, left to right (the overlay:
        every window, each in its own colour), or transformer ``index``'s alone; read twice (``?zoom=``,
        ``service.zoom``), the second reading's crops and windows (from the full decode, where the
        prediction's first reading had the draft one: its window can differ by a pixel or two)."""
        model = self.get_ready(name)
        spec = model.spec
        if (size is not None or overlay) and spec.param_output not in GEOMETRIC:
            raise Unprocessable(
                f"model {spec.name!r} has no transform output: call without ?size= or ?overlay= for its own "
                "rectified output"
            )
        crops = spec.transformers
        if index is not None and index >= crops:
            raise Unprocessable(
                f"model {spec.name!r} has {crops} crop{'s' if crops > 1 else ''}: index must be 0"
                + (f"..{crops - 1}" if crops > 1 else "") + f", got {index}"
            )
        picked = range(crops) if index is None else [index]
        decoded, prep = await self._cpu(True, model.preprocess, data, invert, True)
        out = await model.predict(prep.x[None], self.settings.request_timeout_s)
        if model.zooms(zoom):  # the crops and windows of the reading the answer gives (service.zoom)
            first = {k: v[0] for k, v in out.items()}
            (prep,), (zoomed,) = await self._second_pass(model, [decoded], [prep], [first])
            out = {k: v[None] for k, v in zoomed.items()}
        if size is None and not overlay:
            rect = out["rectified"][0]  # (C, h, w), or a sequence model's (T, C, h, w)
            pixels = [rectified_to_pixels(rect[t][0] if spec.is_sequence else rect[0], spec, prep.inverted)
                      for t in picked]
            return png_bytes(np.concatenate(pixels, axis=1))
        assert spec.param_output is not None
        raw = out[spec.param_output][0]
        params = [to_upload(raw[t] if spec.is_sequence else raw, prep.to_upload) for t in picked]
        if overlay:
            # Straight sides, or a spline's curved ones; read twice, the second reading's window too.
            borders = [border_points(p, *decoded.size) for p in params]
            zw = out.get("zoom_window")
            frame = None if zw is None else (float(zw[0, 0]), float(zw[0, 1]), float(zw[0, 2]), float(zw[0, 3]))
            return await asyncio.to_thread(lambda: png_bytes(draw_overlay(decoded.image, borders, frame=frame)))
        assert size is not None
        w, h = size

        def work() -> bytes:
            gray = to_gray(decoded.image)
            if spec.padding == "border":  # the model reads its letterbox fill past the photo's edge
                fill = float(border_median(np.asarray(gray)))
            else:
                # In the upload's polarity: the model pads with black in ITS polarity, which is white in an
                # inverted upload's.
                fill = 255.0 if prep.inverted else 0.0
            return png_bytes(np.concatenate([rectify_image(gray, p, (h, w), fill) for p in params], axis=1))

        return await asyncio.to_thread(work)

    # ---- v2 -----------------------------------------------------------------------------------------

    async def infer_tensor(
        self, name: str, version: str | None, input_name: str, x: np.ndarray
    ) -> tuple[ServedModel, dict[str, np.ndarray]]:
        """The model's outputs for a v2 input tensor that ``service.protocol_v2.check_input`` accepts."""
        model = self.get_ready(name, version)
        check_input(model.spec, input_name, x)
        return model, await model.predict(x, self.settings.request_timeout_s)
