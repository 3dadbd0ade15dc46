"""The FP16 variant: float16 weights and convolutions, float32 I/O and sampler, close to float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from export.fp16 import float32_nodes, to_fp16
from export.onnx_export import check_graph, expected_io, export_graph, save
from export.verify import check_file, cpu_session, onnx_outputs, random_images
from model.nets import full_config


@pytest.mark.parametrize("transform", ["affine", "tps", "projective"])
def test_fp16_variant(tmp_path: Path, small_model, transform: str) -> None:
    model, config = small_model(transform)
    cfg = full_config(config)
    proto = export_graph(model, cfg)
    proto16 = to_fp16(proto)
    # Same contract (GridSample, no AffineGrid, CUDA-listed ops, float32 I/O with a symbolic batch).
    check_graph(proto16, expected_io(cfg, model.output_names))
    save(proto, tmp_path / "a" / "32.onnx")
    save(proto16, tmp_path / "b" / "16.onnx")
    path32, path16 = tmp_path / "a" / "32.onnx", tmp_path / "b" / "16.onnx"
    check_file(path16)

    inits = {t.name: t.data_type for t in proto16.graph.initializer}
    conv_weights = [n.input[1] for n in proto16.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(inits[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    gs = next(n for n in proto16.graph.node if n.op_type == "GridSample")
    assert gs.name in float32_nodes(proto16)

    x = random_images(64, cfg.input_size, cfg.mean, cfg.std, seed=5)
    ref = onnx_outputs(cpu_session(path32), x)
    got = onnx_outputs(cpu_session(path16), x)
    assert all(o.dtype == np.float32 for o in got)
    assert np.abs(ref[0] - got[0]).max() < 5e-2
    assert np.abs(ref[1] - got[1]).max() < 5e-3  # the parameters come from a float32 Gemm
    assert (ref[0].argmax(1) == got[0].argmax(1)).mean() >= 0.95
