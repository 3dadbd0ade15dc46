"""One served model (KServe's ``Model``): its onnxruntime session and batcher, and the image pipeline in three
stages, each one's CPU time counted per model (``stn_stage_cpu_seconds_total{model,stage}``):

- ``preprocess``: decode the upload (bounded: Pillow's JPEG draft mode unless the full image is needed) and
  prepare the model input from the model's metadata only (``service.preprocess``);
- ``predict``: the batcher runs the session (several requests share one run);
- ``postprocess``: class probabilities, the transform's parameters in the upload's own coordinates, the
  region they sample there, and the model's rectified crop: a ``Result``, not an HTTP answer (the wire
  shape is the routes' job, ``service.routes.answers``, timed by the data plane as the "answer" stage).

Nothing here knows about HTTP beyond raising the domain errors of ``service.errors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service.batching import DynamicBatcher
from service.geometry import region_points, to_upload
from service.metrics import Metrics
from service.preprocess import Decoded, Invert, Prepared, decode, prepare, to_gray
from service.repository import ModelSpec
from service.runtime import ModelRuntime
from service.sequence import Reading, softmax
from service.zoom import combine, is_alone, prepare_window, window

DRAFT = 2  # JPEG draft decoding: at least this many times the model input's size
GEOMETRIC = ("theta", "homography", "control_points")  # parameter outputs that place the crop on the input


@dataclass
class Result:
    """What the model made of one image."""

    probabilities: list[float]  # per class, in the order of ``spec.labels`` (a sequence model: empty)
    params: list[Any] | None  # the parameter output (``spec.param_output``), in the upload's coordinates
    region: list[list[float]] | None  # the sampled quadrilateral in the upload's pixels (matrix families)
    image_size: tuple[int, int]  # the upload's (W, H) after its EXIF orientation
    inverted: bool  # whether the upload was inverted for the model
    # The model's rectified crop (h, w), model units (preprocess.rectified_to_pixels); a sequence model's
    # crops (T, h, w), one per transformer.
    rectified: np.ndarray
    # A sequence model only: its probabilities, and per transformer its theta (upload coordinates) and
    # region; ``params`` and ``region`` are then None (each digit has its own).
    reading: Reading | None = None
    windows: list[tuple[list[Any], list[list[float]]]] | None = None
    # A sequence model read twice (``service.zoom``): the second pass's window [x0, y0, x1, y1], upload pixels.
    zoom_window: list[float] | None = None


@dataclass
class ServedModel:
    runtime: ModelRuntime
    batcher: DynamicBatcher
    metrics: Metrics
    max_image_pixels: int

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def spec(self) -> ModelSpec:
        return self.runtime.spec

    def preprocess(self, data: bytes, invert: Invert, full: bool = False) -> tuple[Decoded, Prepared]:
        """Decode and prepare one upload; ``full`` decodes every pixel (the original is needed)."""
        spec = self.spec
        h, w = spec.input_size
        stages = self.metrics.stages(spec.name)  # CPU of this thread per stage
        c0 = time.thread_time()
        # A JPEG is decoded at a reduced DCT scale (>= 2x the model input: the DCT scaling averages, and the
        # resize after it averages again) unless the full image is needed. 4x cost the photo model 5.5 ms of
        # decode and 4.3 of resize per 1600x1200 photo (bench/results/service_20261201-2235.md), for a
        # 256-px input that 2x serves as well.
        decoded = decode(data, self.max_image_pixels, None if full else (DRAFT * w, DRAFT * h))
        if spec.zoom_fill is not None and not full:
            # Kept for a second reading (service.zoom): its gray image only, which prepare would make anyway.
            decoded = replace(decoded, image=to_gray(decoded.image))
        c1 = time.thread_time()
        prep = prepare(decoded, spec, invert)
        stages.decode.inc(c1 - c0)
        stages.preprocess.inc(time.thread_time() - c1)
        stages.images.inc()
        return decoded, prep

    def zooms(self, zoom: bool) -> bool:
        """Whether a request with ``?zoom=`` reads this model's images twice (``service.zoom``)."""
        return zoom and self.spec.zoom_fill is not None

    def zoom_input(self, decoded: Decoded, prep: Prepared,
                   out: dict[str, np.ndarray]) -> tuple[Prepared, tuple[float, float, float]] | None:
        """The second pass's input: the window around the digits one image's first-pass outputs read (None
        where the first reading's crops are not finite: it then answers alone)."""
        assert self.spec.zoom_fill is not None
        c0 = time.thread_time()
        win = window(out, prep, self.spec.zoom_fill)
        second = None if win is None else (prepare_window(decoded, self.spec, prep.inverted, win, prep.fill), win)
        self.metrics.stages(self.spec.name).preprocess.inc(time.thread_time() - c0)
        return second

    def zoomed(self, first: dict[str, np.ndarray], second: dict[str, np.ndarray], prep: Prepared,
               win: tuple[float, float, float]) -> dict[str, np.ndarray]:
        """One image's outputs from its two passes (``service.zoom.combine``), and its window as
        ``zoom_window`` (x0, y0, x1, y1) for the answer."""
        out = combine(first, second, is_alone(self.spec, prep, win))
        cx, cy, side = win
        return {**out, "zoom_window": np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])}

    async def predict(self, x: np.ndarray, timeout_s: float) -> dict[str, np.ndarray]:
        """The session's outputs for a batch ``x`` ``(N, 1, H, W)``, through the batcher."""
        return await self.batcher.infer(x, timeout_s)

    def postprocess(self, out: dict[str, np.ndarray], prep: Prepared) -> Result:
        """One image's outputs (the batch axis removed) -> ``Result``."""
        spec = self.spec
        if spec.is_sequence:
            return self._postprocess_sequence(out, prep)
        params = out.get(spec.param_output) if spec.param_output else None
        if params is not None and prep.to_upload is not None and spec.param_output in GEOMETRIC:
            params = to_upload(params, prep.to_upload)  # letterboxed input -> the upload's own coordinates
        param_list = params.astype(np.float64).tolist() if params is not None else None
        region = None
        if param_list is not None and spec.param_output in GEOMETRIC:
            region = region_points(param_list, *prep.size)
        return Result(softmax(out["logits"].tolist()), param_list, region, prep.size, prep.inverted,
                      out["rectified"][0])

    def _postprocess_sequence(self, out: dict[str, np.ndarray], prep: Prepared) -> Result:
        reading = Reading.of(out["length_logits"].tolist(), out["digit_logits"].tolist())
        windows = []
        for theta in out["theta"]:  # (T, 2, 3): transformer t's window, into the upload's coordinates
            t = to_upload(theta, prep.to_upload).astype(np.float64)
            windows.append((t.tolist(), region_points(t, *prep.size)))
        zoom = out.get("zoom_window")
        return Result([], None, None, prep.size, prep.inverted, out["rectified"][:, 0], reading, windows,
                      None if zoom is None else zoom.tolist())
