"""The data plane: the models of the repository, their batchers, and the operations the routes call.

Routes stay thin: they read the body and parameters, call one method here, and shape the answer. Nothing
here knows about HTTP beyond raising the domain errors of ``service.errors``.

Models load and warm in the background after start-up, so health and readiness answer at once (503 until
every model is ready); an inference request for a model that is not ready yet gets 503.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from service.batching import DynamicBatcher
from service.errors import InvalidInput, ModelNotFound, ModelNotReady, ServiceError, Unprocessable
from service.geometry import draw_overlay, rectify_image, region_corners, region_points, to_upload
from service.metrics import Metrics
from service.preprocess import (
    Decoded,
    Invert,
    Prepared,
    border_median,
    decode,
    png_bytes,
    prepare,
    rectified_to_pixels,
    to_gray,
)
from service.repository import ModelSpec, choose_default, scan_repository
from service.runtime import ModelRuntime, cuda_available
from service.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bodies larger than this are decoded on a worker thread (Pillow releases the GIL while decoding); small
# ones inline, where a thread hop would cost more than the decode.
INLINE_DECODE_BYTES = 64 * 1024
DRAFT = 2  # JPEG draft decoding: at least this many times the model input's size
GEOMETRIC = ("theta", "homography")


@dataclass
class ModelHandle:
    runtime: ModelRuntime
    batcher: DynamicBatcher

    @property
    def name(self) -> str:
        return self.runtime.name


def _item(
    index: int, filename: str | None, status: int, prediction: dict[str, Any] | None, error: str | None
) -> dict[str, Any]:
    """A ``BatchItem`` as JSON-ready values."""
    return {"index": index, "filename": filename, "status": status, "prediction": prediction, "error": error}


def softmax(logits: list[float]) -> list[float]:
    """In float64, in plain Python: for one answer's ten-odd classes, numpy's per-call overhead is most of it."""
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    total = math.fsum(e)
    return [v / total for v in e]


class DataPlane:
    def __init__(self, settings: Settings, metrics: Metrics, in_flight: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.in_flight = in_flight  # requests the server holds (service.admission), for the batchers
        self.models: dict[str, ModelHandle] = {}
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
            self.models[name] = ModelHandle(runtime, batcher)
        log.info(
            "model repository %s: %s (default %s)", s.model_repository, ", ".join(entries), self.default_model
        )
        self._load_task = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def _load_all(self) -> None:
        for handle in self.models.values():
            rt = handle.runtime
            try:
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

    def get(self, name: str | None, version: str | None = None) -> ModelHandle:
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

    def get_ready(self, name: str | None, version: str | None = None) -> ModelHandle:
        handle = self.get(name, version)
        if not handle.runtime.ready:
            why = f": {handle.runtime.error}" if handle.runtime.error else " yet (loading)"
            raise ModelNotReady(f"model {handle.name!r} is not ready{why}", headers={"Retry-After": "1"})
        return handle

    def admit(self, name: str | None, version: str | None = None) -> ModelHandle:
        """``get_ready``, and 503 at once when the model's batch queue is full: the routes call this before
        they read a body, so a request that would be refused anyway costs no body read and no decode (the
        batcher checks again when the request is queued)."""
        handle = self.get_ready(name, version)
        handle.batcher.refuse_if_full()
        return handle

    # ---- v1 operations ------------------------------------------------------------------------------

    async def _cpu(self, big: bool, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args) if big else fn(*args)

    def _decode_prepare(
        self, data: bytes, spec: ModelSpec, invert: Invert, full: bool
    ) -> tuple[Decoded, Prepared]:
        h, w = spec.input_size
        stages = self.metrics.stages(spec.name)  # CPU of this thread per stage (stn_stage_cpu_seconds)
        c0 = time.thread_time()
        # A JPEG is decoded at a reduced DCT scale (>= 2x the model input: the DCT scaling averages, and the
        # resize after it averages again) unless the full image is needed. 4x cost the photo model 5.5 ms of
        # decode and 4.3 of resize per 1600x1200 photo (bench/results/service_20261201-2235.md), for a
        # 256-px input that 2x serves as well.
        decoded = decode(data, self.settings.max_image_pixels, None if full else (DRAFT * w, DRAFT * h))
        c1 = time.thread_time()
        prep = prepare(decoded, spec, invert)
        stages.decode.inc(c1 - c0)
        stages.preprocess.inc(time.thread_time() - c1)
        stages.images.inc()
        return decoded, prep

    async def _infer_one(self, handle: ModelHandle, prep: Prepared) -> dict[str, np.ndarray]:
        out = await handle.batcher.infer(prep.x[None], self.settings.request_timeout_s)
        return {k: v[0] for k, v in out.items()}

    def _prediction(
        self, spec: ModelSpec, out: dict[str, np.ndarray], prep: Prepared, top_k: int, want_rectified: bool
    ) -> dict[str, Any]:
        """The ``Prediction`` answer as plain JSON-ready values, in the schema's field order (the routes
        encode it directly: building and re-validating a pydantic model per answer costs more than the
        model's own inference; tests check it against ``Prediction``)."""
        p = softmax(out["logits"].tolist())
        k = max(1, min(top_k, len(p)))
        order = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:k]  # stable: ties keep class order
        labels = spec.labels
        params = out.get(spec.param_output) if spec.param_output else None
        if params is not None and prep.to_upload is not None and spec.param_output in GEOMETRIC:
            params = to_upload(params, prep.to_upload)  # letterboxed input -> the upload's own coordinates
        param_list = params.astype(np.float64).tolist() if params is not None else None
        region = None
        if param_list is not None and spec.param_output in GEOMETRIC:
            region = region_points(param_list, *prep.size)
        rect = None
        if want_rectified:
            pix = rectified_to_pixels(out["rectified"][0], spec, prep.inverted)
            rect = base64.b64encode(png_bytes(pix)).decode("ascii")
        return {
            "model": spec.name,
            "version": spec.version,
            "label": labels[order[0]],
            "probability": p[order[0]],
            "top_k": [{"label": labels[i], "probability": p[i]} for i in order],
            "transform": spec.transform,
            "theta": param_list if spec.param_output == "theta" else None,
            "homography": param_list if spec.param_output == "homography" else None,
            "control_points": param_list if spec.param_output == "control_points" else None,
            "region": region,
            "image_size": list(prep.size),
            "inverted": prep.inverted,
            "rectified": rect,
        }

    async def predict(
        self,
        name: str | None,
        data: bytes,
        *,
        top_k: int = 5,
        invert: Invert = "auto",
        rectified: bool = False,
    ) -> dict[str, Any]:
        handle = self.get_ready(name)
        spec = handle.runtime.spec
        _, prep = await self._cpu(
            len(data) > INLINE_DECODE_BYTES, self._decode_prepare, data, spec, invert, False
        )
        out = await self._infer_one(handle, prep)
        c0 = time.thread_time()
        answer = self._prediction(spec, out, prep, top_k, rectified)
        self.metrics.stages(spec.name).answer.inc(time.thread_time() - c0)
        return answer

    async def predict_batch(
        self,
        name: str | None,
        files: list[tuple[str | None, bytes]],
        *,
        top_k: int = 5,
        invert: Invert = "auto",
        rectified: bool = False,
    ) -> list[dict[str, Any]]:
        """One ``BatchItem`` (as JSON-ready values) per file, in order; a file that fails gets its own error,
        the others still run.

        The good files go to the batcher as one request (one queue slot, one run)."""
        handle = self.get_ready(name)
        spec = handle.runtime.spec

        def prepare_one(data: bytes) -> Prepared | ServiceError:
            try:
                return self._decode_prepare(data, spec, invert, False)[1]
            except ServiceError as exc:
                return exc

        if sum(len(d) for _, d in files) > INLINE_DECODE_BYTES:  # decode in parallel, off the event loop
            results = await asyncio.gather(*(asyncio.to_thread(prepare_one, d) for _, d in files))
        else:
            results = [prepare_one(d) for _, d in files]
        items: list[dict[str, Any]] = []
        preps: list[tuple[int, Prepared]] = []
        for i, ((filename, _), res) in enumerate(zip(files, results, strict=True)):
            if isinstance(res, ServiceError):
                items.append(_item(i, filename, res.status_code, None, res.message))
            else:
                preps.append((i, res))
                items.append(_item(i, filename, 200, None, None))
        if preps:
            x = np.stack([p.x for _, p in preps])  # (n, 1, H, W)
            out = await handle.batcher.infer(x, self.settings.request_timeout_s)
            c0 = time.thread_time()
            for row, (i, prep) in enumerate(preps):
                one = {k: v[row] for k, v in out.items()}
                items[i]["prediction"] = self._prediction(spec, one, prep, top_k, rectified)
            self.metrics.stages(spec.name).answer.inc(time.thread_time() - c0)
        return items

    async def rectify(
        self,
        name: str | None,
        data: bytes,
        *,
        size: tuple[int, int] | None = None,
        overlay: bool = False,
        invert: Invert = "auto",
    ) -> bytes:
        """PNG: the rectified crop (``size`` (w, h) samples the ORIGINAL upload; none gives the model's own
        ``rectified`` output) or, with ``overlay``, the upload with the sampled quadrilateral drawn."""
        handle = self.get_ready(name)
        spec = handle.runtime.spec
        if (size is not None or overlay) and spec.param_output not in GEOMETRIC:
            what = "an overlay" if overlay else "a rectified crop at a chosen size"
            raise Unprocessable(
                f"model {spec.name!r} uses a {spec.transform} transform: {what} needs theta or "
                f"a homography; call without ?size= for the model's own rectified output"
            )
        decoded, prep = await self._cpu(True, self._decode_prepare, data, spec, invert, True)
        out = await self._infer_one(handle, prep)
        if size is None and not overlay:
            return png_bytes(rectified_to_pixels(out["rectified"][0], spec, prep.inverted))
        assert spec.param_output is not None
        params = to_upload(out[spec.param_output], prep.to_upload)
        if overlay:
            corners = region_corners(params, *decoded.size)
            return await asyncio.to_thread(lambda: png_bytes(draw_overlay(decoded.image, corners)))
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
            return png_bytes(rectify_image(gray, params, (h, w), fill))

        return await asyncio.to_thread(work)

    # ---- v2 -----------------------------------------------------------------------------------------

    async def infer_tensor(
        self, name: str, version: str | None, input_name: str, x: np.ndarray
    ) -> tuple[ModelHandle, dict[str, np.ndarray]]:
        handle = self.get_ready(name, version)
        spec = handle.runtime.spec
        if input_name != spec.input_name:
            raise InvalidInput(f"unknown input {input_name!r}; model {name!r} takes {spec.input_name!r}")
        h, w = spec.input_size
        if x.ndim != 4 or x.shape[1:] != (1, h, w) or x.shape[0] < 1:
            raise InvalidInput(
                f"input {input_name!r} must have shape [N, 1, {h}, {w}] with N >= 1, got {list(x.shape)}"
            )
        # NaN or infinity (JSON null becomes NaN) would come back as NaN, which JSON cannot carry.
        if not np.isfinite(x).all():
            raise InvalidInput(f"input {input_name!r} holds NaN or infinite values")
        return handle, await handle.batcher.infer(x, self.settings.request_timeout_s)
