"""The ONNX cost benchmark (``bench/onnx_latency.py``) on two tiny graphs: a row per model and batch, the
first model the reference (ratio 1.00), and models that take different inputs refused."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from bench import onnx_latency


def _graph(path: Path, side: int, op: str) -> Path:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, side, side])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1, side, side])
    node = helper.make_node(op, ["image"], ["out"])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_a_row_per_model_with_its_ratio_to_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _graph(tmp_path / "a.onnx", 8, "Identity"), _graph(tmp_path / "b.onnx", 8, "Relu")
    assert onnx_latency.main([str(a), str(b), "--batch", "1", "4", "--rounds", "3", "--threads", "1",
                              "--no-write"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [str(a), str(b)]
    assert rows[0].count("(1.00)") == 2  # the reference against itself, at both batch sizes
    assert len(rows[1].split(" | ")) == 3


def test_models_with_different_inputs_are_refused(tmp_path: Path) -> None:
    a, b = _graph(tmp_path / "a.onnx", 8, "Identity"), _graph(tmp_path / "b.onnx", 16, "Identity")
    with pytest.raises(SystemExit):
        onnx_latency.main([str(a), str(b), "--no-write"])
