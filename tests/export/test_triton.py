"""config.pbtxt: written from and parsed into Triton's ModelConfig protobuf, and checked against the model."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export.onnx_export import export_graph, save
from export.triton import ConfigError, make_config, parse, render, validate_entry, write_config
from model.nets import full_config


@pytest.fixture(scope="module")
def proto(small_model) -> onnx.ModelProto:
    model, config = small_model("projective")
    return export_graph(model, full_config(config))


def _entry(tmp_path: Path, proto: onnx.ModelProto, name: str = "stn_test") -> Path:
    entry = tmp_path / name
    save(proto, entry / "1" / "model.onnx")
    write_config(entry, make_config(name, proto, max_batch_size=64, queue_delay_us=250))
    return entry


def test_config_parses_into_model_config(tmp_path: Path, proto: onnx.ModelProto) -> None:
    entry = _entry(tmp_path, proto)
    cfg = parse((entry / "config.pbtxt").read_text())
    assert isinstance(cfg, mc.ModelConfig)
    assert cfg.name == "stn_test" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 64
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.input] == [("image", mc.TYPE_FP32, [1, 42, 42])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("logits", [10]), ("homography", [3, 3]),
                                                            ("rectified", [1, 28, 28])]
    assert all(t.data_type == mc.TYPE_FP32 for t in cfg.output)
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert [a.name for a in cfg.optimization.execution_accelerators.gpu_execution_accelerator] == ["cuda"]
    assert not cfg.instance_group  # Triton's default: one instance per GPU, or the CPU where there is none
    assert validate_entry(entry) == cfg


def test_render_round_trips(proto: onnx.ModelProto) -> None:
    cfg = make_config("x", proto)
    assert parse(render(cfg)) == cfg


def test_parse_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="does not parse"):
        parse('name: "x"\nplatform: "onnxruntime_onnx"\nmax_batch: 8\n')


def test_parse_rejects_bad_syntax() -> None:
    with pytest.raises(ConfigError, match="does not parse"):
        parse('name: "x" input { name: "image" ')


def test_validate_rejects_name_mismatch(tmp_path: Path, proto: onnx.ModelProto) -> None:
    entry = _entry(tmp_path, proto)
    cfg = make_config("other_name", proto)
    write_config(entry, cfg)
    with pytest.raises(ConfigError, match="folder name"):
        validate_entry(entry)


def test_validate_rejects_wrong_dims(tmp_path: Path, proto: onnx.ModelProto) -> None:
    entry = _entry(tmp_path, proto)
    cfg = make_config(entry.name, proto)
    cfg.output[2].dims[:] = [1, 42, 42]
    write_config(entry, cfg)
    with pytest.raises(ConfigError, match="outputs"):
        validate_entry(entry)


def test_validate_rejects_missing_model(tmp_path: Path, proto: onnx.ModelProto) -> None:
    entry = _entry(tmp_path, proto)
    (entry / "1" / "model.onnx").unlink()
    with pytest.raises(ConfigError, match="missing"):
        validate_entry(entry, proto)


def test_validate_requires_dynamic_batching(tmp_path: Path, proto: onnx.ModelProto) -> None:
    entry = _entry(tmp_path, proto)
    cfg = make_config(entry.name, proto)
    cfg.ClearField("dynamic_batching")
    write_config(entry, cfg)
    with pytest.raises(ConfigError, match="dynamic_batching"):
        validate_entry(entry)


def test_validate_requires_cuda_accelerator(tmp_path: Path, proto: onnx.ModelProto) -> None:
    entry = _entry(tmp_path, proto)
    cfg = make_config(entry.name, proto)
    cfg.ClearField("optimization")
    write_config(entry, cfg)
    with pytest.raises(ConfigError, match="cuda"):
        validate_entry(entry)


def test_make_config_rejects_zero_batch(proto: onnx.ModelProto) -> None:
    with pytest.raises(ConfigError, match="max_batch_size"):
        make_config("x", proto, max_batch_size=0)
