"""ModelRuntime: one ONNX model on onnxruntime, with ``load()``, ``ready``, ``warmup()`` and ``predict()``.

It knows nothing of HTTP (no FastAPI here): routes reach it through ``service.dataplane``. ``predict`` is
synchronous and meant to run on the batcher's dedicated inference thread.

Providers: ``cpu``; ``cuda`` (refuses to load without a working CUDA provider); ``auto`` (CUDA when the
driver and onnxruntime's CUDA provider work, otherwise CPU, said once in one warning line).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from typing import Any

import numpy as np
import onnxruntime as ort

from service.repository import ModelEntry, ModelSpec, parse_spec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_fallback_warned = False
_warn_lock = threading.Lock()


def cuda_driver_present() -> bool:
    """Whether the CUDA driver library loads; without it onnxruntime's CUDA provider cannot work."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def cuda_available() -> tuple[bool, str]:
    """(usable, reason) for onnxruntime's CUDA provider, without creating a session."""
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDAExecutionProvider"
    if not cuda_driver_present():
        return False, "no CUDA driver (libcuda) found: no GPU on this machine"
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        # Load the CUDA/cuDNN libraries of the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) from
        # site-packages, so a plain `pip install` works without LD_LIBRARY_PATH (the image sets it too).
        try:
            preload()
        except Exception as exc:  # a partial install: the session creation below reports what is missing
            log.warning("onnxruntime.preload_dlls() failed: %s", exc)
    return True, ""


def cuda_provider_options(device_id: int) -> dict[str, Any]:
    # Heuristic cuDNN algorithm search: exhaustive search would re-benchmark every new batch size.
    # kSameAsRequested keeps the arena from doubling past what dynamic batch sizes need.
    return {
        "device_id": device_id,
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
    }


def _warn_fallback(reason: str) -> None:
    global _fallback_warned
    with _warn_lock:
        if not _fallback_warned:
            log.warning("provider auto: CUDA unavailable (%s); running on CPU", reason)
            _fallback_warned = True


class ModelRuntime:
    """One model: its onnxruntime session and its spec (from the file's metadata)."""

    def __init__(
        self, entry: ModelEntry, provider: str = "auto", intra_op_threads: int = 0, cuda_device_id: int = 0
    ) -> None:
        if provider not in ("auto", "cuda", "cpu"):
            raise ValueError(f"provider must be auto, cuda or cpu, got {provider!r}")
        self.entry = entry
        self.name = entry.name
        self.provider = provider
        self.intra_op_threads = intra_op_threads
        self.cuda_device_id = cuda_device_id
        self._session: ort.InferenceSession | None = None
        self._spec: ModelSpec | None = None
        self._ready = False
        self.error: str | None = None
        self.providers: list[str] = []

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self._spec

    @property
    def loaded(self) -> bool:
        return self._spec is not None

    def _session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.intra_op_threads or (os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        # One inference thread feeds the session; idle spinning would steal cores from the HTTP loop.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def _providers(self) -> list[Any]:
        if self.provider == "cpu":
            return [CPU]
        ok, reason = cuda_available()
        if not ok:
            if self.provider == "cuda":
                raise RuntimeError(f"provider cuda requested but {reason}")
            _warn_fallback(reason)
            return [CPU]
        return [(CUDA, cuda_provider_options(self.cuda_device_id)), CPU]

    def load(self) -> None:
        """Create the session and read the spec; raises on a bad model or an unusable provider."""
        providers = self._providers()
        session = ort.InferenceSession(
            str(self.entry.path), sess_options=self._session_options(), providers=providers
        )
        self.providers = session.get_providers()
        if providers[0] != CPU and self.providers[0] != CUDA:
            if self.provider == "cuda":
                raise RuntimeError(
                    "provider cuda requested but onnxruntime could not create the CUDA provider"
                )
            _warn_fallback("onnxruntime could not create the CUDA provider (CUDA/cuDNN libraries?)")
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.name}: expected one input, got {[i.name for i in inputs]}")
        meta = session.get_modelmeta().custom_metadata_map
        outputs = {o.name: list(o.shape) for o in session.get_outputs()}
        for o in session.get_outputs():
            if o.type != "tensor(float)":
                raise ValueError(f"{self.name}: output {o.name} is {o.type}, expected tensor(float)")
        if inputs[0].type != "tensor(float)":
            raise ValueError(f"{self.name}: input is {inputs[0].type}, expected tensor(float)")
        self._spec = parse_spec(self.entry, dict(meta), inputs[0].name, list(inputs[0].shape), outputs)
        self._session = session
        log.info(
            "loaded %s v%s (%s, input %s, transform %s) on %s",
            self.name,
            self.entry.version,
            self.entry.path,
            self._spec.input_size,
            self._spec.transform,
            self.providers[0],
        )

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zeros through the model once per batch size (first runs allocate and pick kernels)."""
        h, w = self.spec.input_size
        for n in sorted(set(batch_sizes)):
            self.predict(np.zeros((n, 1, h, w), dtype=np.float32))
        self._ready = True

    def mark_ready(self) -> None:
        if self._session is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        self._ready = True

    def predict(self, batch: np.ndarray, output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """``batch`` float32 ``(N, 1, H, W)``, normalised -> ``{output name: array}``."""
        if self._session is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        names = output_names or self.spec.output_names
        outs = self._session.run(names, {self.spec.input_name: batch})
        return dict(zip(names, outs, strict=True))
