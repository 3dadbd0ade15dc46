"""Triton model configuration (``config.pbtxt``) for an exported model: written from, and checked against,
Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``), never by string matching.

The entry layout is Triton's: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.onnx``. The config:

- ``platform: "onnxruntime_onnx"``, ``max_batch_size`` (so every ``dims`` below leaves the batch out);
- one input and three outputs, names, float32 types and per-sample dims read from the ONNX graph;
- ``dynamic_batching`` with a short queue delay, so single-image requests are batched on a GPU;
- ``optimization.execution_accelerators.gpu_execution_accelerator: [{name: "cuda"}]``: the onnxruntime
  backend's CUDA execution provider (no TensorRT, which would rebuild engines per shape);
- no ``instance_group``: Triton then puts one instance on each visible GPU, or on the CPU where there is
  none, so the same folder loads on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

PLATFORM = "onnxruntime_onnx"
MODEL_FILE = "model.onnx"
VERSION = "1"
MAX_BATCH_SIZE = 256
QUEUE_DELAY_US = 500
HEADER = "# Triton model configuration, written by stn-export (export/triton.py). Parsed as ModelConfig.\n"

_ONNX_TO_TRITON: dict[int, int] = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.INT64: mc.TYPE_INT64, onnx.TensorProto.INT32: mc.TYPE_INT32,
    onnx.TensorProto.UINT8: mc.TYPE_UINT8,
}


class ConfigError(ValueError):
    """config.pbtxt does not parse as a ModelConfig, or does not describe the model beside it."""


def _signature(values: Sequence[onnx.ValueInfoProto]) -> list[tuple[str, int, list[int]]]:
    """``(name, Triton data type, per-sample dims)``; the first (batch) dimension is dropped."""
    out = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise ConfigError(f"{v.name}: ONNX element type {t.elem_type} has no Triton mapping here")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] != -1:
            raise ConfigError(f"{v.name}: first dimension must be the dynamic batch, got {dims}")
        out.append((v.name, _ONNX_TO_TRITON[t.elem_type], dims[1:]))
    return out


def graph_signature(proto: onnx.ModelProto) -> tuple[list[tuple[str, int, list[int]]],
                                                     list[tuple[str, int, list[int]]]]:
    init = {t.name for t in proto.graph.initializer}
    return (_signature([i for i in proto.graph.input if i.name not in init]), _signature(proto.graph.output))


def make_config(name: str, proto: onnx.ModelProto, max_batch_size: int = MAX_BATCH_SIZE,
                queue_delay_us: int = QUEUE_DELAY_US) -> mc.ModelConfig:
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
    inputs, outputs = graph_signature(proto)
    cfg = mc.ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size)
    for n, dtype, dims in inputs:
        cfg.input.add(name=n, data_type=dtype, dims=dims)
    for n, dtype, dims in outputs:
        cfg.output.add(name=n, data_type=dtype, dims=dims)
    cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="cuda")
    return cfg


def render(cfg: mc.ModelConfig) -> str:
    return HEADER + text_format.MessageToString(cfg)


def parse(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text into Triton's ModelConfig; unknown fields or bad syntax raise ConfigError."""
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise ConfigError(f"config.pbtxt does not parse as ModelConfig: {exc}") from exc
    return cfg


def write_config(entry: Path, cfg: mc.ModelConfig) -> Path:
    path = entry / "config.pbtxt"
    path.write_text(render(cfg))
    return path


def validate_entry(entry: Path, proto: onnx.ModelProto | None = None) -> mc.ModelConfig:
    """Check a repository entry: config.pbtxt parses and agrees with ``1/model.onnx`` (or ``proto``).

    Returns the parsed config; raises ``ConfigError`` listing every disagreement.
    """
    cfg = parse((entry / "config.pbtxt").read_text())
    model_path = entry / VERSION / (cfg.default_model_filename or MODEL_FILE)
    problems: list[str] = []
    if not model_path.is_file():
        problems.append(f"{model_path} is missing")
    if proto is None and model_path.is_file():
        proto = onnx.load(str(model_path), load_external_data=False)
    if cfg.name != entry.name:
        problems.append(f"name {cfg.name!r} differs from the folder name {entry.name!r}")
    if cfg.platform != PLATFORM and cfg.backend != "onnxruntime":
        problems.append(f"platform {cfg.platform!r}, expected {PLATFORM!r}")
    if cfg.max_batch_size < 1:
        problems.append("max_batch_size must be >= 1 (the model has a dynamic batch dimension)")
    if not cfg.HasField("dynamic_batching"):
        problems.append("no dynamic_batching")
    gpu = [a.name for a in cfg.optimization.execution_accelerators.gpu_execution_accelerator]
    if "cuda" not in gpu:
        problems.append(f"gpu_execution_accelerator {gpu}, expected one named 'cuda'")
    if proto is not None:
        want_in, want_out = graph_signature(proto)
        got_in = [(t.name, t.data_type, list(t.dims)) for t in cfg.input]
        got_out = [(t.name, t.data_type, list(t.dims)) for t in cfg.output]
        if got_in != want_in:
            problems.append(f"inputs {got_in} differ from the model's {want_in}")
        if got_out != want_out:
            problems.append(f"outputs {got_out} differ from the model's {want_out}")
    if problems:
        raise ConfigError(f"{entry}/config.pbtxt:\n- " + "\n- ".join(problems))
    return cfg
