"""Export of small freshly initialised models: graph contract, metadata, parity with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from export.onnx_export import (
    CUDA_OPS,
    METADATA_KEYS,
    OPSET,
    OPTIONAL_METADATA_KEYS,
    ExportError,
    check_graph,
    expected_io,
    export_graph,
    format_error_rate,
    metadata,
    read_metadata,
    save,
    set_metadata,
)
from export.verify import Tolerances, check_file, cpu_session, onnx_outputs, random_images, verify
from model.nets import full_config
from model.transforms import FAMILIES

CASES = [(f, "stcnn") for f in FAMILIES] + [("affine", "cnn")]


@pytest.fixture
def exported(tmp_path: Path, small_model, data_meta):
    """``exported(transform, arch, folder)`` -> (model, config, proto, path of model.onnx, op histogram)."""

    def run(transform: str, arch: str = "stcnn", folder: str = "m"):
        model, config = small_model(transform, arch)
        cfg = full_config(config)
        proto = export_graph(model, cfg)
        ops = check_graph(proto, expected_io(cfg, model.output_names))
        set_metadata(proto, metadata({"data": data_meta}, cfg, model.output_names, "t", ""))
        path = tmp_path / folder / "1" / "model.onnx"
        save(proto, path)
        return model, cfg, proto, path, ops

    return run


@pytest.mark.parametrize(("transform", "arch"), CASES, ids=[f"{a}-{t}" for t, a in CASES])
def test_family_round_trip(exported, transform: str, arch: str) -> None:
    model, cfg, proto, path, ops = exported(transform, arch)
    check_file(path)
    assert ops["GridSample"] == 1 and "AffineGrid" not in ops
    assert set(ops) <= CUDA_OPS
    assert [o.version for o in proto.opset_import if o.domain == ""] == [OPSET]
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # self-contained, no external data
    session = cpu_session(path)
    report = verify(model, session, model.output_names, input_size=cfg.input_size, mean=cfg.mean,
                    std=cfg.std, batch_sizes=(1, 7, 256))
    assert report.failures() == []
    assert [p.n for p in report.parity] == [1, 7, 256]  # the batch dimension really is dynamic
    bounds = Tolerances()
    for p in report.parity:
        assert p.argmax_agree == 1.0
        assert p.max_abs["logits"] <= bounds.logits
        assert p.max_abs[model.output_names[1]] <= bounds.params
        assert p.max_abs["rectified"] <= bounds.rectified


def test_transformer_is_exercised(exported) -> None:
    """The fixture's theta is far from the identity, so parity covers real resampling."""
    model, cfg, _, path, _ = exported("affine")
    x = random_images(16, cfg.input_size, cfg.mean, cfg.std, seed=3)
    theta = onnx_outputs(cpu_session(path), x)[1]
    identity = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    assert np.abs(theta - identity).max() > 0.05


def test_real_images_parity(exported, rts_slice) -> None:
    x, y = rts_slice
    for transform in ("affine", "tps"):
        model, cfg, _, path, _ = exported(transform, folder=transform)
        report = verify(model, cpu_session(path), model.output_names, input_size=cfg.input_size,
                        mean=cfg.mean, std=cfg.std, real=x[:256], test=(x, y), batch_sizes=())
        assert report.failures() == []
        assert report.test is not None and report.test.torch_errors == report.test.onnx_errors


def test_output_shapes_and_dtypes(exported) -> None:
    model, cfg, _, path, _ = exported("projective")
    outs = onnx_outputs(cpu_session(path), torch.zeros(3, 1, 42, 42))
    assert [o.shape for o in outs] == [(3, 10), (3, 3, 3), (3, 1, 28, 28)]
    assert all(o.dtype == np.float32 for o in outs)


def test_metadata_present_and_parses(exported) -> None:
    _, _, _, path, _ = exported("tps")
    meta = read_metadata(onnx.load(str(path)))
    assert set(METADATA_KEYS) <= set(meta) and set(OPTIONAL_METADATA_KEYS) <= set(meta)
    assert (meta["stn.resize"], meta["stn.padding"]) == ("stretch", "zeros")
    assert json.loads(meta["stn.labels"]) == [str(i) for i in range(10)]
    assert tuple(int(v) for v in meta["stn.input_size"].split(",")) == (42, 42)
    assert tuple(int(v) for v in meta["stn.output_size"].split(",")) == (28, 28)
    assert float(meta["stn.mean"]) == pytest.approx(0.1307)
    assert float(meta["stn.std"]) == pytest.approx(0.3081)
    assert meta["stn.polarity"] == "white_on_black"
    assert meta["stn.transform"] == "tps" and meta["stn.param_output"] == "control_points"
    assert int(meta["stn.num_classes"]) == 10 and meta["stn.dataset"] == "mnist-rts"
    assert meta["stn.test_error"] == "" and meta["stn.version"].startswith("stn-onnx/1:")


def test_format_error_rate() -> None:
    assert format_error_rate(42, 10000) == "0.0042"
    assert format_error_rate(0, 10000) == "0.0"
    assert format_error_rate(10000, 10000) == "1.0"
    assert float(format_error_rate(1, 3)) == pytest.approx(1 / 3, abs=1e-6)


# --- each contract check on its own fresh graph ---

@pytest.fixture(scope="module")
def good_graph(small_model):
    model, config = small_model("affine")
    cfg = full_config(config)
    return export_graph(model, cfg), expected_io(cfg, model.output_names)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def test_check_graph_rejects_affine_grid(good_graph) -> None:
    proto, io = good_graph
    bad = _copy(proto)
    bad.graph.node.append(helper.make_node("AffineGrid", ["theta", "val_size"], ["unused"], name="ag"))
    with pytest.raises(ExportError, match="AffineGrid"):
        check_graph(bad, io)


def test_check_graph_requires_grid_sample(good_graph) -> None:
    proto, io = good_graph
    bad = _copy(proto)
    for node in bad.graph.node:
        if node.op_type == "GridSample":
            node.op_type = "Identity"
            del node.attribute[:]
    with pytest.raises(ExportError, match="no GridSample"):
        check_graph(bad, io)


def test_check_graph_requires_symbolic_batch(good_graph) -> None:
    proto, io = good_graph
    bad = _copy(proto)
    bad.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(ExportError, match="batch must be symbolic"):
        check_graph(bad, io)


def test_check_graph_rejects_unlisted_op(good_graph) -> None:
    proto, io = good_graph
    bad = _copy(proto)
    bad.graph.node.append(helper.make_node("NonZero", ["theta"], ["nz"], name="nz"))
    with pytest.raises(ExportError, match="NonZero"):
        check_graph(bad, io)


def test_check_graph_rejects_wrong_opset(good_graph) -> None:
    proto, io = good_graph
    with pytest.raises(ExportError, match="opset"):
        check_graph(proto, io, opset=OPSET + 2)


def test_check_graph_rejects_wrong_output_names(good_graph) -> None:
    proto, io = good_graph
    bad = _copy(proto)
    bad.graph.output[1].name = "params"
    with pytest.raises(ExportError, match="outputs"):
        check_graph(bad, io)


def test_verify_catches_a_different_model(exported, small_model) -> None:
    """The comparison fails loudly when ONNX and PyTorch disagree."""
    _, cfg, _, path, _ = exported("affine")
    other, _ = small_model("affine", seed=1)
    report = verify(other, cpu_session(path), other.output_names, input_size=cfg.input_size,
                    mean=cfg.mean, std=cfg.std, batch_sizes=(7,))
    assert any("logits" in f for f in report.failures())


def test_export_refuses_training_mode(small_model) -> None:
    model, config = small_model("affine")
    with pytest.raises(ExportError, match="training mode"):
        export_graph(model.train(), full_config(config))


def test_metadata_rejects_label_count_mismatch(small_model, data_meta) -> None:
    model, config = small_model("affine")
    with pytest.raises(ExportError, match="labels"):
        metadata({"data": {**data_meta, "labels": ["a", "b"]}}, full_config(config), model.output_names, "t",
                 "")


def test_metadata_rejects_mean_mismatch(small_model, data_meta) -> None:
    model, config = small_model("affine")
    with pytest.raises(ExportError, match="mean"):
        metadata({"data": {**data_meta, "mean": 0.5}}, full_config(config), model.output_names, "t", "")


def test_zoom_metadata_is_for_a_letterboxed_sequence_model_only() -> None:
    """``stn-export --zoom-fill``: the two keys the service's second reading needs (``service.zoom``), refused
    for a model that is not a letterboxed sequence model and for values outside (0, 1]."""
    from export.onnx_export import ExportError, zoom_metadata
    from model.nets import full_config

    number = full_config({"arch": "number", "input_size": [256, 256], "output_size": [32, 32], "max_len": 5,
                          "mean": 0.0, "std": 1.0})
    letterbox = {"data": {"resize": "letterbox"}}
    assert zoom_metadata(number, letterbox, None) == {}
    assert zoom_metadata(number, letterbox, (0.8, 0.5)) == {"stn.zoom_fill": "0.8", "stn.zoom_alone_below": "0.5"}
    with pytest.raises(ExportError, match="must be in"):
        zoom_metadata(number, letterbox, (1.5, 0.5))
    with pytest.raises(ExportError, match="letterboxed sequence model"):
        zoom_metadata(number, {"data": {"resize": "stretch"}}, (0.8, 0.5))
    with pytest.raises(ExportError, match="letterboxed sequence model"):
        zoom_metadata(full_config({"arch": "stcnn"}), letterbox, (0.8, 0.5))
